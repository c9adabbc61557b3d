// fp32 matrix-vector products for the decode path (one token at a time).
// Scalar reference first, then the AVX2+FMA and NEON paths; tsr_gemv_f32, tsr_dot_f32 and
// tsr_axpy_f32 run the one tsr_kernel_path(TSR_KERNEL_F32) selects.
#include "KernelsC.h"
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

void tsr_gemv_f32_ref(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    for (int r = rowBegin; r < rowEnd; r++) {
        const float *w = W + (size_t)r * cols;
        float sum = 0;
        for (int k = 0; k < cols; k++) sum += w[k] * x[k];
        y[r] = sum;
    }
}

static float dot_ref(const float *a, const float *b, int n) {
    float sum = 0;
    for (int k = 0; k < n; k++) sum += a[k] * b[k];
    return sum;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma")))
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
    }
    for (; k + 8 <= n; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; k < n; k++) sum += a[k] * b[k];
    return sum;
}

__attribute__((target("avx2,fma")))
static void gemv_avx2(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    int r = rowBegin;
    // Four rows at a time share each load of x.
    for (; r + 4 <= rowEnd; r += 4) {
        const float *w0 = W + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= cols; k += 8) {
            __m256 xv = _mm256_loadu_ps(x + k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, a3);
        }
        float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
        for (; k < cols; k++) { s0 += w0[k] * x[k]; s1 += w1[k] * x[k]; s2 += w2[k] * x[k]; s3 += w3[k] * x[k]; }
        y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3;
    }
    for (; r < rowEnd; r++) y[r] = dot_avx2(W + (size_t)r * cols, x, cols);
}

__attribute__((target("avx2,fma")))
static void axpy_avx2(float a, const float *x, float *y, int n) {
    __m256 av = _mm256_set1_ps(a);
    int k = 0;
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(y + k, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + k), _mm256_loadu_ps(y + k)));
    for (; k < n; k++) y[k] += a * x[k];
}
#elif defined(__aarch64__)
static float dot_neon(const float *a, const float *b, int n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0), s2 = vdupq_n_f32(0), s3 = vdupq_n_f32(0);
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
        s1 = vfmaq_f32(s1, vld1q_f32(a + k + 4), vld1q_f32(b + k + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + k + 8), vld1q_f32(b + k + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + k + 12), vld1q_f32(b + k + 12));
    }
    for (; k + 4 <= n; k += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + k), vld1q_f32(b + k));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; k < n; k++) sum += a[k] * b[k];
    return sum;
}

static void gemv_neon(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    int r = rowBegin;
    // Four rows at a time share each load of x.
    for (; r + 4 <= rowEnd; r += 4) {
        const float *w0 = W + (size_t)r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), a2 = vdupq_n_f32(0), a3 = vdupq_n_f32(0);
        int k = 0;
        for (; k + 4 <= cols; k += 4) {
            float32x4_t xv = vld1q_f32(x + k);
            a0 = vfmaq_f32(a0, vld1q_f32(w0 + k), xv);
            a1 = vfmaq_f32(a1, vld1q_f32(w1 + k), xv);
            a2 = vfmaq_f32(a2, vld1q_f32(w2 + k), xv);
            a3 = vfmaq_f32(a3, vld1q_f32(w3 + k), xv);
        }
        float s0 = vaddvq_f32(a0), s1 = vaddvq_f32(a1), s2 = vaddvq_f32(a2), s3 = vaddvq_f32(a3);
        for (; k < cols; k++) { s0 += w0[k] * x[k]; s1 += w1[k] * x[k]; s2 += w2[k] * x[k]; s3 += w3[k] * x[k]; }
        y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3;
    }
    for (; r < rowEnd; r++) y[r] = dot_neon(W + (size_t)r * cols, x, cols);
}

static void axpy_neon(float a, const float *x, float *y, int n) {
    float32x4_t av = vdupq_n_f32(a);
    int k = 0;
    for (; k + 4 <= n; k += 4) vst1q_f32(y + k, vfmaq_f32(vld1q_f32(y + k), av, vld1q_f32(x + k)));
    for (; k < n; k++) y[k] += a * x[k];
}
#endif

void tsr_gemv_f32(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: gemv_avx2(W, x, y, cols, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: gemv_neon(W, x, y, cols, rowBegin, rowEnd); return;
#endif
    default: tsr_gemv_f32_ref(W, x, y, cols, rowBegin, rowEnd);
    }
}

float tsr_dot_f32(const float *a, const float *b, int n) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: return dot_avx2(a, b, n);
#elif defined(__aarch64__)
    case TSR_PATH_NEON: return dot_neon(a, b, n);
#endif
    default: return dot_ref(a, b, n);
    }
}

void tsr_axpy_f32(float a, const float *x, float *y, int n) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: axpy_avx2(a, x, y, n); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: axpy_neon(a, x, y, n); return;
#endif
    default: for (int k = 0; k < n; k++) y[k] += a * x[k];
    }
}
