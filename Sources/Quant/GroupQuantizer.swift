import Core

/// Round-to-nearest group quantization on the min/max grid (`MinMaxGrid`, stored policy with
/// an explicit zero point).
public enum GroupQuantizer {
    /// Round-to-nearest quantization of fp32 weights [rows, cols] with per-group min/max.
    /// s = (max − min)/(2^B − 1), rounded up to fp16 so the grid covers the group; codes are
    /// computed against the stored fp16 s and m, so |dequantized − w| ≤ s/2 (s the stored
    /// scale) up to fp32 rounding, except where m's fp16 rounding moves the grid (.integer only).
    /// `group` 0 means one group per row.
    public static func rtn(weights: UnsafePointer<Float>, rows: Int, cols: Int, bits: Int, group: Int,
                           zeroPoint: ZeroPoint = .float, name: String = "weights") throws -> QuantizedTensor {
        let G = try QuantizedTensor.validate(bits: bits, group: group, cols: cols, name: name), groups = cols / G
        let qmax = Float((1 << bits) - 1)
        var q = [UInt8](repeating: 0, count: rows * cols)
        var scales = [UInt16](repeating: 0, count: rows * groups), offsets = scales
        for r in 0..<rows {
            for g in 0..<groups {
                let base = weights + r * cols + g * G
                let (lo, hi) = MinMaxGrid.range(base, count: G)
                guard lo.isFinite, hi.isFinite else { throw QuantizationError("\(name) has a non-finite weight in row \(r)") }
                let (s16, m16) = MinMaxGrid.stored(lo: lo, hi: hi, qmax: qmax, zeroPoint: zeroPoint)
                guard s16.isFinite, m16.isFinite else {
                    throw QuantizationError("\(name) row \(r) group \(g): scale or offset out of fp16 range")
                }
                let s = Float(s16), m = Float(m16)
                scales[r * groups + g] = s16.bitPattern
                offsets[r * groups + g] = m16.bitPattern
                for i in 0..<G {
                    let v = s == 0 ? 0 : ((base[i] - m) / s).rounded()
                    q[r * cols + g * G + i] = UInt8(min(max(v, 0), qmax))
                }
            }
        }
        return try QuantizedTensor(bits: bits, group: G, rows: rows, cols: cols, unpacked: q, scales: scales, offsets: offsets, name: name)
    }
}
