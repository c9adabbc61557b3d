// The A8/A4 kernels (tsr_qdot_i8, tsr_qgemv_i8, tsr_qgemm_i8) with AVX-512 VNNI: quant_avx2.c
// compiled once more with TSR_AVX2_VNNI (see its header). Reached only through the dispatchers in
// quant_ref.c when tsr_kernel_path(TSR_KERNEL_QUANT_I8) selected TSR_PATH_AVX2_VNNI.
#define TSR_AVX2_VNNI 1
#include "quant_avx2.c"
