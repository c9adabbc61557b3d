// AVX2 + FMA (+ F16C) paths for group-quantized weights; scalar twins live in quant_ref.c.
// Every function is compiled for AVX2 through target attributes only (no global -march), and
// reached only through the dispatchers in quant_ref.c when tsr_kernel_path() selected TSR_PATH_AVX2.
//
// Building blocks:
//   unpack(p, bits)  32 codes of one block → one __m256i, byte k = q[k] (unsigned).
//   unpack(p, 6)     = unpack(p, 4) | unpack(p + 16, 2) << 4 (a plain row; panel rows: unpack_at).
//   dot32(q, x)      8 int32 sums of one block's u8·s8 products: maddubs (16 int16 sums of
//                    adjacent products) then madd with ones, or one vpdpbusd (VNNI). For B ≤ 4
//                    the pair sums are ≤ 2·15·127 = 3810, for B = 6 ≤ 2·63·127 = 16002 (all
//                    fit int16: the plain maddubs, no sign trick); for B = 8 (q up to 255 would overflow
//                    int16) the codes are used as q − 128 with the sign trick
//                    |q−128| · sign(x, q−128) (pair sums ≤ 2·128·127 = 32512), and the missing
//                    128·Σx is added back from the activation sums (folded into the offset:
//                    m + 128·s).
//   A8/A4 blocks     every 32-block has its own activation scale dx_b, so each block's int32
//                    sums are converted to fp32 and scaled by dx_b (one FMA per block and row,
//                    as ggml's q4_1·q8_1 dot does); the group scale s_g multiplies the group's
//                    fp32 sum once.
#if defined(__x86_64__)
#include "quant_internal.h"
#include <immintrin.h>
#include <string.h>

// Compiled twice: on its own (the AVX2 path), and by quant_avx2_vnni.c with TSR_AVX2_VNNI set,
// which adds the AVX-512 VNNI target and compiles only the A8/A4 entry points (suffix _avx2vnni):
// there the integer block dots use vpdpbusd on 256-bit vectors (u8·s8 products summed four to an
// int32 lane and accumulated in one instruction) in place of maddubs, the int16 adds and madd.
// Both give the same exact int32 dots in the same lanes, so every fp32 operation after them is
// the same: the two paths' outputs are bit-identical. The VNNI build also unpacks 2-, 3- and
// 4-bit panel codes with GFNI (vgf2p8affineqb: any bits of a byte moved to any others in one
// instruction, here a shift and a mask), which every AVX-512 VNNI CPU the path runs on has.
#ifdef TSR_AVX2_VNNI
#define X86_TARGET "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni,gfni"
#define X86_NAME(name) name##_avx2vnni
#else
#define X86_TARGET "avx2,fma,f16c"
#define X86_NAME(name) name##_avx2
#endif
#define AVX2 __attribute__((target(X86_TARGET)))
#define INLINE static inline __attribute__((always_inline, target(X86_TARGET)))

INLINE float h2f(uint16_t h) { return _cvtsh_ss(h); }

#ifdef TSR_AVX2_VNNI
/// The GFNI bit matrix that moves bit `src` of every byte to bit `dst` (or'ed together for several
/// moves): vgf2p8affineqb with it sets result bit i from the source bits that byte 7 − i of the
/// matrix selects, so every bit not moved is cleared.
#define GF_MOVE(dst, src) ((uint64_t)1 << (src) << (8 * (7 - (dst))))
INLINE __m256i gf_move(__m256i v, uint64_t m) { return _mm256_gf2p8affine_epi64_epi8(v, _mm256_set1_epi64x((long long)m), 0); }

/// (v >> lo) & (2^n − 1) in every byte, one instruction.
INLINE __m256i bits_at(__m256i v, const int lo, const int n) {
    uint64_t m = 0;
    for (int i = 0; i < n; i++) m |= GF_MOVE(i, lo + i);
    return gf_move(v, m);
}
#endif

INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

INLINE __m256i unpack4(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

INLINE __m256i unpack2(const uint8_t *p) {
    uint64_t lo;
    memcpy(&lo, p, 8);
    // 64-bit lane i holds the 8 bytes shifted right by 2i: byte j of lane i = q[8i + j].
    __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x((long long)lo), _mm256_set_epi64x(6, 4, 2, 0));
    return _mm256_and_si256(v, _mm256_set1_epi8(3));
}

INLINE __m256i unpack(const uint8_t *p, const int bits) {
    if (bits == 8) return _mm256_loadu_si256((const __m256i *)p);
    if (bits == 4) return unpack4(p);
    // B = 6: the B = 4 block of the low nibbles, the B = 2 block of bits 4-5 at p + 16 (each
    // byte ≤ 3, so the 16-bit shift moves no bit across a byte).
    if (bits == 6) return _mm256_or_si256(unpack4(p), _mm256_slli_epi16(unpack2(p + 16), 4));
    __m256i v = unpack2(p);
    if (bits == 2) return v;
    uint32_t hi;
    memcpy(&hi, p + 8, 4);
    // Byte k takes byte k/8 of the plane, then tests bit k%8.
    __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)hi),
                                    _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
    return _mm256_or_si256(v, _mm256_and_si256(h, _mm256_set1_epi8(4)));
}

/// Block b of a row (q_row): unpack(), except for a B = 3 panel row, whose bit 2 comes from the
/// panel's high plane (byte j, bit q_hbit(hs, s) for q[8s + j]): one 64-bit shift per 8 codes;
/// and for a B = 6 panel row: q[0..15] = the 16 bytes at p & 63 (lane 0), q[16..31] = their
/// bits 6-7 | bits hs ..< hs + 4 of the 16 bytes at h << 2 (lane 1).
INLINE __m256i unpack_at(q_rowview v, int b, const int bits) {
    const uint8_t *p = v.p + (size_t)b * v.bstride;
    if (bits == 6 && v.hs >= 0) {
        __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
        __m256i h = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(v.h + (size_t)b * v.bstride)));
        a = _mm256_and_si256(_mm256_srlv_epi64(a, _mm256_set_epi64x(6, 6, 0, 0)), _mm256_set_m128i(_mm_set1_epi8(3), _mm_set1_epi8(63)));
        h = _mm256_slli_epi64(_mm256_srl_epi64(h, _mm_cvtsi32_si128(v.hs)), 2);
        return _mm256_or_si256(a, _mm256_and_si256(h, _mm256_set_m128i(_mm_set1_epi8(0x3C), _mm_setzero_si128())));
    }
    if (bits != 3 || v.hs < 0) return unpack(p, bits);
    uint64_t hl;
    memcpy(&hl, v.h + (size_t)b * v.bstride, 8);
    __m256i h = _mm256_srlv_epi64(_mm256_set1_epi64x((long long)hl),
                                  _mm256_add_epi64(_mm256_set1_epi64x(v.hs), _mm256_set_epi64x(5, 4, 1, 0)));
    h = _mm256_and_si256(h, _mm256_set1_epi8(1));
    return _mm256_or_si256(unpack2(p), _mm256_slli_epi64(h, 2));
}

