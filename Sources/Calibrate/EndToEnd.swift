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

/// The whole quantized model, trainable end to end; the fp model is the teacher.
public final class EndToEndTuner {
    public let teacher: ModelSource
    public let student: PackedModelSource
    public let options: EndToEndOptions
    public let outputPath: String
    let pool: ThreadPool
    let shape: BlockShape
    let T: Int, C: Int, V: Int
    public var checkpointDirectory: String { outputPath + ".e2e" }
    /// Stop (as if killed) after this many steps: tests.
    public var stopAfterSteps: Int?

    // The student.
    let blocks: [BlockParameters]
    let layers: [TunableLinear]      // block-major, BlockParameters.linearNames order
    let embedding: FloatBuffer       // [V, C] (also the head when tied)
    let head: FloatBuffer            // [V, C]
    let outputNorm: FloatBuffer      // [C] the student's (trains with trainNorms)
    let teacherOutputNorm: FloatBuffer // [C] as in the file
    /// The norm weights that train with `trainNorms` ([C] each: attention and MLP norm of every
    /// block, then the output norm), their values in the file, and their names.
    let norms: [FloatBuffer], normInitial: [[Float]], normNames: [String]
    var alpha: [Float], beta: [Float], gamma: [Float]
    // Per-step buffers.
    let tapes: [BlockTape]
    let activations: [FloatBuffer]   // [T, C] input of block b (b = L: the final hidden state)
    let normed: FloatBuffer, outputRstd: FloatBuffer
    let logits: FloatBuffer, teacherLogits: FloatBuffer   // [T, V]
    let gradient: FloatBuffer, inputGradient: FloatBuffer  // [T, C]
    let grads: BlockGradients

    public init(teacher: ModelSource, student: PackedModelSource, options: EndToEndOptions, outputPath: String, pool: ThreadPool) throws {
        let c = student.config
        guard c == teacher.config else {
            throw CalibrationError("\(student.path) and \(teacher.path) are not the same architecture: tune a packed model against the model it was made from")
        }
        self.teacher = teacher
        self.student = student
        self.options = options
        self.outputPath = outputPath
        self.pool = pool
        let shape = BlockShape(config: c)
        self.shape = shape
        (T, C, V) = (options.sequenceLength, c.hidden, c.vocab)
        var blocks: [BlockParameters] = [], layers: [TunableLinear] = []
        var first = 0
        for b in 0..<c.blockCount {
            // Norms as stored; the linears dequantized (α = β = 0, what materialize() gives too).
            let p = try BlockParameters(source: student, block: b, shape: shape)
            for name in BlockParameters.linearNames {
                let full = TensorName.block(b, name)
                guard student.isPacked(full) else { throw CalibrationError("\(full) in \(student.path) is not packed: nothing to tune") }
                let layer = TunableLinear(name: full, packed: try student.quantizedTensor(full), first: first)
                first += layer.groups
                layers.append(layer)
            }
            blocks.append(p)
        }
        self.blocks = blocks
        self.layers = layers
        alpha = [Float](repeating: 0, count: first)
        beta = [Float](repeating: 0, count: first)
        embedding = try student.floatTensor(TensorName.tokenEmbedding)
        head = c.tiedEmbeddings ? embedding : try student.floatTensor(TensorName.output)
        teacherOutputNorm = try student.floatTensor(TensorName.outputNorm)
        outputNorm = FloatBuffer(count: c.hidden)
        outputNorm.pointer.update(from: teacherOutputNorm.pointer, count: c.hidden)
        norms = blocks.flatMap { [$0.attentionNorm, $0.mlpNorm] } + [outputNorm]
        normInitial = norms.map(\.array)
        normNames = (0..<c.blockCount).flatMap { [TensorName.block($0, "attn_norm"), TensorName.block($0, "ffn_norm")] } + [TensorName.outputNorm]
        gamma = [Float](repeating: 0, count: norms.count * c.hidden)
        tapes = (0..<c.blockCount).map { _ in BlockTape(shape: shape, batch: 1, tokens: options.sequenceLength) }
        activations = (0...c.blockCount).map { _ in FloatBuffer(count: options.sequenceLength * c.hidden) }
        normed = FloatBuffer(count: T * C)
        outputRstd = FloatBuffer(count: T)
        logits = FloatBuffer(count: T * V)
        teacherLogits = FloatBuffer(count: T * V)
        gradient = FloatBuffer(count: T * C)
        inputGradient = FloatBuffer(count: T * C)
        grads = BlockGradients(shape: shape)
        materialize()
    }

