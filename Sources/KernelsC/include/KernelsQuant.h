// Uniform asymmetric group-quantized weights: layout, activation quantizers, GEMV and GEMM.
//
// ==== Layout ==================================================================================
// W is [rows, cols] row-major, dequantized as  w = q·s + m  with an unsigned code q in
// [0, 2^B − 1] and one fp16 scale s and one fp16 offset m per (row, group).
//   * cols % 32 == 0. Groups are G consecutive weights of a row; G % 32 == 0 and G divides cols
//     (G = cols is a row-wide group).
//   * codes: every row is a sequence of blocks of 32 consecutive weights q[0..31], each
//     blockBytes(B) bytes in this format:
//       B = 8: 32 bytes, byte j = q[j]
//       B = 4: 16 bytes, byte j = q[j] | q[j+16] << 4                              (j < 16)
//              (ggml's Q4_0/Q4_1 nibble order: their 16 code bytes copy unchanged)
//       B = 2:  8 bytes, byte j = q[j] | q[j+8] << 2 | q[j+16] << 4 | q[j+24] << 6   (j < 8)
//       B = 3: 12 bytes: bytes 0..7 = the B = 2 layout of (q & 3); bytes 8..11 = a little-endian
//              uint32 whose bit j is bit 2 of q[j]
//       B = 6: 24 bytes: bytes 0..15 = the B = 4 layout of (q & 15); bytes 16..23 = the B = 2
//              layout of (q >> 4). Codes ≤ 63, so the SIMD kernels' u8·s8 pair sums are
//              ≤ 2·63·127 = 16002 and fit int16: the same dot as B = 2/3/4 (no sign trick).
//     blockBytes: B2 8, B3 12, B4 16, B6 24, B8 32; rowBytes = (cols / 32)·blockBytes(B).
//   * row panels: rows are grouped in panels of R = tsr_q_panel_rows(B) = 8 consecutive rows.
//     Panel p (rows pR ..< pR + R) starts at codes + pR·rowBytes and holds, for each block b in
//     turn, the R rows' block b one after the other: row pR + i's block b is at
//     codes + pR·rowBytes + (b·R + i)·blockBytes. One activation block thus meets R rows' codes
//     in one contiguous R·blockBytes run (the GEMV computes R rows per activation load, one row
//     per SIMD lane). B = 3 panels split the run instead: its first 64 bytes are the B = 2 run of
//     the 8 rows' low two bits (row i's 8 bytes at 8i), its last 32 bytes one high-bit plane:
//     byte 8·(i % 4) + j holds bit 2 of row i's q[j], q[8+j], q[16+j], q[24+j] in bits
//     2, 3, 6, 7 for i < 4, in bits 0, 1, 4, 5 for i ≥ 4 (rows i and i + 4 share a byte; one
//     shift and one mask of the plane put two code vectors' high bits where the B = 2 bytes
//     masked with 0x33 leave room: bits 2 and 6). B = 6 panels split the 192-byte run too: its
//     first 128 bytes hold row i's 16 bytes at 16i, byte j = q[j] | (q[16+j] & 3) << 6 (so a
//     32-byte load at 32·h holds rows 2h | 2h + 1, one per 128-bit lane, as in a B = 4 run); its
//     last 64 bytes the rest of q[16..31] as two 32-byte halves k = 0, 1: run byte
//     128 + 32k + 16L + j (L = 0, 1; j < 16) = (q[16+j] >> 2 of row 2k + L) | (q[16+j] >> 2 of
//     row 2k + L + 4) << 4 (one 32-byte load completes four rows, again one pair per 128-bit
//     lane). Plain B = 6 rows keep the 24-byte block above. The last rows % R
//     rows (the tail) are plain rows: row r's block b at codes + r·rowBytes + b·blockBytes; so a
//     matrix of fewer than R rows is all tail. The codes buffer starts 64-byte aligned and has
//     rows·rowBytes bytes.
//   * scales, offsets: two separate fp16 (IEEE binary16) arrays of rows·(cols / G) values in the
//     same panel order: for a row r in a full panel p, group g sits at pR·groups + g·R + (r − pR)
//     (the R rows' values of one group side by side); a tail row's at r·groups + g.
//     tsr_q_group_index() computes it.
// Bits per weight = B + 32 / G (two fp16 per group).
//
// ==== Activations =============================================================================
//   A16: fp32 x. Kernels take the per-group sums Σx (tsr_group_sums_f32) and fold the offsets:
//        y[r] = Σ_g ( s_g·Σ_{i∈g} q_i·x_i + m_g·Σ_{i∈g} x_i ).
//   A8 / A4: per block of 32 activations (block b = k / 32, like ggml's q8_1):
//        dx_b = max|x in b| / L (L = 127 or 7), xq = rint(x·(1/dx_b)) clamped to [−L, L]
//        (all 0 where dx_b = 0), stored as int8 either way; per-block code sums Σxq (int32).
//        The integer dot product of each block is exact int32, the rest is fp32:
//          y[r] = Σ_g Σ_{b∈g} dx_b · ( s_g·Σ_{i∈b} q_i·xq_i + m_g·Σ_{i∈b} xq_i ).
//        The SIMD kernels regroup it as Σ_g s_g·Σ_{b∈g} dx_b·Σ_{i∈b} q_i·xq_i + Σ_g m_g·xs_g with
//        the activation group sums xs_g = Σ_{b∈g} dx_b·Σ_{i∈b} xq_i (fp32, from tsr_quantize_act).
//
// Every function taking [rowBegin, rowEnd) writes only y[rowBegin..<rowEnd] (GEMM: the same
// columns of each token row of Y), so callers split rows over threads. Every SIMD entry point
// has a scalar `_ref` twin; the plain names run what tsr_kernel_path() selects (TSR_KERNEL_QUANT,
// TSR_KERNEL_QUANT_I8).
#ifndef TESSERA_KERNELS_QUANT_H
#define TESSERA_KERNELS_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A view of packed weights (see the layout above). Not owning.
typedef struct tsr_qweights {
    const uint8_t *codes;
    const uint16_t *scales;   // fp16 [rows, cols / group]
    const uint16_t *offsets;  // fp16 [rows, cols / group]
    int rows, cols, bits, group;
} tsr_qweights;

