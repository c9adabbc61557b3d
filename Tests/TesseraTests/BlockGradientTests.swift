import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// One Llama block in float64 with plain loops, written independently of Calibrate: the
/// reference for BlockForwardBackward's forward and, by central differences, its gradients.
struct ReferenceBlock {
    let C, H, KVH, D, F: Int
    let eps: Double
    let frequencies: [Double]    // rotary θᵢ per pair (GGUF interleaved pairs)
    var attentionNorm, mlpNorm: [Double]
    var linears: [[Double]]      // Wq, Wk, Wv, Wo, Wg, Wu, Wd as [out·in] row-major
    /// A rotated model's online transform on down_proj's input: s := M·s per token, M [F·F]
    /// row-major (H_F/√F); nil: none.
    var downTransform: [Double]? = nil
    /// Constants added to the four linear inputs (a, o, m, s after the transform), [N·width]
    /// each; nil: none. Set to x̂ − x at one point (`freezeInputOffsets`), they make the block
    /// run on fake-quantized inputs there while its derivatives are the straight-through ones.
    var inputOffsets: [[Double]]? = nil

    init(config c: LlamaConfig, parameters p: BlockParameters) {
        (C, H, KVH, D, F) = (c.hidden, c.heads, c.kvHeads, c.headDim, c.ffn)
        eps = Double(c.rmsEps)
        frequencies = (0..<c.headDim / 2).map { i in
            pow(c.ropeBase, -2 * Double(i) / Double(c.headDim)) / Double(c.ropeFrequencyFactors?[i] ?? 1)
        }
        attentionNorm = p.attentionNorm.array.map(Double.init)
        mlpNorm = p.mlpNorm.array.map(Double.init)
        linears = p.linears.map { $0.array.map(Double.init) }
    }

    /// y [N·C] for x [N·C] holding B sequences of T tokens.
    func forward(_ x: [Double], B: Int, T: Int) -> [Double] { run(x, B: B, T: T).y }

    /// Offsets that make the linear inputs at x equal `quantized` (a, o, m, s as the Swift
    /// forward's tape holds them): input k depends only on the offsets before it, so one pass each.
    mutating func freezeInputOffsets(to quantized: [[Float]], x: [Double], B: Int, T: Int) {
        inputOffsets = quantized.map { [Double](repeating: 0, count: $0.count) }
        for k in quantized.indices {
            let captured = run(x, B: B, T: T).inputs[k]
            inputOffsets![k] = zip(quantized[k], captured).map { Double($0) - $1 }
        }
    }

    /// y, and the four linear inputs (a, o, m, s after the transform) before their offsets.
    func run(_ x: [Double], B: Int, T: Int) -> (y: [Double], inputs: [[Double]]) {
        let N = B * T, Q = H * D, KV = KVH * D
        var inputs: [[Double]] = []
        func offset(_ v: [Double]) -> [Double] {
            inputs.append(v)
            guard let d = inputOffsets?[inputs.count - 1] else { return v }
            return zip(v, d).map(+)
        }
        func norm(_ x: [Double], _ w: [Double]) -> [Double] {
            var out = x
            for n in 0..<N {
                var ss = 0.0
                for i in 0..<C { ss += x[n * C + i] * x[n * C + i] }
                let r = 1 / (ss / Double(C) + eps).squareRoot()
                for i in 0..<C { out[n * C + i] = x[n * C + i] * r * w[i] }
            }
            return out
        }
        func linear(_ x: [Double], _ W: [Double], out: Int, in width: Int) -> [Double] {
            var y = [Double](repeating: 0, count: N * out)
            for n in 0..<N {
                for r in 0..<out {
                    var sum = 0.0
                    for i in 0..<width { sum += x[n * width + i] * W[r * width + i] }
                    y[n * out + r] = sum
                }
            }
            return y
        }
        func rope(_ x: inout [Double], heads: Int) {
            for n in 0..<N {
                let t = Double(n % T)
                for h in 0..<heads {
                    for i in 0..<D / 2 {
                        let j = n * heads * D + h * D + 2 * i, angle = t * frequencies[i]
                        let x0 = x[j], x1 = x[j + 1]
                        x[j] = x0 * cos(angle) - x1 * sin(angle)
                        x[j + 1] = x0 * sin(angle) + x1 * cos(angle)
                    }
                }
            }
        }
        let a = offset(norm(x, attentionNorm))
        var q = linear(a, linears[0], out: Q, in: C), k = linear(a, linears[1], out: KV, in: C)
        let v = linear(a, linears[2], out: KV, in: C)
        rope(&q, heads: H)
        rope(&k, heads: KVH)
        var o = [Double](repeating: 0, count: N * Q)
        for b in 0..<B {
            for h in 0..<H {
                let kvh = h / (H / KVH)
                for t in 0..<T {
                    let qRow = (b * T + t) * Q + h * D
                    var scores = [Double]()
                    for j in 0...t {
                        let kRow = (b * T + j) * KV + kvh * D
                        var dot = 0.0
                        for d in 0..<D { dot += q[qRow + d] * k[kRow + d] }
                        scores.append(dot / Double(D).squareRoot())
                    }
                    let top = scores.max()!
                    scores = scores.map { exp($0 - top) }
                    let total = scores.reduce(0, +)
                    for j in 0...t {
                        for d in 0..<D { o[qRow + d] += scores[j] / total * v[(b * T + j) * KV + kvh * D + d] }
                    }
                }
            }
        }
        let attention = linear(offset(o), linears[3], out: C, in: Q)
        let h1 = zip(x, attention).map(+)
        let m = offset(norm(h1, mlpNorm))
        let g = linear(m, linears[4], out: F, in: C), u = linear(m, linears[5], out: F, in: C)
        var s = (0..<N * F).map { g[$0] / (1 + exp(-g[$0])) * u[$0] }
        if let M = downTransform { s = linear(s, M, out: F, in: F) }   // s·Mᵀ per row: M·s per token
        let y = zip(h1, linear(offset(s), linears[6], out: C, in: F)).map(+)
        return (y, inputs)
    }

