// Private declarations shared by quant_ref.c (references, dispatch), quant_avx2.c and quant_neon.c.
#ifndef TESSERA_QUANT_INTERNAL_H
#define TESSERA_QUANT_INTERNAL_H
#include "KernelsC.h"

/// Rows per panel of the codes/scales layout (KernelsQuant.h): 8 for every width. (R stays a
/// function of the width so that a width without panels, R = 1, needs no other change.)
enum { TSR_Q_PANEL = 8 };
static inline int q_panel_rows(int bits) { (void)bits; return TSR_Q_PANEL; }

/// The bit of a B = 3 panel plane byte holding code vector s (0..3) of a row with base hs
/// (q_rowview): hs + 0, 1, 4, 5, i.e. bits 2 3 6 7 for rows 0-3 of the panel, 0 1 4 5 for 4-7.
static inline int q_hbit(int hs, int s) { return hs + (s & 1) + 4 * (s >> 1); }

/// Bytes of one 32-weight block of B-bit codes (0 for an unsupported width); tsr_q_block_bytes.
static inline int q_block_bytes(int bits) {
    switch (bits) {
    case 2: return 8;
    case 3: return 12;
    case 4: return 16;
    case 6: return 24;
    case 8: return 32;
    default: return 0;
    }
}

/// Rows in full panels (the rest, rows % R, is the plain-row tail); 0 when R = 1 (no panels).
static inline int q_full_rows(const tsr_qweights *w) {
    const int R = q_panel_rows(w->bits);
    return R > 1 ? w->rows - w->rows % R : 0;
}

/// Rows [rowBegin, rowEnd): whole panels through `panel`, every other row (tail rows, rows of a
/// panel cut by the range; every row when R = 1) through `rows`.
#define FOR_PANELS(w, rowBegin, rowEnd, panel, rows)                                                \
    do {                                                                                           \
        const int full_ = q_full_rows(w), R_ = q_panel_rows((w)->bits);                            \
        int r_ = (rowBegin);                                                                       \
        while (r_ < (rowEnd)) {                                                                    \
            if (R_ > 1 && r_ % R_ == 0 && r_ + R_ <= full_ && r_ + R_ <= (rowEnd)) { panel(r_); r_ += R_; } \
            else { int e_ = r_ + 1;                                                                \
                   while (e_ < (rowEnd) && !(R_ > 1 && e_ % R_ == 0 && e_ + R_ <= full_ && e_ + R_ <= (rowEnd))) e_++; \
                   rows(r_, e_); r_ = e_; }                                                        \
        }                                                                                          \
    } while (0)

/// Where one row's data sits: block b of its codes at p + b·bstride, group g's scale and
/// offset at s[g·gstride], m[g·gstride]. Every kernel that walks a single row reads it so.
/// B = 3: p + b·bstride holds the 8 bytes of the low two bits (the B = 2 block); bit 2 of the
/// codes sits at h + b·bstride: hs < 0 (a plain row) the uint32 whose bit k is bit 2 of q[k];
/// hs = 2 or 0 (a panel row, rows 0-3 or 4-7 of its panel) 8 bytes, bit q_hbit(hs, s) of byte j
/// is bit 2 of q[8s + j] (s < 4). B = 6: hs < 0 (a plain row) p + b·bstride holds the B = 4 block
/// of the low four bits, h = p + 16 the B = 2 block of bits 4-5; hs = 0 or 4 (a panel row, rows
/// 0-3 or 4-7 of its panel) p + b·bstride holds 16 bytes, byte j = q[j] | (q[16 + j] & 3) << 6,
/// and h + b·bstride 16 bytes whose bits hs ..< hs + 4 of byte j are q[16 + j] >> 2.
typedef struct {
    const uint8_t *p;
    size_t bstride;
    const uint8_t *h;
    int hs;
    const uint16_t *s, *m;
    size_t gstride;
} q_rowview;

static inline q_rowview q_row(const tsr_qweights *w, int r) {
    const int R = q_panel_rows(w->bits), groups = w->cols / w->group;
    const int bb = q_block_bytes(w->bits);
    const size_t rb = (size_t)(w->cols / 32) * (size_t)bb;
    q_rowview v;
    if (r < q_full_rows(w)) {
        int p0 = r - r % R, i = r % R;
        if (w->bits == 3) { // panel block: the 8 rows' low-bit blocks (8 bytes each), then the 32-byte high plane
            v.p = w->codes + (size_t)p0 * rb + (size_t)i * 8;
            v.h = w->codes + (size_t)p0 * rb + 64 + (size_t)(i % 4) * 8;
            v.hs = 2 * (1 - i / 4);
        } else if (w->bits == 6) { // panel block: the 8 rows' 16-byte parts, then 64 bytes of q[16..31] >> 2
            v.p = w->codes + (size_t)p0 * rb + (size_t)i * 16;
            v.h = w->codes + (size_t)p0 * rb + 128 + (size_t)(i % 4 / 2) * 32 + (size_t)(i % 2) * 16;
            v.hs = 4 * (i / 4);
        } else {
            v.p = w->codes + (size_t)p0 * rb + (size_t)i * bb;
            v.h = NULL;
            v.hs = -1;
        }
        v.bstride = (size_t)R * bb;
        size_t o = (size_t)p0 * groups + i;
        v.s = w->scales + o;
        v.m = w->offsets + o;
        v.gstride = (size_t)R;
    } else {
        v.p = w->codes + (size_t)r * rb;
        v.h = v.p + (w->bits == 6 ? 16 : 8);
        v.hs = -1;
        v.bstride = (size_t)bb;
        v.s = w->scales + (size_t)r * groups;
        v.m = w->offsets + (size_t)r * groups;
        v.gstride = 1;
    }
    return v;
}

#if defined(__x86_64__)
/// dx, xq and bsums of tsr_quantize_act (the dispatcher adds the group sums).
void tsr_quantize_blocks_avx2(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums);
void tsr_q_dequantize_avx2(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd);
void tsr_qdot_i8_avx2(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qgemv_f32_avx2(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemv_i8_avx2(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemm_f32_avx2(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qgemm_i8_avx2(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                       float *Y, int ldy, int rowBegin, int rowEnd);
// The same A8/A4 entry points with AVX-512 VNNI (quant_avx2_vnni.c).
void tsr_qdot_i8_avx2vnni(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qgemv_i8_avx2vnni(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemm_i8_avx2vnni(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                       float *Y, int ldy, int rowBegin, int rowEnd);
#elif defined(__aarch64__)
// NEON is baseline on AArch64. The A8/A4 kernels come twice: `_neondot` uses the ARMv8.2
// dot-product instruction (call only when tsr_kernel_path() selects TSR_PATH_NEON_DOT), `_neon`
// widens with vmull/vpadal and runs on any AArch64 CPU. Both give exact integer block dots.
void tsr_quantize_blocks_neon(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums);
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
