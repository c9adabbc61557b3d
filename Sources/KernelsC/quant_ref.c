// Group-quantized weights: packing, scalar references, and run-time dispatch to the SIMD paths
// (quant_avx2.c, quant_neon.c). The references read one code at a time through code_at() (rows located
// by q_row(), quant_internal.h, in the panel layout) and follow the
// formulas in KernelsQuant.h literally.
#include "quant_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// The references (and act_group_sums, which every path shares) round each product before adding
// it, as the formulas are written and as Swift does. clang's default (-ffp-contract=on) would
// fuse `s += a * b` into an FMA where the target has one (every AArch64 CPU; x86-64 builds this
// file without FMA), so arm64 sums would differ from x86-64's and Swift's in the last bit.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

int tsr_q_block_bytes(int bits) { return q_block_bytes(bits); }

size_t tsr_q_row_bytes(int bits, int cols) { return (size_t)(cols / 32) * (size_t)tsr_q_block_bytes(bits); }

int tsr_q_panel_rows(int bits) { return q_panel_rows(bits); }

size_t tsr_q_group_index(int bits, int rows, int groups, int r, int g) {
    int R = q_panel_rows(bits), full = R > 1 ? rows - rows % R : 0;
    if (r < full) return (size_t)(r - r % R) * groups + (size_t)g * R + (size_t)(r % R);
    return (size_t)r * groups + g;
}

void tsr_q_pack_groups(const uint16_t *src, int bits, int rows, int groups, uint16_t *dst) {
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) dst[tsr_q_group_index(bits, rows, groups, r, g)] = src[(size_t)r * groups + g];
}

void tsr_q_unpack_groups(const uint16_t *src, int bits, int rows, int groups, uint16_t *dst) {
    for (int r = 0; r < rows; r++)
        for (int g = 0; g < groups; g++) dst[(size_t)r * groups + g] = src[tsr_q_group_index(bits, rows, groups, r, g)];
}

/// A view of a bare codes buffer (no scales) for the layout functions.
static inline q_rowview codes_row(const uint8_t *codes, int bits, int rows, int cols, int r) {
    tsr_qweights w = {codes, NULL, NULL, rows, cols, bits, 32};
    return q_row(&w, r);
}

/// Code k of a row (the row's block b at v.p + b·v.bstride).
static inline int code_at(q_rowview v, int bits, int k) {
    int j = k & 31;
    const uint8_t *p = v.p + (size_t)(k >> 5) * v.bstride;
    switch (bits) {
    case 8: return p[j];
    case 4: return j < 16 ? (p[j] & 15) : (p[j - 16] >> 4);
    case 2: return (p[j & 7] >> (2 * (j >> 3))) & 3;
    case 3: {
        const uint8_t *h = v.h + (size_t)(k >> 5) * v.bstride;
        int hi = v.hs < 0 ? (h[j >> 3] >> (j & 7)) & 1 : (h[j & 7] >> q_hbit(v.hs, j >> 3)) & 1;
        return ((p[j & 7] >> (2 * (j >> 3))) & 3) | (hi << 2);
    }
    case 6: {
        const uint8_t *h = v.h + (size_t)(k >> 5) * v.bstride;
        if (v.hs >= 0) return j < 16 ? p[j] & 63 : (p[j - 16] >> 6) | (((h[j - 16] >> v.hs) & 15) << 2);
        int lo = j < 16 ? (p[j] & 15) : (p[j - 16] >> 4);
        return lo | (((h[j & 7] >> (2 * (j >> 3))) & 3) << 4);
    }
    default: return 0;
    }
}

/// Writes the cols codes q of one row into its blocks (which must be zero).
static void pack_row(const uint8_t *q, int bits, int cols, q_rowview v) {
    for (int k = 0; k < cols; k++) {
        int val = q[k], j = k & 31;
        uint8_t *p = (uint8_t *)v.p + (size_t)(k >> 5) * v.bstride;
        switch (bits) {
        case 8: p[j] = (uint8_t)val; break;
        case 4: p[j & 15] |= (uint8_t)((val & 15) << (j < 16 ? 0 : 4)); break;
        case 2: p[j & 7] |= (uint8_t)((val & 3) << (2 * (j >> 3))); break;
        case 3: {
            uint8_t *h = (uint8_t *)v.h + (size_t)(k >> 5) * v.bstride;
            p[j & 7] |= (uint8_t)((val & 3) << (2 * (j >> 3)));
            if (v.hs < 0) h[j >> 3] |= (uint8_t)(((val >> 2) & 1) << (j & 7));
            else h[j & 7] |= (uint8_t)(((val >> 2) & 1) << q_hbit(v.hs, j >> 3));
            break;
        }
        case 6: {
            uint8_t *h = (uint8_t *)v.h + (size_t)(k >> 5) * v.bstride;
            if (v.hs >= 0) { // a panel row
                if (j < 16) p[j] |= (uint8_t)val;
                else { p[j - 16] |= (uint8_t)((val & 3) << 6); h[j - 16] |= (uint8_t)((val >> 2) << v.hs); }
                break;
            }
            p[j & 15] |= (uint8_t)((val & 15) << (j < 16 ? 0 : 4));
            h[j & 7] |= (uint8_t)(((val >> 4) & 3) << (2 * (j >> 3)));
            break;
        }
        }
    }
}