    /// Every block linear from the current α, β; every norm from γ.
    func materialize() {
        for (j, norm) in norms.enumerated() {
            for i in 0..<C { norm[i] = normInitial[j][i] * (1 + gamma[j * C + i]) }
        }
        alpha.withUnsafeBufferPointer { a in
            beta.withUnsafeBufferPointer { b in
                let perBlock = BlockParameters.linearNames.count
                for (i, layer) in layers.enumerated() {
                    layer.materialize(alpha: a.baseAddress!, beta: b.baseAddress!, into: blocks[i / perBlock].linears[i % perBlock].pointer, pool: pool)
                }
            }
        }
    }

    /// The fp model's final hidden states (before the output norm) of `windows`, [T, C] each.
    func teacherStates(_ windows: [[Int32]], progress: (EndToEndProgress) -> Void) throws -> [FloatBuffer] {
        let teacherEmbedding = try teacher.floatTensor(TensorName.tokenEmbedding)
        let states = windows.map { window -> FloatBuffer in
            let x = FloatBuffer(count: T * C)
            CalibrationData.embed(window, table: teacherEmbedding, C: C, into: x.pointer)
            return x
        }
        let tape = BlockTape(shape: shape, batch: 1, tokens: T)
        for b in 0..<student.config.blockCount {
            progress(EndToEndProgress(step: b, steps: student.config.blockCount, loss: 0, phase: "teacher"))
            let fp = try BlockParameters(source: teacher, block: b, shape: shape)
            for x in states { BlockForwardBackward.forward(fp, shape: shape, x: x.pointer, B: 1, T: T, tape: tape, into: x.pointer, pool: pool) }
        }
        return states
    }

    /// Student forward on one window: fills the tapes and activations, logits = head(norm(h)).
    func forward(_ window: [Int32]) {
        let x0 = activations[0]
        CalibrationData.embed(window, table: embedding, C: C, into: x0.pointer)
        for (b, p) in blocks.enumerated() {
            BlockForwardBackward.forward(p, shape: shape, x: activations[b].pointer, B: 1, T: T, tape: tapes[b],
                                         into: activations[b + 1].pointer, pool: pool)
        }
        project(activations[blocks.count], norm: outputNorm, rstd: outputRstd, into: logits)
    }

    /// The teacher's logits of a window from its final hidden state (`teacherStates`), into
    /// `teacherLogits`, through the file's output norm (the student's may train) and the shared head.
    func projectTeacher(_ state: FloatBuffer) { project(state, norm: teacherOutputNorm, rstd: nil, into: teacherLogits) }

    /// logits[T, V] = RMSNorm(h; norm)·headᵀ (normed kept in `normed`, 1/rms in `rstd`).
    func project(_ h: FloatBuffer, norm: FloatBuffer, rstd: FloatBuffer?, into out: FloatBuffer) {
        BlockForwardBackward.rmsNormForward(h.pointer, norm.pointer, out: normed.pointer, rstd: rstd?.pointer,
                                            N: T, C: C, eps: shape.eps, pool: pool)
        let (C, V) = (self.C, self.V)
        pool.parallelFor(T, multiple: 8) { r in
            Matmul.sgemm(transA: false, transB: true, M: r.count, N: V, K: C, A: normed.pointer + r.lowerBound * C, lda: C,
                         B: head.pointer, ldb: C, C: out.pointer + r.lowerBound * V, ldc: V)
        }
    }