/// Bytes of one 32-weight block for `bits` (0 for an unsupported width).
int tsr_q_block_bytes(int bits);
/// Bytes of one packed row of `cols` weights (a matrix's codes take rows·rowBytes bytes).
size_t tsr_q_row_bytes(int bits, int cols);
/// Rows per panel for `bits` (R above: 8).
int tsr_q_panel_rows(int bits);
/// Index of (row r, group g) in the scales and offsets arrays of a rows × groups matrix.
size_t tsr_q_group_index(int bits, int rows, int groups, int r, int g);
/// Rearranges row-major [rows, groups] fp16 values into the panel order above, and back.
void tsr_q_pack_groups(const uint16_t *src, int bits, int rows, int groups, uint16_t *dst);
void tsr_q_unpack_groups(const uint16_t *src, int bits, int rows, int groups, uint16_t *dst);
/// Packs rows×cols codes (one byte each, values < 2^bits) into the layout above (panels included).
void tsr_q_pack(const uint8_t *q, int bits, int rows, int cols, uint8_t *dst);
/// Unpacks row r of packed codes (a rows × cols matrix) back to one code per byte.
void tsr_q_unpack_row(const uint8_t *codes, int bits, int rows, int cols, int r, uint8_t *q);
/// The load-time repack: rows×cols codes in the canonical file layout (each row cols·bits/8
/// bytes, a little-endian bit stream: code k at bits k·bits ..< (k+1)·bits; Core's
/// QuantizedTensor) into the layout above, and back. Files never hold the kernels' layout, so
/// it can change without a file-format change.
void tsr_q_from_canonical(const uint8_t *src, int bits, int rows, int cols, uint8_t *dst);
void tsr_q_to_canonical(const uint8_t *src, int bits, int rows, int cols, uint8_t *dst);

/// dst[(r − rowBegin)·cols + k] = q·s + m (fp32) for rows [rowBegin, rowEnd).
void tsr_q_dequantize(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd);
void tsr_q_dequantize_ref(const tsr_qweights *w, float *dst, int rowBegin, int rowEnd);

