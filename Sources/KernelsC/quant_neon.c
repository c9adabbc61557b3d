// ARM NEON (AArch64) paths for group-quantized weights; scalar twins live in quant_ref.c.
// NEON (Advanced SIMD) and fp16<->fp32 conversion are baseline on AArch64, so everything here
// but the dot-product variants compiles without extra flags. The ARMv8.2 dot-product
// instruction (SDOT) is used only inside functions carrying a target attribute (or when the
// whole build already has __ARM_FEATURE_DOTPROD), and only reached when tsr_kernel_path()
// selected TSR_PATH_NEON_DOT (the CPU reports TSR_CPU_NEON_DOT); the plain-NEON variants widen
// with vmull/vmlal + vpadal instead.
//
// Building blocks:
//   unpack(p, bits)   32 codes of one block → two uint8x16_t (q[0..15], q[16..31]). One shift
//                     and one mask make 16 codes: B4 `b & 15` / `b >> 4`; B2 a per-lane shift
//                     (0/−2 and −4/−6 on the 8 code bytes duplicated) then `& 3`; B3 adds bit 2
//                     from the bit plane with a byte table lookup and a bit test (a plain row),
//                     or with a per-lane shift and a mask of the panel's high plane
//                     (unpack3_panel; unpack_at picks the form from the row view); B6 a plain
//                     row = B4 of the block's first 16 bytes | B2 of its last 8 << 4, a panel row
//                     (unpack6_panel) q[0..15] = its 16 bytes & 63, q[16..31] = their bits 6-7
//                     with the nibble of the high-bit bytes inserted above (vsli).
//   signed codes      the dot instructions are int8 × int8: codes ≤ 63 are already valid int8;
//                     8-bit codes are used as q − 128 (xor 0x80) and the missing 128·Σx comes
//                     back from the activation sums (folded into the offset: m + 128·s), as in
//                     quant_avx2.c.
//   dot32_sdot        two SDOTs: 4 int32 partial sums of one block's 32 products (exact).
//   dot32_mull        vmull_s8 + vmlal_s8 pair products in int16 (|pair| ≤ 2·128·127 = 32512
//                     for xq in [−127, 127]; ≤ 2·63·127 = 16002 for B = 6; no overflow), vpadal widens to int32 (exact).
//   A8/A4 blocks      each block's int32 sums → fp32, scaled by the block's dx_b (one FMA per
//                     block and row); the group scale s_g multiplies the group's fp32 sum once.
#if defined(__aarch64__)
#include "quant_internal.h"
#include <arm_neon.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

#if defined(__ARM_FEATURE_DOTPROD)
#define DOTPROD_ATTR
#elif defined(__clang__)
#define DOTPROD_ATTR __attribute__((target("dotprod")))
#else // GCC's arm_neon.h puts vdotq_s32 under arch=armv8.2-a+dotprod; "+dotprod" alone mismatches
#define DOTPROD_ATTR __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

INLINE float32x4_t load_h4(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

INLINE float h2f(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

static const int8_t kShiftLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, -2, -2, -2, -2, -2, -2, -2, -2};
static const int8_t kShiftHi[16] = {-4, -4, -4, -4, -4, -4, -4, -4, -6, -6, -6, -6, -6, -6, -6, -6};
static const uint8_t kPlaneLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
static const uint8_t kPlaneHi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
static const uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};

INLINE uint8x16x2_t unpack4(const uint8_t *p) {
    uint8x16x2_t q;
    uint8x16_t b = vld1q_u8(p);
    q.val[0] = vandq_u8(b, vdupq_n_u8(15));
    q.val[1] = vshrq_n_u8(b, 4);
    return q;
}

/// B2 and the two low bits of B3: q[8i + j] = (p[j] >> 2i) & 3.
INLINE uint8x16x2_t unpack2(const uint8_t *p) {
    uint8x16x2_t q;
    uint8x8_t b = vld1_u8(p);
    uint8x16_t d = vcombine_u8(b, b);
    q.val[0] = vandq_u8(vshlq_u8(d, vld1q_s8(kShiftLo)), vdupq_n_u8(3));
    q.val[1] = vandq_u8(vshlq_u8(d, vld1q_s8(kShiftHi)), vdupq_n_u8(3));
    return q;
}

