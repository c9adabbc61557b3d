import Core
import Foundation
import KernelsC

/// The small element-wise and row-wise operations of a transformer, in fp32.
/// Shapes: rows of width C, row-major.
public enum Ops {
    /// out = x·r⊙weight with r = 1/√(mean(x²) + eps), for one row of width C. Returns r (what
    /// calibration's backward keeps). The inference and calibration forwards both call this.
    @discardableResult
    public static func rmsNorm(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                               C: Int, eps: Float) -> Float {
        var sumSquares: Float = 0
        for i in 0..<C { sumSquares += x[i] * x[i] }
        let scale = 1 / (sumSquares / Float(C) + eps).squareRoot()
        for i in 0..<C { out[i] = x[i] * scale * weight[i] }
        return scale
    }

    /// In-place softmax over n values.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        tsr_softmax_f32(x, Int32(n))
    }

    /// In-place softmax over the entries of `ranges` (ascending, disjoint) of a row of n
    /// values; every other entry becomes 0 (a masked attention row).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int, over ranges: [Range<Int>]) {
        var maxValue = -Float.infinity
        for r in ranges where !r.isEmpty { maxValue = max(maxValue, tsr_max_f32(x + r.lowerBound, Int32(r.count))) }
        var sum: Float = 0
        for r in ranges where !r.isEmpty { sum += tsr_exp_sub_sum_f32(x + r.lowerBound, Int32(r.count), maxValue) }
        let inv = 1 / sum
        var next = 0
        for r in ranges {
            (x + next).update(repeating: 0, count: r.lowerBound - next)
            if !r.isEmpty { tsr_scale_f32(x + r.lowerBound, Int32(r.count), inv) }
            next = r.upperBound
        }
        (x + next).update(repeating: 0, count: n - next)
    }

    /// out = silu(gate)⊙up, silu(g) = g·σ(g), element-wise over n values (out may be gate).
    /// The inference and calibration forwards both call this.
    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, _ n: Int) {
        tsr_swiglu_f32(gate, up, out, Int32(n))
    }

    /// gate = silu(gate)⊙up, in place.
    public static func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
        swiglu(UnsafePointer(gate), up, into: gate, n)
    }

    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        tsr_dot_f32(a, b, Int32(n))
    }

    /// y += a·x over n values.
    public static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        tsr_axpy_f32(a, x, y, Int32(n))
    }
}
