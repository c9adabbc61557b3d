import Core

extension QuantizedTensor {
    /// Converts ggml blocks (rows × cols/32 blocks, rows contiguous) without loss, group 32:
    /// Q4_1 (d, m, nibbles) → s = d, m = m; Q4_0 (d, nibbles) → s = d, m = −8d;
    /// Q8_0 (d, int8 c) → q = c + 128, s = d, m = −128d. Dequantization then equals ggml's
    /// (q − 8)·d, q·d + m and c·d exactly (every product and sum is exact in fp32; the one
    /// difference is the sign of an exact zero: ggml's 0·d is −0 for d < 0, ours +0).
    /// Throws when −8d or −128d does not fit fp16 (|d| ≥ 8192 or ≥ 512).
    public static func fromGGML(type: GGMLBlockType, blocks: UnsafeRawPointer, rows: Int, cols: Int,
                                name: String = "weights") throws -> QuantizedTensor {
        let bits = type == .q8_0 ? 8 : 4
        _ = try validate(bits: bits, group: 32, cols: cols, name: name)
        let n = rows * cols / 32
        var q = [UInt8](repeating: 0, count: rows * cols)
        var scales = [UInt16](repeating: 0, count: n), offsets = scales
        for b in 0..<n {
            let src = blocks + b * type.blockBytes
            let d = src.loadUnaligned(as: UInt16.self)
            scales[b] = d
            let code = (src + (type == .q4_1 ? 4 : 2)).assumingMemoryBound(to: UInt8.self)
            switch type {
            case .q4_1, .q4_0:
                // ggml's nibble order: byte j holds weights j (low) and j + 16 (high).
                for j in 0..<16 { q[32 * b + j] = code[j] & 15; q[32 * b + j + 16] = code[j] >> 4 }
                offsets[b] = type == .q4_1 ? (src + 2).loadUnaligned(as: UInt16.self)
                                           : try exactHalf(-8 * Float(Float16(bitPattern: d)), name: name)
            case .q8_0:
                for j in 0..<32 { q[32 * b + j] = code[j] ^ 0x80 }
                offsets[b] = try exactHalf(-128 * Float(Float16(bitPattern: d)), name: name)
            }
        }
        return try QuantizedTensor(bits: bits, group: 32, rows: rows, cols: cols, unpacked: q, scales: scales, offsets: offsets, name: name)
    }

    private static func exactHalf(_ v: Float, name: String) throws -> UInt16 {
        let h = Float16(v)
        guard Float(h) == v || v.isNaN else {
            throw QuantizationError("a ggml block scale of \(name) is too large to repack: its offset \(v) does not fit fp16")
        }
        return h.bitPattern
    }
}
