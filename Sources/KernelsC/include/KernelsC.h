// KernelsC: the C half of Tessera's kernels.
// Every SIMD path has a scalar reference beside it (same name with _ref) and a test comparing them.
// ISA selection happens in one place: tsr_kernel_path() picks each kernel family's implementation
// from tsr_cpu_features() at run time, and every dispatcher switches on its answer; nothing else
// branches on ISA.
#ifndef TESSERA_KERNELS_C_H
#define TESSERA_KERNELS_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- CPU features -------------------------------------------------------------------------
enum { TSR_CPU_AVX2_FMA = 1, TSR_CPU_F16C = 2, TSR_CPU_NEON = 4, TSR_CPU_NEON_DOT = 8,
       TSR_CPU_AVX512_VNNI = 16 /* AVX-512 F, BW, VL and VNNI, and GFNI, with the OS saving their state */ };
/// Bit set of TSR_CPU_* flags for this CPU.
int tsr_cpu_features(void);
/// Forces the portable paths (for tests and A/B benchmarks) when `on` is non-zero.
void tsr_force_portable(int on);
/// Clears the given TSR_CPU_* bits from tsr_cpu_features() until called again (0 restores
/// detection): e.g. TSR_CPU_NEON_DOT runs the plain-NEON A8/A4 kernels on a dotprod CPU.
void tsr_cpu_disable(int features);
/// The default thread count: physical cores of the fastest class (SMT twins once; efficiency
/// cores of a big.LITTLE or hybrid CPU left out; cpu.c says how). Falls back to /proc/cpuinfo's
/// physical cores, then to online CPUs.
int tsr_default_threads(void);
/// The same count read from a sysfs CPU directory laid out like /sys/devices/system/cpu
/// (cpuN/topology/thread_siblings_list, cpuN/online, cpuN/cpu_capacity,
/// cpuN/cpufreq/cpuinfo_max_freq); 0 when it lists no CPU. For tests.
int tsr_default_threads_sysfs(const char *dir);

// ---- dispatch: which implementation runs ----------------------------------------------------
/// Kernel families: the entry points of one family share one selection.
enum {
    TSR_KERNEL_F32 = 0,         // tsr_gemv_f32, tsr_dot_f32, tsr_axpy_f32, and the exp-based ops below
    TSR_KERNEL_F16_GEMV = 1,    // tsr_gemv_f16
    TSR_KERNEL_F16_CONVERT = 2, // tsr_f16_to_f32_array
    TSR_KERNEL_READ_BYTES = 3,  // tsr_read_bytes
    TSR_KERNEL_QUANT = 4,       // tsr_q_dequantize, tsr_quantize_act, tsr_qgemv_f32, tsr_qgemm_f32, tsr_kv8_*
    TSR_KERNEL_QUANT_I8 = 5,    // tsr_qdot_i8, tsr_qgemv_i8, tsr_qgemm_i8
    TSR_KERNEL_COUNT = 6
};
/// Implementations.
enum {
    TSR_PATH_REF = 0,      // the portable scalar code (the `_ref` twin where there is one)
    TSR_PATH_AVX2 = 1,     // x86-64 AVX2 + FMA (tsr_gemv_f16: AVX2 + FMA + F16C)
    TSR_PATH_F16C = 2,     // x86-64 F16C conversion
    TSR_PATH_NEON = 3,     // AArch64 Advanced SIMD
    TSR_PATH_NEON_DOT = 4, // AArch64 Advanced SIMD with the ARMv8.2 dot-product instructions
    TSR_PATH_AVX2_VNNI = 5 // x86-64 AVX2 + FMA with AVX-512 VNNI (vpdpbusd on 256-bit vectors): the A8/A4 kernels
};
/// The TSR_PATH_* the entry points of `kernel` (a TSR_KERNEL_*) run now: decided from
/// tsr_cpu_features(), so tsr_force_portable and tsr_cpu_disable apply. The dispatchers switch on
/// this very value, so it is the implementation that runs. -1 for an unknown kernel.
int tsr_kernel_path(int kernel);
/// "ref", "avx2", "f16c", "neon", "neondot", "avx2vnni" for the TSR_PATH_* values, "invalid" for anything else.
const char *tsr_path_name(int path);

// ---- thread pool --------------------------------------------------------------------------
/// A persistent pool: workers spin briefly, then sleep on a condition variable.
typedef struct tsr_pool tsr_pool;
/// Work callback: `index` in [0, count) is the chunk to compute (count = the pool's threads);
/// each chunk runs exactly once, on whichever thread claims it first (the caller included),
/// so a callback must not wait for another chunk.
typedef void (*tsr_task_fn)(void *context, int index, int count);
/// Creates a pool with `threads` workers in total (the calling thread counts as one).
/// `numa` non-zero pins worker i to CPU i and prefers node-local memory when libnuma finds
/// more than one node (a no-op on one-node machines).
tsr_pool *tsr_pool_create(int threads, int numa);
void tsr_pool_destroy(tsr_pool *pool);
int tsr_pool_threads(const tsr_pool *pool);
/// Runs fn(context, i, n) for every chunk i in [0, n) and returns when all have finished. The
/// caller runs the chunks no awake worker has claimed, so a descheduled worker delays nothing.
/// A caller that had to wait a scheduler time slice for a claimed chunk twice within a few runs,
/// or whose workers took no chunk in half of a window of runs (another process on a worker's
/// core), runs every chunk itself for 10 ms, doubling up to 200 ms while that repeats.
void tsr_pool_run(tsr_pool *pool, tsr_task_fn fn, void *context);
/// Runs with workers so far, how many of them the caller ran alone (after stalls), and stalls.
void tsr_pool_stats(const tsr_pool *pool, long long *runs, long long *soloRuns, long long *stalls);

