// Instruction-count and timing driver for the A8 GEMV and GEMM (tsr_qgemv_i8, tsr_qgemm_i8):
// packs random weights of one shape and runs N calls, so that `valgrind --tool=callgrind` can
// count the instructions of the kernel alone (deterministic; no wall clocks on a shared
// machine), and prints the wall time per weight of the N calls (for an idle machine).
//
//   bench/kernels/count.sh gemv|gemm           builds this with clang -O2 and prints Ir per weight (per token)
//   bench/kernels/speed.sh                     builds this with clang -O3 and prints ns per weight (GEMV)
//   kernel_count gemv BITS GROUP ROWS COLS 1 N one decode shape, N GEMVs
//   kernel_count gemm BITS GROUP ROWS COLS T N one prefill shape, N GEMMs of T tokens
#include "KernelsC.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    const int gemm = argc == 8 && !strcmp(argv[1], "gemm");
    if (argc != 8 || (!gemm && strcmp(argv[1], "gemv"))) {
        fprintf(stderr, "usage: kernel_count gemv|gemm BITS GROUP ROWS COLS T N\n");
        return 2;
    }
    int bits = atoi(argv[2]), group = atoi(argv[3]), rows = atoi(argv[4]), cols = atoi(argv[5]), T = atoi(argv[6]), n = atoi(argv[7]);
    if (!gemm && T != 1) { fprintf(stderr, "kernel_count: gemv takes T = 1\n"); return 2; }
    int groups = cols / group, blocks = cols / 32;
    uint8_t *q = malloc((size_t)rows * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) q[i] = (uint8_t)(rnd() % (1u << bits));
    uint8_t *codes = aligned_alloc(64, (tsr_q_row_bytes(bits, cols) * rows + 63) / 64 * 64);
    tsr_q_pack(q, bits, rows, cols, codes);
    uint16_t *sc = malloc(2 * (size_t)rows * groups), *of = malloc(2 * (size_t)rows * groups);
    for (int i = 0; i < rows * groups; i++) { sc[i] = tsr_f32_to_f16(0.01f + (float)(rnd() % 100) * 1e-4f); of[i] = tsr_f32_to_f16(-0.05f); }
    tsr_qweights w = {codes, sc, of, rows, cols, bits, group};
    float *x = malloc(sizeof(float) * cols), *dx = malloc(sizeof(float) * (size_t)T * blocks), *xs = malloc(sizeof(float) * (size_t)T * groups);
    float *y = malloc(sizeof(float) * (size_t)T * rows);
    int8_t *xq = aligned_alloc(64, ((size_t)T * cols + 63) / 64 * 64);
    int32_t *bs = malloc(sizeof(int32_t) * blocks);
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < cols; k++) x[k] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
        tsr_quantize_act(x, cols, group, 127, xq + (size_t)t * cols, dx + (size_t)t * blocks, bs, xs + (size_t)t * groups);
    }
    double check = 0;
    const double start = seconds();
    for (int it = 0; it < n; it++) {
        if (gemm) tsr_qgemm_i8(&w, T, xq, dx, xs, y, rows, 0, rows);
        else tsr_qgemv_i8(&w, xq, dx, xs, y, 0, rows);
        check += y[(size_t)(it % T) * rows + it % rows];
    }
    const double elapsed = seconds() - start;
    printf("%s B%d G%d %dx%d T%d x%d: path %s, checksum %.6g, %.4f ns per weight and token\n", argv[1], bits, group, rows, cols, T, n,
           tsr_path_name(tsr_kernel_path(TSR_KERNEL_QUANT_I8)), check, elapsed / n / ((double)rows * cols * T) * 1e9);
    return 0;
}