    /// L = Σ (y − target)² / N
    func loss(_ x: [Double], target: [Double], B: Int, T: Int) -> Double {
        zip(forward(x, B: B, T: T), target).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(B * T)
    }
}

final class BlockGradientTests: XCTestCase, BlockGradientChecking {
    static func config(C: Int = 64, H: Int = 4, KVH: Int = 2, D: Int = 16, F: Int = 96, llama3Rope: Bool = true) -> LlamaConfig {
        let factors = llama3Rope
            ? Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 32).frequencyFactors(headDim: D, base: 10000)
            : nil
        return LlamaConfig(blockCount: 1, hidden: C, ffn: F, heads: H, kvHeads: KVH, headDim: D, vocab: 97,
                           contextLength: 64, ropeBase: 10000, ropeFrequencyFactors: factors, rmsEps: 1e-5,
                           tiedEmbeddings: true)
    }

    /// Norms near 1, linears uniform in ±2/√in.
    static func randomParameters(_ shape: BlockShape, seed: UInt64) -> BlockParameters {
        var rng = SplitMix64(seed: seed)
        let p = BlockParameters(shape: shape)
        for i in 0..<shape.C {
            p.attentionNorm[i] = 1 + rng.uniform(-0.2, 0.2)
            p.mlpNorm[i] = 1 + rng.uniform(-0.2, 0.2)
        }
        for (w, s) in zip(p.linears, shape.linearShapes) {
            let scale = 2 / Float(s.inFeatures).squareRoot()
            for i in 0..<w.count { w[i] = rng.uniform(-scale, scale) }
        }
        return p
    }

    static func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.uniform(-scale, scale) }
    }

    // MARK: - Forward

    /// One block of a tiny model: BlockForwardBackward.forward against the float64 reference
    /// block, and (through the model's final norm and head) against InferenceSession's logits.
    func testForwardMatchesInferenceAndFloat64Reference() throws {
        for llama3Rope in [true, false] {
            let source = InMemorySource(config: Self.config(llama3Rope: llama3Rope), seed: 11)
            let pool = ThreadPool(threads: 2)
            let model = try WeightBinder(source: source, linears: .fp32).model(pool: pool)
            let shape = BlockShape(config: model.config), C = shape.C
            let p = try BlockParameters(source: source, block: 0, shape: shape)
            let sequences: [[Int]] = [[3, 17, 96, 0, 42, 42, 5], [77, 8, 61, 12, 1, 2, 90]]
            let B = sequences.count, T = sequences[0].count
            let x = sequences.flatMap { $0.flatMap { token -> [Float] in
                var row = [Float](repeating: 0, count: C)
                row.withUnsafeMutableBufferPointer { model.tokenEmbedding.lookup(token, into: $0.baseAddress!) }
                return row
            } }
            let tape = BlockTape(shape: shape, batch: B, tokens: T)
            let y = runForward(p, shape, x: x, B: B, T: T, tape: tape, pool: pool)

            let expected = ReferenceBlock(config: model.config, parameters: p).forward(x.map(Double.init), B: B, T: T)
            XCTAssertLessThan(relativeError(y, expected), 1e-5, "llama3 rope \(llama3Rope)")

            // The logits of a one-block model are head(RMSNorm(y)).
            let session = InferenceSession(model: model, contextLength: 16)
            var normed = [Float](repeating: 0, count: C), logits = [Float](repeating: 0, count: model.config.vocab)
            for b in 0..<B {
                session.reset()
                let inference = try session.forward(sequences[b].map(Int32.init), logitRows: T)
                for t in 0..<T {
                    y.withUnsafeBufferPointer { Ops.rmsNorm($0.baseAddress! + (b * T + t) * C, model.outputNorm.pointer, &normed, C: C, eps: shape.eps) }
                    model.output.forward(normed, tokens: 1, into: &logits, pool: pool)
                    XCTAssertLessThan(relativeError(logits, inference[t]), 1e-5, "sequence \(b) token \(t), llama3 rope \(llama3Rope)")
                }
            }

            // Sequences are independent and the tape takes a smaller batch: sequence 1 alone.
            let alone = runForward(p, shape, x: Array(x[(T * C)...]), B: 1, T: T, tape: tape, pool: pool)
            XCTAssertLessThan(relativeError(alone, Array(y[(T * C)...])), 1e-6)
        }
    }

    /// Two attention tiles (T > 64), one thread and three: forward against the float64 reference.
    func testForwardOverSeveralAttentionTiles() {
        let config = Self.config(C: 16, H: 4, KVH: 2, D: 4, F: 24)
        let shape = BlockShape(config: config), B = 2, T = 67
        let p = Self.randomParameters(shape, seed: 5)
        let x = Self.random(B * T * shape.C, seed: 6)
        let expected = ReferenceBlock(config: config, parameters: p).forward(x.map(Double.init), B: B, T: T)
        for threads in [1, 3] {
            let y = runForward(p, shape, x: x, B: B, T: T, tape: BlockTape(shape: shape, batch: B, tokens: T),
                               pool: ThreadPool(threads: threads))
            XCTAssertLessThan(relativeError(y, expected), 1e-5, "\(threads) threads")
        }
    }

    /// A block's parameters are copies of the source's fp32 tensors, named by the block layout.
    func testParametersCopyTheSourceTensors() throws {
        let source = InMemorySource(config: Self.config(), seed: 1)
        let shape = BlockShape(config: source.config)
        let p = try BlockParameters(source: source, block: 0, shape: shape)
        for (role, buffer) in zip(BlockLinear.allCases, p.linears) {
            XCTAssertEqual(buffer.array, try source.floatTensor(TensorName.block(0, .linear(role))).array, role.rawValue)
        }
        XCTAssertEqual(p.mlpNorm.array, try source.floatTensor(TensorName.block(0, .norm(.mlp))).array)
    }

    // MARK: - Gradients

    /// 20 entries of each linear; ragged T, two sequences, GQA with 2 query heads per kv head.
    func testGradientsMatchFiniteDifferences() {
        checkGradients(config: Self.config(), B: 2, T: 7, samples: 20, threads: 2, seed: 21)
        checkGradients(config: Self.config(llama3Rope: false), B: 2, T: 7, samples: 20, threads: 1, seed: 31)
    }

    /// Every entry of every linear, on small shapes.
    func testFullGradientMatchesFiniteDifferencesOnSmallShapes() {
        checkGradients(config: Self.config(C: 16, H: 4, KVH: 2, D: 4, F: 24), B: 2, T: 5, samples: nil, threads: 2, seed: 41)
    }

    /// T > 64: several attention tiles in the backward (dk, dv accumulated over tiles); 3 workers.
    func testGradientsOverSeveralAttentionTiles() {
        checkGradients(config: Self.config(C: 16, H: 4, KVH: 2, D: 4, F: 24), B: 2, T: 67, samples: 8, threads: 3, seed: 51)
    }

    /// dL/dx and the norm weights' gradients (asked for by end-to-end tuning) against central
    /// differences of the float64 reference, every entry; the linears' gradients are the same
    /// with and without them.
    func testInputGradientMatchesFiniteDifferences() {
        for (config, B, T, threads) in [(Self.config(C: 16, H: 4, KVH: 2, D: 4, F: 24), 2, 5, 2), (Self.config(), 1, 7, 1)] {
            let shape = BlockShape(config: config), N = B * T, C = shape.C
            let p = Self.randomParameters(shape, seed: 71)
            let x = Self.random(N * C, seed: 72), target = Self.random(N * C, seed: 73)
            let pool = ThreadPool(threads: threads)
            let tape = BlockTape(shape: shape, batch: B, tokens: T), grads = BlockGradients(shape: shape)
            let y = runForward(p, shape, x: x, B: B, T: T, tape: tape, pool: pool)
            let dy = zip(y, target).map { 2 * ($0 - $1) / Float(N) }
            var dx = [Float](repeating: .nan, count: N * C)
            x.withUnsafeBufferPointer { xp in
                dx.withUnsafeMutableBufferPointer { dxp in
                    BlockForwardBackward.backward(p, shape: shape, B: B, T: T, tape: tape, dy: dy, grads: grads,
                                                  inputGradient: (xp.baseAddress!, dxp.baseAddress!), pool: pool)
                }
            }
            let withInput = grads.linears.map(\.array)
            XCTAssertEqual(withInput, analyticGradients(p, shape, x: x, target: target, B: B, T: T, pool: pool))

            let reference = ReferenceBlock(config: config, parameters: p)
            let xd = x.map(Double.init), targetd = target.map(Double.init), h = 1e-4
            let numeric = (0..<N * C).map { i -> Double in
                var plus = xd, minus = xd
                plus[i] += h
                minus[i] -= h
                return (reference.loss(plus, target: targetd, B: B, T: T) - reference.loss(minus, target: targetd, B: B, T: T)) / (2 * h)
            }
            let scale = numeric.map(abs).max()!
            XCTAssertGreaterThan(scale, 1e-3)
            let worst = zip(dx, numeric).map { abs(Double($0) - $1) / (abs($1) + 1e-3 * scale) }.max()!
            XCTAssertLessThan(worst, 1e-3, "dL/dx, C \(C), B \(B), T \(T)")

            // The norm weights' gradients, every channel.
            for (name, analytic, path) in [("attention norm", grads.attentionNorm, \ReferenceBlock.attentionNorm), ("mlp norm", grads.mlpNorm, \ReferenceBlock.mlpNorm)] {
                let numeric = (0..<C).map { i -> Double in
                    var plus = reference, minus = reference
                    plus[keyPath: path][i] += h
                    minus[keyPath: path][i] -= h
                    return (plus.loss(xd, target: targetd, B: B, T: T) - minus.loss(xd, target: targetd, B: B, T: T)) / (2 * h)
                }
                let scale = numeric.map(abs).max()!
                XCTAssertGreaterThan(scale, 1e-3, name)
                let worst = (0..<C).map { abs(Double(analytic[$0]) - numeric[$0]) / (abs(numeric[$0]) + 1e-3 * scale) }.max()!
                XCTAssertLessThan(worst, 1e-3, "d \(name), C \(C), B \(B), T \(T)")
            }
        }
    }

    // MARK: - Sublayers

    /// forward(x) = h1 + mlp(RMSNorm(h1)) with h1 = x + attention(RMSNorm(x)).
    func testSublayersComposeToTheBlock() {
        let config = Self.config()
        let shape = BlockShape(config: config), B = 2, T = 7, N = B * T, C = shape.C
        let p = Self.randomParameters(shape, seed: 61)
        let x = Self.random(N * C, seed: 62)
        let pool = ThreadPool(threads: 2)
        let tape = BlockTape(shape: shape, batch: B, tokens: T)
        let y = runForward(p, shape, x: x, B: B, T: T, tape: tape, pool: pool)

        func rmsNorm(_ v: [Float], _ w: FloatBuffer) -> [Float] {
            var out = v
            v.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for n in 0..<N { Ops.rmsNorm(src.baseAddress! + n * C, w.pointer, dst.baseAddress! + n * C, C: C, eps: shape.eps) }
                }
            }
            return out
        }
        let a = rmsNorm(x, p.attentionNorm)
        XCTAssertLessThan(relativeError(Array(UnsafeBufferPointer(start: tape.attentionInput, count: N * C)), a), 1e-6)
        var attention = [Float](repeating: .nan, count: N * C)
        BlockForwardBackward.attentionSublayer(p, shape: shape, normed: a, B: B, T: T, into: &attention, pool: pool)
        let h1 = zip(x, attention).map(+)
        let m = rmsNorm(h1, p.mlpNorm)
        XCTAssertLessThan(relativeError(Array(UnsafeBufferPointer(start: tape.mlpInput, count: N * C)), m), 1e-6)
        var mlp = [Float](repeating: .nan, count: N * C)
        BlockForwardBackward.mlpSublayer(p, shape: shape, normed: m, B: B, T: T, into: &mlp, pool: pool)
        XCTAssertLessThan(relativeError(y, zip(h1, mlp).map(+)), 1e-6)

        // y may overwrite x.
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer {
            BlockForwardBackward.forward(p, shape: shape, x: $0.baseAddress!, B: B, T: T, tape: tape, into: $0.baseAddress!, pool: pool)
        }
        XCTAssertEqual(inPlace, y)
    }

    /// A scratch reused across calls (as AWQ's grid search does) gives exactly what a fresh one
    /// gives, call after call: nothing of one call's buffers leaks into the next.
    func testSublayerScratchReuseMatchesFreshBuffers() {
        let shape = BlockShape(config: Self.config()), B = 2, T = 9, N = B * T, C = shape.C
        let pool = ThreadPool(threads: 2)
        let scratch = BlockForwardBackward.SublayerScratch(shape: shape, B: B, T: T)
        for call in 0..<3 {
            let p = Self.randomParameters(shape, seed: 70 + UInt64(call))
            let a = Self.random(N * C, seed: 80 + UInt64(call))
            var fresh = [Float](repeating: .nan, count: N * C), reused = fresh
            BlockForwardBackward.attentionSublayer(p, shape: shape, normed: a, B: B, T: T, into: &fresh, pool: pool)
            BlockForwardBackward.attentionSublayer(p, shape: shape, normed: a, B: B, T: T, into: &reused, scratch: scratch, pool: pool)
            XCTAssertEqual(reused, fresh, "attention, call \(call)")
            BlockForwardBackward.mlpSublayer(p, shape: shape, normed: a, B: B, T: T, into: &fresh, pool: pool)
            BlockForwardBackward.mlpSublayer(p, shape: shape, normed: a, B: B, T: T, into: &reused, scratch: scratch, pool: pool)
            XCTAssertEqual(reused, fresh, "MLP, call \(call)")
            XCTAssertFalse(fresh.contains { !$0.isFinite }, "call \(call)")
        }
    }
}