void tsr_q_pack(const uint8_t *q, int bits, int rows, int cols, uint8_t *dst) {
    memset(dst, 0, (size_t)rows * tsr_q_row_bytes(bits, cols));
    for (int r = 0; r < rows; r++) pack_row(q + (size_t)r * cols, bits, cols, codes_row(dst, bits, rows, cols, r));
}

void tsr_q_unpack_row(const uint8_t *codes, int bits, int rows, int cols, int r, uint8_t *q) {
    q_rowview v = codes_row(codes, bits, rows, cols, r);
    for (int k = 0; k < cols; k++) q[k] = (uint8_t)code_at(v, bits, k);
}

static inline int canonical_code(const uint8_t *row, int bits, int k) {
    size_t bit = (size_t)k * bits;
    int v = row[bit >> 3] >> (bit & 7);
    if ((bit & 7) + bits > 8) v |= row[(bit >> 3) + 1] << (8 - (bit & 7));
    return v & ((1 << bits) - 1);
}

void tsr_q_from_canonical(const uint8_t *src, int bits, int rows, int cols, uint8_t *dst) {
    size_t crb = (size_t)cols * bits / 8;
    uint8_t *q = malloc((size_t)cols);
    memset(dst, 0, (size_t)rows * tsr_q_row_bytes(bits, cols));
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < cols; k++) q[k] = (uint8_t)canonical_code(src + (size_t)r * crb, bits, k);
        pack_row(q, bits, cols, codes_row(dst, bits, rows, cols, r));
    }
    free(q);
}

void tsr_q_to_canonical(const uint8_t *src, int bits, int rows, int cols, uint8_t *dst) {
    size_t crb = (size_t)cols * bits / 8;
    memset(dst, 0, (size_t)rows * crb);
    for (int r = 0; r < rows; r++) {
        uint8_t *out = dst + (size_t)r * crb;
        q_rowview v = codes_row(src, bits, rows, cols, r);
        for (int k = 0; k < cols; k++) {
            size_t bit = (size_t)k * bits;
            int val = code_at(v, bits, k);
            out[bit >> 3] |= (uint8_t)(val << (bit & 7));
            if ((bit & 7) + bits > 8) out[(bit >> 3) + 1] |= (uint8_t)(val >> (8 - (bit & 7)));
        }
    }
}

void tsr_q_dequantize_ref(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd) {
    int groups = w->cols / w->group;
    for (int r = rowBegin; r < rowEnd; r++) {
        q_rowview row = q_row(w, r);
        float *out = dst + (size_t)(r - rowBegin) * w->cols;
        for (int g = 0; g < groups; g++) {
            float s = tsr_f16_to_f32(row.s[g * row.gstride]);
            float m = tsr_f16_to_f32(row.m[g * row.gstride]);
            for (int i = g * w->group; i < (g + 1) * w->group; i++) out[i] = (float)code_at(row, w->bits, i) * s + m;
        }
    }
}

void tsr_group_sums_f32(const float *x, int n, int group, float *sums) {
    for (int g = 0; g < n / group; g++) {
        float s = 0;
        for (int i = g * group; i < (g + 1) * group; i++) s += x[i];
        sums[g] = s;
    }
}

/// Quantizes blocks [0, n/32) of x with the scale `scale` (> 0), or each block with its own
/// max|x|/levels (scale 0); the SIMD paths (quant_avx2.c, quant_neon.c) must give the same bytes.
static void quantize_blocks_ref(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums) {
    for (int b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int i = 32 * b; i < 32 * b + 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = scale > 0 ? scale : amax / (float)levels;
        float id = d != 0 ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int i = 32 * b; i < 32 * b + 32; i++) {
            float v = nearbyintf(x[i] * id); // ties to even, like _mm256_round_ps
            v = fminf(fmaxf(v, (float)-levels), (float)levels);
            xq[i] = (int8_t)v;
            sum += xq[i];
        }
        dx[b] = d;
        bsums[b] = sum;
    }
}