INLINE uint8x16x2_t unpack(const uint8_t *p, const int bits) {
    uint8x16x2_t q;
    if (bits == 8) {
        q.val[0] = vld1q_u8(p);
        q.val[1] = vld1q_u8(p + 16);
        return q;
    }
    if (bits == 4) return unpack4(p);
    if (bits == 6) { // the B = 4 block of the low nibbles, the B = 2 block of bits 4-5 at p + 16
        q = unpack4(p);
        uint8x16x2_t h = unpack2(p + 16);
        q.val[0] = vorrq_u8(q.val[0], vshlq_n_u8(h.val[0], 4));
        q.val[1] = vorrq_u8(q.val[1], vshlq_n_u8(h.val[1], 4));
        return q;
    }
    q = unpack2(p);
    if (bits == 2) return q;
    // Bit 2 of q[k] is bit k % 8 of plane byte k / 8 (plane = the uint32 at p + 8).
    uint32_t hi;
    memcpy(&hi, p + 8, 4);
    uint8x16_t plane = vreinterpretq_u8_u32(vdupq_n_u32(hi)), bit = vld1q_u8(kBit), four = vdupq_n_u8(4);
    q.val[0] = vorrq_u8(q.val[0], vandq_u8(vtstq_u8(vqtbl1q_u8(plane, vld1q_u8(kPlaneLo)), bit), four));
    q.val[1] = vorrq_u8(q.val[1], vandq_u8(vtstq_u8(vqtbl1q_u8(plane, vld1q_u8(kPlaneHi)), bit), four));
    return q;
}

static const int8_t kPanelHi[16] = {0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1}; // code vectors 0, 1 (2, 3: − 4)

/// A B = 3 block of a panel row: the low bits at p (a B = 2 block), bit 2 of q[8s + j] at bit
/// q_hbit(hs, s) of h[j] (the panel's high plane, KernelsQuant.h): one shift and one mask per 16 codes.
INLINE uint8x16x2_t unpack3_panel(const uint8_t *p, const uint8_t *h, int hs) {
    uint8x16x2_t q = unpack2(p);
    uint8x8_t hb = vld1_u8(h);
    uint8x16_t d = vcombine_u8(hb, hb), one = vdupq_n_u8(1);
    int8x16_t sh = vsubq_s8(vld1q_s8(kPanelHi), vdupq_n_s8((int8_t)hs));
    q.val[0] = vorrq_u8(q.val[0], vshlq_n_u8(vandq_u8(vshlq_u8(d, sh), one), 2));
    q.val[1] = vorrq_u8(q.val[1], vshlq_n_u8(vandq_u8(vshlq_u8(d, vsubq_s8(sh, vdupq_n_s8(4))), one), 2));
    return q;
}

/// A B = 6 block of a panel row (KernelsQuant.h): byte j at p = q[j] | (q[16 + j] & 3) << 6, bits
/// hs ..< hs + 4 of h[j] = q[16 + j] >> 2 (hs = 0 or 4): one mask, two shifts and one insert.
INLINE uint8x16x2_t unpack6_panel(const uint8_t *p, const uint8_t *h, int hs) {
    uint8x16x2_t q;
    uint8x16_t a = vld1q_u8(p), hb = vld1q_u8(h);
    uint8x16_t nib = hs ? vshrq_n_u8(hb, 4) : vandq_u8(hb, vdupq_n_u8(15));
    q.val[0] = vandq_u8(a, vdupq_n_u8(63));
    q.val[1] = vsliq_n_u8(vshrq_n_u8(a, 6), nib, 2);
    return q;
}

/// Block b of a row (q_row): unpack(), or unpack3_panel / unpack6_panel for a B = 3 / B = 6 panel row.
INLINE uint8x16x2_t unpack_at(q_rowview v, int b, const int bits) {
    if (bits == 3 && v.hs >= 0) return unpack3_panel(v.p + (size_t)b * v.bstride, v.h + (size_t)b * v.bstride, v.hs);
    if (bits == 6 && v.hs >= 0) return unpack6_panel(v.p + (size_t)b * v.bstride, v.h + (size_t)b * v.bstride, v.hs);
    return unpack(v.p + (size_t)b * v.bstride, bits);
}