/// The u8 and s8 operands of one block's 32 products: q and xq, or for B = 8 (the sign trick)
/// |q − 128| and sign(xq, q − 128).
INLINE void dot_operands(__m256i q, __m256i x, const int bits, __m256i *u, __m256i *s) {
    if (bits == 8) {
        __m256i ws = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
        *u = _mm256_abs_epi8(ws);
        *s = _mm256_sign_epi8(x, ws);
    } else {
        *u = q;
        *s = x;
    }
}

/// The 8 int32 sums of one block's 32 products q·xq (exact): maddubs + madd, or one vpdpbusd.
INLINE __m256i dot32(__m256i q, __m256i x, const int bits) {
    __m256i u, s;
    dot_operands(q, x, bits, &u, &s);
#ifdef TSR_AVX2_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/// The 8 fp32 values q[8i..8i+7] of an unpacked block, i = 0..3.
INLINE void to_float(__m256i q, __m256 f[4]) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    f[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    f[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    f[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    f[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
}

/// 8 fp16 values p[0], p[gs], …, p[7·gs] as one vector.
INLINE __m128i load8_strided(const uint16_t *p, size_t gs) {
    if (gs == 1) return _mm_loadu_si128((const __m128i *)p);
    return _mm_setr_epi16((short)p[0], (short)p[gs], (short)p[2 * gs], (short)p[3 * gs], (short)p[4 * gs], (short)p[5 * gs],
                          (short)p[6 * gs], (short)p[7 * gs]);
}

/// Σ_g m'_g · sums[g] with m' = m, or m + 128·s when fold128 (8-bit codes under the sign
/// trick): the offset term of one row, whose group g values sit at m[g·gs], s[g·gs]. The same
/// operations for every gs (a panel row gives the bits of a plain row).
INLINE float offset_term(const uint16_t *m, const uint16_t *s, size_t gs, const float *sums, int groups, const int fold128) {
    __m256 a = _mm256_setzero_ps();
    int g = 0;
    for (; g + 8 <= groups; g += 8) {
        __m256 mv = _mm256_cvtph_ps(load8_strided(m + g * gs, gs));
        if (fold128) mv = _mm256_fmadd_ps(_mm256_cvtph_ps(load8_strided(s + g * gs, gs)), _mm256_set1_ps(128.0f), mv);
        a = _mm256_fmadd_ps(mv, _mm256_loadu_ps(sums + g), a);
    }
    float r = hsum_ps(a);
    for (; g < groups; g++) {
        float mv = h2f(m[g * gs]);
        if (fold128) mv += 128.0f * h2f(s[g * gs]);
        r += mv * sums[g];
    }
    return r;
}

// ---- activation quantizer -------------------------------------------------------------------
#ifndef TSR_AVX2_VNNI
AVX2 void tsr_quantize_blocks_avx2(const float *x, int n, int levels, float scale, int8_t *xq, float *dx, int32_t *bsums) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    const __m256 hiv = _mm256_set1_ps((float)levels), lov = _mm256_set1_ps((float)-levels);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        __m256 f[4];
        for (int j = 0; j < 4; j++) f[j] = _mm256_loadu_ps(xb + 8 * j);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signBit, f[0]), _mm256_andnot_ps(signBit, f[1])),
                                  _mm256_max_ps(_mm256_andnot_ps(signBit, f[2]), _mm256_andnot_ps(signBit, f[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float d = scale > 0 ? scale : _mm_cvtss_f32(m4) / (float)levels;
        float id = d != 0 ? 1.0f / d : 0.0f;
        const __m256 idv = _mm256_set1_ps(id);
        __m256i v[4], sum = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            __m256 r = _mm256_round_ps(_mm256_mul_ps(f[j], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v[j] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lov), hiv));
            sum = _mm256_add_epi32(sum, v[j]);
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
        _mm256_storeu_si256((__m256i *)(xq + 32 * b), _mm256_permutevar8x32_epi32(p, perm));
        dx[b] = d;
        bsums[b] = hsum_epi32(sum);
    }
}
#endif

// ---- dequantization -------------------------------------------------------------------------
INLINE void dequant_body(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd, const int bits) {
    const int groups = w->cols / w->group, nb = w->group / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        const q_rowview v = q_row(w, r);
        float *out = dst + (size_t)(r - rowBegin) * w->cols;
        for (int g = 0; g < groups; g++) {
            __m256 s = _mm256_set1_ps(h2f(v.s[g * v.gstride]));
            __m256 m = _mm256_set1_ps(h2f(v.m[g * v.gstride]));
            for (int b = g * nb; b < (g + 1) * nb; b++) {
                __m256 f[4];
                to_float(unpack_at(v, b, bits), f);
                for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + b * 32 + 8 * j, _mm256_fmadd_ps(f[j], s, m));
            }
        }
    }
}

#define BY_BITS(call, bitsExpr) \
    switch (bitsExpr) { case 2: call(2); break; case 3: call(3); break; case 4: call(4); break; case 6: call(6); break; case 8: call(8); break; }

