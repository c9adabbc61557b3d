// exp-based row operations in fp32: softmax pieces and SwiGLU (family TSR_KERNEL_F32).
//
// exp(x) as Cephes' expf does it: n = rint(x·log2 e), r = x − n·ln2 (ln2 split in two so r
// is exact enough), exp(r) by a degree-6 polynomial on |r| ≤ ln2/2, times 2^n built in the
// exponent bits. Relative error ≤ 2 ulp against float64 exp (the tests check it). x < −87.33
// gives 0 (the true value would be subnormal), x > 88.72 gives +inf, like expf at those ends.
// The scalar twin runs the same fused operations in the same order, so every path gives the
// same bits for exp itself; sums (softmax) differ only in summation order.
#include "KernelsC.h"
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#define EXP_LO (-87.33654475f)
#define EXP_HI 88.72283935f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO (-2.12194440e-4f)
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f

static inline float exp_ref(float x) {
    if (x < EXP_LO) return 0.0f;
    if (x > EXP_HI) return INFINITY;
    const float n = rintf(x * LOG2E);
    float r = fmaf(-n, LN2_HI, x);
    r = fmaf(-n, LN2_LO, r);
    float p = fmaf(P0, r, P1);
    p = fmaf(p, r, P2);
    p = fmaf(p, r, P3);
    p = fmaf(p, r, P4);
    p = fmaf(p, r, P5);
    p = fmaf(p, r * r, r + 1.0f);
    // n in [−126, 128]: 2^n as two halves so that n = 128 (x just below EXP_HI) does not overflow the exponent.
    const int k = (int)n, k1 = k / 2, k2 = k - k1;
    union { uint32_t u; float f; } a = {(uint32_t)(k1 + 127) << 23}, b = {(uint32_t)(k2 + 127) << 23};
    return p * a.f * b.f;
}

// ---- scalar references -------------------------------------------------------------------------
static float max_ref(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static float exp_sub_sum_ref(float *x, int n, float shift) {
    float sum = 0;
    for (int i = 0; i < n; i++) { x[i] = exp_ref(x[i] - shift); sum += x[i]; }
    return sum;
}

static void scale_ref(float *x, int n, float a) {
    for (int i = 0; i < n; i++) x[i] *= a;
}

static void swiglu_ref(const float *gate, const float *up, float *out, int n) {
    for (int i = 0; i < n; i++) { const float g = gate[i]; out[i] = g / (1.0f + exp_ref(-g)) * up[i]; }
}

// ---- AVX2 + FMA --------------------------------------------------------------------------------
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline, target("avx2,fma")))

INLINE __m256 exp_avx2(__m256 x) {
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(P0), r, _mm256_set1_ps(P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // The out-of-range lanes are replaced below; clamp n so their exponent arithmetic stays harmless.
    const __m256i k = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(128.0f)));
    const __m256i k1 = _mm256_srai_epi32(_mm256_add_epi32(k, _mm256_srli_epi32(k, 31)), 1); // k / 2, toward zero
    const __m256i k2 = _mm256_sub_epi32(k, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, a), b);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ));
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ));
}

AVX2 static void exp_array_avx2(const float *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp_avx2(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] = exp_ref(x[i]);
}

AVX2 static float max_avx2(const float *x, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float r = max_ref(lanes, 8);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

AVX2 static float exp_sub_sum_avx2(float *x, int n, float shift) {
    const __m256 s = _mm256_set1_ps(shift);
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8], sum = 0;
    _mm256_storeu_ps(lanes, acc);
    for (int j = 0; j < 8; j++) sum += lanes[j];
    return sum + exp_sub_sum_ref(x + i, n - i, shift);
}

AVX2 static void scale_avx2(float *x, int n, float a) {
    const __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), av));
    scale_ref(x + i, n - i, a);
}

AVX2 static void swiglu_avx2(const float *gate, const float *up, float *out, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp_avx2(_mm256_xor_ps(g, sign))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    swiglu_ref(gate + i, up + i, out + i, n - i);
}
#endif