INLINE int8x16x2_t to_signed(uint8x16x2_t u, const int bits) {
    if (bits == 8) {
        u.val[0] = veorq_u8(u.val[0], vdupq_n_u8(0x80));
        u.val[1] = veorq_u8(u.val[1], vdupq_n_u8(0x80));
    }
    int8x16x2_t s;
    s.val[0] = vreinterpretq_s8_u8(u.val[0]);
    s.val[1] = vreinterpretq_s8_u8(u.val[1]);
    return s;
}

/// The codes of one block as int8 for the dot instructions (q − 128 for B = 8).
INLINE int8x16x2_t signed_codes(const uint8_t *p, const int bits) { return to_signed(unpack(p, bits), bits); }
INLINE int8x16x2_t signed_codes_at(q_rowview v, int b, const int bits) { return to_signed(unpack_at(v, b, bits), bits); }

/// The 4 fp32 vectors of 16 unpacked codes.
INLINE void to_float16(uint8x16_t q, float32x4_t f[4]) {
    uint16x8_t a = vmovl_u8(vget_low_u8(q)), b = vmovl_high_u8(q);
    f[0] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(a)));
    f[1] = vcvtq_f32_u32(vmovl_high_u16(a));
    f[2] = vcvtq_f32_u32(vmovl_u16(vget_low_u16(b)));
    f[3] = vcvtq_f32_u32(vmovl_high_u16(b));
}

/// The 8 fp32 vectors q[4i..4i+3] of a block, i = 0..7.
INLINE void to_float(uint8x16x2_t q, float32x4_t f[8]) {
    to_float16(q.val[0], f);
    to_float16(q.val[1], f + 4);
}

/// Σ_g m'_g · sums[g] with m' = m, or m + 128·s when fold128 (8-bit codes used as q − 128);
/// group g's values at m[g·gs], s[g·gs]. The same operations for every gs (a panel row gives the
/// bits of a plain row).
INLINE float32x4_t load_h4_strided(const uint16_t *p, size_t gs) {
    if (gs == 1) return load_h4(p);
    const uint16_t v[4] = {p[0], p[gs], p[2 * gs], p[3 * gs]};
    return load_h4(v);
}

INLINE float offset_term(const uint16_t *m, const uint16_t *s, size_t gs, const float *sums, int groups, const int fold128) {
    float32x4_t a = vdupq_n_f32(0);
    int g = 0;
    for (; g + 4 <= groups; g += 4) {
        float32x4_t mv = load_h4_strided(m + g * gs, gs);
        if (fold128) mv = vfmaq_f32(mv, load_h4_strided(s + g * gs, gs), vdupq_n_f32(128.0f));
        a = vfmaq_f32(a, mv, vld1q_f32(sums + g));
    }
    float r = vaddvq_f32(a);
    for (; g < groups; g++) {
        float mv = h2f(m[g * gs]);
        if (fold128) mv += 128.0f * h2f(s[g * gs]);
        r += mv * sums[g];
    }
    return r;
}

#define BY_BITS(call, bitsExpr) \
    switch (bitsExpr) { case 2: call(2); break; case 3: call(3); break; case 4: call(4); break; case 6: call(6); break; case 8: call(8); break; }

// ---- activation quantizer -------------------------------------------------------------------
// Same operations as quantize_blocks_ref, lane by lane: max with fmaxf semantics (vmaxnm: a
// NaN loses to a number), one division, rint with ties to even (vrndn), clamp with maxnm then
// minnm (a NaN product becomes −levels, as fmaxf/fminf make it). Identical bytes.
void tsr_quantize_blocks_neon(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums) {
    const float32x4_t hiv = vdupq_n_f32((float)levels), lov = vdupq_n_f32((float)-levels);
    for (int b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float32x4_t f[8], mx = vdupq_n_f32(0);
        for (int j = 0; j < 8; j++) {
            f[j] = vld1q_f32(xb + 4 * j);
            mx = vmaxnmq_f32(mx, vabsq_f32(f[j]));
        }
        float d = scale > 0 ? scale : vmaxnmvq_f32(mx) / (float)levels;
        float id = d != 0 ? 1.0f / d : 0.0f;
        const float32x4_t idv = vdupq_n_f32(id);
        int32x4_t v[8], sum = vdupq_n_s32(0);
        for (int j = 0; j < 8; j++) {
            float32x4_t r = vrndnq_f32(vmulq_f32(f[j], idv));
            v[j] = vcvtq_s32_f32(vminnmq_f32(vmaxnmq_f32(r, lov), hiv));
            sum = vaddq_s32(sum, v[j]);
        }
        for (int h = 0; h < 2; h++) {
            int16x8_t a = vcombine_s16(vmovn_s32(v[4 * h]), vmovn_s32(v[4 * h + 1]));
            int16x8_t c = vcombine_s16(vmovn_s32(v[4 * h + 2]), vmovn_s32(v[4 * h + 3]));
            vst1q_s8(xq + 32 * b + 16 * h, vcombine_s8(vmovn_s16(a), vmovn_s16(c)));
        }
        dx[b] = d;
        bsums[b] = vaddvq_s32(sum);
    }
}