#ifndef TSR_AVX2_VNNI
AVX2 void tsr_q_dequantize_avx2(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd) {
#define CALL(B) dequant_body(w, dst, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}
#endif

// ---- row panels: 8 rows per activation block, one row per lane -------------------------------
// A full panel keeps block b of its 8 rows in one run of 8·blockBytes bytes (KernelsQuant.h).
// The activation block is loaded (broadcast) once for all 8 rows; each 32-byte code load holds
// several rows, and the int16/int32 sums come out with one row per lane, so there is no
// horizontal sum per row: per block one int32 vector of the 8 rows' exact dots, one convert and
// one FMA with dx_b; per group one FMA with the 8 rows' scales and one with their offsets
// (folded through the activation group sums), all loaded as one fp16 vector each.
//   B = 2: two loads (rows 0-3, 4-7; 8 bytes each); `srli_epi16` by 0/2/4/6 + `and 3` (the VNNI
//          build: `and 3`, then one GFNI bits_at each) gives four
//          code vectors whose 64-bit lane i is q[8s..8s+7] of row i; the activation bytes
//          x[8s..8s+7] are broadcast to every 64-bit lane. Four maddubs summed in int16
//          (≤ 4·2·3·127 = 3048), one hadd_epi16 of the two halves (≤ 6096), one madd → int32
//          lanes in row order 0 1 4 5 | 2 3 6 7.
//   B = 3: the B = 2 loads of the low bits plus one 32-byte load of the high plane (byte j of
//          64-bit lane i: bits 2 3 6 7 for row i's code vectors 0 1 2 3, bits 0 1 4 5 for row
//          i + 4's). Per half, `and 0x33` / `srli 2 + and 0x33` of the low bits or'ed with the
//          plane moved to bits 2 and 6 (one shift and mask) give q[8s+j] | q[8s+16+j] << 4 for
//          s = 0, 1; `and 7` / `srli 4 + and 7` split them into the four code vectors of B = 2.
//          int16 sums ≤ 4·2·7·127 = 7112, after hadd ≤ 14224.
//   B = 4: four loads (rows 2h, 2h+1 per 128-bit lane); `and 15` / `srli 4 + and 15` give
//          q[0..15] / q[16..31] of each lane's row against x[0..15] / x[16..31] broadcast to
//          both lanes. Two maddubs summed (≤ 7620), two hadd_epi16 levels (≤ 30480 < 2^15),
//          one madd → row order 0 2 4 6 | 1 3 5 7.
//   B = 6: four loads as B = 4 (rows 2h, 2h+1 per 128-bit lane; byte j = q[j] | (q[16+j] & 3) << 6):
//          `and 63` gives q[0..15]; `srli 6 + and 3` or'ed with bits 2-5 of q[16..31] gives
//          q[16..31]. Those bits come from two more loads k = 0, 1 (byte j of lane L: row
//          2k + L's q[16+j] >> 2 in bits 0-3, row 2k + L + 4's in bits 4-7), shifted left (rows
//          0-3) or right (rows 4-7) by 2 and masked with 0x3C. Per block 6 loads and 20 ALU ops.
//          Two maddubs summed reach 2·2·63·127 = 32004 (still int16), but an hadd_epi16 would
//          overflow: one madd per load, then three hadd_epi32 levels → the same row order
//          0 2 4 6 | 1 3 5 7 as B = 4.
//   B = 8: eight loads (one row each), the sign trick of mul16 (q − 128, offset m + 128·s),
//          one madd per row, then hadd_epi32 twice and a lane swap → row order 0..7.
// The GEMV sums each group's blocks in that lane order and puts the group sum into row order
// with one permute. panel_dot is split in three for the GEMM: panel_unpack (the block's code
// vectors, weights only: once per block and token tile), panel_load_act (the activation block's
// broadcasts, once per block and token) and panel_dot_codes (the maddubs/add/hadd/madd above).

/// Row r of lane i of the panel block dot (see above), as permutevar8x32 indices that put the
/// lanes into row order.
INLINE __m256i panel_to_rows(const int bits) {
    if (bits == 2 || bits == 3) return _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    if (bits == 4 || bits == 6) return _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
}

/// The lanes of panel_dot in row order: the inverse of panel_to_rows (lane i holds row
/// panel_lane_rows[i]), as permutevar8x32 indices that put 8 row-order values into lane order.
INLINE __m256i panel_lane_rows(const int bits) {
    if (bits == 2 || bits == 3) return _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    if (bits == 4 || bits == 6) return _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
}

/// One panel block's codes unpacked for panel_dot_codes: c[8] (B = 8: a[8] too). The unpacking
/// depends on the weights only, so the GEMM does it once per block for all tokens of a tile.
///   B = 2, 3: c[4h + s] = code vector s of half h (rows 0-3 | 4-7 per 64-bit lane), to meet
///             x[8s..8s+7] broadcast to every 64-bit lane.
///   B = 4, 6: c[2h] / c[2h + 1] = q[0..15] / q[16..31] of rows 2h, 2h + 1 (one per 128-bit lane).
///   B = 8:    c[i] = row i's q − 128 as int8 (the sign source), a[i] = |q − 128| (the unsigned
///             operand of maddubs).
typedef struct { __m256i c[8], a[8]; } panel_codes;

INLINE void panel_unpack(const uint8_t *pb, const int bits, panel_codes *k) {
    if (bits == 2) {
        const __m256i m3 = _mm256_set1_epi8(3);
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(pb + 32 * h));
            k->c[4 * h + 0] = _mm256_and_si256(v, m3);
#ifdef TSR_AVX2_VNNI
            k->c[4 * h + 1] = bits_at(v, 2, 2);
            k->c[4 * h + 2] = bits_at(v, 4, 2);
            k->c[4 * h + 3] = bits_at(v, 6, 2);
#else
            k->c[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
            k->c[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
            k->c[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
#endif
        }
    } else if (bits == 3) {
        const __m256i m33 = _mm256_set1_epi8(0x33), m44 = _mm256_set1_epi8(0x44), m7 = _mm256_set1_epi8(7);
        // The plane's bits moved to 2 and 6: code vectors 0 | 2 and 1 | 3 of rows 0-3 and of rows 4-7.
        const __m256i hv = _mm256_loadu_si256((const __m256i *)(pb + 64));
#ifdef TSR_AVX2_VNNI
        const __m256i hA[2] = {_mm256_and_si256(hv, m44), gf_move(hv, GF_MOVE(2, 0) | GF_MOVE(6, 4))};
        const __m256i hB[2] = {gf_move(hv, GF_MOVE(2, 3) | GF_MOVE(6, 7)), gf_move(hv, GF_MOVE(2, 1) | GF_MOVE(6, 5))};
#else
        const __m256i hA[2] = {_mm256_and_si256(hv, m44), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m44)};
        const __m256i hB[2] = {_mm256_and_si256(_mm256_srli_epi16(hv, 1), m44), _mm256_and_si256(_mm256_slli_epi16(hv, 1), m44)};
#endif
        for (int h = 0; h < 2; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(pb + 32 * h));
            __m256i A = _mm256_or_si256(_mm256_and_si256(v, m33), hA[h]);                         // q0 | q2 << 4
#ifdef TSR_AVX2_VNNI
            __m256i B = _mm256_or_si256(gf_move(v, GF_MOVE(0, 2) | GF_MOVE(1, 3) | GF_MOVE(4, 6) | GF_MOVE(5, 7)), hB[h]);
            k->c[4 * h + 2] = bits_at(A, 4, 3);
            k->c[4 * h + 3] = bits_at(B, 4, 3);
#else
            __m256i B = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2), m33), hB[h]);   // q1 | q3 << 4
            k->c[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(A, 4), m7);
            k->c[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(B, 4), m7);
