// Template of the NEON A8/A4 kernels, included twice by quant_neon.c (no include guard):
//   I8_SUFFIX  name suffix of the exported functions (_neon, _neondot)
//   I8_ATTR    function attribute of every function here (the dotprod target for _neondot)
//   I8_DOT     the block dot: I8_DOT(int8x16x2_t q, int8x16_t x0, int8x16_t x1) → int32x4_t
// Each block's 4 int32 lanes are exact; for B = 8 they sum Σ(q − 128)·x and the 128·Σx part
// comes from bsums (tsr_qdot_i8) or from the offset fold m + 128·s (GEMV, GEMM).
#if defined(__aarch64__) && defined(I8_SUFFIX) && defined(I8_DOT)

#define I8_CAT2(a, b) a##b
#define I8_CAT(a, b) I8_CAT2(a, b)
#define I8_NAME(n) I8_CAT(n, I8_SUFFIX)
#define I8_INLINE static inline __attribute__((always_inline)) I8_ATTR

// ---- integer part (exact) -------------------------------------------------------------------
I8_INLINE void I8_NAME(qdot_body)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin,
                                  int rowEnd, const int bits) {
    const int blocks = w->cols / 32, bb = tsr_q_block_bytes(bits);
    const size_t rb = tsr_q_row_bytes(bits, w->cols);
    for (int r = rowBegin; r < rowEnd; r++) {
        const uint8_t *row = w->codes + (size_t)r * rb;
        for (int b = 0; b < blocks; b++) {
            int32x4_t d = I8_DOT(signed_codes(row + (size_t)b * bb, bits), vld1q_s8(xq + 32 * b), vld1q_s8(xq + 32 * b + 16));
            out[(size_t)(r - rowBegin) * blocks + b] = vaddvq_s32(d) + (bits == 8 ? 128 * bsums[b] : 0);
        }
    }
}

I8_ATTR void I8_NAME(tsr_qdot_i8)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd) {
#define CALL(B) I8_NAME(qdot_body)(w, xq, bsums, out, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A8/A4 GEMV -----------------------------------------------------------------------------
/// NR consecutive rows from r0 share every activation load. NB > 0 fixes the blocks per group
/// at compile time (G = 32·NB) so that the group loop unrolls.
I8_INLINE void I8_NAME(gemv_i8_rows)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int r0,
                                     const int NR, const int bits, const int NB) {
    const int groups = w->cols / w->group, nb = NB ? NB : w->group / 32, bb = tsr_q_block_bytes(bits);
    const size_t rb = tsr_q_row_bytes(bits, w->cols);
    const uint8_t *row[4];
    float32x4_t acc[4];
    for (int i = 0; i < NR; i++) { row[i] = w->codes + (size_t)(r0 + i) * rb; acc[i] = vdupq_n_f32(0); }
    for (int g = 0; g < groups; g++) {
        const uint16_t *sg = w->scales + (size_t)r0 * groups + g;
        float32x4_t ga[4];
        for (int i = 0; i < NR; i++) ga[i] = vdupq_n_f32(0);
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            int8x16_t x0 = vld1q_s8(xq + 32 * b), x1 = vld1q_s8(xq + 32 * b + 16);
            float32x4_t d = vdupq_n_f32(dx[b]);
            for (int i = 0; i < NR; i++)
                ga[i] = vfmaq_f32(ga[i], vcvtq_f32_s32(I8_DOT(signed_codes(row[i] + (size_t)b * bb, bits), x0, x1)), d);
        }
        for (int i = 0; i < NR; i++) acc[i] = vfmaq_f32(acc[i], ga[i], vdupq_n_f32(h2f(sg[(size_t)i * groups])));
    }
    for (int i = 0; i < NR; i++) {
        size_t o = (size_t)(r0 + i) * groups;
        y[r0 + i] = vaddvq_f32(acc[i]) + offset_term(w->offsets + o, w->scales + o, xsums, groups, bits == 8);
    }
}