    /// Mean over tokens of KL(softmax(teacher) ‖ softmax(student)); with `gradient`, the
    /// student logits are overwritten with dKL/dlogits = (q − p)/T.
    func divergence(student s: FloatBuffer, teacher p: FloatBuffer, gradient: Bool) -> Double {
        let V = self.V
        var perToken = [Double](repeating: 0, count: T)
        perToken.withUnsafeMutableBufferPointer { kl in
            pool.parallelFor(T) { r in
                for t in r {
                    let zs = s.pointer + t * V, zp = p.pointer + t * V
                    var maxS = -Float.infinity, maxP = -Float.infinity
                    for i in 0..<V { maxS = max(maxS, zs[i]); maxP = max(maxP, zp[i]) }
                    var sumS: Double = 0, sumP: Double = 0
                    for i in 0..<V { sumS += Double(expf(zs[i] - maxS)); sumP += Double(expf(zp[i] - maxP)) }
                    let logZS = Double(maxS) + log(sumS), logZP = Double(maxP) + log(sumP)
                    var total: Double = 0
                    for i in 0..<V {
                        let lp = Double(zp[i]) - logZP, lq = Double(zs[i]) - logZS, pi = exp(lp)
                        total += pi * (lp - lq)
                        if gradient { zs[i] = Float((exp(lq) - pi) / Double(T)) }
                    }
                    kl[t] = total
                }
            }
        }
        return perToken.reduce(0, +) / Double(T)
    }

    /// One training step on `window`: returns the KL; dL/dα, dL/dβ, dL/dγ into the given arrays.
    func trainingStep(_ window: [Int32], teacherState: FloatBuffer, dAlpha: UnsafeMutablePointer<Float>,
                      dBeta: UnsafeMutablePointer<Float>, dGamma: UnsafeMutablePointer<Float>) -> Double {
        projectTeacher(teacherState)
        forward(window)  // last: `normed` holds the student's
        let loss = divergence(student: logits, teacher: teacherLogits, gradient: true)
        // d normed [T, C] = dlogits·head
        let (C, V) = (self.C, self.V)
        pool.parallelFor(T, multiple: 8) { r in
            Matmul.sgemm(transA: false, transB: false, M: r.count, N: C, K: V, A: logits.pointer + r.lowerBound * V, lda: V,
                         B: head.pointer, ldb: C, C: gradient.pointer + r.lowerBound * C, ldc: C)
        }
        // h → RMSNorm: dh (no residual); d outputNorm.
        let h = activations[blocks.count], L = blocks.count
        BlockForwardBackward.rmsNormWeightGradient(gradient.pointer, x: h.pointer, rstd: outputRstd.pointer, into: dGamma + 2 * L * C, N: T, C: C, pool: pool)
        normGradient(dGamma, norm: 2 * L)
        BlockForwardBackward.rmsNormBackward(gradient.pointer, x: h.pointer, weight: outputNorm.pointer, rstd: outputRstd.pointer,
                                             residual: nil, into: inputGradient.pointer, N: T, C: C, pool: pool)
        var dy = inputGradient, dx = gradient
        for b in stride(from: blocks.count - 1, through: 0, by: -1) {
            BlockForwardBackward.backward(blocks[b], shape: shape, B: 1, T: T, tape: tapes[b], dy: dy.pointer, grads: grads,
                                          inputGradient: (UnsafePointer(activations[b].pointer), dx.pointer), pool: pool)
            let perBlock = BlockParameters.linearNames.count
            for l in 0..<perBlock {
                layers[b * perBlock + l].backward(weightGradient: grads.linears[l].pointer, alphaGradient: dAlpha, betaGradient: dBeta, pool: pool)
            }
            (dGamma + 2 * b * C).update(from: grads.attentionNorm.pointer, count: C)
            (dGamma + (2 * b + 1) * C).update(from: grads.mlpNorm.pointer, count: C)
            normGradient(dGamma, norm: 2 * b)
            normGradient(dGamma, norm: 2 * b + 1)
            swap(&dy, &dx)
        }
        return loss
    }

    /// dL/dγ = w0 · dL/dw, in place, for norm j of `norms`.
    private func normGradient(_ dGamma: UnsafeMutablePointer<Float>, norm j: Int) {
        for i in 0..<C { dGamma[j * C + i] *= normInitial[j][i] }
    }

    /// Mean KL per token over `windows` with the current weights.
    func evaluate(_ windows: [[Int32]], states: [FloatBuffer]) -> Double {
        var total = 0.0
        for (window, state) in zip(windows, states) {
            projectTeacher(state)
            forward(window)
            total += divergence(student: logits, teacher: teacherLogits, gradient: false)
        }
        return total / Double(windows.count)
    }