#endif
            k->c[4 * h + 0] = _mm256_and_si256(A, m7);
            k->c[4 * h + 1] = _mm256_and_si256(B, m7);
        }
    } else if (bits == 4) {
        const __m256i m15 = _mm256_set1_epi8(15);
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(pb + 32 * h));
            k->c[2 * h] = _mm256_and_si256(v, m15);
#ifdef TSR_AVX2_VNNI
            k->c[2 * h + 1] = bits_at(v, 4, 4);
#else
            k->c[2 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
#endif
        }
    } else if (bits == 6) {
        // Rows 2h, 2h + 1 take bits 2-5 of q[16..31] from the load k = h % 2: its bits 0-3 for
        // h < 2 (rows 0-3), 4-7 for h ≥ 2 (rows 4-7); the masks drop every bit a 16-bit shift
        // moves across a byte.
        const __m256i m63 = _mm256_set1_epi8(63), m3 = _mm256_set1_epi8(3), m3c = _mm256_set1_epi8(0x3C);
        const __m256i hv[2] = {_mm256_loadu_si256((const __m256i *)(pb + 128)), _mm256_loadu_si256((const __m256i *)(pb + 160))};
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(pb + 32 * h));
            __m256i hi = h < 2 ? _mm256_slli_epi16(hv[h], 2) : _mm256_srli_epi16(hv[h - 2], 2);
            k->c[2 * h] = _mm256_and_si256(v, m63);
            k->c[2 * h + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 6), m3), _mm256_and_si256(hi, m3c));
        }
    } else { // bits == 8
        for (int i = 0; i < 8; i++) {
            k->c[i] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(pb + 32 * i)), _mm256_set1_epi8((char)0x80));
            k->a[i] = _mm256_abs_epi8(k->c[i]);
        }
    }
}

/// One activation block in the form panel_dot_codes meets the codes with: B = 2, 3: x[s] =
/// xb[8s..8s+7] broadcast to every 64-bit lane; B = 4, 6: x[0] / x[1] = xb[0..15] / xb[16..31]
/// in both 128-bit lanes; B = 8: x[0] = xb.
typedef struct { __m256i x[4]; } panel_act;

INLINE panel_act panel_load_act(const int8_t *xb, const int bits) {
    panel_act a;
    if (bits == 2 || bits == 3) {
        for (int s = 0; s < 4; s++) a.x[s] = _mm256_set1_epi64x(*(const long long *)(const void *)(xb + 8 * s));
    } else if (bits == 4 || bits == 6) {
        a.x[0] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)xb));
        a.x[1] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(xb + 16)));
    } else {
        a.x[0] = _mm256_loadu_si256((const __m256i *)xb);
    }
    return a;
}

/// The exact int32 dots Σ q·xq (B = 8: Σ (q − 128)·xq) of one block of 8 panel rows against an
/// activation block, lanes in the order of panel_to_rows.
INLINE __m256i panel_dot_codes(const panel_codes *k, const panel_act *a, const int bits) {
#ifdef TSR_AVX2_VNNI
    // vpdpbusd sums each 4 bytes' products into an int32 lane: B = 2, 3 give two int32 per row
    // in each 64-bit lane, B = 4, 6 four per row in each 128-bit lane, B = 8 eight per row; the
    // hadd_epi32 levels below add them up into the lane orders of the AVX2 code.
    const __m256i zero = _mm256_setzero_si256();
    if (bits == 2 || bits == 3) {
        __m256i p[2];
        for (int h = 0; h < 2; h++) {
            __m256i d = _mm256_dpbusd_epi32(zero, k->c[4 * h + 0], a->x[0]);
            d = _mm256_dpbusd_epi32(d, k->c[4 * h + 1], a->x[1]);
            d = _mm256_dpbusd_epi32(d, k->c[4 * h + 2], a->x[2]);
            p[h] = _mm256_dpbusd_epi32(d, k->c[4 * h + 3], a->x[3]);
        }
        return _mm256_hadd_epi32(p[0], p[1]);
    }
    if (bits == 4 || bits == 6) {
        __m256i p[4];
        for (int h = 0; h < 4; h++)
            p[h] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(zero, k->c[2 * h], a->x[0]), k->c[2 * h + 1], a->x[1]);
        return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    }
    __m256i d[8];
    for (int i = 0; i < 8; i++) d[i] = _mm256_dpbusd_epi32(zero, k->a[i], _mm256_sign_epi8(a->x[0], k->c[i]));
#else
    const __m256i ones = _mm256_set1_epi16(1);
    if (bits == 2 || bits == 3) {
        __m256i p[2];
        for (int h = 0; h < 2; h++) {
            __m256i q0 = _mm256_maddubs_epi16(k->c[4 * h + 0], a->x[0]);
            __m256i q1 = _mm256_maddubs_epi16(k->c[4 * h + 1], a->x[1]);
            __m256i q2 = _mm256_maddubs_epi16(k->c[4 * h + 2], a->x[2]);
            __m256i q3 = _mm256_maddubs_epi16(k->c[4 * h + 3], a->x[3]);
            p[h] = _mm256_add_epi16(_mm256_add_epi16(q0, q1), _mm256_add_epi16(q2, q3));
        }
        return _mm256_madd_epi16(_mm256_hadd_epi16(p[0], p[1]), ones);
    }
    if (bits == 4) {
        __m256i p[4];
        for (int h = 0; h < 4; h++)
            p[h] = _mm256_add_epi16(_mm256_maddubs_epi16(k->c[2 * h], a->x[0]), _mm256_maddubs_epi16(k->c[2 * h + 1], a->x[1]));
        __m256i t = _mm256_hadd_epi16(_mm256_hadd_epi16(p[0], p[1]), _mm256_hadd_epi16(p[2], p[3]));
        return _mm256_madd_epi16(t, ones);
    }
    if (bits == 6) {
        __m256i p[4];
        for (int h = 0; h < 4; h++)
            p[h] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(k->c[2 * h], a->x[0]), _mm256_maddubs_epi16(k->c[2 * h + 1], a->x[1])), ones);
        return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    }
    // bits == 8
    __m256i d[8];
    for (int i = 0; i < 8; i++) d[i] = _mm256_madd_epi16(_mm256_maddubs_epi16(k->a[i], _mm256_sign_epi8(a->x[0], k->c[i])), ones);
#endif
    __m256i u = _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3])); // r0..r3 | r0..r3
    __m256i v = _mm256_hadd_epi32(_mm256_hadd_epi32(d[4], d[5]), _mm256_hadd_epi32(d[6], d[7])); // r4..r7 | r4..r7
    return _mm256_add_epi32(_mm256_blend_epi32(u, v, 0xF0), _mm256_permute2x128_si256(u, v, 0x21));
}

