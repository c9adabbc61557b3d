import Foundation
import Engine

/// An estimate of what each stage of a chain costs on a model, in multiply-add flops counted
/// from the architecture, turned into seconds by a measured rate (`probe`). Only the ratios
/// matter for the progress line's ETA; the time budget also needs the rate. The counts follow
/// the work each stage does (forward = 1, forward + backward = 3 block passes); what they leave
/// out (elementwise work, the rounding variables, memory traffic) makes them an estimate, so
/// the planned total is printed as one.
public struct ChainCostModel: Sendable {
    public let config: LlamaConfig
    /// Flops per second the training kernels reach here (1: costs in flops).
    public var flopsPerSecond: Double

    public init(config: LlamaConfig, flopsPerSecond: Double = 1) {
        self.config = config
        self.flopsPerSecond = flopsPerSecond
    }

    /// Flops of one block's forward pass over a window of T tokens (linears and causal attention).
    func blockForward(_ T: Int) -> Double {
        let c = config, qDim = c.heads * c.headDim, kvDim = c.kvHeads * c.headDim
        let linear = Double(c.hidden * qDim + 2 * c.hidden * kvDim + qDim * c.hidden + 3 * c.hidden * c.ffn)
        return Double(T) * (2 * linear + 2 * Double(T) * Double(qDim))
    }

    /// Flops of the head (logits) over T tokens.
    func head(_ T: Int) -> Double { 2 * Double(T) * Double(config.vocab) * Double(config.hidden) }

    /// The block-wise stage: per step-per-stage (every stage, every block, `batch` windows forward
    /// and backward) and fixed (targets and next inputs over every window, the AWQ grid's 20
    /// trials, the loss and guard windows before and after).
    func blockwise(_ o: CalibrationOptions) -> (fixed: Double, perStep: Double) {
        let L = Double(config.blockCount), pass = blockForward(o.sequenceLength)
        let stages = Double(o.schedule.softRates.count)
        let perStep = L * stages * Double(o.batch) * 3 * pass
        let fixedPasses = 2 * Double(o.samples) + 20 * Double(o.awqSequences) + 2 * Double(o.guardSequences) + 4 * Double(o.lossSequences)
        return (L * fixedPasses * pass, perStep)
    }

    /// A tune round: fixed, what comes before its first step (the teacher pass over every window
    /// and the first held-out check), and per step (the student forward and backward, the
    /// teacher's logits, and the later held-out checks spread over the steps between them).
    func round(_ r: TuneRound) -> (fixed: Double, perStep: Double) {
        let model = Double(config.blockCount) * blockForward(r.sequenceLength) + head(r.sequenceLength)
        let check = Double(r.evalSamples) * model
        let perStep = 3 * model + head(r.sequenceLength) + check / Double(max(1, min(r.evalEvery, r.steps)))
        let fixed = Double(r.samples + r.evalSamples) * model + check
        return (fixed, perStep)
    }

    /// One `StageCost` per stage of `chain`, in seconds at `flopsPerSecond`. The block-wise
    /// stage's steps are its steps per stage; it goes down to a quarter of them before a round
    /// is dropped, a round to a quarter of its steps.
    public func costs(_ chain: CalibrationChain) -> [StageCost] {
        let rate = flopsPerSecond
        let b = blockwise(chain.blockwise)
        var stages = [StageCost(name: chain.stageName(0), fixedSeconds: b.fixed / rate, secondsPerStep: b.perStep / rate,
                                steps: chain.blockwise.stepsPerStage, minimumSteps: max(1, chain.blockwise.stepsPerStage / 4), droppable: false)]
        for (k, r) in chain.rounds.enumerated() {
            let c = round(r)
            stages.append(StageCost(name: chain.stageName(k + 1), fixedSeconds: c.fixed / rate, secondsPerStep: c.perStep / rate,
                                    steps: r.steps, minimumSteps: max(1, r.steps / 4), droppable: true))
        }
        return stages
    }

    /// Measures the rate: the block's four largest products (q/o and gate/up/down shapes) on a
    /// window of `T` tokens through the kernels the training uses, a few times (well under a
    /// second for the demo model).
    public static func probe(config c: LlamaConfig, sequenceLength T: Int, pool: ThreadPool) -> Double {
        let shapes = [(c.heads * c.headDim, c.hidden), (c.ffn, c.hidden), (c.hidden, c.ffn)]
        let x = FloatBuffer(count: T * shapes.map(\.1).max()!), y = FloatBuffer(count: T * shapes.map(\.0).max()!)
        let w = FloatBuffer(count: shapes.map { $0.0 * $0.1 }.max()!)
        var rng = SplitMix64(seed: 1)
        for i in 0..<x.count { x[i] = Float.random(in: -1...1, using: &rng) }
        for i in 0..<w.count { w[i] = Float.random(in: -1...1, using: &rng) }
        var flops = 0.0
        let start = ContinuousClock.now
        repeat {
            for (rows, cols) in shapes {
                Matmul.gemm(x.pointer, w.pointer, y.pointer, T: T, rows: rows, cols: cols, pool: pool)
                flops += 2 * Double(T * rows * cols)
            }
        } while (ContinuousClock.now - start).seconds < 0.3
        return flops / (ContinuousClock.now - start).seconds
    }
}