I8_INLINE void I8_NAME(gemv_i8_nb)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin,
                                   int rowEnd, const int bits, const int NB) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) I8_NAME(gemv_i8_rows)(w, xq, dx, xsums, y, r, 4, bits, NB);
    for (; r < rowEnd; r++) I8_NAME(gemv_i8_rows)(w, xq, dx, xsums, y, r, 1, bits, NB);
}

I8_INLINE void I8_NAME(gemv_i8_body)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y,
                                     int rowBegin, int rowEnd, const int bits) {
    switch (w->group) {
    case 32: I8_NAME(gemv_i8_nb)(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 1); break;
    case 64: I8_NAME(gemv_i8_nb)(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 2); break;
    case 128: I8_NAME(gemv_i8_nb)(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 4); break;
    default: I8_NAME(gemv_i8_nb)(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 0); break;
    }
}

I8_ATTR void I8_NAME(tsr_qgemv_i8)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin,
                                   int rowEnd) {
#define CALL(B) I8_NAME(gemv_i8_body)(w, xq, dx, xsums, y, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A8/A4 GEMM: one row × NT tokens per weight unpack ----------------------------------------
I8_INLINE void I8_NAME(gemm_i8_tile)(const tsr_qweights *w, const int8_t *Xq, const float *dx, const float *xsums, float *Y, int ldy,
                                     int r, int t0, const int NT, const int bits) {
    const int cols = w->cols, groups = cols / w->group, nb = w->group / 32, blocks = cols / 32, bb = tsr_q_block_bytes(bits);
    const uint8_t *row = w->codes + (size_t)r * tsr_q_row_bytes(bits, cols);
    float32x4_t acc[4];
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0);
    for (int g = 0; g < groups; g++) {
        float32x4_t ga[4];
        for (int t = 0; t < NT; t++) ga[t] = vdupq_n_f32(0);
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            int8x16x2_t q = signed_codes(row + (size_t)b * bb, bits);
            for (int t = 0; t < NT; t++) {
                const int8_t *xb = Xq + (size_t)(t0 + t) * cols + 32 * b;
                int32x4_t d = I8_DOT(q, vld1q_s8(xb), vld1q_s8(xb + 16));
                ga[t] = vfmaq_f32(ga[t], vcvtq_f32_s32(d), vdupq_n_f32(dx[(size_t)(t0 + t) * blocks + b]));
            }
        }
        float32x4_t s = vdupq_n_f32(h2f(w->scales[(size_t)r * groups + g]));
        for (int t = 0; t < NT; t++) acc[t] = vfmaq_f32(acc[t], ga[t], s);
    }
    size_t o = (size_t)r * groups;
    for (int t = 0; t < NT; t++)
        Y[(size_t)(t0 + t) * ldy + r] =
            vaddvq_f32(acc[t]) + offset_term(w->offsets + o, w->scales + o, xsums + (size_t)(t0 + t) * groups, groups, bits == 8);
}

I8_INLINE void I8_NAME(gemm_i8_body)(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums, float *Y,
                                     int ldy, int rowBegin, int rowEnd, const int bits) {
    for (int p = rowBegin; p < rowEnd; p += PANEL_ROWS) {
        int pe = p + PANEL_ROWS < rowEnd ? p + PANEL_ROWS : rowEnd;
        int t0 = 0;
        for (; t0 + 4 <= T; t0 += 4)
            for (int r = p; r < pe; r++) I8_NAME(gemm_i8_tile)(w, Xq, dx, xsums, Y, ldy, r, t0, 4, bits);
        for (; t0 < T; t0++)
            for (int r = p; r < pe; r++) I8_NAME(gemm_i8_tile)(w, Xq, dx, xsums, Y, ldy, r, t0, 1, bits);
    }
}

I8_ATTR void I8_NAME(tsr_qgemm_i8)(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums, float *Y,
                                   int ldy, int rowBegin, int rowEnd) {
#define CALL(B) I8_NAME(gemm_i8_body)(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

#undef I8_INLINE
#undef I8_NAME
#undef I8_CAT
#undef I8_CAT2
#endif
