// Attention over an 8-bit KV cache: the scalar references first, then the AVX2+FMA and NEON
// paths; the plain names run the one tsr_kernel_path(TSR_KERNEL_QUANT) selects. The rows are
// what tsr_quantize_act writes with levels 127 (KernelsC.h has the layout).
#include "KernelsC.h"
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

void tsr_kv8_scores_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                        const float *q, float alpha, float *scores) {
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        const float *dp = d + (size_t)p * dstride;
        float sum = 0;
        for (int b = 0; b < D / 32; b++) {
            float block = 0;
            for (int i = 32 * b; i < 32 * b + 32; i++) block += (float)cp[i] * q[i];
            sum += dp[b] * block;
        }
        scores[p] = alpha * sum;
    }
}

void tsr_kv8_mix_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                     const float *w, float *out) {
    for (int i = 0; i < D; i++) out[i] = 0;
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        const float *dp = d + (size_t)p * dstride;
        for (int i = 0; i < D; i++) out[i] += (w[p] * dp[i / 32]) * (float)cp[i];
    }
}

void tsr_kv8_dequantize_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out) {
    for (int p = 0; p < n; p++)
        for (int i = 0; i < D; i++) out[(size_t)p * D + i] = d[(size_t)p * dstride + i / 32] * (float)c[(size_t)p * cstride + i];
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))

/// 8 int8 codes → 8 floats.
AVX2 static inline __m256 kv8_load8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 static inline float kv8_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static void kv8_scores_avx2(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                                 const float *q, float alpha, float *scores) {
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        const float *dp = d + (size_t)p * dstride;
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < D / 32; b++) {
            const int8_t *cb = cp + 32 * b;
            const float *qb = q + 32 * b;
            __m256 s = _mm256_mul_ps(kv8_load8(cb), _mm256_loadu_ps(qb));
            s = _mm256_fmadd_ps(kv8_load8(cb + 8), _mm256_loadu_ps(qb + 8), s);
            s = _mm256_fmadd_ps(kv8_load8(cb + 16), _mm256_loadu_ps(qb + 16), s);
            s = _mm256_fmadd_ps(kv8_load8(cb + 24), _mm256_loadu_ps(qb + 24), s);
            acc = _mm256_fmadd_ps(s, _mm256_set1_ps(dp[b]), acc);
        }
        scores[p] = alpha * kv8_hsum(acc);
    }
}

AVX2 static void kv8_mix_avx2(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                              const float *w, float *out) {
    for (int b = 0; b < D / 32; b++) { // one 32-wide column block in four accumulators
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int p = 0; p < n; p++) {
            const int8_t *cb = c + (size_t)p * cstride + 32 * b;
            const __m256 f = _mm256_set1_ps(w[p] * d[(size_t)p * dstride + b]);
            a0 = _mm256_fmadd_ps(f, kv8_load8(cb), a0);
            a1 = _mm256_fmadd_ps(f, kv8_load8(cb + 8), a1);
            a2 = _mm256_fmadd_ps(f, kv8_load8(cb + 16), a2);
            a3 = _mm256_fmadd_ps(f, kv8_load8(cb + 24), a3);
        }
        _mm256_storeu_ps(out + 32 * b, a0);
        _mm256_storeu_ps(out + 32 * b + 8, a1);
        _mm256_storeu_ps(out + 32 * b + 16, a2);
        _mm256_storeu_ps(out + 32 * b + 24, a3);
    }
}

AVX2 static void kv8_dequantize_avx2(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out) {
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        float *op = out + (size_t)p * D;
        for (int b = 0; b < D / 32; b++) {
            const __m256 s = _mm256_set1_ps(d[(size_t)p * dstride + b]);
            for (int j = 0; j < 4; j++) _mm256_storeu_ps(op + 32 * b + 8 * j, _mm256_mul_ps(s, kv8_load8(cp + 32 * b + 8 * j)));
        }
    }
}
#elif defined(__aarch64__)
/// 16 int8 codes → 4 × 4 floats.
static inline void kv8_load16(const int8_t *p, float32x4_t f[4]) {
    int8x16_t v = vld1q_s8(p);
    int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
    f[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    f[1] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo)));
    f[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    f[3] = vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi)));
}

static void kv8_scores_neon(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                            const float *q, float alpha, float *scores) {
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        const float *dp = d + (size_t)p * dstride;
        float32x4_t acc = vdupq_n_f32(0);
        for (int b = 0; b < D / 32; b++) {
            float32x4_t f[4], s = vdupq_n_f32(0);
            for (int h = 0; h < 2; h++) {
                kv8_load16(cp + 32 * b + 16 * h, f);
                for (int j = 0; j < 4; j++) s = vfmaq_f32(s, f[j], vld1q_f32(q + 32 * b + 16 * h + 4 * j));
            }
            acc = vfmaq_n_f32(acc, s, dp[b]);
        }
        scores[p] = alpha * vaddvq_f32(acc);
    }
}

static void kv8_mix_neon(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                         const float *w, float *out) {
    for (int b = 0; b < D / 32; b++) { // one 32-wide column block in eight accumulators
        float32x4_t a[8];
        for (int j = 0; j < 8; j++) a[j] = vdupq_n_f32(0);
        for (int p = 0; p < n; p++) {
            const int8_t *cb = c + (size_t)p * cstride + 32 * b;
            const float f = w[p] * d[(size_t)p * dstride + b];
            float32x4_t v[4];
            kv8_load16(cb, v);
            for (int j = 0; j < 4; j++) a[j] = vfmaq_n_f32(a[j], v[j], f);
            kv8_load16(cb + 16, v);
            for (int j = 0; j < 4; j++) a[4 + j] = vfmaq_n_f32(a[4 + j], v[j], f);
        }
        for (int j = 0; j < 8; j++) vst1q_f32(out + 32 * b + 4 * j, a[j]);
    }
}

static void kv8_dequantize_neon(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out) {
    for (int p = 0; p < n; p++) {
        const int8_t *cp = c + (size_t)p * cstride;
        float *op = out + (size_t)p * D;
        for (int b = 0; b < D / 32; b++) {
            const float s = d[(size_t)p * dstride + b];
            float32x4_t v[4];
            for (int h = 0; h < 2; h++) {
                kv8_load16(cp + 32 * b + 16 * h, v);
                for (int j = 0; j < 4; j++) vst1q_f32(op + 32 * b + 16 * h + 4 * j, vmulq_n_f32(v[j], s));
            }
        }
    }
}
#endif

void tsr_kv8_scores(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                    const float *q, float alpha, float *scores) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: kv8_scores_avx2(c, cstride, d, dstride, n, D, q, alpha, scores); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: kv8_scores_neon(c, cstride, d, dstride, n, D, q, alpha, scores); return;
#endif
    default: tsr_kv8_scores_ref(c, cstride, d, dstride, n, D, q, alpha, scores);
    }
}

void tsr_kv8_mix(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, const float *w, float *out) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: kv8_mix_avx2(c, cstride, d, dstride, n, D, w, out); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: kv8_mix_neon(c, cstride, d, dstride, n, D, w, out); return;
#endif
    default: tsr_kv8_mix_ref(c, cstride, d, dstride, n, D, w, out);
    }
}

void tsr_kv8_dequantize(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: kv8_dequantize_avx2(c, cstride, d, dstride, n, D, out); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: kv8_dequantize_neon(c, cstride, d, dstride, n, D, out); return;
#endif
    default: tsr_kv8_dequantize_ref(c, cstride, d, dstride, n, D, out);
    }
}