    // MARK: - The run, with checkpoints

    struct State: Codable {
        var fingerprint: [String]
        var step: Int
        var report: EndToEndReport
        var parameters: String   // file name of the arrays, in the checkpoint folder
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
        let o = options, fm = FileManager.default, dir = checkpointDirectory, statePath = dir + "/state.json"
        let print = o.fingerprint + ["teacher=\(teacher.path)", "student=\(student.path)", "data=\(tokens.count)"]
        var report = EndToEndReport()
        var adamAlpha = Adam(count: alpha.count, learningRate: o.learningRate)
        var adamBeta = Adam(count: beta.count, learningRate: o.learningRate)
        var adamGamma = Adam(count: gamma.count, learningRate: o.learningRate)
        var firstStep = 0
        if fm.fileExists(atPath: statePath) {
            guard resume else { throw CalibrationError("a checkpoint of an earlier run is in \(dir): pass --resume to continue it, or delete that folder to start over") }
            guard let data = fm.contents(atPath: statePath), let saved = try? JSONDecoder().decode(State.self, from: data) else {
                throw CalibrationError("cannot read \(statePath); delete \(dir) to start over")
            }
            guard saved.fingerprint == print else { throw CalibrationError("the checkpoint in \(dir) was made with other settings; use the same flags or delete it") }
            let arrays = try Self.readArrays(dir + "/" + saved.parameters, counts: [Int](repeating: alpha.count, count: 6) + [Int](repeating: gamma.count, count: 3))
            alpha = arrays[0]; beta = arrays[1]; gamma = arrays[6]
            adamAlpha = Adam(learningRate: o.learningRate, moments: (arrays[2], arrays[3], saved.step))
            adamBeta = Adam(learningRate: o.learningRate, moments: (arrays[4], arrays[5], saved.step))
            adamGamma = Adam(learningRate: o.learningRate, moments: (arrays[7], arrays[8], saved.step))
            report = saved.report
            report.resumedAt = saved.step
            firstStep = saved.step
            materialize()
        } else {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }

        let (windows, held) = try Self.split(tokens: tokens, options: o)
        let states = try teacherStates(windows + held, progress: progress)
        let trainStates = Array(states[..<windows.count]), heldStates = Array(states[windows.count...])
        if report.evalKL.isEmpty {
            progress(EndToEndProgress(step: 0, steps: o.steps, loss: 0, phase: "eval"))
            report.evalKL.append([0, evaluate(held, states: heldStates)])
        }

        let dAlpha = FloatBuffer(count: alpha.count), dBeta = FloatBuffer(count: beta.count), dGamma = FloatBuffer(count: gamma.count)
        for step in firstStep..<o.steps {
            // The window of step k depends only on the seed and k (resume draws the same ones).
            var rng = SplitMix64(seed: o.seed &+ 0xE2E &* UInt64(step + 1))
            let n = Int.random(in: 0..<windows.count, using: &rng)
            let loss = trainingStep(windows[n], teacherState: trainStates[n], dAlpha: dAlpha.pointer, dBeta: dBeta.pointer, dGamma: dGamma.pointer)
            // Cosine decay from lr to 0 over the run (late steps, on single windows, must not undo the
            // early ones), after the optional linear warm-up.
            let rate = o.rate(atStep: step)
            adamAlpha.update(&alpha, gradient: dAlpha.pointer, rate: rate)
            adamBeta.update(&beta, gradient: dBeta.pointer, rate: rate)
            if o.trainNorms { adamGamma.update(&gamma, gradient: dGamma.pointer, rate: rate) }
            materialize()
            report.stepLosses.append(Float(loss))
            progress(EndToEndProgress(step: step + 1, steps: o.steps, loss: Float(loss), phase: "train"))
            if (step + 1) % o.evalEvery == 0 || step + 1 == o.steps {
                progress(EndToEndProgress(step: step + 1, steps: o.steps, loss: Float(loss), phase: "eval"))
                report.evalKL.append([Double(step + 1), evaluate(held, states: heldStates)])
            }
            if (step + 1) % o.checkpointEvery == 0 && step + 1 < o.steps {
                let name = "parameters-\(step + 1).bin"
                let (ma, va, _) = adamAlpha.moments, (mb, vb, _) = adamBeta.moments, (mg, vg, _) = adamGamma.moments
                try Self.writeArrays([alpha, beta, ma, va, mb, vb, gamma, mg, vg], to: dir + "/" + name)
                let state = State(fingerprint: print, step: step + 1, report: report, parameters: name)
                let previous = (try? JSONDecoder().decode(State.self, from: fm.contents(atPath: statePath) ?? Data()))?.parameters
                try JSONEncoder().encode(state).write(to: URL(fileURLWithPath: statePath), options: .atomic)
                if let previous, previous != name { try? fm.removeItem(atPath: dir + "/" + previous) }
                if let stop = stopAfterSteps, step + 1 >= stop { throw CalibrationError("stopped after \(step + 1) steps (test hook)") }
            }
        }

