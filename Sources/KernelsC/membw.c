// Memory read bandwidth probe: stream through a buffer with wide loads and fold it into a
// checksum the compiler cannot drop. Used by `bench --bandwidth` to measure the machine's
// read bandwidth, the denominator of the decode upper bound.
#include "KernelsC.h"
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The checksum: the wrapping sum of the 64-bit little-endian words, plus the trailing bytes.
uint64_t tsr_read_bytes_ref(const void *data, size_t bytes) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t sum = 0;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        sum += v;
    }
    for (; i < bytes; i++) sum += p[i];
    return sum;
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static uint64_t read_avx2(const uint8_t *p, size_t bytes) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + tsr_read_bytes_ref(p + i, bytes - i);
}
#endif

uint64_t tsr_read_bytes(const void *p, size_t bytes) {
    switch (tsr_kernel_path(TSR_KERNEL_READ_BYTES)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: return read_avx2((const uint8_t *)p, bytes);
#endif
    default: return tsr_read_bytes_ref(p, bytes);
    }
}
