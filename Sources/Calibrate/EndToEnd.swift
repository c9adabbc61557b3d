import Foundation
import Engine

// End-to-end tuning of a packed model's per-group scales and offsets, after block-wise
// calibration (not part of TesseraQ; the idea is EfficientQAT's "E2E-QP": the integer codes
// stay fixed and only the step sizes train, through the whole network).
//
// Block-wise reconstruction makes every block match its fp targets on its own; the errors
// that remain add up through 30 blocks, and the late blocks' loss is the highest. Here the
// whole quantized model is trained to match the fp model's next-token distribution
// (distillation: KL(p_fp ‖ p_q) per token, averaged), so a block may trade its own error for
// a smaller one at the output. The teacher is the fp model rather than the text's next
// tokens, so the student cannot gain by fitting the calibration text better than the fp model
// does: a lower KL means closer to the fp model, not to WikiText.
//
// Trainable, per group k of every block linear (codes q fixed):
//   scale_k  = s_k · (1 + α_k)        offset_k = m_k + s_k · β_k        w = q · scale + offset
// α and β are unitless (β in steps of the grid), start at 0 (the input model exactly) and train
// with one Adam each. dL/dα_k = s_k · Σ_group dL/dw · q,  dL/dβ_k = s_k · Σ_group dL/dw.
// With `trainNorms`, every RMSNorm weight (two per block and the output norm) trains too, the
// same way: w_i = w0_i · (1 + γ_i), dL/dγ_i = w0_i · dL/dw_i. The norms are stored in fp32, so
// this costs no bits; it lets the model rescale each channel that feeds a quantized linear.
// The embedding and the head stay as they are (the teacher's output norm is the original).
//
// Shapes: one window of T tokens per step; C hidden, V vocabulary.
//
// Here: the options, the trainable linear, and the trainer (EndToEndTuner: loop, Adam,
// evaluation cadence, checkpoints, output). EndToEndModel.swift: the model (forward, backward, KL).

/// The hyper-parameters of a tuning run.
public struct EndToEndOptions: Sendable {
    /// Training windows drawn from the calibration text, and their length.
    public var samples = 256
    public var sequenceLength = 512
    /// Adam steps, one window each.
    public var steps = 480
    /// Peak learning rate; it decays to 0 on a cosine over the steps.
    public var learningRate: Float = 5e-4
    /// Steps over which the rate first ramps up linearly to the cosine (0: none, the cosine from
    /// step 0). Adam's first steps move every parameter by about the full rate whatever its
    /// gradient's size; a ramp keeps those early steps small.
    public var warmupSteps = 0
    /// The measured rates: 5e-4 at 2 bits, halved per extra bit (a finer grid leaves smaller
    /// errors to correct; W4g64 at 5e-4 ended with a higher held-out KL, at 1.25e-4 lower).
    public static func learningRate(bits: Int) -> Float { 5e-4 * powf(2, Float(2 - bits)) }
    /// Held-out windows (another seed, sharing no token with the training windows) on which
    /// the KL is measured before, during and after.
    public var evalSamples = 8
    public var evalEvery = 80
    /// Train the RMSNorm weights too (γ above).
    public var trainNorms = false
    /// Steps between checkpoints.
    public var checkpointEvery = 25
    public var seed: UInt64 = 42
    public init() {}

    /// What a checkpoint must agree on to be resumed.
    var fingerprint: [String] {
        ["samples=\(samples)", "seq_len=\(sequenceLength)", "steps=\(steps)", "lr=\(learningRate)",
         "eval_samples=\(evalSamples)", "heldout=disjoint", "seed=\(seed)"] + (trainNorms ? ["norms=true"] : [])
            + (warmupSteps > 0 ? ["warmup=\(warmupSteps)"] : [])
    }

    /// The rate of (0-based) step `step`: the cosine from `learningRate` to 0 over the run, times a
    /// linear ramp (step + 1)/warmup over the first `warmupSteps` steps.
    public func rate(atStep step: Int) -> Float {
        let cosine = 0.5 * (1 + cos(Double.pi * Double(step) / Double(steps)))
        let ramp = warmupSteps > 0 ? min(1, Double(step + 1) / Double(warmupSteps)) : 1
        return learningRate * Float(cosine * ramp)
    }
}

/// One packed linear whose group scales and offsets train (its codes do not).
final class TunableLinear {
    let name: String
    let packed: QuantizedTensor
    let rows: Int, cols: Int, group: Int
    /// One code per weight [rows, cols].
    let codes: [UInt8]
    /// The input model's scale s and offset m per group [rows, cols/group].
    let scale: [Float], offset: [Float]
    /// Where this layer's groups sit in the flat α and β arrays.
    let first: Int
    var groups: Int { scale.count }