        // Keep the tuned scales only if the held-out KL went down.
        let before = report.evalKL.first![1], after = report.evalKL.last![1]
        report.kept = after < before
        if !report.kept {
            for i in alpha.indices { alpha[i] = 0; beta[i] = 0 }
            for i in gamma.indices { gamma[i] = 0 }
            materialize()
        }
        report.seconds = (ContinuousClock.now - start).seconds
        try write(report: report, before: before, after: after)
        return report
    }

    func write(report: EndToEndReport, before: Double, after: Double) throws {
        let s = student, o = options
        let scheme = PackedFormat.Scheme(bits: s.bits, group: s.group, activation: s.activation, zeroPoint: .float,
                                         embedding: PackedFormat.Embedding(rawValue: s.gguf.string("tessera.embedding") ?? "f16") ?? .f16)
        var metadata: [(String, String)] = s.gguf.metadataKeys.filter { $0.hasPrefix("tessera.calibration.") }.compactMap { key in
            s.gguf.string(key).map { (key, $0) }
        }
        metadata += [("tessera.e2e.teacher", URL(fileURLWithPath: teacher.path).lastPathComponent),
                     ("tessera.e2e.settings", o.fingerprint.joined(separator: ",")),
                     ("tessera.e2e.heldout_kl", String(format: "%.6g,%.6g", before, after)),
                     ("tessera.e2e.kept", report.kept ? "true" : "false"),
                     ("tessera.version", TesseraVersion.string)]
        var tuned: [String: QuantizedTensor] = [:]
        let tunedNorms = o.trainNorms ? Dictionary(uniqueKeysWithValues: zip(normNames, norms)) : [:]
        try alpha.withUnsafeBufferPointer { a in
            try beta.withUnsafeBufferPointer { b in
                for layer in layers { tuned[layer.name] = try layer.tuned(alpha: a.baseAddress!, beta: b.baseAddress!) }
            }
        }
        // (A file without a tokenizer, as the tests' synthetic models, stays without one.)
        let tokenizer = s.gguf.string("tokenizer.ggml.model") == nil ? nil : try s.makeTokenizer()
        try PackedFormat.write(source: s, tokenizer: tokenizer, scheme: scheme,
                               method: s.gguf.string("tessera.method") ?? "tesseraq", metadata: metadata, to: outputPath) { name, shape in
            if let p = tuned[name] { return .quantized(p) }
            if let norm = tunedNorms[name] { return .f32(norm) }
            if s.isPacked(name) { return .quantized(try s.quantizedTensor(name)) }
            return try RoundToNearest.content(s, scheme: scheme, name: name, shape: shape)
        }
    }

    /// Removes the checkpoint folder (after the output file is written).
    public func removeCheckpoint() { try? FileManager.default.removeItem(atPath: checkpointDirectory) }

    static func writeArrays(_ arrays: [[Float]], to path: String) throws {
        var data = Data()
        for a in arrays { a.withUnsafeBytes { data.append(contentsOf: $0) } }
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func readArrays(_ path: String, counts: [Int]) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: path), data.count == counts.reduce(0, +) * 4 else {
            throw CalibrationError("\(path) is missing or truncated; delete the checkpoint folder to start over")
        }
        return data.withUnsafeBytes { raw in
            let f = raw.bindMemory(to: Float.self)
            var start = 0
            return counts.map { count in
                defer { start += count }
                return Array(f[start..<start + count])
            }
        }
    }
}
