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

// ---- row panels ------------------------------------------------------------------------------
// A full panel (KernelsQuant.h) keeps block b of its 8 rows in one run; the activation block is
// loaded once for the 8 rows, each row's block dot (I8_DOT, 4 exact int32 lanes) is folded with
// pairwise adds into two int32x4 whose lane i is row i (rows 0-3, 4-7): no per-row horizontal
// sum to a scalar; dx_b, the 8 rows' scales and offsets are applied with vector FMAs. B = 3 rows
// take their low bits from the run's first 64 bytes and bit 2 from its 32-byte high plane; B = 6
// rows q[0..15] and the low two bits of q[16..31] from the run's first 128 bytes, the rest of
// q[16..31] from its last 64 (16 bytes shared by rows i and i + 4: unpack6_panel).

/// The exact dots of one block of the 8 panel rows: lo = rows 0-3, hi = rows 4-7.
I8_INLINE void I8_NAME(panel_dot)(const uint8_t *pb, const int8_t *xb, const int bits, int32x4_t *lo, int32x4_t *hi) {
    const int bb = tsr_q_block_bytes(bits);
    const int8x16_t x0 = vld1q_s8(xb), x1 = vld1q_s8(xb + 16);
    int32x4_t d[8];
    if (bits == 3) // low bits of row i at pb + 8i, its high bits in the 32-byte plane at pb + 64
        for (int i = 0; i < 8; i++) d[i] = I8_DOT(to_signed(unpack3_panel(pb + 8 * i, pb + 64 + 8 * (i % 4), 2 * (1 - i / 4)), 3), x0, x1);
    else if (bits == 6) // row i's 16 bytes at pb + 16i, its q[16..31] >> 2 at pb + 128 + 32·(i % 4 / 2) + 16·(i % 2)
        for (int i = 0; i < 8; i++)
            d[i] = I8_DOT(to_signed(unpack6_panel(pb + 16 * i, pb + 128 + 32 * (i % 4 / 2) + 16 * (i % 2), 4 * (i / 4)), 6), x0, x1);
    else
        for (int i = 0; i < 8; i++) d[i] = I8_DOT(signed_codes(pb + (size_t)i * bb, bits), x0, x1);
    *lo = vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
    *hi = vpaddq_s32(vpaddq_s32(d[4], d[5]), vpaddq_s32(d[6], d[7]));
}

I8_INLINE void I8_NAME(qdot_panel)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int r0, int rowBegin,
                                   const int bits) {
    const int blocks = w->cols / 32, bb = tsr_q_block_bytes(bits);
    const uint8_t *panel = w->codes + (size_t)r0 * tsr_q_row_bytes(bits, w->cols);
    for (int b = 0; b < blocks; b++) {
        int32x4_t lo, hi;
        I8_NAME(panel_dot)(panel + (size_t)b * 8 * bb, xq + 32 * b, bits, &lo, &hi);
        if (bits == 8) { lo = vaddq_s32(lo, vdupq_n_s32(128 * bsums[b])); hi = vaddq_s32(hi, vdupq_n_s32(128 * bsums[b])); }
        int32_t d[8];
        vst1q_s32(d, lo);
        vst1q_s32(d + 4, hi);
        for (int i = 0; i < 8; i++) out[(size_t)(r0 + i - rowBegin) * blocks + b] = d[i];
    }
}

I8_INLINE void I8_NAME(gemv_i8_panel)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int r0,
                                      const int bits, const int NB) {
    const int groups = w->cols / w->group, nb = NB ? NB : w->group / 32, bb = tsr_q_block_bytes(bits);
    const uint8_t *panel = w->codes + (size_t)r0 * tsr_q_row_bytes(bits, w->cols);
    const uint16_t *sp = w->scales + (size_t)r0 * groups, *mp = w->offsets + (size_t)r0 * groups;
    float32x4_t acc0 = vdupq_n_f32(0), acc1 = vdupq_n_f32(0);
    for (int g = 0; g < groups; g++) {
        float32x4_t ga0 = vdupq_n_f32(0), ga1 = vdupq_n_f32(0);
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            int32x4_t lo, hi;
            I8_NAME(panel_dot)(panel + (size_t)b * 8 * bb, xq + 32 * b, bits, &lo, &hi);
            ga0 = vfmaq_n_f32(ga0, vcvtq_f32_s32(lo), dx[b]);
            ga1 = vfmaq_n_f32(ga1, vcvtq_f32_s32(hi), dx[b]);
        }
        float32x4_t s0 = load_h4(sp + 8 * g), s1 = load_h4(sp + 8 * g + 4);
        float32x4_t m0 = load_h4(mp + 8 * g), m1 = load_h4(mp + 8 * g + 4);
        if (bits == 8) { m0 = vfmaq_n_f32(m0, s0, 128.0f); m1 = vfmaq_n_f32(m1, s1, 128.0f); }
        acc0 = vfmaq_f32(vfmaq_n_f32(acc0, m0, xsums[g]), ga0, s0);
        acc1 = vfmaq_f32(vfmaq_n_f32(acc1, m1, xsums[g]), ga1, s1);
    }
    vst1q_f32(y + r0, acc0);
    vst1q_f32(y + r0 + 4, acc1);
}