/// xsums[g] = Σ_{b∈g} dx[b]·bsums[b] in block order (shared by both paths: identical bits).
static void act_group_sums(const float *dx, const int32_t *bsums, int n, int group, float *xsums) {
    int nb = group / 32;
    for (int g = 0; g < n / group; g++) {
        float s = 0;
        for (int b = g * nb; b < (g + 1) * nb; b++) s += dx[b] * (float)bsums[b];
        xsums[g] = s;
    }
}

void tsr_quantize_act_ref(const float *x, int n, int group, int levels, int8_t *xq, float *dx, int32_t *bsums, float *xsums) {
    quantize_blocks_ref(x, n, levels, 0, xq, dx, bsums);
    act_group_sums(dx, bsums, n, group, xsums);
}

/// The per-token scale clip·max|x|/levels (0 for an all-zero row, which then quantizes to zeros
/// block by block). max is exact in any order, so every path shares this loop.
static float token_scale(const float *x, int n, int levels, float clip) {
    float amax = 0;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    return clip * amax / (float)levels;
}

void tsr_quantize_act_token_ref(const float *x, int n, int group, int levels, float clip, int8_t *xq, float *dx, int32_t *bsums, float *xsums) {
    quantize_blocks_ref(x, n, levels, token_scale(x, n, levels, clip), xq, dx, bsums);
    act_group_sums(dx, bsums, n, group, xsums);
}

void tsr_qdot_i8_ref(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd) {
    (void)bsums;
    int blocks = w->cols / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        q_rowview row = q_row(w, r);
        for (int b = 0; b < blocks; b++) {
            int32_t sum = 0;
            for (int i = 32 * b; i < 32 * b + 32; i++) sum += code_at(row, w->bits, i) * xq[i];
            out[(size_t)(r - rowBegin) * blocks + b] = sum;
        }
    }
}

void tsr_qgemv_f32_ref(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd) {
    (void)xsums;
    int groups = w->cols / w->group;
    for (int r = rowBegin; r < rowEnd; r++) {
        q_rowview row = q_row(w, r);
        float sum = 0;
        for (int g = 0; g < groups; g++) {
            float s = tsr_f16_to_f32(row.s[g * row.gstride]);
            float m = tsr_f16_to_f32(row.m[g * row.gstride]);
            for (int i = g * w->group; i < (g + 1) * w->group; i++) sum += ((float)code_at(row, w->bits, i) * s + m) * x[i];
        }
        y[r] = sum;
    }
}

void tsr_qgemv_i8_ref(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd) {
    (void)xsums;
    int groups = w->cols / w->group, nb = w->group / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        q_rowview row = q_row(w, r);
        float sum = 0;
        for (int g = 0; g < groups; g++) {
            float s = tsr_f16_to_f32(row.s[g * row.gstride]);
            float m = tsr_f16_to_f32(row.m[g * row.gstride]);
            for (int b = g * nb; b < (g + 1) * nb; b++) {
                int32_t dot = 0, xs = 0;
                for (int i = 32 * b; i < 32 * b + 32; i++) { dot += code_at(row, w->bits, i) * xq[i]; xs += xq[i]; }
                sum += dx[b] * (s * (float)dot + m * (float)xs);
            }
        }
        y[r] = sum;
    }
}

void tsr_qgemm_f32_ref(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd) {
    int groups = w->cols / w->group;
    for (int t = 0; t < T; t++)
        tsr_qgemv_f32_ref(w, X + (size_t)t * w->cols, xsums + (size_t)t * groups, Y + (size_t)t * ldy, rowBegin, rowEnd);
}

void tsr_qgemm_i8_ref(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                      float *Y, int ldy, int rowBegin, int rowEnd) {
    int groups = w->cols / w->group, blocks = w->cols / 32;
    for (int t = 0; t < T; t++)
        tsr_qgemv_i8_ref(w, Xq + (size_t)t * w->cols, dx + (size_t)t * blocks, xsums + (size_t)t * groups,
                         Y + (size_t)t * ldy, rowBegin, rowEnd);
}