// ---- dequantization -------------------------------------------------------------------------
INLINE void dequant_body(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd, const int bits) {
    const int groups = w->cols / w->group, nb = w->group / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        const q_rowview v = q_row(w, r);
        float *out = dst + (size_t)(r - rowBegin) * w->cols;
        for (int g = 0; g < groups; g++) {
            float32x4_t s = vdupq_n_f32(h2f(v.s[g * v.gstride]));
            float32x4_t m = vdupq_n_f32(h2f(v.m[g * v.gstride]));
            for (int b = g * nb; b < (g + 1) * nb; b++) {
                float32x4_t f[8];
                to_float(unpack_at(v, b, bits), f);
                for (int j = 0; j < 8; j++) vst1q_f32(out + b * 32 + 4 * j, vfmaq_f32(m, f[j], s));
            }
        }
    }
}

void tsr_q_dequantize_neon(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd) {
#define CALL(B) dequant_body(w, dst, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A16 GEMV -------------------------------------------------------------------------------
/// NR consecutive rows from r0 share every load of x; two accumulators per row and group.
INLINE void gemv_f32_rows(const tsr_qweights *w, const float *x, const float *xsums, float *y, int r0, const int NR, const int bits) {
    const int groups = w->cols / w->group, nb = w->group / 32;
    q_rowview row[4];
    float32x4_t acc[4];
    for (int i = 0; i < NR; i++) { row[i] = q_row(w, r0 + i); acc[i] = vdupq_n_f32(0); }
    for (int g = 0; g < groups; g++) {
        float32x4_t d0[4], d1[4];
        for (int i = 0; i < NR; i++) { d0[i] = vdupq_n_f32(0); d1[i] = vdupq_n_f32(0); }
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            const float *xb = x + b * 32;
            float32x4_t xv[8];
            for (int j = 0; j < 8; j++) xv[j] = vld1q_f32(xb + 4 * j);
            for (int i = 0; i < NR; i++) {
                float32x4_t f[8];
                to_float(unpack_at(row[i], b, bits), f);
                for (int j = 0; j < 8; j += 2) {
                    d0[i] = vfmaq_f32(d0[i], f[j], xv[j]);
                    d1[i] = vfmaq_f32(d1[i], f[j + 1], xv[j + 1]);
                }
            }
        }
        for (int i = 0; i < NR; i++)
            acc[i] = vfmaq_f32(acc[i], vaddq_f32(d0[i], d1[i]), vdupq_n_f32(h2f(row[i].s[g * row[i].gstride])));
    }
    for (int i = 0; i < NR; i++)
        y[r0 + i] = vaddvq_f32(acc[i]) + offset_term(row[i].m, NULL, row[i].gstride, xsums, groups, 0);
}

INLINE void gemv_f32_body(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd, const int bits) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) gemv_f32_rows(w, x, xsums, y, r, 4, bits);
    for (; r < rowEnd; r++) gemv_f32_rows(w, x, xsums, y, r, 1, bits);
}