/// sums[g] = Σ x[g·group ..< (g+1)·group] in fp32 (n % group == 0).
void tsr_group_sums_f32(const float *x, int n, int group, float *sums);

/// Quantizes n activations (n % group == 0, group % 32 == 0) to symmetric codes in
/// [−levels, levels] (levels 127: A8, 7: A4), one scale per block of 32:
///   dx[b]    = max|x in block b| / levels      (n / 32 floats; 0 for an all-zero block)
///   xq[k]    = rint(x[k] / dx[b]) clamped      (n int8)
///   bsums[b] = Σ_{k∈b} xq[k]                   (n / 32 int32)
///   xsums[g] = Σ_{b∈g} dx[b]·bsums[b]          (n / group floats, summed in block order)
/// The SIMD and reference paths produce identical bytes.
void tsr_quantize_act(const float *x, int n, int group, int levels, int8_t *xq, float *dx, int32_t *bsums, float *xsums);
void tsr_quantize_act_ref(const float *x, int n, int group, int levels, int8_t *xq, float *dx, int32_t *bsums, float *xsums);

/// The per-token quantizer: one scale for all n activations (a token's row), clipped,
///   d        = clip·max|x| / levels            (0 < clip ≤ 1; 0 for an all-zero row)
///   dx[b]    = d for every block               (so every A8/A4 kernel runs it unchanged)
///   xq, bsums, xsums as above, with values past ±levels·d clamped.
/// The SIMD and reference paths produce identical bytes.
void tsr_quantize_act_token(const float *x, int n, int group, int levels, float clip, int8_t *xq, float *dx, int32_t *bsums, float *xsums);
void tsr_quantize_act_token_ref(const float *x, int n, int group, int levels, float clip, int8_t *xq, float *dx, int32_t *bsums, float *xsums);

/// The integer part of the A8/A4 kernels, per 32-block b of a row:
/// out[(r − rowBegin)·(cols / 32) + b] = Σ_{i∈b} q_i·xq_i. `bsums` are the block sums from
/// tsr_quantize_act (the 8-bit path uses them).
void tsr_qdot_i8(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);
void tsr_qdot_i8_ref(const tsr_qweights *w, const int8_t *xq, const int32_t *bsums, int32_t *out, int rowBegin, int rowEnd);

/// A16 GEMV: y[r] = Σ_k (q·s + m)·x[k]; `xsums` from tsr_group_sums_f32 (the reference
/// ignores them and computes the plain dot product of dequantized weights).
void tsr_qgemv_f32(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemv_f32_ref(const tsr_qweights *w, const float *x, const float *xsums, float *y, int rowBegin, int rowEnd);

/// A8/A4 GEMV: y[r] = Σ_g Σ_{b∈g} dx[b]·(s_g·Σ q·xq + m_g·Σ xq), with dx and the group sums
/// xsums from tsr_quantize_act (the reference ignores xsums and follows the formula literally).
void tsr_qgemv_i8(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);
void tsr_qgemv_i8_ref(const tsr_qweights *w, const int8_t *xq, const float *dx, const float *xsums, float *y, int rowBegin, int rowEnd);

/// A16 GEMM over T tokens: Y[t·ldy + r] for X [T, cols], xsums [T, groups]. The SIMD path reads
/// each weight block once per 4 tokens.
void tsr_qgemm_f32(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qgemm_f32_ref(const tsr_qweights *w, int T, const float *X, const float *xsums, float *Y, int ldy, int rowBegin, int rowEnd);

/// A8/A4 GEMM over T tokens: Xq [T, cols], dx [T, cols / 32], xsums [T, groups]; Y as above.
void tsr_qgemm_i8(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                  float *Y, int ldy, int rowBegin, int rowEnd);
void tsr_qgemm_i8_ref(const tsr_qweights *w, int T, const int8_t *Xq, const float *dx, const float *xsums,
                      float *Y, int ldy, int rowBegin, int rowEnd);

#ifdef __cplusplus
}
#endif
#endif