    init(name: String, packed: QuantizedTensor, first: Int) {
        self.name = name
        self.packed = packed
        (rows, cols, group) = (packed.rows, packed.cols, packed.group)
        codes = packed.unpackedCodes()
        let n = packed.rows * packed.groupsPerRow
        scale = (0..<n).map { Half.toFloat(packed.scales[$0]) }
        offset = (0..<n).map { Half.toFloat(packed.offsets[$0]) }
        self.first = first
    }

    /// Runs `body(k, elements)` for every group k of the weight, rows split across the pool.
    private func forEachGroup(pool: ThreadPool, _ body: (Int, Range<Int>) -> Void) {
        let cols = self.cols, G = group, perRow = cols / G
        pool.parallelFor(rows) { range in
            for r in range {
                for g in 0..<perRow { body(r * perRow + g, r * cols + g * G..<r * cols + (g + 1) * G) }
            }
        }
    }

    /// w = q·s(1 + α) + m + s·β into `out` [rows, cols].
    func materialize(alpha: UnsafePointer<Float>, beta: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        codes.withUnsafeBufferPointer { q in
            scale.withUnsafeBufferPointer { s in
                offset.withUnsafeBufferPointer { m in
                    forEachGroup(pool: pool) { k, elements in
                        let step = s[k] * (1 + alpha[first + k]), shift = m[k] + s[k] * beta[first + k]
                        for i in elements { out[i] = Float(q[i]) * step + shift }
                    }
                }
            }
        }
    }

    /// dL/dα and dL/dβ of this layer's groups (written into the flat arrays) from dL/dw.
    func backward(weightGradient dW: UnsafePointer<Float>, alphaGradient dAlpha: UnsafeMutablePointer<Float>,
                  betaGradient dBeta: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        codes.withUnsafeBufferPointer { q in
            scale.withUnsafeBufferPointer { s in
                forEachGroup(pool: pool) { k, elements in
                    var sumQ: Float = 0, sum: Float = 0
                    for i in elements { sumQ += dW[i] * Float(q[i]); sum += dW[i] }
                    dAlpha[first + k] = s[k] * sumQ
                    dBeta[first + k] = s[k] * sum
                }
            }
        }
    }

    /// The same codes with the tuned scales and offsets (fp16).
    func tuned(alpha: UnsafePointer<Float>, beta: UnsafePointer<Float>) throws -> QuantizedTensor {
        var p = packed
        for k in 0..<groups {
            let step = Float16(scale[k] * (1 + alpha[first + k])), shift = Float16(offset[k] + scale[k] * beta[first + k])
            guard step.isFinite && shift.isFinite else { throw QuantizationError("\(name) group \(k): scale or offset out of fp16 range") }
            p.scales[k] = step.bitPattern
            p.offsets[k] = shift.bitPattern
        }
        return p
    }
}

/// Progress of a tuning run.
public struct EndToEndProgress: Sendable {
    public var step: Int, steps: Int
    public var loss: Float
    public var phase: String
}

/// What a tuning run did (the JSON log).
public struct EndToEndReport: Codable, Sendable {
    /// Mean KL(p_fp ‖ p_q) per token on the held-out windows: (step, KL).
    public var evalKL: [[Double]] = []
    /// Training KL of every step, in order.
    public var stepLosses: [Float] = []
    /// Whether the tuned scales were kept (false: the held-out KL did not improve, the input is written unchanged).
    public var kept = true
    public var seconds: Double = 0
    public var resumedAt = 0
}

/// The trainer of an `EndToEndModel`: the loop over steps (one window each), one Adam each for
/// α, β and γ on the cosine schedule, the held-out KL every `evalEvery` steps, a checkpoint in
/// OUT.e2e/ every `checkpointEvery` steps, and the output file (`PackedRewrite`).
public final class EndToEndTuner {
    public let model: EndToEndModel
    public let options: EndToEndOptions
    public let outputPath: String
    let checkpoint: Checkpoint<State>
    public var checkpointDirectory: String { checkpoint.directory }
    /// Stop (as if killed) after this many steps, at a checkpoint: tests.
    public var stopAfterSteps: Int?
    /// A time budget's re-plan (`calibrate --time-budget`), called twice in a run that starts at
    /// step 0: after its first `replanStep` steps, and again halfway through the steps that
    /// answer gave (when that is later), each time with the seconds the run has taken, the steps
    /// done and the seconds they took (the second time including the held-out checks and
    /// checkpoints so far, which the first 10 steps do not see); it returns the steps to run in
    /// all (the cosine schedule spans them from there on). The answer is saved with every later
    /// checkpoint, so a resumed run follows the last one and asks no more, and the file's
    /// settings record it. nil: `options.steps`.
    public var replanAfterSteps: ((_ secondsSoFar: Double, _ stepsDone: Int, _ stepSeconds: Double) throws -> Int)?
    /// Steps timed before the first `replanAfterSteps` (fewer than `checkpointEvery`).
    public static let replanStep = 10

