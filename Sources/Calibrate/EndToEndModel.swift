import Foundation
import Engine

// The model half of the end-to-end tune (EndToEnd.swift has the method and the trainer).

/// The whole quantized model, trainable end to end, and the fp model as its teacher: the
/// forward pass, the KL to the teacher and its gradient with respect to α, β and γ (the
/// trainer, `EndToEndTuner`, owns the loop, the optimiser and the checkpoints).
public final class EndToEndModel {
    public let teacher: ModelSource
    public let student: PackedModelSource
    let pool: ThreadPool
    let shape: BlockShape
    /// The student's activation quantizer, from its file (nil: fp32); the teacher has none.
    let studentActivations: ActivationFakeQuantizer?
    let T: Int, C: Int, V: Int

    // The student.
    let blocks: [BlockParameters]
    let layers: [TunableLinear]      // block-major, BlockParameters.linearNames order
    let embedding: FloatBuffer       // [V, C] (also the head when tied)
    let head: FloatBuffer            // [V, C]
    let outputNorm: FloatBuffer      // [C] the student's (trains with trainNorms)
    let teacherOutputNorm: FloatBuffer // [C] as in the file
    /// A rotated student that kept its tied head: the output norm acts in the Hadamard domain
    /// (RotationRecord.outputNormHadamard), after a weightless RMSNorm (`unitNorm`, all ones).
    let outputNormHadamard: OnlineHadamard?
    let unitNorm: FloatBuffer
    /// The norm weights that train with `trainNorms` ([C] each: attention and MLP norm of every
    /// block, then the output norm), their values in the file, and their names.
    let norms: [FloatBuffer], normInitial: [[Float]], normNames: [String]
    var alpha: [Float], beta: [Float], gamma: [Float]
    /// Whether the blocks share one set of fp32 linears, materialized as each pass reaches a
    /// block (the student's fp32 weights exceed the budget), instead of all of them after
    /// every update. The values are the same either way, so is the result.
    public let streamsWeights: Bool
    /// Bytes of the student's block linears in fp32.
    public var weightBytes: Int { Self.weightBytes(student.config) }
    static func weightBytes(_ c: LlamaConfig) -> Int { 4 * c.blockCount * c.blockLinearParameterCount }
    // Per-step buffers.
    let tapes: [BlockTape]
    let activations: [FloatBuffer]   // [T, C] input of block b (b = L: the final hidden state)
    let normed: FloatBuffer, outputRstd: FloatBuffer
    let logits: FloatBuffer, teacherLogits: FloatBuffer   // [T, V]
    let gradient: FloatBuffer, inputGradient: FloatBuffer  // [T, C]
    let grads: BlockGradients