// ---- exp-based row operations (exp_f32.c; family TSR_KERNEL_F32) ------------------------------
// exp is Cephes' single-precision algorithm (≤ 2 ulp from float64 exp; 0 below −87.34, +inf
// above 88.72) on every path: the SIMD paths give the `_ref` twin's bits for exp itself.
/// y[i] = exp(x[i]).
void tsr_exp_f32(const float *x, float *y, int n);
void tsr_exp_f32_ref(const float *x, float *y, int n);
/// max over x[0..<n] (−inf for n = 0).
float tsr_max_f32(const float *x, int n);
/// x[i] = exp(x[i] − shift) in place; returns Σ x[i].
float tsr_exp_sub_sum_f32(float *x, int n, float shift);
/// x[i] *= a.
void tsr_scale_f32(float *x, int n, float a);
/// In-place softmax of one row.
void tsr_softmax_f32(float *x, int n);
void tsr_softmax_f32_ref(float *x, int n);
/// out[i] = silu(gate[i])·up[i], silu(g) = g / (1 + exp(−g)); out may be gate.
void tsr_swiglu_f32(const float *gate, const float *up, float *out, int n);
void tsr_swiglu_f32_ref(const float *gate, const float *up, float *out, int n);

// ---- Hadamard transforms (hadamard.c; family TSR_KERNEL_F32) ---------------------------------
/// n = m·2^k with m ∈ {1, 12, 20, 28, 36} (the odd part of n picks m): returns k and sets *m
/// (when m is not NULL); −1 when n has no such form (e.g. 9·2^k needs k ≥ 2).
int tsr_hadamard_factor(int n, int *m);
/// The m×m ±1 matrix of H_m (row-major, H·Hᵀ = m·I) for m = 12, 20, 28, 36; NULL otherwise.
const signed char *tsr_hadamard_matrix(int m);
/// In place x := (H_m ⊗ H_{2^k})·x / √n, or its transpose (the inverse) when `transpose` ≠ 0.
/// Returns 0, or −1 (x untouched) when n has no supported form. Every path gives the same bits.
int tsr_hadamard_f32(float *x, int n, int transpose);
int tsr_hadamard_f32_ref(float *x, int n, int transpose);

// ---- 8-bit KV cache (kv_cache.c; family TSR_KERNEL_QUANT) -----------------------------------
// A cached row (one position's keys or values) holds int8 codes c and one fp32 scale per block
// of 32 values, as tsr_quantize_act writes them with levels 127: value = d_b·c (d_b = the block's
// max|x| / 127), like llama.cpp's q8_0 cache type. The functions below read n rows of one head,
// D values each (D % 32 == 0): row p's codes at c + p·cstride, its D/32 scales at d + p·dstride.
/// scores[p] = alpha · Σ_b d_b · Σ_{i∈b} c_i·q[i]  (the attention logits K·q/√D of a query q).
void tsr_kv8_scores(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                    const float *q, float alpha, float *scores);
void tsr_kv8_scores_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D,
                        const float *q, float alpha, float *scores);
/// out[i] = Σ_p w[p]·d_{p,i/32}·c_{p,i}, i < D (out is overwritten: the attention output Vᵀ·w).
void tsr_kv8_mix(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, const float *w, float *out);
void tsr_kv8_mix_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, const float *w, float *out);
/// out[p·D + i] = d_{p,i/32}·c_{p,i} (the rows as fp32, for the prefill's sgemm). Every path gives
/// the reference's bits.
void tsr_kv8_dequantize(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out);
void tsr_kv8_dequantize_ref(const int8_t *c, size_t cstride, const float *d, size_t dstride, int n, int D, float *out);
// ---- fp16 ----------------------------------------------------------------------------------
float tsr_f16_to_f32(uint16_t h);
uint16_t tsr_f32_to_f16(float f);
void tsr_f16_to_f32_array(const uint16_t *src, float *dst, size_t n);

// ---- fp32 GEMV: y[r] = sum_k W[r*cols + k] * x[k] for r in [rowBegin, rowEnd) ---------------
void tsr_gemv_f32(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd);
void tsr_gemv_f32_ref(const float *W, const float *x, float *y, int cols, int rowBegin, int rowEnd);

// ---- fp16-weight GEMV: y[r] = sum_k f32(W[r*cols + k]) * x[k], W as IEEE binary16 bits --------
void tsr_gemv_f16(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd);
void tsr_gemv_f16_ref(const uint16_t *W, const float *x, float *y, int cols, int rowBegin, int rowEnd);

/// Dot product of n floats.
float tsr_dot_f32(const float *a, const float *b, int n);
/// y += a * x over n floats.
void tsr_axpy_f32(float a, const float *x, float *y, int n);

/// Reads `bytes` from p with the widest loads available and returns a checksum of them (the
/// memory-bandwidth probe).
uint64_t tsr_read_bytes(const void *p, size_t bytes);
/// The scalar reference: the wrapping sum of the 64-bit little-endian words plus the trailing bytes.
uint64_t tsr_read_bytes_ref(const void *p, size_t bytes);

#ifdef __cplusplus
}
#endif

// Group-quantized low-bit weights (layout, GEMV, GEMM).
#include "KernelsQuant.h"
#endif