// ---- integer part (exact) -------------------------------------------------------------------
I8_INLINE void I8_NAME(qdot_body)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin,
                                  int rowEnd, const int bits) {
    const int blocks = w->cols / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        const q_rowview v = q_row(w, r);
        for (int b = 0; b < blocks; b++) {
            int32x4_t d = I8_DOT(signed_codes_at(v, b, bits), vld1q_s8(xq + 32 * b), vld1q_s8(xq + 32 * b + 16));
            out[(size_t)(r - rowBegin) * blocks + b] = vaddvq_s32(d) + (bits == 8 ? 128 * bsums[b] : 0);
        }
    }
}

/// Whole panels through qdot_panel, every other row (tail, a panel cut by the range) qdot_body.
I8_INLINE void I8_NAME(qdot_bits)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin,
                                  int rowEnd, const int bits) {
#define PANEL(r) I8_NAME(qdot_panel)(w, xq, bsums, out, r, rowBegin, bits)
#define ROWS(a, e) I8_NAME(qdot_body)(w, xq, bsums, out + (size_t)((a) - rowBegin) * (w->cols / 32), a, e, bits)
    FOR_PANELS(w, rowBegin, rowEnd, PANEL, ROWS);
#undef PANEL
#undef ROWS
}

I8_ATTR void I8_NAME(tsr_qdot_i8)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd) {
#define CALL(B) I8_NAME(qdot_bits)(w, xq, bsums, out, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A8/A4 GEMV -----------------------------------------------------------------------------
/// NR consecutive rows from r0 share every activation load. NB > 0 fixes the blocks per group
/// at compile time (G = 32·NB) so that the group loop unrolls.
I8_INLINE void I8_NAME(gemv_i8_rows)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int r0,
                                     const int NR, const int bits, const int NB) {
    const int groups = w->cols / w->group, nb = NB ? NB : w->group / 32;
    q_rowview row[4];
    float32x4_t acc[4];
    for (int i = 0; i < NR; i++) { row[i] = q_row(w, r0 + i); acc[i] = vdupq_n_f32(0); }
    for (int g = 0; g < groups; g++) {
        float32x4_t ga[4];
        for (int i = 0; i < NR; i++) ga[i] = vdupq_n_f32(0);
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            int8x16_t x0 = vld1q_s8(xq + 32 * b), x1 = vld1q_s8(xq + 32 * b + 16);
            float32x4_t d = vdupq_n_f32(dx[b]);
            for (int i = 0; i < NR; i++)
                ga[i] = vfmaq_f32(ga[i], vcvtq_f32_s32(I8_DOT(signed_codes_at(row[i], b, bits), x0, x1)), d);
        }
        for (int i = 0; i < NR; i++) acc[i] = vfmaq_f32(acc[i], ga[i], vdupq_n_f32(h2f(row[i].s[g * row[i].gstride])));
    }
    for (int i = 0; i < NR; i++)
        y[r0 + i] = vaddvq_f32(acc[i]) + offset_term(row[i].m, row[i].s, row[i].gstride, xsums, groups, bits == 8);
}

I8_INLINE void I8_NAME(gemv_i8_plain)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin,
                                      int rowEnd, const int bits, const int NB) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) I8_NAME(gemv_i8_rows)(w, xq, dx, xsums, y, r, 4, bits, NB);
    for (; r < rowEnd; r++) I8_NAME(gemv_i8_rows)(w, xq, dx, xsums, y, r, 1, bits, NB);
}

I8_INLINE void I8_NAME(gemv_i8_nb)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin,
                                   int rowEnd, const int bits, const int NB) {
#define PANEL(r) I8_NAME(gemv_i8_panel)(w, xq, dx, xsums, y, r, bits, NB)
#define ROWS(a, e) I8_NAME(gemv_i8_plain)(w, xq, dx, xsums, y, a, e, bits, NB)
    FOR_PANELS(w, rowBegin, rowEnd, PANEL, ROWS);
#undef PANEL
#undef ROWS
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
    const int cols = w->cols, groups = cols / w->group, nb = w->group / 32, blocks = cols / 32;
    const q_rowview v = q_row(w, r);
    float32x4_t acc[4];
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0);
    for (int g = 0; g < groups; g++) {
        float32x4_t ga[4];
        for (int t = 0; t < NT; t++) ga[t] = vdupq_n_f32(0);
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            int8x16x2_t q = signed_codes_at(v, b, bits);
            for (int t = 0; t < NT; t++) {
                const int8_t *xb = Xq + (size_t)(t0 + t) * cols + 32 * b;
                int32x4_t d = I8_DOT(q, vld1q_s8(xb), vld1q_s8(xb + 16));
                ga[t] = vfmaq_f32(ga[t], vcvtq_f32_s32(d), vdupq_n_f32(dx[(size_t)(t0 + t) * blocks + b]));
            }
        }
        float32x4_t s = vdupq_n_f32(h2f(v.s[g * v.gstride]));
        for (int t = 0; t < NT; t++) acc[t] = vfmaq_f32(acc[t], ga[t], s);
    }
    for (int t = 0; t < NT; t++)
        Y[(size_t)(t0 + t) * ldy + r] =
            vaddvq_f32(acc[t]) + offset_term(v.m, v.s, v.gstride, xsums + (size_t)(t0 + t) * groups, groups, bits == 8);
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