// ---- NEON --------------------------------------------------------------------------------------
#if defined(__aarch64__)
static inline float32x4_t exp_neon(float32x4_t x) {
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, LOG2E));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(LN2_LO));
    float32x4_t p = vfmaq_f32(vdupq_n_f32(P1), vdupq_n_f32(P0), r);
    p = vfmaq_f32(vdupq_n_f32(P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(P5), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t k = vcvtq_s32_f32(vminq_f32(vmaxq_f32(n, vdupq_n_f32(-126.0f)), vdupq_n_f32(128.0f)));
    const int32x4_t k1 = vshrq_n_s32(vaddq_s32(k, vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(k), 31))), 1);
    const int32x4_t k2 = vsubq_s32(k, k1);
    const float32x4_t a = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k1, vdupq_n_s32(127)), 23));
    const float32x4_t b = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k2, vdupq_n_s32(127)), 23));
    float32x4_t y = vmulq_f32(vmulq_f32(p, a), b);
    y = vbslq_f32(vcltq_f32(x, vdupq_n_f32(EXP_LO)), vdupq_n_f32(0.0f), y);
    return vbslq_f32(vcgtq_f32(x, vdupq_n_f32(EXP_HI)), vdupq_n_f32(INFINITY), y);
}

static void exp_array_neon(const float *x, float *y, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, exp_neon(vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = exp_ref(x[i]);
}

static float max_neon(const float *x, int n) {
    float32x4_t m = vdupq_n_f32(-INFINITY);
    int i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(x + i));
    float r = vmaxvq_f32(m);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

static float exp_sub_sum_neon(float *x, int n, float shift) {
    const float32x4_t s = vdupq_n_f32(shift);
    float32x4_t acc = vdupq_n_f32(0);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = exp_neon(vsubq_f32(vld1q_f32(x + i), s));
        vst1q_f32(x + i, e);
        acc = vaddq_f32(acc, e);
    }
    return vaddvq_f32(acc) + exp_sub_sum_ref(x + i, n - i, shift);
}

static void scale_neon(float *x, int n, float a) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), a));
    scale_ref(x + i, n - i, a);
}

static void swiglu_neon(const float *gate, const float *up, float *out, int n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t silu = vdivq_f32(g, vaddq_f32(one, exp_neon(vnegq_f32(g))));
        vst1q_f32(out + i, vmulq_f32(silu, vld1q_f32(up + i)));
    }
    swiglu_ref(gate + i, up + i, out + i, n - i);
}
#endif

// ---- entry points --------------------------------------------------------------------------------
void tsr_exp_f32(const float *x, float *y, int n) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: exp_array_avx2(x, y, n); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: exp_array_neon(x, y, n); return;
#endif
    default: tsr_exp_f32_ref(x, y, n);
    }
}

void tsr_exp_f32_ref(const float *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = exp_ref(x[i]);
}

float tsr_max_f32(const float *x, int n) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: return max_avx2(x, n);
#elif defined(__aarch64__)
    case TSR_PATH_NEON: return max_neon(x, n);
#endif
    default: return max_ref(x, n);
    }
}

float tsr_exp_sub_sum_f32(float *x, int n, float shift) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: return exp_sub_sum_avx2(x, n, shift);
#elif defined(__aarch64__)
    case TSR_PATH_NEON: return exp_sub_sum_neon(x, n, shift);
#endif
    default: return exp_sub_sum_ref(x, n, shift);
    }
}

void tsr_scale_f32(float *x, int n, float a) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: scale_avx2(x, n, a); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: scale_neon(x, n, a); return;
#endif
    default: scale_ref(x, n, a);
    }
}

void tsr_softmax_f32(float *x, int n) {
    const float m = tsr_max_f32(x, n);
    tsr_scale_f32(x, n, 1.0f / tsr_exp_sub_sum_f32(x, n, m));
}

void tsr_softmax_f32_ref(float *x, int n) {
    const float m = max_ref(x, n);
    scale_ref(x, n, 1.0f / exp_sub_sum_ref(x, n, m));
}

void tsr_swiglu_f32(const float *gate, const float *up, float *out, int n) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: swiglu_avx2(gate, up, out, n); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: swiglu_neon(gate, up, out, n); return;
#endif
    default: swiglu_ref(gate, up, out, n);
    }
}

void tsr_swiglu_f32_ref(const float *gate, const float *up, float *out, int n) { swiglu_ref(gate, up, out, n); }