void tsr_qgemv_f32_neon(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd) {
#define CALL(B) gemv_f32_body(w, x, xsums, y, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A16 GEMM: one row × NT tokens per weight unpack ------------------------------------------
/// Rows are visited in panels small enough to stay in L1 while every token quad passes over them.
enum { PANEL_ROWS = 16 };

INLINE void gemm_f32_tile(const tsr_qweights *w, const float *X, const float *xsums, float *Y, int ldy, int r, int t0,
                          const int NT, const int bits) {
    const int cols = w->cols, groups = cols / w->group, nb = w->group / 32;
    const q_rowview v = q_row(w, r);
    float32x4_t acc[4];
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0);
    for (int g = 0; g < groups; g++) {
        float32x4_t d0[4], d1[4];
        for (int t = 0; t < NT; t++) { d0[t] = vdupq_n_f32(0); d1[t] = vdupq_n_f32(0); }
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            float32x4_t f[8];
            to_float(unpack_at(v, b, bits), f);
            for (int t = 0; t < NT; t++) {
                const float *xb = X + (size_t)(t0 + t) * cols + b * 32;
                for (int j = 0; j < 8; j += 2) {
                    d0[t] = vfmaq_f32(d0[t], f[j], vld1q_f32(xb + 4 * j));
                    d1[t] = vfmaq_f32(d1[t], f[j + 1], vld1q_f32(xb + 4 * j + 4));
                }
            }
        }
        float32x4_t s = vdupq_n_f32(h2f(v.s[g * v.gstride]));
        for (int t = 0; t < NT; t++) acc[t] = vfmaq_f32(acc[t], vaddq_f32(d0[t], d1[t]), s);
    }
    for (int t = 0; t < NT; t++)
        Y[(size_t)(t0 + t) * ldy + r] =
            vaddvq_f32(acc[t]) + offset_term(v.m, NULL, v.gstride, xsums + (size_t)(t0 + t) * groups, groups, 0);
}

INLINE void gemm_f32_body(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy,
                          int rowBegin, int rowEnd, const int bits) {
    for (int p = rowBegin; p < rowEnd; p += PANEL_ROWS) {
        int pe = p + PANEL_ROWS < rowEnd ? p + PANEL_ROWS : rowEnd;
        int t0 = 0;
        for (; t0 + 4 <= T; t0 += 4)
            for (int r = p; r < pe; r++) gemm_f32_tile(w, X, xsums, Y, ldy, r, t0, 4, bits);
        for (; t0 < T; t0++)
            for (int r = p; r < pe; r++) gemm_f32_tile(w, X, xsums, Y, ldy, r, t0, 1, bits);
    }
}

void tsr_qgemm_f32_neon(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd) {
#define CALL(B) gemm_f32_body(w, T, X, xsums, Y, ldy, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A8/A4: integer block dots ------------------------------------------------------------
/// 4 int32 partial sums of Σ q·x over one block (q, x as int8; exact): ARMv8.2 SDOT.
static inline __attribute__((always_inline)) DOTPROD_ATTR int32x4_t dot32_sdot(int8x16x2_t q, int8x16_t x0, int8x16_t x1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), q.val[0], x0), q.val[1], x1);
}

/// The same sums on any AArch64 CPU: int16 lane i holds q[i]·x[i] + q[i+16]·x[i+16] (at most
/// 2·128·127 in magnitude), vpadal adds adjacent int16 lanes into int32.
INLINE int32x4_t dot32_mull(int8x16x2_t q, int8x16_t x0, int8x16_t x1) {
    int16x8_t p0 = vmull_s8(vget_low_s8(q.val[0]), vget_low_s8(x0));
    p0 = vmlal_s8(p0, vget_low_s8(q.val[1]), vget_low_s8(x1));
    int16x8_t p1 = vmull_high_s8(q.val[0], x0);
    p1 = vmlal_high_s8(p1, q.val[1], x1);
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

// The A8/A4 kernels, once per block-dot flavour (quant_neon_i8.h is a template).
#define I8_SUFFIX _neon
#define I8_ATTR
#define I8_DOT dot32_mull
#include "quant_neon_i8.h"
#undef I8_SUFFIX
#undef I8_ATTR
#undef I8_DOT

#define I8_SUFFIX _neondot
#define I8_ATTR DOTPROD_ATTR
#define I8_DOT dot32_sdot
#include "quant_neon_i8.h"
#undef I8_SUFFIX
#undef I8_ATTR
#undef I8_DOT
#else
typedef int tsr_quant_neon_empty_unit;
#endif
