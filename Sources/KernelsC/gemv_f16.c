// fp16-weight matrix-vector product (a tied output head kept in fp16): scalar reference, then
// the AVX2 + FMA + F16C and NEON paths; tsr_gemv_f16 runs the one tsr_kernel_path selects.
#include "KernelsC.h"
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

void tsr_gemv_f16_ref(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    for (int r = rowBegin; r < rowEnd; r++) {
        const uint16_t *w = W + (size_t)r * cols;
        float sum = 0;
        for (int k = 0; k < cols; k++) sum += tsr_f16_to_f32(w[k]) * x[k];
        y[r] = sum;
    }
}

#if defined(__x86_64__)
#define F16_TARGET __attribute__((target("avx2,fma,f16c")))

F16_TARGET static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

F16_TARGET static inline __m256 load8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/// NR consecutive rows from r share every load of x; two accumulators per row hide FMA latency.
F16_TARGET static inline __attribute__((always_inline)) void gemv_f16_rows(const uint16_t *W, const float *x, float *y, int cols, int r,
                                                                            const int NR) {
    const uint16_t *w[4];
    __m256 a[4], b[4];
    for (int i = 0; i < NR; i++) { w[i] = W + (size_t)(r + i) * cols; a[i] = _mm256_setzero_ps(); b[i] = _mm256_setzero_ps(); }
    int k = 0;
    for (; k + 16 <= cols; k += 16) {
        __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
        for (int i = 0; i < NR; i++) {
            a[i] = _mm256_fmadd_ps(load8(w[i] + k), x0, a[i]);
            b[i] = _mm256_fmadd_ps(load8(w[i] + k + 8), x1, b[i]);
        }
    }
    if (k + 8 <= cols) {
        __m256 x0 = _mm256_loadu_ps(x + k);
        for (int i = 0; i < NR; i++) a[i] = _mm256_fmadd_ps(load8(w[i] + k), x0, a[i]);
        k += 8;
    }
    for (int i = 0; i < NR; i++) {
        float s = hsum8(_mm256_add_ps(a[i], b[i]));
        for (int j = k; j < cols; j++) s += tsr_f16_to_f32(w[i][j]) * x[j];
        y[r + i] = s;
    }
}

F16_TARGET static void gemv_f16_avx2(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) gemv_f16_rows(W, x, y, cols, r, 4);
    for (; r < rowEnd; r++) gemv_f16_rows(W, x, y, cols, r, 1);
}
#elif defined(__aarch64__)
/// NR consecutive rows from r share every load of x; two accumulators per row. fp16 → fp32
/// conversion (fcvtl) is baseline AArch64.
static inline __attribute__((always_inline)) void gemv_f16_rows_neon(const uint16_t *W, const float *x, float *y, int cols, int r,
                                                                     const int NR) {
    const uint16_t *w[4];
    float32x4_t a[4], b[4];
    for (int i = 0; i < NR; i++) { w[i] = W + (size_t)(r + i) * cols; a[i] = vdupq_n_f32(0); b[i] = vdupq_n_f32(0); }
    int k = 0;
    for (; k + 8 <= cols; k += 8) {
        float32x4_t x0 = vld1q_f32(x + k), x1 = vld1q_f32(x + k + 4);
        for (int i = 0; i < NR; i++) {
            float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w[i] + k));
            a[i] = vfmaq_f32(a[i], vcvt_f32_f16(vget_low_f16(h)), x0);
            b[i] = vfmaq_f32(b[i], vcvt_high_f32_f16(h), x1);
        }
    }
    for (int i = 0; i < NR; i++) {
        float s = vaddvq_f32(vaddq_f32(a[i], b[i]));
        for (int j = k; j < cols; j++) s += tsr_f16_to_f32(w[i][j]) * x[j];
        y[r + i] = s;
    }
}

static void gemv_f16_neon(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) gemv_f16_rows_neon(W, x, y, cols, r, 4);
    for (; r < rowEnd; r++) gemv_f16_rows_neon(W, x, y, cols, r, 1);
}
#endif

void tsr_gemv_f16(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_F16_GEMV)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: gemv_f16_avx2(W, x, y, cols, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: gemv_f16_neon(W, x, y, cols, rowBegin, rowEnd); return;
#endif
    default: tsr_gemv_f16_ref(W, x, y, cols, rowBegin, rowEnd);
    }
}
