import Engine
import Foundation

/// torch.optim.Adam for one parameter array: β = (0.9, 0.999), ε = 1e-8, bias correction,
/// coupled L2 weight decay (added to the gradient). TesseraQ re-creates it every stage.
public struct Adam {
    public let learningRate: Float
    public let weightDecay: Float
    public let beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
    private var m: [Float]
    private var v: [Float]
    private var step = 0

    public init(count: Int, learningRate: Float, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        m = [Float](repeating: 0, count: count)
        v = [Float](repeating: 0, count: count)
    }

    /// Restores a saved state (`moments`), for checkpoints.
    public init(learningRate: Float, weightDecay: Float = 0, moments: (m: [Float], v: [Float], step: Int)) {
        precondition(moments.m.count == moments.v.count)
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        m = moments.m
        v = moments.v
        step = moments.step
    }

    /// The running moments and the step count.
    public var moments: (m: [Float], v: [Float], step: Int) { (m, v, step) }

    /// One step; `rate` overrides the learning rate for this step (a schedule).
    public mutating func update(_ parameters: inout [Float], gradient: UnsafePointer<Float>, rate: Float? = nil) {
        precondition(parameters.count == m.count)
        step += 1
        let c1 = 1 - powf(beta1, Float(step)), c2 = 1 - powf(beta2, Float(step))
        let (b1, b2, lr, wd, eps) = (beta1, beta2, rate ?? learningRate, weightDecay, epsilon)
        let stepSize = lr / c1, rootC2 = c2.squareRoot()
        m.withUnsafeMutableBufferPointer { m in
            v.withUnsafeMutableBufferPointer { v in
                parameters.withUnsafeMutableBufferPointer { p in
                    for i in 0..<p.count {
                        let g = gradient[i] + wd * p[i]
                        if g == 0 && m[i] == 0 && v[i] == 0 { continue }  // hard weights: nothing moves
                        m[i] = b1 * m[i] + (1 - b1) * g
                        v[i] = b2 * v[i] + (1 - b2) * g * g
                        // torch: p −= lr/c1 · m / (sqrt(v)/sqrt(c2) + ε)
                        p[i] -= stepSize * m[i] / (v[i].squareRoot() / rootC2 + eps)
                    }
                }
            }
        }
    }
}