/// panel_dot_codes of the panel block at pb and the activation block xb (the GEMV's one token).
INLINE __m256i panel_dot(const uint8_t *pb, const int8_t *xb, const int bits) {
    const panel_act a = panel_load_act(xb, bits);
    panel_codes k;
    panel_unpack(pb, bits, &k);
    return panel_dot_codes(&k, &a, bits);
}

/// tsr_qdot_i8 for the full panel at r0 (a multiple of 8).
INLINE void qdot_panel(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int r0, int rowBegin, const int bits) {
    const int blocks = w->cols / 32, bb = q_block_bytes(bits);
    const uint8_t *panel = w->codes + (size_t)r0 * tsr_q_row_bytes(bits, w->cols);
    const __m256i perm = panel_to_rows(bits);
    int32_t d[8];
    for (int b = 0; b < blocks; b++) {
        __m256i v = _mm256_permutevar8x32_epi32(panel_dot(panel + (size_t)b * 8 * bb, xq + 32 * b, bits), perm);
        if (bits == 8) v = _mm256_add_epi32(v, _mm256_set1_epi32(128 * bsums[b]));
        _mm256_storeu_si256((__m256i *)d, v);
        for (int i = 0; i < 8; i++) out[(size_t)(r0 + i - rowBegin) * blocks + b] = d[i];
    }
}

/// How far ahead of the GEMV's reads the codes are prefetched. Decode streams every weight once
/// from DRAM, and on one core the hardware prefetcher alone left the panel GEMV at 60–75 % of its
/// in-cache speed; 4 KiB ahead brought a 16384×4096 2-bit GEMV from 0.017 to 0.012 ns per weight
/// (in cache: 0.011), 3-bit from 0.028 to 0.018 and 4-bit from 0.026 to 0.020 (512 B and 1, 2,
/// 4, 8, 16 KiB measured; 4 KiB was best or tied on every shape; into L2 instead of L1 was
/// slower). 6- and 8-bit panels already stream at the bandwidth without it (it cost them 0–17 %),
/// so they do not prefetch. bench/kernels/speed.sh measures these.
#define PREFETCH_AHEAD 4096

/// Prefetches the `bytes` bytes at p + PREFETCH_AHEAD into L1, one instruction per cache line.
INLINE void prefetch_ahead(const uint8_t *p, const int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)(p + PREFETCH_AHEAD + o), _MM_HINT_T0);
}

/// The A8/A4 GEMV of the full panel at r0: y[r0..r0+7]. NB > 0 fixes the blocks per group.
INLINE void gemv_i8_panel(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int r0,
                          const int bits, const int NB) {
    const int groups = w->cols / w->group, nb = NB ? NB : w->group / 32, bb = q_block_bytes(bits);
    const uint8_t *panel = w->codes + (size_t)r0 * tsr_q_row_bytes(bits, w->cols);
    const uint16_t *sp = w->scales + (size_t)r0 * groups, *mp = w->offsets + (size_t)r0 * groups;
    const __m256i perm = panel_to_rows(bits);
    __m256 acc = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 ga = _mm256_setzero_ps();
        if (bits <= 4) prefetch_ahead(panel + (size_t)g * nb * 8 * bb, nb * 8 * bb);
        for (int b = g * nb; b < (g + 1) * nb; b++)
            ga = _mm256_fmadd_ps(_mm256_cvtepi32_ps(panel_dot(panel + (size_t)b * 8 * bb, xq + 32 * b, bits)), _mm256_broadcast_ss(dx + b), ga);
        if (bits != 8) ga = _mm256_permutevar8x32_ps(ga, perm);
        __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sp + 8 * g)));
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mp + 8 * g)));
        if (bits == 8) m = _mm256_fmadd_ps(s, _mm256_set1_ps(128.0f), m);
        acc = _mm256_fmadd_ps(ga, s, acc);
        macc = _mm256_fmadd_ps(m, _mm256_broadcast_ss(xsums + g), macc);
    }
    _mm256_storeu_ps(y + r0, _mm256_add_ps(acc, macc));
}

// ---- integer part (exact) -------------------------------------------------------------------
INLINE void qdot_body(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd, const int bits) {
    const int blocks = w->cols / 32;
    for (int r = rowBegin; r < rowEnd; r++) {
        const q_rowview v = q_row(w, r);
        for (int b = 0; b < blocks; b++) {
            __m256i d = dot32(unpack_at(v, b, bits), _mm256_loadu_si256((const __m256i *)(xq + 32 * b)), bits);
            out[(size_t)(r - rowBegin) * blocks + b] = hsum_epi32(d) + (bits == 8 ? 128 * bsums[b] : 0);
        }
    }
}

/// Whole panels through qdot_panel, every other row (tail, a panel cut by the range) qdot_body.
INLINE void qdot_bits(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd, const int bits) {
#define PANEL(r) qdot_panel(w, xq, bsums, out, r, rowBegin, bits)
#define ROWS(a, e) qdot_body(w, xq, bsums, out + (size_t)((a) - rowBegin) * (w->cols / 32), a, e, bits)
    FOR_PANELS(w, rowBegin, rowEnd, PANEL, ROWS);
#undef PANEL
#undef ROWS
}

AVX2 void X86_NAME(tsr_qdot_i8)(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd) {
#define CALL(B) qdot_bits(w, xq, bsums, out, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

// ---- A8/A4 GEMV -----------------------------------------------------------------------------
/// NR consecutive rows from r0 share every activation load. NB > 0 fixes the blocks per group
/// at compile time (G = 32·NB), which lets the compiler unroll the group and keep every
/// accumulator in registers.
INLINE void gemv_i8_rows(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int r0,
                         const int NR, const int bits, const int NB) {
    const int groups = w->cols / w->group, nb = NB ? NB : w->group / 32;
    q_rowview row[4];
    __m256 acc[4];
    for (int i = 0; i < NR; i++) { row[i] = q_row(w, r0 + i); acc[i] = _mm256_setzero_ps(); }
    for (int g = 0; g < groups; g++) {
        __m256 ga[4];
        for (int i = 0; i < NR; i++) ga[i] = _mm256_setzero_ps();
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            __m256i x = _mm256_loadu_si256((const __m256i *)(xq + 32 * b));
            __m256 d = _mm256_broadcast_ss(dx + b);
            for (int i = 0; i < NR; i++)
                ga[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(unpack_at(row[i], b, bits), x, bits)), d, ga[i]);
        }
        for (int i = 0; i < NR; i++) acc[i] = _mm256_fmadd_ps(ga[i], _mm256_set1_ps(h2f(row[i].s[g * row[i].gstride])), acc[i]);
    }
    for (int i = 0; i < NR; i++)
        y[r0 + i] = hsum_ps(acc[i]) + offset_term(row[i].m, row[i].s, row[i].gstride, xsums, groups, bits == 8);
}

