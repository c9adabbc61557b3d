import Core

/// The one min/max grid. A group of G consecutive weights of a row gets a scale s and a
/// zero point from its minimum and maximum; the policy says how:
///
///   policy                     range             s                          zero point               used by
///   .stored(.float)            raw [lo, hi]      fp16, rounded up           m = lo rounded down (fp16)   quantize (default)
///   .stored(.integer)          [min(lo,0), max(hi,0)]  fp16, rounded up     z = round(−lo/s), m = −z·s   quantize --zero-point int
///   .reference                 raw [lo, hi]      fp32, max(hi − lo, 1e-5)/qmax   z = round½even(−lo/s) ∈ [0, qmax]   calibrate (TESSERAQ_SPEC §4)
///
/// The stored policies produce the file's fp16 (s, m) with w ≈ q·s + m and cover the group;
/// the reference policy is the calibration reference's grid, ŵ = (q − z)·s, which calibration
/// turns into the file's (s, m) when it writes.
public enum MinMaxGrid {
    /// (min, max) of `count` values.
    @inline(__always)
    public static func range(_ w: UnsafePointer<Float>, count: Int) -> (lo: Float, hi: Float) {
        var lo = w[0], hi = w[0]
        for i in 1..<count { lo = min(lo, w[i]); hi = max(hi, w[i]) }
        return (lo, hi)
    }

    /// The stored policy's fp16 scale and offset for a group with range [lo, hi].
    @inline(__always)
    public static func stored(lo: Float, hi: Float, qmax: Float, zeroPoint: ZeroPoint) -> (s: Float16, m: Float16) {
        switch zeroPoint {
        case .float:
            let m16 = roundedDown(lo)
            return (roundedUp((hi - Float(m16)) / qmax), m16)
        case .integer:
            let lo = min(lo, 0), hi = max(hi, 0)
            let s16 = roundedUp((hi - lo) / qmax)
            let z = s16 == 0 ? 0 : min(max((-lo / Float(s16)).rounded(), 0), qmax)
            return (s16, Float16(-z * Float(s16)))
        }
    }

    /// The reference policy's fp32 scale and integer zero point (held as Float).
    @inline(__always)
    public static func reference(lo: Float, hi: Float, qmax: Float) -> (s: Float, z: Float) {
        let s = max(hi - lo, 1e-5) / qmax
        let z = min(max((-lo / s).rounded(.toNearestOrEven), 0), qmax)
        return (s, z)
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
