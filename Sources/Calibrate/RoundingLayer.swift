import Engine
import Foundation

/// One linear layer under TesseraQ: a fixed grid (s, z per group), a rounding variable v per
/// weight (Progressive Adaptive Rounding) and a dequantization-scale variable u per group
/// (Dequantization Scale Tuning). Shapes: W [rows, cols], groups [rows, cols/G].
///
///   q = clamp(floor(W/s) + h(v) + z, 0, 2^B − 1)        h: RectifiedSigmoid
///   Ŵ = (q − z) · s · f,   f = 2·h(u)
///
/// Hardened weights have v = ±100, where h is exactly 1 or 0 and h' = 0: Adam leaves them
/// alone without a mask (the spec's ±∞, kept finite).
public final class RoundingLayer {
    public let name: String
    public let grid: QuantGrid
    /// floor(W/s) + z per weight: q = clamp(base + h(v), 0, qmax).
    let base: [Float]
    /// 1 where round-to-nearest would round up (frac(W/s) > 0.5): for flip statistics.
    let nearestUp: [Bool]
    /// Rounding variables, one per weight.
    public var v: [Float]
    /// Dequantization-scale variables, one per group.
    public var u: [Float]

    public static let hardValue: Float = 100

    public var rows: Int { grid.rows }
    public var cols: Int { grid.cols }

    /// Initialises v = h⁻¹(frac(W/s)) (so h(v) = frac exactly) and u = 0 (f = 1).
    public init(name: String, weights: UnsafePointer<Float>, rows: Int, cols: Int, bits: Int, group: Int) {
        self.name = name
        grid = QuantGrid(weights: weights, rows: rows, cols: cols, bits: bits, group: group)
        let G = grid.group, groups = grid.groupsPerRow
        var base = [Float](repeating: 0, count: rows * cols)
        var v = [Float](repeating: 0, count: rows * cols)
        var up = [Bool](repeating: false, count: rows * cols)
        for r in 0..<rows {
            for g in 0..<groups {
                let s = grid.scale[r * groups + g], z = grid.zero[r * groups + g]
                for i in r * cols + g * G..<r * cols + (g + 1) * G {
                    let x = weights[i] / s
                    let floor = x.rounded(.down)
                    let frac = x - floor
                    base[i] = floor + z
                    v[i] = RectifiedSigmoid.inverse(frac)
                    up[i] = frac > 0.5
                }
            }
        }
        self.base = base
        self.v = v
        self.nearestUp = up
        u = [Float](repeating: 0, count: rows * groups)
    }

    /// Sets every rounding decision to round-to-nearest, hard (the AWQ / RTN baselines and
    /// the "DST only" ablation).
    public func hardenToNearest() {
        for i in v.indices { v[i] = nearestUp[i] ? Self.hardValue : -Self.hardValue }
    }

    /// Back to the initialisation: nearest rounding, hard, and f = 1 (u = 0) in every group.
    public func restoreInitialisation() {
        hardenToNearest()
        for i in u.indices { u[i] = 0 }
    }

