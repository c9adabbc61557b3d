import Foundation
import Engine

/// What happened to one block (the JSON log and the plots are made of these).
public struct BlockReport: Codable, Sendable, Equatable {
    public var block: Int
    /// Reconstruction loss mean_tokens Σ_hidden (Y_fp − Y_q)² on the first sequences: with the
    /// initial weights at nearest rounding (RTN or AWQ), and after calibration.
    public var lossInitial: Double
    public var lossFinal: Double
    /// AWQ's chosen α per subset (qkv, o, gate/up, down); -1 where skipped or not run.
    public var awqAlphas: [Float]
    /// Mean clip ratio per clipped layer.
    public var clipRatios: [String: Float]
    /// Fraction of rounding decisions that differ from nearest, per layer.
    public var flipped: [String: Double]
    /// Fraction of rounding variables hard after each stage's harden phase (mean over layers).
    public var hardAfterStage: [Double]
    /// Training loss of every Adam step, in order.
    public var stepLosses: [Float]
    public var seconds: Double
    /// The guard's check: the loss on the first `guardSequences` sequences at nearest rounding
    /// and after TesseraQ; when TesseraQ ended higher, the block kept its initialisation.
    public var checkLossInitial: Double? = nil
    public var checkLossFinal: Double? = nil
    public var keptInitialisation: Bool? = nil
    /// Peak resident memory of the process when the block was done.
    public var peakResidentBytes: Int? = nil
}

/// Progress of a running calibration.
public struct CalibrationProgress: Sendable {
    public var block: Int, blocks: Int
    public var phase: String
    public var stage: Int, stages: Int
    public var step: Int, steps: Int
    public var loss: Float
    public var hardFraction: Double
}

/// Calibrates one decoder block (the steps 2–6) and returns its quantized weights.
final class BlockCalibrator {
    let shape: BlockShape
    let options: CalibrationOptions
    let pool: ThreadPool

    // Scratch for `batch` sequences.
    private let tape: BlockTape
    private let x, y, target: FloatBuffer
    /// How much each token counts in the loss, for the block being calibrated.
    private var weighting = TokenWeighting.off

    init(shape: BlockShape, options: CalibrationOptions, pool: ThreadPool) {
        self.shape = shape
        self.options = options
        self.pool = pool
        let B = options.batch, T = options.sequenceLength, C = shape.C
        tape = BlockTape(shape: shape, batch: B, tokens: T)
        x = FloatBuffer(count: B * T * C)
        y = FloatBuffer(count: B * T * C)
        target = FloatBuffer(count: B * T * C)
    }

    struct Output {
        /// In BlockParameters.linears order.
        var linears: [QuantizedTensor]
        /// The block exactly as the packed file runs it (norms + dequantized linears).
        var quantized: BlockParameters
        var report: BlockReport
    }

    /// The student's activation quantizer (nil: fp32); never the fp teacher's.
    var studentActivations: ActivationFakeQuantizer? { options.activationQuantizer }

    /// y = block(x) for every sequence of `input`, into `output` (a batch at a time); a
    /// `student` block quantizes its activations as the options say, the fp block does not.
    func run(_ p: BlockParameters, input: Trajectory, output: Trajectory, student: Bool) {
        let B = options.batch, T = input.T
        var first = 0
        while first < input.samples {
            let count = min(B, input.samples - first)
            input.gather(Array(first..<first + count), into: x.pointer)
            BlockForwardBackward.forward(p, shape: shape, x: x.pointer, B: count, T: T, tape: tape, into: y.pointer,
                                         activations: student ? studentActivations : nil, pool: pool)
            output.store(y.pointer, first: first, count: count)
            first += count
        }
    }

    /// Mean over tokens of Σ_hidden (block(x) − target)² on the first `sequences` sequences
    /// (default: `lossSequences`, the reference's logged loss), for the student block `p`.
    func loss(_ p: BlockParameters, inputs: Trajectory, targets: Trajectory, sequences: Int? = nil) -> Double {
        let B = options.batch, T = inputs.T, C = shape.C
        let n = min(sequences ?? options.lossSequences, inputs.samples)
        var total = 0.0, first = 0
        while first < n {
            let count = min(B, n - first)
            inputs.gather(Array(first..<first + count), into: x.pointer)
            targets.gather(Array(first..<first + count), into: target.pointer)
            BlockForwardBackward.forward(p, shape: shape, x: x.pointer, B: count, T: T, tape: tape, into: y.pointer,
                                         activations: studentActivations, pool: pool)
            for t in 0..<count * T {
                var sum = 0.0
                for i in t * C..<(t + 1) * C { let d = Double(y[i] - target[i]); sum += d * d }
                total += Double(weighting.weight(target.pointer + t * C, C)) * sum
            }
            first += count
        }
        return total / Double(n * T)
    }

