import Engine
import Foundation

/// How much each token counts in the block reconstruction loss (`--token-norm-cap`).
///
/// From block 11 on, the demo model's residual stream carries massive activations: the first
/// token of every window (and a few others) is 100–200× longer than a typical token, all in one
/// channel. Plain MSE then spends most of its budget on those tokens. At W4g64 they hold 74 % of
/// block 11's loss although they are 0.2 % of the tokens, and what they carry is mostly a
/// length that the next block's RMSNorm divides out. With a cap K, a token whose fp target is
/// longer than K × the median token counts as if its error were scaled down to that length,
/// weight (K·median / ‖y‖)²; every other token keeps weight 1. The reference has no such
/// weighting (cap 0).
struct TokenWeighting {
    /// K × the median token norm; 0 when off.
    let limit: Float

    static let off = TokenWeighting(limit: 0)

    init(limit: Float) { self.limit = limit }

    /// The cap `cap` relative to the median norm of the `tokens` rows of width C at `targets`.
    init(cap: Float, targets: UnsafePointer<Float>, tokens: Int, C: Int) {
        guard cap > 0, tokens > 0 else { self.init(limit: 0); return }
        let norms = (0..<tokens).map { Self.squaredNorm(targets + $0 * C, C).squareRoot() }.sorted()
        self.init(limit: cap * norms[tokens / 2])
    }

    /// The weight of the token whose fp target is `target[0..<C]`.
    func weight(_ target: UnsafePointer<Float>, _ C: Int) -> Float {
        guard limit > 0 else { return 1 }
        let squared = Self.squaredNorm(target, C), limitSquared = limit * limit
        return squared > limitSquared ? limitSquared / squared : 1
    }

    static func squaredNorm(_ x: UnsafePointer<Float>, _ C: Int) -> Float {
        var sum: Float = 0
        for c in 0..<C { sum += x[c] * x[c] }
        return sum
    }
}