    /// The per-weight (base, v) and per-group (u, s, z) arrays as buffer pointers.
    private func withArrays(_ body: (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>,
                                     UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Void) {
        base.withUnsafeBufferPointer { base in
            v.withUnsafeBufferPointer { v in
                u.withUnsafeBufferPointer { u in
                    grid.scale.withUnsafeBufferPointer { scale in
                        grid.zero.withUnsafeBufferPointer { zero in body(base, v, u, scale, zero) }
                    }
                }
            }
        }
    }

    /// Ŵ into `out` [rows, cols]. `pool` splits rows.
    public func materialize(into out: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let cols = self.cols, G = grid.group, groups = grid.groupsPerRow, qmax = grid.qmax
        withArrays { base, v, u, scale, zero in
            pool.parallelFor(rows) { range in
                for r in range {
                    for g in 0..<groups {
                        let k = r * groups + g
                        let step = scale[k] * 2 * RectifiedSigmoid.value(u[k]), z = zero[k]
                        for i in r * cols + g * G..<r * cols + (g + 1) * G {
                            // Hard weights (most of them after the first stages) skip the sigmoid.
                            let vi = v[i]
                            let rounding = abs(vi) == Self.hardValue ? (vi > 0 ? 1 : 0) : RectifiedSigmoid.value(vi)
                            let q = min(max(base[i] + rounding, 0), qmax)
                            out[i] = (q - z) * step
                        }
                    }
                }
            }
        }
    }

    /// Chains dL/dŴ to dL/dv (per weight) and dL/du (per group).
    ///   dŴ/dv = s·f·h'(v) where the clamp on q is inactive (inclusive bounds, as torch);
    ///   dŴ/du = (q − z)·s·2·h'(u).
    public func backward(weightGradient dW: UnsafePointer<Float>, vGradient dv: UnsafeMutablePointer<Float>,
                         uGradient du: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let cols = self.cols, G = grid.group, groups = grid.groupsPerRow, qmax = grid.qmax
        withArrays { base, v, u, scale, zero in
            pool.parallelFor(rows) { range in
                for r in range {
                    for g in 0..<groups {
                        let k = r * groups + g
                        let s = scale[k], z = zero[k]
                        let f = 2 * RectifiedSigmoid.value(u[k])
                        var sumU: Float = 0
                        for i in r * cols + g * G..<r * cols + (g + 1) * G {
                            let vi = v[i]
                            if abs(vi) == Self.hardValue {  // h' = 0
                                dv[i] = 0
                                sumU += dW[i] * (min(max(base[i] + (vi > 0 ? 1 : 0), 0), qmax) - z)
                                continue
                            }
                            let raw = base[i] + RectifiedSigmoid.value(vi)
                            let q = min(max(raw, 0), qmax)
                            dv[i] = (raw >= 0 && raw <= qmax) ? dW[i] * s * f * RectifiedSigmoid.derivative(vi) : 0
                            sumU += dW[i] * (q - z)
                        }
                        du[k] = sumU * s * 2 * RectifiedSigmoid.derivative(u[k])
                    }
                }
            }
        }
    }

    /// Hardening score |h(v) − 0.5| per weight (hard weights score 0.5).
    func scores() -> [Float] { v.map { abs(RectifiedSigmoid.value($0) - 0.5) } }

    /// PAR's harden phase (TESSERAQ_SPEC §1.2): τ = the `softRate` quantile of the scores
    /// (numpy's linear interpolation); weights with h(v) > 0.5 + τ harden up, < 0.5 − τ down.
    public func harden(softRate: Double) {
        let scores = self.scores()
        let tau = Self.quantile(scores, softRate)
        for i in v.indices {
            let h = RectifiedSigmoid.value(v[i])
            if h > 0.5 + tau { v[i] = Self.hardValue } else if h < 0.5 - tau { v[i] = -Self.hardValue }
        }
    }

    /// Hardens every remaining weight by the sign of v (the end of PAR).
    public func hardenAll() {
        for i in v.indices { v[i] = v[i] > 0 ? Self.hardValue : -Self.hardValue }
    }

    /// Fraction of weights that are hard (|v| = hardValue).
    public var hardFraction: Double {
        Double(v.reduce(0) { $0 + (abs($1) == Self.hardValue ? 1 : 0) }) / Double(v.count)
    }

    /// Fraction of weights whose (current sign of) v rounds differently from nearest.
    public var flippedFraction: Double {
        var flips = 0
        for i in v.indices where (v[i] > 0) != nearestUp[i] { flips += 1 }
        return Double(flips) / Double(v.count)
    }

    /// numpy.quantile(values, q) with linear interpolation.
    static func quantile(_ values: [Float], _ q: Double) -> Float {
        let sorted = values.sorted()
        let position = q * Double(sorted.count - 1)
        let lo = Int(position.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
        let t = Float(position - Double(lo))
        return sorted[lo] + (sorted[hi] - sorted[lo]) * t
    }

    /// The final integer codes and fp16 scale s·f and offset −z·s·f, in Tessera's packed
    /// layout (w = q·scale + offset). Call after `hardenAll()`.
    public func packed() throws -> QuantizedTensor {
        let G = grid.group, groups = grid.groupsPerRow, qmax = grid.qmax
        var codes = [UInt8](repeating: 0, count: rows * cols)
        var scales = [UInt16](repeating: 0, count: rows * groups), offsets = scales
        for r in 0..<rows {
            for g in 0..<groups {
                let k = r * groups + g
                let step = Float16(grid.scale[k] * 2 * RectifiedSigmoid.value(u[k]))
                guard step.isFinite else { throw QuantizationError("\(name) row \(r) group \(g): scale out of fp16 range") }
                scales[k] = step.bitPattern
                offsets[k] = Float16(-grid.zero[k] * Float(step)).bitPattern
                for i in r * cols + g * G..<r * cols + (g + 1) * G {
                    codes[i] = UInt8(min(max(base[i] + (v[i] > 0 ? 1 : 0), 0), qmax))
                }
            }
        }
        return try QuantizedTensor(bits: grid.bits, group: G, rows: rows, cols: cols, unpacked: codes, scales: scales, offsets: offsets, name: name)
    }
}
