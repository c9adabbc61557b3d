import Core

/// Round-to-nearest group quantization: the min/max grid with an explicit zero-point policy.
/// TesseraQ's calibration grid (QuantGrid, in this target too) is the same min/max grid with
/// the reference's policy: raw range, fp32 s floored at 1e-5, integer z.
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
                var lo = base[0], hi = base[0]
                for i in 1..<G { lo = min(lo, base[i]); hi = max(hi, base[i]) }
                guard lo.isFinite, hi.isFinite else { throw QuantizationError("\(name) has a non-finite weight in row \(r)") }
                var s16: Float16, m16: Float16
                switch zeroPoint {
                case .float:
                    m16 = roundedDown(lo)
                    s16 = roundedUp((hi - Float(m16)) / qmax)
                case .integer:
                    lo = min(lo, 0); hi = max(hi, 0)
                    s16 = roundedUp((hi - lo) / qmax)
                    let z = s16 == 0 ? 0 : min(max((-lo / Float(s16)).rounded(), 0), qmax)
                    m16 = Float16(-z * Float(s16))
                }
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

    /// The largest fp16 ≤ v.
    static func roundedDown(_ v: Float) -> Float16 {
        var h = Float16(v)
        if Float(h) > v { h = h.nextDown }
        return h
    }

    /// The smallest fp16 ≥ v.
    static func roundedUp(_ v: Float) -> Float16 {
        var h = Float16(v)
        if Float(h) < v { h = h.nextUp }
        return h
    }
}
