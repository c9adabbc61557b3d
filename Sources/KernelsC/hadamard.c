// Orthonormal Hadamard transforms in fp32 (family TSR_KERNEL_F32), for rotating a model's
// activations and weights (QuaRot-style): y = H x / √n with H = H_m ⊗ H_p, p = 2^k.
//
// n = m·2^k with m ∈ {1, 12, 20, 28, 36}: the odd part of n (1, 3, 5, 7, 9) picks m, so every
// width of the models we run is covered: SmolLM2 576 = 36·16 and 1536 = 12·128, LLaMA-3.2 2048,
// 3072 = 12·256, 8192. H_p is Sylvester's (the fast Walsh–Hadamard butterflies, log2 p passes);
// H_m is built once by Paley's constructions from the quadratic residues mod a prime q:
//   Paley I  (q ≡ 3 mod 4, order q + 1):  m = 12 (q = 11), 20 (q = 19)
//   Paley II (q ≡ 1 mod 4, order 2(q + 1)): m = 28 (q = 13), 36 (q = 17)
// Both give ±1 matrices with H·Hᵀ = m·I (the tests check it), so H/√n is orthogonal and its
// inverse is its transpose: `transpose` = 1 applies Hᵀ/√n (Paley I matrices are not symmetric).
//
// With x seen as m rows of p values, (H_m ⊗ H_p)·x is: the butterflies within each row, then
// every column mixed by H_m (row a = Σ_a' ±row a'), then the 1/√n scale. Every path runs the same
// additions in the same order (the butterflies are element-wise, the mixing sums a' = 0, 1, ...),
// so the SIMD paths give the `_ref` twin's bits.
#include "KernelsC.h"
#include <math.h>
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

enum { HAD_MAX_M = 36 };
static signed char had12[12 * 12], had20[20 * 20], had28[28 * 28], had36[36 * 36];
static pthread_once_t had_once = PTHREAD_ONCE_INIT;

/// χ(a): the quadratic character mod prime q (0 for a ≡ 0, 1 for a residue, −1 otherwise).
static int chi(int a, int q) {
    a = ((a % q) + q) % q;
    if (a == 0) return 0;
    for (int x = 1; x < q; x++)
        if (x * x % q == a) return 1;
    return -1;
}

/// Paley I: H = I + S, S = [[0, 1ᵀ], [−1, Q]] with Q[i][j] = χ(j − i); order q + 1.
static void paley1(signed char *h, int q) {
    const int m = q + 1;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : chi(j - i, q);
            h[i * m + j] = (signed char)((i == j ? 1 : 0) + s);
        }
}

/// Paley II: C = [[0, 1ᵀ], [1, Q]] (symmetric), H = C ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]];
/// order 2(q + 1).
static void paley2(signed char *h, int q) {
    const int c = q + 1, m = 2 * c;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            int v = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : chi(j - i, q);
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    int e = v != 0 ? v * (a == 1 && b == 1 ? -1 : 1) : (a == b ? (a == 0 ? 1 : -1) : -1);
                    h[(2 * i + a) * m + 2 * j + b] = (signed char)e;
                }
        }
}

static void build_tables(void) {
    paley1(had12, 11);
    paley1(had20, 19);
    paley2(had28, 13);
    paley2(had36, 17);
}

const signed char *tsr_hadamard_matrix(int m) {
    pthread_once(&had_once, build_tables);
    switch (m) {
    case 12: return had12;
    case 20: return had20;
    case 28: return had28;
    case 36: return had36;
    default: return NULL;
    }
}

int tsr_hadamard_factor(int n, int *m) {
    if (n <= 0) return -1;
    int odd = n, k = 0;
    while (odd % 2 == 0) { odd /= 2; k++; }
    static const int mOf[10] = {0, 1, 0, 12, 0, 20, 0, 28, 0, 36}; // by odd part: m = odd·4 (m = 1 for odd = 1)
    if (odd > 9 || mOf[odd] == 0) return -1;
    const int mm = mOf[odd];
    const int twos = mm == 1 ? 0 : 2; // 12 = 3·4, 20 = 5·4, 28 = 7·4, 36 = 9·4
    if (k < twos) return -1;
    if (m) *m = mm;
    return k - twos;
}