/// Rows outside full panels: 4 at a time, then one by one.
INLINE void gemv_i8_plain(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd,
                          const int bits, const int NB) {
    int r = rowBegin;
    for (; r + 4 <= rowEnd; r += 4) gemv_i8_rows(w, xq, dx, xsums, y, r, 4, bits, NB);
    for (; r < rowEnd; r++) gemv_i8_rows(w, xq, dx, xsums, y, r, 1, bits, NB);
}

INLINE void gemv_i8_nb(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd,
                       const int bits, const int NB) {
#define PANEL(r) gemv_i8_panel(w, xq, dx, xsums, y, r, bits, NB)
#define ROWS(a, e) gemv_i8_plain(w, xq, dx, xsums, y, a, e, bits, NB)
    FOR_PANELS(w, rowBegin, rowEnd, PANEL, ROWS);
#undef PANEL
#undef ROWS
}

INLINE void gemv_i8_body(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd,
                         const int bits) {
    switch (w->group) {
    case 32: gemv_i8_nb(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 1); break;
    case 64: gemv_i8_nb(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 2); break;
    case 128: gemv_i8_nb(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 4); break;
    default: gemv_i8_nb(w, xq, dx, xsums, y, rowBegin, rowEnd, bits, 0); break;
    }
}

AVX2 void X86_NAME(tsr_qgemv_i8)(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd) {
#define CALL(B) gemv_i8_body(w, xq, dx, xsums, y, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

#ifndef TSR_AVX2_VNNI // the A16 GEMV: the AVX2 path only
// ---- A16 GEMV -------------------------------------------------------------------------------
INLINE void gemv_f32_rows(const tsr_qweights *w, const float *x, const float *xsums, float *y, int r0, const int NR, const int bits) {
    const int groups = w->cols / w->group, nb = w->group / 32;
    q_rowview row[4];
    __m256 acc[4];
    for (int i = 0; i < NR; i++) { row[i] = q_row(w, r0 + i); acc[i] = _mm256_setzero_ps(); }
    for (int g = 0; g < groups; g++) {
        __m256 d0[4], d1[4];
        for (int i = 0; i < NR; i++) { d0[i] = _mm256_setzero_ps(); d1[i] = _mm256_setzero_ps(); }
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            const float *xb = x + b * 32;
            __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8), x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
            for (int i = 0; i < NR; i++) {
                __m256 f[4];
                to_float(unpack_at(row[i], b, bits), f);
                d0[i] = _mm256_fmadd_ps(f[0], x0, d0[i]);
                d1[i] = _mm256_fmadd_ps(f[1], x1, d1[i]);
                d0[i] = _mm256_fmadd_ps(f[2], x2, d0[i]);
                d1[i] = _mm256_fmadd_ps(f[3], x3, d1[i]);
            }
        }
        for (int i = 0; i < NR; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_add_ps(d0[i], d1[i]), _mm256_set1_ps(h2f(row[i].s[g * row[i].gstride])), acc[i]);
    }
    for (int i = 0; i < NR; i++)
        y[r0 + i] = hsum_ps(acc[i]) + offset_term(row[i].m, NULL, row[i].gstride, xsums, groups, 0);
}

INLINE void gemv_f32_body(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd, const int bits) {
    int r = rowBegin;
    for (; r + 2 <= rowEnd; r += 2) gemv_f32_rows(w, x, xsums, y, r, 2, bits);
    for (; r < rowEnd; r++) gemv_f32_rows(w, x, xsums, y, r, 1, bits);
}

// B = 2 and 4 without byte shuffles: each 32-bit broadcast of 4 code bytes is shifted per lane
// (vpsrlvd) so that every lane holds one code, ready for cvtdq2ps. The lanes then hold codes in
// a fixed permuted order, so x is permuted the same way once per call (xperm below).

/// Position in the block of the value in permuted slot i (0..31).
static int xperm(int bits, int i) {
    if (bits == 4) { int j = 4 * (i / 8), l = i % 8; return l < 4 ? j + l : j + 16 + (l - 4); }
    int j = 4 * (i / 16), h = (i / 8) % 2, l = i % 8; // bits == 2
    return l < 4 ? j + 16 * h + l : j + 8 + 16 * h + (l - 4);
}

INLINE void gemv_f32_shift_rows(const tsr_qweights *w, const float *xp, const float *xsums, float *y, int r0, const int NR, const int bits) {
    const int groups = w->cols / w->group, nb = w->group / 32;
    const __m256i mask = _mm256_set1_epi32(bits == 4 ? 15 : 3);
    const __m256i sh0 = bits == 4 ? _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28) : _mm256_setr_epi32(0, 8, 16, 24, 2, 10, 18, 26);
    const __m256i sh1 = _mm256_setr_epi32(4, 12, 20, 28, 6, 14, 22, 30); // bits == 2 only
    q_rowview row[4];
    __m256 acc[4];
    for (int i = 0; i < NR; i++) { row[i] = q_row(w, r0 + i); acc[i] = _mm256_setzero_ps(); }
    for (int g = 0; g < groups; g++) {
        __m256 d0[4], d1[4];
        for (int i = 0; i < NR; i++) { d0[i] = _mm256_setzero_ps(); d1[i] = _mm256_setzero_ps(); }
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            const float *xb = xp + b * 32;
            for (int j = 0; j < 4; j += 2) {
                __m256 x0 = _mm256_loadu_ps(xb + 8 * j), x1 = _mm256_loadu_ps(xb + 8 * j + 8);
                for (int i = 0; i < NR; i++) {
                    const uint8_t *p = row[i].p + (size_t)b * row[i].bstride;
                    __m256i c0, c1;
                    if (bits == 4) {
                        c0 = _mm256_set1_epi32(*(const int32_t *)(const void *)(p + 4 * j));
                        c1 = _mm256_srlv_epi32(_mm256_set1_epi32(*(const int32_t *)(const void *)(p + 4 * j + 4)), sh0);
                        c0 = _mm256_srlv_epi32(c0, sh0);
                    } else {
                        __m256i d = _mm256_set1_epi32(*(const int32_t *)(const void *)(p + 2 * j));
                        c0 = _mm256_srlv_epi32(d, sh0);
                        c1 = _mm256_srlv_epi32(d, sh1);
                    }
                    d0[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c0, mask)), x0, d0[i]);
                    d1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(c1, mask)), x1, d1[i]);
                }
            }
        }
        for (int i = 0; i < NR; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_add_ps(d0[i], d1[i]), _mm256_set1_ps(h2f(row[i].s[g * row[i].gstride])), acc[i]);
    }
    for (int i = 0; i < NR; i++)
        y[r0 + i] = hsum_ps(acc[i]) + offset_term(row[i].m, NULL, row[i].gstride, xsums, groups, 0);
}