/// The block tests' helpers (forward on arrays, relative errors, the gradient check against the
/// float64 reference), shared with RotatedCalibrationTests.
protocol BlockGradientChecking {}

extension BlockGradientChecking {
    /// max |a − b| / max |b|
    func relativeError(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max()! / b.map(abs).max()!
    }

    func relativeError(_ a: [Float], _ b: [Float]) -> Double { relativeError(a, b.map(Double.init)) }

    func runForward(_ p: BlockParameters, _ shape: BlockShape, x: [Float], B: Int, T: Int, tape: BlockTape,
                    activations: ActivationFakeQuantizer? = nil, pool: ThreadPool) -> [Float] {
        var y = [Float](repeating: .nan, count: B * T * shape.C)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer {
                BlockForwardBackward.forward(p, shape: shape, x: xp.baseAddress!, B: B, T: T, tape: tape, into: $0.baseAddress!,
                                             activations: activations, pool: pool)
            }
        }
        return y
    }

    /// Runs forward and backward for L = Σ (y − target)² / N; returns the analytic dL/dW.
    func analyticGradients(_ p: BlockParameters, _ shape: BlockShape, x: [Float], target: [Float], B: Int, T: Int,
                           pool: ThreadPool) -> [[Float]] {
        analyticGradientsAndInputs(p, shape, x: x, target: target, B: B, T: T, activations: nil, pool: pool).gradients
    }

    /// The same, and the four linear inputs the forward's tape holds (a, o, m, s).
    func analyticGradientsAndInputs(_ p: BlockParameters, _ shape: BlockShape, x: [Float], target: [Float], B: Int, T: Int,
                                    activations: ActivationFakeQuantizer?, pool: ThreadPool) -> (gradients: [[Float]], inputs: [[Float]]) {
        let tape = BlockTape(shape: shape, batch: B, tokens: T), grads = BlockGradients(shape: shape)
        for w in grads.linears { w.buffer.update(repeating: .nan) }  // must be overwritten
        let y = runForward(p, shape, x: x, B: B, T: T, tape: tape, activations: activations, pool: pool)
        let N = B * T
        let inputs = [(tape.attentionInput, shape.C), (tape.attentionOutputInput, shape.qWidth), (tape.mlpInput, shape.C), (tape.downInput, shape.F)]
            .map { Array(UnsafeBufferPointer(start: $0.0, count: N * $0.1)) }
        let dy = zip(y, target).map { 2 * ($0 - $1) / Float(N) }
        BlockForwardBackward.backward(p, shape: shape, B: B, T: T, tape: tape, dy: dy, grads: grads, pool: pool)
        return (grads.linears.map(\.array), inputs)
    }

    /// dL/dW[l][i] by central differences of the float64 reference.
    func numericGradient(_ reference: ReferenceBlock, linear l: Int, index i: Int, x: [Double], target: [Double],
                         B: Int, T: Int) -> Double {
        let h = 1e-4
        var plus = reference, minus = reference
        plus.linears[l][i] += h
        minus.linears[l][i] -= h
        return (plus.loss(x, target: target, B: B, T: T) - minus.loss(x, target: target, B: B, T: T)) / (2 * h)
    }

    /// Checks `samples` entries of each linear (all when nil). Error of an entry: |analytic − numeric| /
    /// (|numeric| + 1e-3·max|analytic gradient of that linear|).
    /// `rotation`: the block of a rotated model (with its online transform before down_proj).
    /// `activations`: the linear inputs fake-quantized; the numeric gradient is then the
    /// straight-through one (the reference's inputs shifted by the frozen x̂ − x of the forward).
    func checkGradients(config: LlamaConfig, B: Int, T: Int, samples: Int?, threads: Int, seed: UInt64,
                        rotation: RotationRecord? = nil, activations: ActivationFakeQuantizer? = nil,
                        file: StaticString = #filePath, line: UInt = #line) {
        let shape = BlockShape(config: config, rotation: rotation)
        let p = BlockGradientTests.randomParameters(shape, seed: seed)
        let x = BlockGradientTests.random(B * T * shape.C, seed: seed + 1), target = BlockGradientTests.random(B * T * shape.C, seed: seed + 2)
        let (analytic, inputs) = analyticGradientsAndInputs(p, shape, x: x, target: target, B: B, T: T, activations: activations,
                                                            pool: ThreadPool(threads: threads))
        var reference = ReferenceBlock(config: config, parameters: p)
        let xd = x.map(Double.init), targetd = target.map(Double.init)
        if shape.onlineDownHadamard {
            let F = shape.F, root = Double(F).squareRoot()
            reference.downTransform = Hadamard.matrix(F)!.map { Double($0) / root }
        }
        if activations != nil { reference.freezeInputOffsets(to: inputs, x: xd, B: B, T: T) }
        var rng = SplitMix64(seed: seed + 3)
        for (l, gradient) in analytic.enumerated() {
            let name = BlockParameters.linearNames[l]
            XCTAssertFalse(gradient.contains { !$0.isFinite }, "\(name) has non-finite gradients", file: file, line: line)
            let scale = Double(gradient.map(abs).max()!)
            XCTAssertGreaterThan(scale, 1e-4, "\(name)'s gradient is ~0", file: file, line: line)
            let indices = samples.map { n in (0..<n).map { _ in Int.random(in: 0..<gradient.count, using: &rng) } }
                ?? Array(gradient.indices)
            var worst = 0.0
            for i in indices {
                let numeric = numericGradient(reference, linear: l, index: i, x: xd, target: targetd, B: B, T: T)
                worst = max(worst, abs(Double(gradient[i]) - numeric) / (abs(numeric) + 1e-3 * scale))
            }
            XCTAssertLessThan(worst, 1e-3, "\(name): worst relative error over \(indices.count) entries", file: file, line: line)
        }
    }
}