// ---- dispatch ---------------------------------------------------------------------------------
// Each entry point runs the implementation tsr_kernel_path (cpu.c) selects for its family:
// x86-64: AVX2 + FMA when present, the A8/A4 kernels with AVX-512 VNNI where the CPU has it. AArch64: NEON always (baseline), the A8/A4 kernels
// (TSR_KERNEL_QUANT_I8) with the dot-product instruction when the CPU has it.
// tsr_force_portable(1) makes every path scalar.

void tsr_q_dequantize(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: tsr_q_dequantize_avx2(w, dst, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: tsr_q_dequantize_neon(w, dst, rowBegin, rowEnd); return;
#endif
    default: tsr_q_dequantize_ref(w, dst, rowBegin, rowEnd);
    }
}

static void quantize_blocks(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: tsr_quantize_blocks_avx2(x, n, levels, scale, xq, dx, bsums); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: tsr_quantize_blocks_neon(x, n, levels, scale, xq, dx, bsums); return;
#endif
    default: quantize_blocks_ref(x, n, levels, scale, xq, dx, bsums);
    }
}

void tsr_quantize_act(const float *x, int n, int group, int levels, int8_t *xq, float *dx, int32_t *bsums, float *xsums) {
    quantize_blocks(x, n, levels, 0, xq, dx, bsums);
    act_group_sums(dx, bsums, n, group, xsums);
}

void tsr_quantize_act_token(const float *x, int n, int group, int levels, float clip, int8_t *xq, float *dx, int32_t *bsums, float *xsums) {
    quantize_blocks(x, n, levels, token_scale(x, n, levels, clip), xq, dx, bsums);
    act_group_sums(dx, bsums, n, group, xsums);
}

void tsr_qdot_i8(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT_I8)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2_VNNI: tsr_qdot_i8_avx2vnni(w, xq, bsums, out, rowBegin, rowEnd); return;
    case TSR_PATH_AVX2: tsr_qdot_i8_avx2(w, xq, bsums, out, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON_DOT: tsr_qdot_i8_neondot(w, xq, bsums, out, rowBegin, rowEnd); return;
    case TSR_PATH_NEON: tsr_qdot_i8_neon(w, xq, bsums, out, rowBegin, rowEnd); return;
#endif
    default: tsr_qdot_i8_ref(w, xq, bsums, out, rowBegin, rowEnd);
    }
}

void tsr_qgemv_f32(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: tsr_qgemv_f32_avx2(w, x, xsums, y, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: tsr_qgemv_f32_neon(w, x, xsums, y, rowBegin, rowEnd); return;
#endif
    default: tsr_qgemv_f32_ref(w, x, xsums, y, rowBegin, rowEnd);
    }
}

void tsr_qgemv_i8(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT_I8)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2_VNNI: tsr_qgemv_i8_avx2vnni(w, xq, dx, xsums, y, rowBegin, rowEnd); return;
    case TSR_PATH_AVX2: tsr_qgemv_i8_avx2(w, xq, dx, xsums, y, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON_DOT: tsr_qgemv_i8_neondot(w, xq, dx, xsums, y, rowBegin, rowEnd); return;
    case TSR_PATH_NEON: tsr_qgemv_i8_neon(w, xq, dx, xsums, y, rowBegin, rowEnd); return;
#endif
    default: tsr_qgemv_i8_ref(w, xq, dx, xsums, y, rowBegin, rowEnd);
    }
}

void tsr_qgemm_f32(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2: tsr_qgemm_f32_avx2(w, T, X, xsums, Y, ldy, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON: tsr_qgemm_f32_neon(w, T, X, xsums, Y, ldy, rowBegin, rowEnd); return;
#endif
    default: tsr_qgemm_f32_ref(w, T, X, xsums, Y, ldy, rowBegin, rowEnd);
    }
}

void tsr_qgemm_i8(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                  float *Y, int ldy, int rowBegin, int rowEnd) {
    switch (tsr_kernel_path(TSR_KERNEL_QUANT_I8)) {
#if defined(__x86_64__)
    case TSR_PATH_AVX2_VNNI: tsr_qgemm_i8_avx2vnni(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd); return;
    case TSR_PATH_AVX2: tsr_qgemm_i8_avx2(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd); return;
#elif defined(__aarch64__)
    case TSR_PATH_NEON_DOT: tsr_qgemm_i8_neondot(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd); return;
    case TSR_PATH_NEON: tsr_qgemm_i8_neon(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd); return;
#endif
    default: tsr_qgemm_i8_ref(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd);
    }
}