    /// `options.tokenNormCap` against the median token norm of the first `lossSequences` targets.
    private func tokenWeighting(_ targets: Trajectory) -> TokenWeighting {
        guard options.tokenNormCap > 0 else { return .off }
        let n = min(options.lossSequences, targets.samples), T = targets.T, C = shape.C
        let rows = FloatBuffer(count: n * T * C)
        targets.gather(Array(0..<n), into: rows.pointer)
        return TokenWeighting(cap: options.tokenNormCap, targets: rows.pointer, tokens: n * T, C: C)
    }

    /// The fp block's inputs to each linear on the first `awqSequences` sequences of `inputs`.
    func captureInputs(_ fp: BlockParameters, inputs: Trajectory) -> BlockInputs {
        let B = min(options.awqSequences, inputs.samples), T = inputs.T, C = shape.C
        let HD = shape.H * shape.D, F = shape.F, N = B * T
        let captureTape = BlockTape(shape: shape, batch: B, tokens: T)
        let xs = FloatBuffer(count: N * C), ys = FloatBuffer(count: N * C)
        inputs.gather(Array(0..<B), into: xs.pointer)
        BlockForwardBackward.forward(fp, shape: shape, x: xs.pointer, B: B, T: T, tape: captureTape, into: ys.pointer, pool: pool)
        func copy(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> FloatBuffer {
            let b = FloatBuffer(count: n); b.pointer.update(from: p, count: n); return b
        }
        return BlockInputs(attention: copy(captureTape.attentionInput, N * C),
                           attentionOutput: copy(captureTape.attentionOutputInput, N * HD),
                           mlp: copy(captureTape.mlpInput, N * C), down: copy(captureTape.downInput, N * F), B: B, T: T)
    }

    /// Calibrates block `index` (the steps 2–6) and returns its quantized weights: the
    /// initialisation (AWQ or none), the fixed grid and its rounding variables, the loss at
    /// nearest rounding, TesseraQ's training, the final codes, and the guard.
    func calibrate(block index: Int, blocks: Int, fp: BlockParameters, inputs: Trajectory, targets: Trajectory,
                   progress: (CalibrationProgress) -> Void) throws -> Output {
        let start = ContinuousClock.now
        let o = options
        var status = CalibrationProgress(block: index, blocks: blocks, phase: "init", stage: 0, stages: 0, step: 0, steps: 0, loss: 0, hardFraction: 0)
        progress(status)
        weighting = tokenWeighting(targets)

        let initial = initialise(fp, inputs: inputs, status: &status, progress: progress)
        let layers = roundingLayers(initial.parameters, block: index)
        // The block with the current fake-quantized weights.
        let q = BlockParameters(copying: initial.parameters, shape: shape)
        let nearest = nearestRoundingLosses(layers, q, inputs: inputs, targets: targets)
        var hardAfterStage: [Double] = [], stepLosses: [Float] = []
        if o.method == .tesseraq {
            (hardAfterStage, stepLosses) = train(layers, q, block: index, inputs: inputs, targets: targets, status: &status, progress: progress)
        }
        for layer in layers { if o.method == .tesseraq { layer.hardenAll() } else { layer.hardenToNearest() } }
        let final = try finish(layers, q, checkLossInitial: nearest.check, inputs: inputs, targets: targets)

        var flipped: [String: Double] = [:]
        for (name, layer) in zip(BlockParameters.linearNames, layers) { flipped[name] = layer.flippedFraction }
        let report = BlockReport(block: index, lossInitial: nearest.loss, lossFinal: final.loss, awqAlphas: initial.alphas,
                                 clipRatios: initial.clipRatios, flipped: flipped, hardAfterStage: hardAfterStage,
                                 stepLosses: stepLosses, seconds: (ContinuousClock.now - start).seconds,
                                 checkLossInitial: nearest.check, checkLossFinal: final.checkLoss, keptInitialisation: final.keptInitialisation)
        return Output(linears: final.linears, quantized: q, report: report)
    }

    /// The block's weights to quantize: a copy of `fp`, with AWQ (`options.initialisation`) its
    /// scales folded into norms and linears and then its clipping (not q, k); AWQ's α per subset
    /// (-1: skipped) and mean clip ratio per clipped layer.
    func initialise(_ fp: BlockParameters, inputs: Trajectory, status: inout CalibrationProgress,
                    progress: (CalibrationProgress) -> Void) -> (parameters: BlockParameters, alphas: [Float], clipRatios: [String: Float]) {
        let o = options, C = shape.C, HD = shape.H * shape.D, F = shape.F
        let p = BlockParameters(copying: fp, shape: shape)
        var alphas: [Float] = [], clipRatios: [String: Float] = [:]
        guard o.initialisation == .awq else { return (p, alphas, clipRatios) }
        var captured = captureInputs(fp, inputs: inputs)
        let report = AWQ.searchScales(p, shape: shape, inputs: &captured, bits: o.bits, group: o.group, pool: pool)
        alphas = report.alphas.map { $0 ?? -1 }
        let n = captured.N, stride = max(1, n / o.clipTokens), tokens = (n + stride - 1) / stride
        func strided(_ b: FloatBuffer, _ width: Int) -> FloatBuffer {
            let s = FloatBuffer(count: tokens * width)
            for t in 0..<tokens { (s.pointer + t * width).update(from: b.pointer + t * stride * width, count: width) }
            return s
        }
        let attention = strided(captured.attention, C), attnOut = strided(captured.attentionOutput, HD)
        let mlp = strided(captured.mlp, C), down = strided(captured.down, F)
        // With integer activations the clip error is measured on quantized inputs, as the
        // reference's weight-activation mode does (down's after the online transform).
        if let quantizer = studentActivations {
            for (x, width) in [(attention, C), (attnOut, HD), (mlp, C), (down, F)] { quantizer.apply(x.pointer, rows: tokens, width: width, pool: pool) }
        }
        let clipped: [(String, FloatBuffer, Int, Int, FloatBuffer)] = [
            (BlockLinear.value.rawValue, p.value, shape.KVH * shape.D, C, attention), (BlockLinear.attentionOutput.rawValue, p.attentionOutput, C, HD, attnOut),
            (BlockLinear.gate.rawValue, p.gate, F, C, mlp), (BlockLinear.up.rawValue, p.up, F, C, mlp), (BlockLinear.down.rawValue, p.down, C, F, down)]
        for (name, w, rows, cols, x) in clipped {
            status.phase = "clip \(name)"; progress(status)
            clipRatios[name] = AWQ.clip(w, rows: rows, cols: cols, inputs: x.pointer, tokens: tokens, bits: o.bits, group: o.group, pool: pool)
        }
        return (p, alphas, clipRatios)
    }

    /// The fixed grid of every linear of `p`, with rounding variables v = h⁻¹(frac(W/s)) and u = 0.
    func roundingLayers(_ p: BlockParameters, block index: Int) -> [RoundingLayer] {
        zip(zip(BlockParameters.linearNames, p.linears), shape.linearShapes).map { named, size in
            RoundingLayer(name: TensorName.block(index, named.0), weights: named.1.pointer, rows: size.out, cols: size.inFeatures,
                          bits: options.bits, group: options.group)
        }
    }

    /// The layers' current weights into `q`'s linears.
    func materialize(_ layers: [RoundingLayer], into q: BlockParameters) {
        for (layer, w) in zip(layers, q.linears) { layer.materialize(into: w.pointer, pool: pool) }
    }

    /// The loss at nearest rounding (what RTN / AWQ alone would give), and the guard's on its
    /// check sequences when the guard is on; the rounding variables are left as they were.
    func nearestRoundingLosses(_ layers: [RoundingLayer], _ q: BlockParameters, inputs: Trajectory,
                               targets: Trajectory) -> (loss: Double, check: Double?) {
        let o = options
        let soft = layers.map { $0.v }
        for layer in layers { layer.hardenToNearest() }
        materialize(layers, into: q)
        let nearest = loss(q, inputs: inputs, targets: targets)
        let guarded = o.method == .tesseraq && o.guardSequences > 0
        let check = guarded ? loss(q, inputs: inputs, targets: targets, sequences: o.guardSequences) : nil
        for (layer, v) in zip(layers, soft) { layer.v = v }
        return (nearest, check)
    }

    /// TesseraQ's stages: per stage, PAR's harden phase, then Adam on the rounding (v) and
    /// dequantization-scale (u) variables over mini-batches of distinct sequences. Returns the
    /// hard fraction after each harden phase and every step's loss.
    func train(_ layers: [RoundingLayer], _ q: BlockParameters, block index: Int, inputs: Trajectory, targets: Trajectory,
               status: inout CalibrationProgress, progress: (CalibrationProgress) -> Void) -> (hardAfterStage: [Double], stepLosses: [Float]) {
        let o = options, C = shape.C
        var hardAfterStage: [Double] = [], stepLosses: [Float] = []
        if !o.adaptiveRounding { for layer in layers { layer.hardenToNearest() } }
        let grads = BlockGradients(shape: shape)
        let dv = layers.map { FloatBuffer(count: $0.v.count) }, du = layers.map { FloatBuffer(count: $0.u.count) }
        var rng = SplitMix64(seed: o.seed &+ 0x9E37_79B9 &* UInt64(index + 1))
        let rates = o.schedule.softRates
        let B = min(o.batch, inputs.samples), T = inputs.T
        status.stages = rates.count; status.steps = o.stepsPerStage
        for (k, rate) in rates.enumerated() {
            // Harden phase, per layer.
            if o.adaptiveRounding { for layer in layers { layer.harden(softRate: rate) } }
            let hard = layers.reduce(0.0) { $0 + $1.hardFraction * Double($1.v.count) } / Double(layers.reduce(0) { $0 + $1.v.count })
            hardAfterStage.append(hard)
            status.phase = "train"; status.stage = k + 1; status.hardFraction = hard
            // Fresh Adam per stage: v at lr, u at scale-lr with L2 decay.
            var adamV = layers.map { Adam(count: $0.v.count, learningRate: o.learningRate) }
            var adamU = layers.map { Adam(count: $0.u.count, learningRate: o.scaleLearningRate, weightDecay: o.scaleWeightDecay) }
            for step in 0..<o.stepsPerStage {
                // A mini-batch of distinct sequences.
                var order = Array(0..<inputs.samples)
                for i in 0..<B { order.swapAt(i, Int.random(in: i..<order.count, using: &rng)) }
                let batch = Array(order[0..<B])
                inputs.gather(batch, into: x.pointer)
                targets.gather(batch, into: target.pointer)
                materialize(layers, into: q)
                BlockForwardBackward.forward(q, shape: shape, x: x.pointer, B: B, T: T, tape: tape, into: y.pointer,
                                             activations: studentActivations, pool: pool)
                // L = mean_tokens w_t Σ_hidden (y − target)²; dL/dy = 2 w_t (y − target)/tokens (into y).
                let tokens = Float(B * T)
                var total: Double = 0
                for t in 0..<B * T {
                    let w = weighting.weight(target.pointer + t * C, C)
                    for i in t * C..<(t + 1) * C { let d = y[i] - target[i]; total += Double(w * d * d); y[i] = 2 * w * d / tokens }
                }
                let stepLoss = Float(total / Double(tokens))
                stepLosses.append(stepLoss)
                BlockForwardBackward.backward(q, shape: shape, B: B, T: T, tape: tape, dy: y.pointer, grads: grads, pool: pool)
                for (l, layer) in layers.enumerated() {
                    layer.backward(weightGradient: grads.linears[l].pointer, vGradient: dv[l].pointer, uGradient: du[l].pointer, pool: pool)
                    if o.adaptiveRounding { adamV[l].update(&layer.v, gradient: dv[l].pointer) }
                    if o.scaleTuning { adamU[l].update(&layer.u, gradient: du[l].pointer) }
                }
                status.step = step + 1; status.loss = stepLoss
                if step % 5 == 4 || step + 1 == o.stepsPerStage { progress(status) }
            }
        }
        return (hardAfterStage, stepLosses)
    }

    /// The hardened layers' integer codes; `q` becomes the block exactly as the packed file runs it.
    func pack(_ layers: [RoundingLayer], into q: BlockParameters) throws -> [QuantizedTensor] {
        let packed = try layers.map { try $0.packed() }
        for (w, pw) in zip(q.linears, packed) {
            let d = pw.dequantize()
            w.pointer.update(from: d.pointer, count: w.count)
        }
        return packed
    }

    /// The final codes and loss, after the guard (not in the reference): a block that TesseraQ
    /// left worse than its initialisation on the check sequences (`checkLossInitial`, nil: no
    /// guard) keeps the initialisation (nearest rounding, f = 1). Short budgets with a high lr
    /// can end worse on a block with massive activations (W2g32 block 11: 2658 → 15840), and
    /// the error then flows into every later block.
    func finish(_ layers: [RoundingLayer], _ q: BlockParameters, checkLossInitial: Double?, inputs: Trajectory,
                targets: Trajectory) throws -> (linears: [QuantizedTensor], loss: Double, checkLoss: Double?, keptInitialisation: Bool?) {
        var packed = try pack(layers, into: q)
        var lossFinal = loss(q, inputs: inputs, targets: targets)
        guard let checkLossInitial else { return (packed, lossFinal, nil, nil) }
        let check = loss(q, inputs: inputs, targets: targets, sequences: options.guardSequences)
        let worse = check > checkLossInitial
        if worse {
            for layer in layers { layer.restoreInitialisation() }
            packed = try pack(layers, into: q)
            lossFinal = loss(q, inputs: inputs, targets: targets)
        }
        return (packed, lossFinal, check, worse)
    }
}

extension BlockParameters {
    /// A deep copy.
    convenience init(copying other: BlockParameters, shape: BlockShape) {
        self.init(shape: shape)
        for (a, b) in zip([attentionNorm, mlpNorm] + linears, [other.attentionNorm, other.mlpNorm] + other.linears) {
            a.pointer.update(from: b.pointer, count: a.count)
        }
    }
}