AVX2 static void gemv_f32_shift(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd, float *xp) {
    int perm[32];
    for (int i = 0; i < 32; i++) perm[i] = xperm(w->bits, i);
    for (int b = 0; b < w->cols / 32; b++)
        for (int i = 0; i < 32; i++) xp[b * 32 + i] = x[b * 32 + perm[i]];
    int r = rowBegin;
    if (w->bits == 4) {
        for (; r + 4 <= rowEnd; r += 4) gemv_f32_shift_rows(w, xp, xsums, y, r, 4, 4);
        for (; r < rowEnd; r++) gemv_f32_shift_rows(w, xp, xsums, y, r, 1, 4);
    } else {
        for (; r + 4 <= rowEnd; r += 4) gemv_f32_shift_rows(w, xp, xsums, y, r, 4, 2);
        for (; r < rowEnd; r++) gemv_f32_shift_rows(w, xp, xsums, y, r, 1, 2);
    }
}

AVX2 void tsr_qgemv_f32_avx2(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd) {
    if ((w->bits == 2 || w->bits == 4) && w->cols <= 8192) {
        float xp[8192] __attribute__((aligned(64)));
        gemv_f32_shift(w, x, xsums, y, rowBegin, rowEnd, xp);
        return;
    }
#define CALL(B) gemv_f32_body(w, x, xsums, y, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

#endif

// ---- A8/A4 GEMM -----------------------------------------------------------------------------
// Full panels: gemm_i8_panel, 8 rows × NT tokens per weight load. Each panel block is unpacked
// once (panel_unpack) and dotted with the NT tokens' activation blocks (panel_dot_codes), so the
// int32 dots, their convert and the dx FMA come with one row per lane as in the GEMV; the group
// scales are put into lane order once per group for all tokens, the tokens' sums into row order
// once at the end. Per row and token these are the GEMV's operations in the GEMV's order (the
// same fp32 values: bit-identical to tsr_qgemv_i8 token by token). Other rows: gemm_i8_tile.

/// One row × NT tokens (rows outside full panels).
INLINE void gemm_i8_tile(const tsr_qweights *w, const int8_t *Xq, const float *dx, const float *xsums,
                         float *Y, int ldy, int r, int t0, const int NT, const int bits) {
    const int cols = w->cols, groups = cols / w->group, nb = w->group / 32, blocks = cols / 32;
    const q_rowview v = q_row(w, r);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 ga[4];
        for (int t = 0; t < NT; t++) ga[t] = _mm256_setzero_ps();
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            __m256i q = unpack_at(v, b, bits);
            for (int t = 0; t < NT; t++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(Xq + (size_t)(t0 + t) * cols + 32 * b));
                ga[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32(q, x, bits)), _mm256_broadcast_ss(dx + (size_t)(t0 + t) * blocks + b), ga[t]);
            }
        }
        __m256 s = _mm256_set1_ps(h2f(v.s[g * v.gstride]));
        for (int t = 0; t < NT; t++) acc[t] = _mm256_fmadd_ps(ga[t], s, acc[t]);
    }
    for (int t = 0; t < NT; t++)
        Y[(size_t)(t0 + t) * ldy + r] = hsum_ps(acc[t]) + offset_term(v.m, v.s, v.gstride, xsums + (size_t)(t0 + t) * groups, groups, bits == 8);
}

/// Rows [r, e) (outside full panels) for tokens [t0, t1): 4 tokens at a time, then one by one.
INLINE void gemm_i8_rows(const tsr_qweights *w, const int8_t *Xq, const float *dx, const float *xsums,
                         float *Y, int ldy, int r, int e, int t0, int t1, const int bits) {
    int t = t0;
    for (; t + 4 <= t1; t += 4)
        for (int i = r; i < e; i++) gemm_i8_tile(w, Xq, dx, xsums, Y, ldy, i, t, 4, bits);
    for (; t < t1; t++)
        for (int i = r; i < e; i++) gemm_i8_tile(w, Xq, dx, xsums, Y, ldy, i, t, 1, bits);
}

/// Tokens per tile of the panel GEMM (the last tile of T may be shorter). 6 gave the fewest
/// instructions of 2, 3, 4 and 6 (bench/kernels/count.sh gemm), though 8 code vectors and 2·6
/// accumulators exceed the 16 ymm registers: the compiler keeps part of the sums on the stack.
#ifndef NT_GEMM
#define NT_GEMM 6
#endif
_Static_assert(NT_GEMM >= 1 && NT_GEMM <= 6, "gemm_i8_panel_n instantiates tiles of 1 to 6 tokens");
enum { NT_MAX = 8 };

/// The full panel at r0 (a multiple of 8) × tokens t0 ..< t0 + NT: Y[t·ldy + r0 ..< r0 + 8].
/// NB > 0 fixes the blocks per group (G = 32·NB). State: the 8 code vectors of a block, 2·NT
/// fp32 accumulators (group and total, one row per lane).
INLINE void gemm_i8_panel(const tsr_qweights *w, const int8_t *Xq, const float *dx, const float *xsums,
                          float *Y, int ldy, int r0, int t0, const int NT, const int bits, const int NB) {
    const int cols = w->cols, groups = cols / w->group, nb = NB ? NB : w->group / 32, blocks = cols / 32;
    const int bb = q_block_bytes(bits);
    const uint8_t *panel = w->codes + (size_t)r0 * tsr_q_row_bytes(bits, cols);
    const uint16_t *sp = w->scales + (size_t)r0 * groups, *mp = w->offsets + (size_t)r0 * groups;
    const int8_t *xt = Xq + (size_t)t0 * cols;
    const float *dt = dx + (size_t)t0 * blocks;
    __m256 acc[NT_MAX];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 ga[NT_MAX];
        for (int t = 0; t < NT; t++) ga[t] = _mm256_setzero_ps();
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            panel_codes k;
            panel_unpack(panel + (size_t)b * 8 * bb, bits, &k);
            for (int t = 0; t < NT; t++) {
                const panel_act a = panel_load_act(xt + (size_t)t * cols + 32 * b, bits);
                ga[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(panel_dot_codes(&k, &a, bits)), _mm256_broadcast_ss(dt + (size_t)t * blocks + b), ga[t]);
            }
        }
        // The 8 rows' scales in the lanes' row order (the GEMV permutes the group sum instead: the
        // same products).
        __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sp + 8 * g)));
        if (bits != 8) s = _mm256_permutevar8x32_ps(s, panel_lane_rows(bits));
        for (int t = 0; t < NT; t++) acc[t] = _mm256_fmadd_ps(ga[t], s, acc[t]);
    }
    // Offsets in row order, m (+ 128·s for B = 8) times each token's group sums, summed over groups.
    __m256 macc[NT_MAX];
    for (int t = 0; t < NT; t++) macc[t] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mp + 8 * g)));
        if (bits == 8) m = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sp + 8 * g))), _mm256_set1_ps(128.0f), m);
        for (int t = 0; t < NT; t++) macc[t] = _mm256_fmadd_ps(m, _mm256_broadcast_ss(xsums + (size_t)(t0 + t) * groups + g), macc[t]);
    }
    for (int t = 0; t < NT; t++) {
        __m256 a = bits == 8 ? acc[t] : _mm256_permutevar8x32_ps(acc[t], panel_to_rows(bits));
        _mm256_storeu_ps(Y + (size_t)(t0 + t) * ldy + r0, _mm256_add_ps(a, macc[t]));
    }
}

