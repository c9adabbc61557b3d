import Foundation

/// The asymmetric integer grid TesseraQ calibrates on (TESSERAQ_SPEC §4; `MinMaxGrid`'s
/// reference policy): per group of G consecutive weights of a row, from the raw group min and
/// max (not widened to include 0),
///   s = max(max − min, 1e-5) / (2^B − 1),   z = clamp(−round(min / s), 0, 2^B − 1),
///   q = clamp(round(w / s) + z, 0, 2^B − 1),  ŵ = (q − z)·s.
/// round is round-half-to-even, as torch.round. Shapes: W [rows, cols], groups [rows, cols/G].
public struct QuantGrid: Sendable {
    public let bits: Int
    public let group: Int
    public let rows: Int
    public let cols: Int
    /// s per (row, group).
    public var scale: [Float]
    /// Integer zero point z per (row, group), held as Float.
    public var zero: [Float]

    public var groupsPerRow: Int { cols / group }
    public var qmax: Float { Float((1 << bits) - 1) }

    /// The min/max grid of `weights` [rows, cols]. `group` must divide `cols` (0 = whole row).
    public init(weights: UnsafePointer<Float>, rows: Int, cols: Int, bits: Int, group: Int) {
        let G = group == 0 ? cols : group
        precondition(cols % G == 0, "group \(G) does not divide \(cols)")
        self.bits = bits
        self.group = G
        self.rows = rows
        self.cols = cols
        let groups = cols / G, qmax = Float((1 << bits) - 1)
        var scale = [Float](repeating: 0, count: rows * groups)
        var zero = [Float](repeating: 0, count: rows * groups)
        for r in 0..<rows {
            for g in 0..<groups {
                let (s, z) = QuantGrid.parameters(weights + r * cols + g * G, count: G, qmax: qmax)
                scale[r * groups + g] = s
                zero[r * groups + g] = z
            }
        }
        self.scale = scale
        self.zero = zero
    }

    /// (s, z) for one group of values: `MinMaxGrid`'s reference policy.
    @inline(__always)
    public static func parameters(_ w: UnsafePointer<Float>, count: Int, qmax: Float) -> (Float, Float) {
        let (lo, hi) = MinMaxGrid.range(w, count: count)
        return MinMaxGrid.reference(lo: lo, hi: hi, qmax: qmax)
    }

    /// Round-to-nearest fake quantization of `weights` in place (the AWQ search's quantizer).
    public static func fakeQuantizeRTN(_ w: UnsafeMutablePointer<Float>, rows: Int, cols: Int, bits: Int, group: Int) {
        let G = group == 0 ? cols : group, qmax = Float((1 << bits) - 1)
        for r in 0..<rows {
            for g in 0..<cols / G {
                let p = w + r * cols + g * G
                let (s, z) = parameters(p, count: G, qmax: qmax)
                for i in 0..<G {
                    let q = min(max((p[i] / s).rounded(.toNearestOrEven) + z, 0), qmax)
                    p[i] = (q - z) * s
                }
            }
        }
    }
}

/// AdaRound's rectified sigmoid h(x) = clamp(1.2·σ(x) − 0.1, 0, 1) (TESSERAQ_SPEC §1.1), its
/// derivative (0 where the clamp is active) and its inverse (for initialisation).
public enum RectifiedSigmoid {
    static let zeta: Float = 1.1, gamma: Float = -0.1

    @inline(__always)
    public static func value(_ x: Float) -> Float {
        let sigma = 1 / (1 + expf(-x))
        return min(max(sigma * (zeta - gamma) + gamma, 0), 1)
    }

    @inline(__always)
    public static func derivative(_ x: Float) -> Float {
        let sigma = 1 / (1 + expf(-x))
        let y = sigma * (zeta - gamma) + gamma
        return (y <= 0 || y >= 1) ? 0 : (zeta - gamma) * sigma * (1 - sigma)
    }

    /// h⁻¹(y) = −ln((ζ − γ)/(y − γ) − 1); y = 0 gives −ln 11.
    @inline(__always)
    public static func inverse(_ y: Float) -> Float {
        -logf((zeta - gamma) / (y - gamma) - 1)
    }
}