    public var teacher: ModelSource { model.teacher }
    public var student: PackedModelSource { model.student }

    /// `weightBudget`: see `EndToEndModel.init` (it does not change the result).
    public init(teacher: ModelSource, student: PackedModelSource, options: EndToEndOptions, outputPath: String, pool: ThreadPool,
                weightBudget: Int? = nil) throws {
        model = try EndToEndModel(teacher: teacher, student: student, sequenceLength: options.sequenceLength, pool: pool,
                                  weightBudget: weightBudget)
        self.options = options
        self.outputPath = outputPath
        checkpoint = Checkpoint(output: outputPath, suffix: ".e2e")
    }

    struct State: CheckpointState {
        var fingerprint: [String]
        var step: Int
        var report: EndToEndReport
        var parameters: String   // file name of the arrays, in the checkpoint folder
        /// The steps a time budget's re-plan gave the run (nil: the options').
        var steps: Int? = nil
    }

    /// One Adam each for α, β and γ (γ steps only with `trainNorms`).
    struct Optimizer {
        var alpha: Adam, beta: Adam, gamma: Adam

        init(_ model: EndToEndModel, learningRate: Float) {
            alpha = Adam(count: model.alpha.count, learningRate: learningRate)
            beta = Adam(count: model.beta.count, learningRate: learningRate)
            gamma = Adam(count: model.gamma.count, learningRate: learningRate)
        }

        /// The parameters and moments a checkpoint holds, in its file's order.
        func arrays(_ model: EndToEndModel) -> [[Float]] {
            let (ma, va, _) = alpha.moments, (mb, vb, _) = beta.moments, (mg, vg, _) = gamma.moments
            return [model.alpha, model.beta, ma, va, mb, vb, model.gamma, mg, vg]
        }

        static func counts(_ model: EndToEndModel) -> [Int] {
            [Int](repeating: model.alpha.count, count: 6) + [Int](repeating: model.gamma.count, count: 3)
        }

        /// Parameters (into `model`) and moments from a checkpoint's `arrays` saved after `step` steps.
        init(restoring arrays: [[Float]], step: Int, into model: EndToEndModel, learningRate: Float) {
            model.alpha = arrays[0]; model.beta = arrays[1]; model.gamma = arrays[6]
            alpha = Adam(learningRate: learningRate, moments: (arrays[2], arrays[3], step))
            beta = Adam(learningRate: learningRate, moments: (arrays[4], arrays[5], step))
            gamma = Adam(learningRate: learningRate, moments: (arrays[7], arrays[8], step))
        }

        mutating func update(_ model: EndToEndModel, dAlpha: FloatBuffer, dBeta: FloatBuffer, dGamma: FloatBuffer, rate: Float, norms: Bool) {
            alpha.update(&model.alpha, gradient: dAlpha.pointer, rate: rate)
            beta.update(&model.beta, gradient: dBeta.pointer, rate: rate)
            if norms { gamma.update(&model.gamma, gradient: dGamma.pointer, rate: rate) }
        }
    }

    /// The training windows and the held-out ones: text no training window touches, so the
    /// check measures generalisation. Throws when the text is too short for both.
    public static func split(tokens: [Int32], options o: EndToEndOptions) throws -> (training: [[Int32]], heldOut: [[Int32]]) {
        let starts = try CalibrationData.starts(tokens: tokens.count, count: o.samples, length: o.sequenceLength, seed: o.seed)
        let held = try CalibrationData.windows(tokens: tokens, count: o.evalSamples, length: o.sequenceLength,
                                               seed: o.seed &+ 0x5EED, disjointFrom: starts)
        return (starts.map { Array(tokens[$0..<$0 + o.sequenceLength]) }, held)
    }