/// gemm_i8_panel for a tile of n ≤ NT_GEMM tokens (n a compile-time constant in each call).
INLINE void gemm_i8_panel_n(const tsr_qweights *w, const int8_t *Xq, const float *dx, const float *xsums,
                            float *Y, int ldy, int r0, int t0, int n, const int bits, const int NB) {
    switch (n) {
#define CASE(k) case k: gemm_i8_panel(w, Xq, dx, xsums, Y, ldy, r0, t0, k, bits, NB); break;
    CASE(1)
#if NT_GEMM >= 2
    CASE(2)
#endif
#if NT_GEMM >= 3
    CASE(3)
#endif
#if NT_GEMM >= 4
    CASE(4)
#endif
#if NT_GEMM >= 5
    CASE(5)
#endif
#if NT_GEMM >= 6
    CASE(6)
#endif
#undef CASE
    }
}

/// Rows are visited in chunks of up to 8 panels holding at most CHUNK_BYTES of codes (chunk
/// boundaries at absolute multiples of the chunk rows, so a chunk never cuts a panel): the
/// chunk's weights stay in L2 while every token tile passes over them, and a token tile's
/// activations stay in L1 over the chunk's panels. Every output is computed whole within one
/// panel and tile, so neither the chunks nor the callers' row split change any result.
enum { CHUNK_BYTES = 64 * 1024 };

INLINE void gemm_i8_nb(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                       float *Y, int ldy, int rowBegin, int rowEnd, const int bits, const int NB) {
    const size_t panelBytes = (size_t)8 * tsr_q_row_bytes(bits, w->cols);
    const int chunk = 8 * (panelBytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / panelBytes >= 8 ? 8 : (int)(CHUNK_BYTES / panelBytes));
    for (int p = rowBegin; p < rowEnd;) {
        int pe = (p / chunk + 1) * chunk;
        if (pe > rowEnd) pe = rowEnd;
        for (int t0 = 0; t0 < T; t0 += NT_GEMM) {
            const int n = T - t0 < NT_GEMM ? T - t0 : NT_GEMM;
#define ROWS(a, e) gemm_i8_rows(w, Xq, dx, xsums, Y, ldy, a, e, t0, t0 + n, bits)
#define PANEL(r) gemm_i8_panel_n(w, Xq, dx, xsums, Y, ldy, r, t0, n, bits, NB)
            FOR_PANELS(w, p, pe, PANEL, ROWS);
#undef PANEL
#undef ROWS
        }
        p = pe;
    }
}

INLINE void gemm_i8_body(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                         float *Y, int ldy, int rowBegin, int rowEnd, const int bits) {
    switch (w->group) {
    case 32: gemm_i8_nb(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, bits, 1); break;
    case 64: gemm_i8_nb(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, bits, 2); break;
    case 128: gemm_i8_nb(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, bits, 4); break;
    default: gemm_i8_nb(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, bits, 0); break;
    }
}

AVX2 void X86_NAME(tsr_qgemm_i8)(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                            float *Y, int ldy, int rowBegin, int rowEnd) {
#define CALL(B) gemm_i8_body(w, T, Xq, dx, xsums, Y, ldy, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}

#ifndef TSR_AVX2_VNNI // the A16 GEMM: the AVX2 path only
// ---- A16 GEMM: one row × NT tokens per weight load ------------------------------------------
/// Rows are visited in panels small enough to stay in L1 while every token quad passes over them.
enum { PANEL_ROWS = 16 };

INLINE void gemm_f32_tile(const tsr_qweights *w, const float *X, const float *xsums, float *Y, int ldy, int r, int t0,
                          const int NT, const int bits) {
    const int cols = w->cols, groups = cols / w->group, nb = w->group / 32;
    const q_rowview v = q_row(w, r);
    __m256 acc[4];
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        __m256 d[4];
        for (int t = 0; t < NT; t++) d[t] = _mm256_setzero_ps();
        for (int b = g * nb; b < (g + 1) * nb; b++) {
            __m256 f[4];
            to_float(unpack_at(v, b, bits), f);
            for (int t = 0; t < NT; t++) {
                const float *xb = X + (size_t)(t0 + t) * cols + b * 32;
                __m256 a = _mm256_mul_ps(f[0], _mm256_loadu_ps(xb));
                __m256 c = _mm256_mul_ps(f[1], _mm256_loadu_ps(xb + 8));
                a = _mm256_fmadd_ps(f[2], _mm256_loadu_ps(xb + 16), a);
                c = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(xb + 24), c);
                d[t] = _mm256_add_ps(d[t], _mm256_add_ps(a, c));
            }
        }
        __m256 s = _mm256_set1_ps(h2f(v.s[g * v.gstride]));
        for (int t = 0; t < NT; t++) acc[t] = _mm256_fmadd_ps(d[t], s, acc[t]);
    }
    for (int t = 0; t < NT; t++)
        Y[(size_t)(t0 + t) * ldy + r] = hsum_ps(acc[t]) + offset_term(v.m, NULL, v.gstride, xsums + (size_t)(t0 + t) * groups, groups, 0);
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

AVX2 void tsr_qgemm_f32_avx2(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd) {
#define CALL(B) gemm_f32_body(w, T, X, xsums, Y, ldy, rowBegin, rowEnd, B)
    BY_BITS(CALL, w->bits)
#undef CALL
}
#endif
#else
typedef int tsr_quant_avx2_empty_unit;
#endif