    /// The student as stored (α = β = γ = 0), for windows of `sequenceLength` tokens.
    ///
    /// A rotated student (its file's RotationRecord) is taught by the fp model rotated the same
    /// way (`RotatedModelSource` with the record's seed), unless `teacher` already is: the
    /// teacher's final states are projected through the student's output norm and head, which
    /// live in the rotated residual frame. Both forwards apply the online transform the record asks for.
    ///
    /// `weightBudget`: RAM the student's fp32 block linears may take (default: a third of the
    /// machine's memory); above it the blocks take turns in one block's worth (`streamsWeights`).
    public init(teacher fpTeacher: ModelSource, student: PackedModelSource, sequenceLength: Int, pool: ThreadPool,
                weightBudget: Int? = nil) throws {
        let c = student.config
        let teacher = try Self.teacher(fpTeacher, rotatedAs: student)
        guard c == teacher.config else {
            throw CalibrationError("\(student.path) and \(teacher.path) are not the same architecture: tune a packed model against the model it was made from")
        }
        self.teacher = teacher
        self.student = student
        self.pool = pool
        let shape = BlockShape(config: c, rotation: student.rotation)
        self.shape = shape
        studentActivations = ActivationFakeQuantizer(mode: student.storedActivation, clip: student.storedActivationClip)
        (T, C, V) = (sequenceLength, c.hidden, c.vocab)
        var blocks: [BlockParameters] = [], layers: [TunableLinear] = []
        var first = 0
        let budget = weightBudget ?? (ProcessStats.physicalMemoryBytes() ?? Int.max) / 3
        streamsWeights = Self.weightBytes(c) > budget
        let shared: BlockParameters? = streamsWeights ? BlockParameters(shape: shape) : nil
        for b in 0..<c.blockCount {
            // Norms as stored; the linears dequantized (α = β = 0, what materialize() gives too).
            var p = try BlockParameters(source: student, block: b, shape: shape)
            if let shared { p = BlockParameters(attentionNorm: p.attentionNorm, mlpNorm: p.mlpNorm, linearsOf: shared) }
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
        outputNormHadamard = student.rotation?.outputNormHadamard == true ? OnlineHadamard(width: c.hidden) : nil
        unitNorm = FloatBuffer(Array(repeating: 1, count: c.hidden))
        outputNorm.pointer.update(from: teacherOutputNorm.pointer, count: c.hidden)
        norms = blocks.flatMap { [$0.attentionNorm, $0.mlpNorm] } + [outputNorm]
        normInitial = norms.map(\.array)
        normNames = (0..<c.blockCount).flatMap { [TensorName.block($0, .norm(.attention)), TensorName.block($0, .norm(.mlp))] } + [TensorName.outputNorm]
        gamma = [Float](repeating: 0, count: norms.count * c.hidden)
        tapes = (0..<c.blockCount).map { _ in BlockTape(shape: shape, batch: 1, tokens: sequenceLength) }
        activations = (0...c.blockCount).map { _ in FloatBuffer(count: sequenceLength * c.hidden) }
        normed = FloatBuffer(count: T * C)
        outputRstd = FloatBuffer(count: T)
        logits = FloatBuffer(count: T * V)
        teacherLogits = FloatBuffer(count: T * V)
        gradient = FloatBuffer(count: T * C)
        inputGradient = FloatBuffer(count: T * C)
        grads = BlockGradients(shape: shape)
        materialize()
    }

    /// The teacher for `student`: `fp` itself for an unrotated student; for a rotated one, `fp`
    /// rotated with the student's record (or `fp` when it already carries that rotation).
    static func teacher(_ fp: ModelSource, rotatedAs student: PackedModelSource) throws -> ModelSource {
        switch (student.rotation, fp.rotation) {
        case (nil, nil):
            return fp
        case let (r?, nil):
            return try RotatedModelSource(base: fp, seed: r.seed, onlineDown: r.onlineDownHadamard)
        case let (r?, t?) where r == t:
            return fp
        case let (r, t):
            throw CalibrationError("\(student.path) is \(r.map { "rotated (\($0.summary))" } ?? "not rotated") but the teacher \(fp.path) is \(t.map { "rotated (\($0.summary))" } ?? "not rotated"); give the unrotated fp model the packed one was made from")
        }
    }

    /// Every norm from γ; every block linear from the current α, β (streamed: none, each block
    /// is materialized when a pass reaches it).
    func materialize() {
        for (j, norm) in norms.enumerated() {
            for i in 0..<C { norm[i] = normInitial[j][i] * (1 + gamma[j * C + i]) }
        }
        if !streamsWeights { for b in blocks.indices { materializeLinears(ofBlock: b) } }
    }

    /// Block b's seven linears from the current α, β.
    func materializeLinears(ofBlock b: Int) {
        alpha.withUnsafeBufferPointer { a in
            beta.withUnsafeBufferPointer { be in
                let perBlock = BlockParameters.linearNames.count
                for l in 0..<perBlock {
                    layers[b * perBlock + l].materialize(alpha: a.baseAddress!, beta: be.baseAddress!, into: blocks[b].linears[l].pointer, pool: pool)
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
            if streamsWeights { materializeLinears(ofBlock: b) }
            BlockForwardBackward.forward(p, shape: shape, x: activations[b].pointer, B: 1, T: T, tape: tapes[b],
                                         into: activations[b + 1].pointer, activations: studentActivations, pool: pool)
        }
        project(activations[blocks.count], norm: outputNorm, rstd: outputRstd, into: logits)
    }

    /// The teacher's logits of a window from its final hidden state (`teacherStates`), into
    /// `teacherLogits`, through the file's output norm (the student's may train) and the shared head.
    func projectTeacher(_ state: FloatBuffer) { project(state, norm: teacherOutputNorm, rstd: nil, into: teacherLogits) }

    /// logits[T, V] = RMSNorm(h; norm)·headᵀ (normed kept in `normed`, 1/rms in `rstd`); with
    /// `outputNormHadamard`, normed = Aᵀ·(norm ⊙ A·(h/rms(h))).
    func project(_ h: FloatBuffer, norm: FloatBuffer, rstd: FloatBuffer?, into out: FloatBuffer) {
        BlockForwardBackward.rmsNormForward(h.pointer, outputNormHadamard == nil ? norm.pointer : unitNorm.pointer, out: normed.pointer,
                                            rstd: rstd?.pointer, N: T, C: C, eps: shape.eps, pool: pool)
        outputNormHadamard?.scaleInDomain(normed.pointer, rows: T, by: norm.pointer, pool: pool)
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
        if let a = outputNormHadamard {
            // normed = Aᵀ·(g ⊙ A·n'), n' = h·rstd: dg = Σ_t (A·dnormed) ⊙ (A·h)·rstd, dn' = Aᵀ·(g ⊙ A·dnormed).
            a.apply(gradient.pointer, rows: T, pool: pool)
            normed.pointer.update(from: h.pointer, count: T * C)   // the student's normed is spent
            a.apply(normed.pointer, rows: T, pool: pool)
            BlockForwardBackward.rmsNormWeightGradient(gradient.pointer, x: normed.pointer, rstd: outputRstd.pointer, into: dGamma + 2 * L * C, N: T, C: C, pool: pool)
            pool.parallelFor(T) { r in
                for t in r { for i in 0..<C { gradient[t * C + i] *= outputNorm[i] } }
            }
            a.apply(gradient.pointer, rows: T, transpose: true, pool: pool)
        } else {
            BlockForwardBackward.rmsNormWeightGradient(gradient.pointer, x: h.pointer, rstd: outputRstd.pointer, into: dGamma + 2 * L * C, N: T, C: C, pool: pool)
        }
        normGradient(dGamma, norm: 2 * L)
        BlockForwardBackward.rmsNormBackward(gradient.pointer, x: h.pointer, weight: outputNormHadamard == nil ? outputNorm.pointer : unitNorm.pointer,
                                             rstd: outputRstd.pointer, residual: nil, into: inputGradient.pointer, N: T, C: C, pool: pool)
        var dy = inputGradient, dx = gradient
        for b in stride(from: blocks.count - 1, through: 0, by: -1) {
            if streamsWeights && b != blocks.count - 1 { materializeLinears(ofBlock: b) }   // the forward left the last block's
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


    /// Back to the student as stored: α = β = γ = 0.
    func reset() {
        for i in alpha.indices { alpha[i] = 0; beta[i] = 0 }
        for i in gamma.indices { gamma[i] = 0 }
        materialize()
    }

    /// The tensors the tuned student replaces in its file: every block linear with its codes and
    /// the tuned scales and offsets (fp16); with `norms`, every norm as it is now (fp32).
    func tunedTensors(norms withNorms: Bool) throws -> [String: PackedFormat.TensorContent] {
        var tuned: [String: PackedFormat.TensorContent] = [:]
        try alpha.withUnsafeBufferPointer { a in
            try beta.withUnsafeBufferPointer { b in
                for layer in layers { tuned[layer.name] = .quantized(try layer.tuned(alpha: a.baseAddress!, beta: b.baseAddress!)) }
            }
        }
        if withNorms { for (name, norm) in zip(normNames, norms) { tuned[name] = .f32(norm) } }
        return tuned
    }
}