    /// Trains, then writes the tuned packed model to `outputPath` (atomically).
    public func run(tokens: [Int32], resume: Bool, progress: (EndToEndProgress) -> Void = { _ in }) throws -> EndToEndReport {
        let start = ContinuousClock.now
        var o = options
        let m = model
        let print = o.fingerprint + ["teacher=\(teacher.path)", "student=\(student.path)", "data=\(tokens.count)"]
        var report = EndToEndReport()
        var optimizer = Optimizer(m, learningRate: o.learningRate)
        var firstStep = 0
        var replanned: Int?
        if let saved = try checkpoint.open(fingerprint: print, resume: resume) {
            let arrays = try checkpoint.readArrays(saved.parameters, counts: Optimizer.counts(m))
            optimizer = Optimizer(restoring: arrays, step: saved.step, into: m, learningRate: o.learningRate)
            report = saved.report
            report.resumedAt = saved.step
            firstStep = saved.step
            if let steps = saved.steps { o.steps = steps; o.evalEvery = min(o.evalEvery, steps); replanned = steps }
            m.materialize()
        }

        let (windows, held) = try Self.split(tokens: tokens, options: o)
        let states = try m.teacherStates(windows + held, progress: progress)
        let trainStates = Array(states[..<windows.count]), heldStates = Array(states[windows.count...])
        if report.evalKL.isEmpty {
            progress(EndToEndProgress(step: 0, steps: o.steps, loss: 0, phase: "eval"))
            report.evalKL.append([0, m.evaluate(held, states: heldStates)])
        }

        let dAlpha = FloatBuffer(count: m.alpha.count), dBeta = FloatBuffer(count: m.beta.count), dGamma = FloatBuffer(count: m.gamma.count)
        let stepsStart = ContinuousClock.now
        var step = firstStep
        var nextReplan = firstStep == 0 && replanAfterSteps != nil ? Self.replanStep : nil
        while step < o.steps {
            defer { step += 1 }
            // The window of step k depends only on the seed and k (resume draws the same ones).
            var rng = SplitMix64(seed: o.seed &+ 0xE2E &* UInt64(step + 1))
            let n = Int.random(in: 0..<windows.count, using: &rng)
            let loss = m.trainingStep(windows[n], teacherState: trainStates[n], dAlpha: dAlpha.pointer, dBeta: dBeta.pointer, dGamma: dGamma.pointer)
            // Cosine decay from lr to 0 over the run (late steps, on single windows, must not undo the
            // early ones), after the optional linear warm-up.
            optimizer.update(m, dAlpha: dAlpha, dBeta: dBeta, dGamma: dGamma, rate: o.rate(atStep: step), norms: o.trainNorms)
            m.materialize()
            report.stepLosses.append(Float(loss))
            if step + 1 == nextReplan, step + 1 < o.steps, let replan = replanAfterSteps {
                let now = ContinuousClock.now
                o.steps = max(step + 1, try replan((now - start).seconds, step + 1, (now - stepsStart).seconds))
                o.evalEvery = min(o.evalEvery, o.steps)
                replanned = o.steps
                nextReplan = step + 1 == Self.replanStep && o.steps / 2 > step + 1 ? o.steps / 2 : nil
            }
            progress(EndToEndProgress(step: step + 1, steps: o.steps, loss: Float(loss), phase: "train"))
            if (step + 1) % o.evalEvery == 0 || step + 1 == o.steps {
                progress(EndToEndProgress(step: step + 1, steps: o.steps, loss: Float(loss), phase: "eval"))
                report.evalKL.append([Double(step + 1), m.evaluate(held, states: heldStates)])
            }
            if (step + 1) % o.checkpointEvery == 0 && step + 1 < o.steps {
                let name = "parameters-\(step + 1).bin"
                try checkpoint.writeArrays(optimizer.arrays(m), to: name)
                let previous = checkpoint.load()?.parameters
                try checkpoint.save(State(fingerprint: print, step: step + 1, report: report, parameters: name, steps: replanned))
                if let previous, previous != name { checkpoint.remove(previous) }
                if let stop = stopAfterSteps, step + 1 >= stop { throw CalibrationError("stopped after \(step + 1) steps (test hook)") }
            }
        }

        // Keep the tuned scales only if the held-out KL went down.
        let before = report.evalKL.first![1], after = report.evalKL.last![1]
        report.kept = after < before
        if !report.kept { m.reset() }
        report.seconds = (ContinuousClock.now - start).seconds
        try write(report: report, before: before, after: after, options: o)
        return report
    }

    /// The student's file with the tuned tensors (see `PackedRewrite` for the labels); `o`: the
    /// options as run (a re-plan's steps).
    func write(report: EndToEndReport, before: Double, after: Double, options o: EndToEndOptions) throws {
        let metadata = [("tessera.e2e.teacher", URL(fileURLWithPath: teacher.path).lastPathComponent),
                        ("tessera.e2e.settings", o.fingerprint.joined(separator: ",")),
                        ("tessera.e2e.heldout_kl", String(format: "%.6g,%.6g", before, after)),
                        ("tessera.e2e.kept", report.kept ? "true" : "false"),
                        ("tessera.version", TesseraVersion.string)]
        let tuned = try model.tunedTensors(norms: options.trainNorms)
        try PackedRewrite.write(copying: student, metadata: metadata, to: outputPath) { tuned[$0] }
    }

    /// Removes the checkpoint folder (after the output file is written).
    public func removeCheckpoint() { checkpoint.removeAll() }
}