// ---- scalar reference --------------------------------------------------------------------------
static void butterflies_ref(float *x, int p) {
    for (int h = 1; h < p; h *= 2)
        for (int i = 0; i < p; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

/// Rows a of x (m rows of p) := Σ_a' H[a][a']·row a' (H[a'][a] when transposed), for columns [c0, c1).
static void mix_ref(float *x, int m, int p, const signed char *H, int transpose, int c0, int c1) {
    float t[HAD_MAX_M];
    for (int c = c0; c < c1; c++) {
        for (int a = 0; a < m; a++) {
            float s = 0;
            for (int b = 0; b < m; b++) {
                const int e = transpose ? H[b * m + a] : H[a * m + b];
                s = e > 0 ? s + x[b * p + c] : s - x[b * p + c];
            }
            t[a] = s;
        }
        for (int a = 0; a < m; a++) x[a * p + c] = t[a];
    }
}

static int hadamard_ref(float *x, int n, int transpose) {
    int m;
    const int k = tsr_hadamard_factor(n, &m);
    if (k < 0) return -1;
    const int p = 1 << k;
    for (int a = 0; a < m; a++) butterflies_ref(x + (size_t)a * p, p);
    if (m > 1) mix_ref(x, m, p, tsr_hadamard_matrix(m), transpose, 0, p);
    const float scale = (float)(1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++) x[i] *= scale;
    return 0;
}

int tsr_hadamard_f32_ref(float *x, int n, int transpose) { return hadamard_ref(x, n, transpose); }

// ---- AVX2 ----------------------------------------------------------------------------------------
#if defined(__x86_64__)
/// One row of p ≥ 8 values: the passes h = 1, 2, 4 inside each 8-float vector (the same a + b and
/// a − b as the reference, gathered by shuffles), then h ≥ 8 across vectors.
AVX2 static void butterflies_avx2(float *x, int p) {
    if (p < 8) { butterflies_ref(x, p); return; }
    const __m256 neg1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
    const __m256 neg2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
    const __m256 neg4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
    for (int i = 0; i < p; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        // h = 1: lanes (2j, 2j+1) → (a + b, a − b): a = even lanes, b = odd lanes.
        __m256 sw = _mm256_permute_ps(v, 0xB1);                                  // b a b a ...
        v = _mm256_fmadd_ps(v, neg1, sw);                                        // a + b | b − a·(−1)...
        // fmadd(v, ±1, sw): even lane a·1 + b = a + b; odd lane b·(−1) + a = a − b. Exact (±1 products).
        sw = _mm256_permute_ps(v, 0x4E);                                         // h = 2
        v = _mm256_fmadd_ps(v, neg2, sw);
        sw = _mm256_permute2f128_ps(v, v, 0x01);                                 // h = 4
        v = _mm256_fmadd_ps(v, neg4, sw);
        _mm256_storeu_ps(x + i, v);
    }
    for (int h = 8; h < p; h *= 2)
        for (int i = 0; i < p; i += 2 * h)
            for (int j = i; j < i + h; j += 8) {
                const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
                _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
                _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
            }
}

AVX2 static int hadamard_avx2(float *x, int n, int transpose) {
    int m;
    const int k = tsr_hadamard_factor(n, &m);
    if (k < 0) return -1;
    const int p = 1 << k;
    for (int a = 0; a < m; a++) butterflies_avx2(x + (size_t)a * p, p);
    int c = 0;
    if (m > 1) {
        const signed char *H = tsr_hadamard_matrix(m);
        __m256 t[HAD_MAX_M];
        for (; c + 8 <= p; c += 8) {
            for (int a = 0; a < m; a++) {
                __m256 s = _mm256_setzero_ps();
                for (int b = 0; b < m; b++) {
                    const int e = transpose ? H[b * m + a] : H[a * m + b];
                    const __m256 v = _mm256_loadu_ps(x + (size_t)b * p + c);
                    s = e > 0 ? _mm256_add_ps(s, v) : _mm256_sub_ps(s, v);
                }
                t[a] = s;
            }
            for (int a = 0; a < m; a++) _mm256_storeu_ps(x + (size_t)a * p + c, t[a]);
        }
        mix_ref(x, m, p, H, transpose, c, p);
    }
    const float scale = (float)(1.0 / sqrt((double)n));
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(scale)));
    for (; i < n; i++) x[i] *= scale;
    return 0;
}
#endif

