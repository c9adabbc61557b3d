import Architecture
import Core
import Kernels
import Foundation

/// Rotary position embedding in GGUF's interleaved layout: each pair (x[2i], x[2i+1]) of a
/// head is rotated by angle pos·θᵢ with θᵢ = base^(−2i/D) / factorᵢ (factors: llama3 scaling).
public struct RotaryEmbedding {
    public let headDim: Int
    /// θᵢ per pair, in Double so that large positions keep their precision.
    public let frequencies: [Double]

    public init(headDim: Int, base: Double, frequencyFactors: [Float]?) {
        self.headDim = headDim
        frequencies = (0..<headDim / 2).map { i in
            let theta = pow(base, -Double(2 * i) / Double(headDim))
            return theta / Double(frequencyFactors?[i] ?? 1)
        }
    }

    /// Rotates `heads` consecutive heads of width D in `x` for position `pos`.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position pos: Int) {
        for i in 0..<headDim / 2 {
            let angle = Double(pos) * frequencies[i]
            let c = Float(cos(angle)), s = Float(sin(angle))
            for h in 0..<heads {
                let p = x + h * headDim + 2 * i
                let x0 = p[0], x1 = p[1]
                p[0] = x0 * c - x1 * s
                p[1] = x0 * s + x1 * c
            }
        }
    }
}
