import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// TesseraQ on a tiny synthetic model: the pieces against float64 references, the schedule,
/// the losses against RTN and AWQ, resume, and the packed output.
final class CalibrationTests: XCTestCase {
    /// Rows of 64 and 96 (multiples of 32, as the packed layout needs), GQA 4/2.
    static func tinySource(seed: UInt64 = 7) -> InMemorySource {
        let config = LlamaConfig(blockCount: 2, hidden: 64, ffn: 96, heads: 4, kvHeads: 2, headDim: 16, vocab: 61,
                                 contextLength: 64, ropeBase: 10000, ropeFrequencyFactors: nil, rmsEps: 1e-5, tiedEmbeddings: true)
        let source = InMemorySource(config: config, seed: seed)
        // A few outlier channels in the residual stream, as real models have (AWQ's premise).
        var embedding = source.tensors[TensorName.tokenEmbedding]!
        for row in 0..<config.vocab { for c in [3, 17, 40] { embedding.values[row * 64 + c] *= 6 } }
        source.tensors[TensorName.tokenEmbedding] = embedding
        return source
    }

    static func tokens(count: Int = 600, vocab: Int = 61, seed: UInt64 = 3) -> [Int32] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int32.random(in: 0..<Int32(vocab), using: &rng) }
    }

    static func options(_ method: CalibrationOptions.Method, bits: Int = 2) -> CalibrationOptions {
        var o = CalibrationOptions()
        o.method = method
        o.initialisation = method == .rtn ? .rtn : .awq
        o.bits = bits
        o.group = 32
        o.samples = 8
        o.sequenceLength = 16
        o.batch = 2
        o.schedule = .exponential(t: 4, stages: 5)
        o.stepsPerStage = 30
        o.learningRate = 5e-3
        o.scaleLearningRate = 5e-3
        o.awqSequences = 4
        o.clipTokens = 64
        return o
    }

    func calibrate(_ o: CalibrationOptions, to path: String, blocks: Int? = nil, resume: Bool = false,
                   source: InMemorySource = tinySource()) throws -> Calibrator.Summary {
        let calibrator = Calibrator(source: source, options: o, outputPath: path, pool: ThreadPool(threads: 2))
        calibrator.blockLimit = blocks
        return try calibrator.run(tokens: Self.tokens(), tokenizer: nil, embedding: .f16, resume: resume)
    }

    // MARK: - Pieces

    func testRectifiedSigmoidInverseAndDerivative() {
        for y: Float in [0, 0.01, 0.25, 0.5, 0.8, 0.999] {
            XCTAssertEqual(RectifiedSigmoid.value(RectifiedSigmoid.inverse(y)), y, accuracy: 2e-6)
        }
        XCTAssertEqual(RectifiedSigmoid.inverse(0), -logf(11), accuracy: 1e-6)
        for x: Float in [-2, -0.5, 0, 0.7, 2] {
            let h = 1e-3 as Float
            let numeric = (RectifiedSigmoid.value(x + h) - RectifiedSigmoid.value(x - h)) / (2 * h)
            XCTAssertEqual(RectifiedSigmoid.derivative(x), numeric, accuracy: 1e-3)
        }
        XCTAssertEqual(RectifiedSigmoid.derivative(5), 0)       // clamped at 1
        XCTAssertEqual(RectifiedSigmoid.value(RoundingLayer.hardValue), 1)
        XCTAssertEqual(RectifiedSigmoid.value(-RoundingLayer.hardValue), 0)
    }

    func testGridMatchesTheReferenceFormulas() {
        var rng = SplitMix64(seed: 11)
        let rows = 3, cols = 64
        let w = (0..<rows * cols).map { _ in rng.uniform(-1, 0.6) }
        let grid = w.withUnsafeBufferPointer { QuantGrid(weights: $0.baseAddress!, rows: rows, cols: cols, bits: 3, group: 32) }
        for r in 0..<rows {
            for g in 0..<2 {
                let values = w[(r * cols + g * 32)..<(r * cols + g * 32 + 32)].map(Double.init)
                let s = (values.max()! - values.min()!) / 7
                let z = min(max((-values.min()! / s).rounded(.toNearestOrEven), 0), 7)
                XCTAssertEqual(Double(grid.scale[r * 2 + g]), s, accuracy: 1e-6)
                XCTAssertEqual(Double(grid.zero[r * 2 + g]), z)
            }
        }
    }

    /// dL/dv and dL/du of L = Σ c·Ŵ against float64 central differences of the quantizer.
    func testRoundingLayerGradientsMatchFiniteDifferences() {
        var rng = SplitMix64(seed: 5)
        let rows = 4, cols = 64, bits = 2
        let w = (0..<rows * cols).map { _ in rng.uniform(-1, 1) }
        let layer = w.withUnsafeBufferPointer { RoundingLayer(name: "t", weights: $0.baseAddress!, rows: rows, cols: cols, bits: bits, group: 32) }
        for i in layer.v.indices { layer.v[i] += rng.uniform(-1, 1) }
        for g in layer.u.indices { layer.u[g] = rng.uniform(-0.5, 0.5) }
        let c = (0..<rows * cols).map { _ in Double(rng.uniform(-1, 1)) }
        let pool = ThreadPool(threads: 1)
        let dW = FloatBuffer(c.map(Float.init)), dv = FloatBuffer(count: rows * cols), du = FloatBuffer(count: layer.u.count)
        layer.backward(weightGradient: dW.pointer, vGradient: dv.pointer, uGradient: du.pointer, pool: pool)

        // Float64 model of Ŵ as a function of one v or u.
        func h(_ x: Double) -> Double { min(max(1.2 / (1 + exp(-x)) - 0.1, 0), 1) }
        func what(_ i: Int, v: Double, u: Double) -> Double {
            let g = i / 32, qmax = Double((1 << bits) - 1)
            let q = min(max(Double(layer.base[i]) + h(v), 0), qmax)
            return (q - Double(layer.grid.zero[g])) * Double(layer.grid.scale[g]) * 2 * h(u)
        }
        let eps = 1e-4
        for i in stride(from: 0, to: rows * cols, by: 7) {
            let g = i / 32, v = Double(layer.v[i]), u = Double(layer.u[g])
            let numeric = c[i] * (what(i, v: v + eps, u: u) - what(i, v: v - eps, u: u)) / (2 * eps)
            XCTAssertEqual(Double(dv[i]), numeric, accuracy: 1e-4 + 1e-3 * abs(numeric), "dv[\(i)]")
        }
        for g in layer.u.indices {
            let u = Double(layer.u[g])
            var numeric = 0.0
            for i in g * 32..<(g + 1) * 32 {
                numeric += c[i] * (what(i, v: Double(layer.v[i]), u: u + eps) - what(i, v: Double(layer.v[i]), u: u - eps)) / (2 * eps)
            }
            XCTAssertEqual(Double(du[g]), numeric, accuracy: 1e-4 + 1e-3 * abs(numeric), "du[\(g)]")
        }
    }

    /// After each harden phase the soft fraction equals the schedule's soft rate (± one weight).
    func testHardeningFollowsTheSchedule() {
        var rng = SplitMix64(seed: 9)
        let rows = 8, cols = 64
        let w = (0..<rows * cols).map { _ in rng.uniform(-1, 1) }
        let layer = w.withUnsafeBufferPointer { RoundingLayer(name: "t", weights: $0.baseAddress!, rows: rows, cols: cols, bits: 2, group: 32) }
        let n = Double(rows * cols)
        for rate in HardeningSchedule.stages20.softRates {
            layer.harden(softRate: rate)
            // Training moves soft weights between stages; nudge them like it would.
            XCTAssertEqual(1 - layer.hardFraction, rate, accuracy: 1.5 / n, "soft rate \(rate)")
            for i in layer.v.indices where abs(layer.v[i]) != RoundingLayer.hardValue { layer.v[i] += rng.uniform(-0.05, 0.05) }
        }
        layer.hardenAll()
        XCTAssertEqual(layer.hardFraction, 1)
    }

    func testAdamMatchesTorchOnAQuadratic() {
        // torch.optim.Adam(lr=0.1) on f(p) = p², p0 = 1: p1 = 0.9, p2 ≈ 0.8004122 (bias-corrected).
        var adam = Adam(count: 1, learningRate: 0.1)
        var p: [Float] = [1]
        for expected: Float in [0.9, 0.8004122] {
            let g = [2 * p[0]]
            adam.update(&p, gradient: g)
            XCTAssertEqual(p[0], expected, accuracy: 2e-6)
        }
    }

    func testScheduleArguments() {
        XCTAssertEqual(HardeningSchedule(argument: "20")?.softRates.count, 20)
        XCTAssertEqual(HardeningSchedule(argument: "10")?.softRates.first, 0.75)
        XCTAssertEqual(HardeningSchedule(argument: "exp:4")?.softRates.count, 10)
        XCTAssertEqual(HardeningSchedule(argument: "exp:4")!.softRates.last!, exp(-4), accuracy: 1e-12)
        XCTAssertNil(HardeningSchedule(argument: "exp:-1"))
        XCTAssertNil(HardeningSchedule(argument: "7"))
    }

    // MARK: - Whole runs on the tiny model

    func testTesseraQLowersBlockLossBelowRTNAndAWQ() throws {
        let rtn = try calibrate(Self.options(.rtn), to: temporaryPath("rtn.gguf")).reports
        let awq = try calibrate(Self.options(.awq), to: temporaryPath("awq.gguf")).reports
        let tq = try calibrate(Self.options(.tesseraq), to: temporaryPath("tq.gguf")).reports
        XCTAssertEqual(tq.count, 2)
        for b in 0..<2 {
            XCTAssertLessThan(tq[b].lossFinal, awq[b].lossFinal, "block \(b)")
            XCTAssertLessThan(tq[b].lossFinal, rtn[b].lossFinal, "block \(b)")
            // Its starting point is the AWQ model (same inputs in block 0).
            if b == 0 { XCTAssertEqual(tq[b].lossInitial, awq[b].lossFinal, accuracy: 1e-3 * awq[b].lossFinal) }
            XCTAssertLessThan(tq[b].lossFinal, 0.8 * tq[b].lossInitial, "block \(b): calibration should cut the loss clearly")
            // Some decisions flip, most do not.
            let flips = tq[b].flipped.values
            XCTAssertTrue(flips.contains { $0 > 0 } && flips.allSatisfy { $0 < 0.5 })
            XCTAssertTrue(rtn[b].flipped.values.allSatisfy { $0 == 0 })
        }
        // The hard fraction after each stage follows 1 − soft rate (layers of ≥ 1024 weights).
        for (hard, rate) in zip(tq[0].hardAfterStage, Self.options(.tesseraq).schedule.softRates) {
            XCTAssertEqual(hard, 1 - rate, accuracy: 0.002)
        }
    }

    func testResumeEqualsAnUninterruptedRun() throws {
        let o = Self.options(.tesseraq)
        let whole = temporaryPath("whole.gguf"), resumed = temporaryPath("resumed.gguf")
        let complete = try calibrate(o, to: whole)
        XCTAssertTrue(complete.wroteModel)
        // `--blocks 1`: one block calibrated and checkpointed, no model written.
        let partial = try calibrate(o, to: resumed, blocks: 1)
        XCTAssertFalse(partial.wroteModel)
        XCTAssertEqual(partial.reports.map(\.stepLosses), [complete.reports[0].stepLosses])
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed))
        XCTAssertTrue(FileManager.default.fileExists(atPath: resumed + ".calib/block-000.gguf"))
        // Without --resume an existing checkpoint is refused, not overwritten.
        XCTAssertThrowsError(try calibrate(o, to: resumed)) { XCTAssertTrue("\($0)".contains("--resume")) }
        var other = o
        other.stepsPerStage += 1
        XCTAssertThrowsError(try calibrate(other, to: resumed, resume: true)) { XCTAssertTrue("\($0)".contains("other settings")) }
        let summary = try calibrate(o, to: resumed, resume: true)
        XCTAssertEqual(summary.resumedAt, 1)
        XCTAssertTrue(summary.wroteModel)
        let a = try XCTUnwrap(FileManager.default.contents(atPath: whole))
        let b = try XCTUnwrap(FileManager.default.contents(atPath: resumed))
        XCTAssertEqual(a, b, "a resumed run must write the same file as an uninterrupted one")
    }

    /// Under a memory budget, sequences past the resident ones leave RAM after every use
    /// (their pages are neither mapped nor cached) and read back intact.
    func testTrajectorySpillsSequencesPastTheBudget() throws {
        let T = 64, C = 64, samples = 6  // 8 KiB per sequence: whole pages
        let path = temporaryPath("traj.f16")
        let trajectory = try Trajectory(samples: samples, T: T, C: C, path: path)
        trajectory.residentSamples = 2
        var rng = SplitMix64(seed: 5)
        let x = (0..<samples * T * C).map { _ in Float(Int.random(in: -1000...1000, using: &rng)) / 64 }  // exact in fp16
        x.withUnsafeBufferPointer { trajectory.store($0.baseAddress!, first: 0, count: samples) }
        try trajectory.commit()
        var back = [Float](repeating: .nan, count: x.count)
        back.withUnsafeMutableBufferPointer { trajectory.gather(Array(0..<samples), into: $0.baseAddress!) }
        XCTAssertEqual(back, x)
        // tmpfs keeps its only copy in RAM: the file system of the longest mount point above path.
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        var mountPoint = "", fileSystem = ""
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.count > 2, path.hasPrefix(fields[1]), fields[1].count > mountPoint.count { (mountPoint, fileSystem) = (fields[1], fields[2]) }
        }
        let onTmpfs = fileSystem == "tmpfs"
        if !onTmpfs {
            XCTAssertEqual(trajectory.residentFraction(first: 0, count: 2), 1)
            XCTAssertEqual(trajectory.residentFraction(first: 2, count: 4), 0, "spilled sequences must leave the page cache")
        }
        // A checkpoint reopened under the budget reads the same values.
        let reopened = try Trajectory(samples: samples, T: T, C: C, contentsOf: path)
        reopened.residentSamples = 0
        back = [Float](repeating: .nan, count: x.count)
        back.withUnsafeMutableBufferPointer { reopened.gather([5, 0, 3, 1, 4, 2], into: $0.baseAddress!) }
        let n = T * C
        for (j, i) in [5, 0, 3, 1, 4, 2].enumerated() { XCTAssertEqual(Array(back[j * n..<(j + 1) * n]), Array(x[i * n..<(i + 1) * n])) }
    }

    /// A run driven to diverge (lr 1e3) ends worse than its initialisation: the guard keeps the
    /// initialisation, so every block equals the AWQ baseline's. Without the guard it does not.
    func testGuardKeepsTheInitialisationWhenTesseraQEndsWorse() throws {
        var o = Self.options(.tesseraq)
        o.learningRate = 1e3
        o.scaleLearningRate = 1e3
        let awq = try calibrate(Self.options(.awq), to: temporaryPath("awq.gguf"))
        let guarded = try calibrate(o, to: temporaryPath("guarded.gguf"))
        o.guardSequences = 0
        let unguarded = try calibrate(o, to: temporaryPath("unguarded.gguf"))
        for (g, a) in zip(guarded.reports, awq.reports) {
            XCTAssertEqual(g.keptInitialisation, true)
            XCTAssertGreaterThan(try XCTUnwrap(g.checkLossFinal), try XCTUnwrap(g.checkLossInitial))
            XCTAssertEqual(g.lossFinal, a.lossFinal, accuracy: 1e-9 * a.lossFinal)
        }
        XCTAssertNil(unguarded.reports[0].keptInitialisation)
        XCTAssertGreaterThan(unguarded.reports[0].lossFinal, awq.reports[0].lossFinal)
        // The normal test settings improve every block, so the guard leaves them alone.
        let normal = try calibrate(Self.options(.tesseraq), to: temporaryPath("normal.gguf"))
        XCTAssertEqual(normal.reports.map { $0.keptInitialisation }, [false, false])
    }

    // MARK: - Token weighting (--token-norm-cap)

    /// The rule against a float64 reference: tokens up to cap × the median norm weigh 1, a
    /// longer one (cap · median / ‖y‖)².
    func testTokenWeightingScalesOnlyTokensPastTheCap() {
        var rng = SplitMix64(seed: 11)
        let C = 24, tokens = 101, massive = [0, 57]
        var x = (0..<tokens * C).map { _ in Float.random(in: -1...1, using: &rng) }
        for t in massive { x[t * C + 5] = t == 0 ? 300 : -90 }
        let norms = (0..<tokens).map { t in (0..<C).reduce(0.0) { $0 + Double(x[t * C + $1]) * Double(x[t * C + $1]) }.squareRoot() }
        let median = norms.sorted()[tokens / 2]
        x.withUnsafeBufferPointer { p in
            let weighting = TokenWeighting(cap: 4, targets: p.baseAddress!, tokens: tokens, C: C)
            XCTAssertEqual(Double(weighting.limit), 4 * median, accuracy: 1e-5 * median)
            var light: [Int] = []
            for t in 0..<tokens {
                let expected = norms[t] > 4 * median ? (4 * median / norms[t]) * (4 * median / norms[t]) : 1
                let w = weighting.weight(p.baseAddress! + t * C, C)
                XCTAssertEqual(Double(w), expected, accuracy: 1e-5 * expected, "token \(t)")
                if w < 1 { light.append(t) }
            }
            XCTAssertEqual(light, massive)
            XCTAssertEqual(TokenWeighting.off.weight(p.baseAddress!, C), 1)
        }
    }

    /// A cap no token reaches leaves the run exactly as without one; with massive tokens
    /// planted (one token id's embedding made huge in one channel) the cap lowers the block's
    /// loss at the same (AWQ) weights, but only by what those few tokens carried.
    func testTokenNormCapActsOnlyOnMassiveTokens() throws {
        let plain = try calibrate(Self.options(.tesseraq), to: temporaryPath("plain.gguf")).reports
        var o = Self.options(.tesseraq)
        o.tokenNormCap = 1e6
        let unreached = try calibrate(o, to: temporaryPath("unreached.gguf")).reports
        XCTAssertEqual(plain.map { $0.stepLosses }, unreached.map { $0.stepLosses })
        XCTAssertEqual(plain.map { $0.lossFinal }, unreached.map { $0.lossFinal })

        let source = Self.tinySource()
        var embedding = source.tensors[TensorName.tokenEmbedding]!
        embedding.values[5 * 64 + 17] = 1000 * embedding.values.map(abs).max()!
        source.tensors[TensorName.tokenEmbedding] = embedding
        var awq = Self.options(.awq)
        let full = try calibrate(awq, to: temporaryPath("full.gguf"), source: source).reports[0]
        awq.tokenNormCap = 4
        let capped = try calibrate(awq, to: temporaryPath("capped.gguf"), source: source).reports[0]
        XCTAssertLessThan(capped.lossFinal, full.lossFinal)
        XCTAssertGreaterThan(capped.lossFinal, 0.5 * full.lossFinal, "the ordinary tokens still count fully")
    }

    func testMemoryBudgetDoesNotChangeTheResult() throws {
        let o = Self.options(.tesseraq)
        let free = temporaryPath("free.gguf"), bounded = temporaryPath("bounded.gguf")
        _ = try calibrate(o, to: free)
        let calibrator = Calibrator(source: Self.tinySource(), options: o, outputPath: bounded, pool: ThreadPool(threads: 2))
        calibrator.trajectoryBudget = 4 * 3 * Trajectory.sequenceBytes(T: o.sequenceLength, C: 64)
        XCTAssertEqual(calibrator.residentSamples, 3)
        _ = try calibrator.run(tokens: Self.tokens(), tokenizer: nil, embedding: .f16, resume: false)
        XCTAssertEqual(FileManager.default.contents(atPath: free), FileManager.default.contents(atPath: bounded))
    }

    /// The output loads as a packed model and runs on the low-bit kernels; its logits equal
    /// those of the fp32 dequantization of the same file.
    func testPackedOutputLoadsAndRuns() throws {
        let path = temporaryPath("tq.gguf")
        _ = try calibrate(Self.options(.tesseraq, bits: 3), to: path)
        let packed = try PackedModelSource(gguf: GGUFFile(path: path))
        XCTAssertEqual(packed.bits, 3)
        XCTAssertEqual(packed.gguf.string("tessera.method"), "tesseraq")
        XCTAssertEqual(packed.gguf.string("tessera.calibration.init"), "awq")
        XCTAssertTrue(packed.isPacked(TensorName.block(1, "ffn_down")))
        let pool = ThreadPool(threads: 2)
        let lowBit = try WeightBinder(source: packed).model(pool: pool)
        let fp32 = try WeightBinder(source: packed, linears: .fp32).model(pool: pool)
        let tokens: [Int32] = [1, 5, 9, 33, 2, 60, 7]
        let a = try InferenceSession(model: lowBit, contextLength: 32).forward(tokens, logitRows: 3)
        let b = try InferenceSession(model: fp32, contextLength: 32).forward(tokens, logitRows: 3)
        for (ra, rb) in zip(a, b) {
            for (x, y) in zip(ra, rb) { XCTAssertEqual(x, y, accuracy: 1e-3 * max(1, abs(y))) }
        }
        // And it differs from the unquantized model (the test would pass vacuously otherwise).
        let original = try WeightBinder(source: Self.tinySource(), linears: .fp32).model(pool: pool)
        let c = try InferenceSession(model: original, contextLength: 32).forward(tokens, logitRows: 1)
        XCTAssertGreaterThan(zip(c[0], b.last!).map { abs($0 - $1) }.max()!, 1e-3)
    }
}