// ---- NEON ----------------------------------------------------------------------------------------
#if defined(__aarch64__)
/// One row of p ≥ 4 values: h = 1, 2 inside each 4-float vector, then h ≥ 4 across vectors.
static void butterflies_neon(float *x, int p) {
    if (p < 4) { butterflies_ref(x, p); return; }
    for (int i = 0; i < p; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        // h = 1: (a0 a1 a2 a3) → (a0 + a1, a0 − a1, a2 + a3, a2 − a3)
        float32x4_t e = vtrn1q_f32(v, v), o = vtrn2q_f32(v, v);                 // a0 a0 a2 a2 | a1 a1 a3 a3
        float32x4_t s = vaddq_f32(e, o), d = vsubq_f32(e, o);
        v = vtrn1q_f32(s, d);                                                    // s0 d0 s2 d2
        // h = 2: (b0 b1 b2 b3) → (b0 + b2, b1 + b3, b0 − b2, b1 − b3)
        float32x2_t lo = vget_low_f32(v), hi = vget_high_f32(v);
        v = vcombine_f32(vadd_f32(lo, hi), vsub_f32(lo, hi));
        vst1q_f32(x + i, v);
    }
    for (int h = 4; h < p; h *= 2)
        for (int i = 0; i < p; i += 2 * h)
            for (int j = i; j < i + h; j += 4) {
                const float32x4_t a = vld1q_f32(x + j), b = vld1q_f32(x + j + h);
                vst1q_f32(x + j, vaddq_f32(a, b));
                vst1q_f32(x + j + h, vsubq_f32(a, b));
            }
}

static int hadamard_neon(float *x, int n, int transpose) {
    int m;
    const int k = tsr_hadamard_factor(n, &m);
    if (k < 0) return -1;
    const int p = 1 << k;
    for (int a = 0; a < m; a++) butterflies_neon(x + (size_t)a * p, p);
    int c = 0;
    if (m > 1) {
        const signed char *H = tsr_hadamard_matrix(m);
        float32x4_t t[HAD_MAX_M];
        for (; c + 4 <= p; c += 4) {
            for (int a = 0; a < m; a++) {
                float32x4_t s = vdupq_n_f32(0);
                for (int b = 0; b < m; b++) {
                    const int e = transpose ? H[b * m + a] : H[a * m + b];
                    const float32x4_t v = vld1q_f32(x + (size_t)b * p + c);
                    s = e > 0 ? vaddq_f32(s, v) : vsubq_f32(s, v);
                }
                t[a] = s;
            }
            for (int a = 0; a < m; a++) vst1q_f32(x + (size_t)a * p + c, t[a]);
        }
        mix_ref(x, m, p, H, transpose, c, p);
    }
    const float scale = (float)(1.0 / sqrt((double)n));
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), scale));
    for (; i < n; i++) x[i] *= scale;
    return 0;
}
#endif

int tsr_hadamard_f32(float *x, int n, int transpose) {
    switch (tsr_kernel_path(TSR_KERNEL_F32)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: return hadamard_avx2(x, n, transpose);
#elif defined(__aarch64__)
    case TSR_PATH_NEON: return hadamard_neon(x, n, transpose);
#endif
    default: return hadamard_ref(x, n, transpose);
    }
}
