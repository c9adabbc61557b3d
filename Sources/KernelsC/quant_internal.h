// Private declarations shared by quant_ref.c (references, dispatch), quant_avx2.c and quant_neon.c.
#ifndef TESSERA_QUANT_INTERNAL_H
#define TESSERA_QUANT_INTERNAL_H
#include "KernelsC.h"

#if defined(__x86_64__)
/// dx, xq and bsums of tsr_quantize_act (the dispatcher adds the group sums).
void tsr_quantize_blocks_avx2(const float *x, int n, int levels, int8_t *xq, float *dx, int32_t *bsums);
void tsr_q_dequantize_avx2(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd);
void tsr_qdot_i8_avx2(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qgemv_f32_avx2(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemv_i8_avx2(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemm_f32_avx2(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qgemm_i8_avx2(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                       float *Y, int ldy, int rowBegin, int rowEnd);
#elif defined(__aarch64__)
// NEON is baseline on AArch64. The A8/A4 kernels come twice: `_neondot` uses the ARMv8.2
// dot-product instruction (call only when tsr_kernel_path() selects TSR_PATH_NEON_DOT), `_neon`
// widens with vmull/vpadal and runs on any AArch64 CPU. Both give exact integer block dots.
void tsr_quantize_blocks_neon(const float *x, int n, int levels, int8_t *xq, float *dx, int32_t *bsums);
void tsr_q_dequantize_neon(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd);
void tsr_qgemv_f32_neon(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemm_f32_neon(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qdot_i8_neon(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qdot_i8_neondot(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qgemv_i8_neon(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemv_i8_neondot(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemm_i8_neon(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                       float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qgemm_i8_neondot(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                          float *Y, int ldy, int rowBegin, int rowEnd);
#endif
#endif
