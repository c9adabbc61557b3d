import XCTest
@testable import Engine
@testable import Calibrate

/// The QuaRot-style rotation (Calibrate's HadamardRotation): a rotated fp model computes the
/// same function as the model it was made from, its packed file records the rotation, and the
/// runtime applies the online transform before down_proj exactly when the file says so.
final class RotationTests: XCTestCase {
    // MARK: helpers

    /// max over tokens of max|a − b| / max|b| (b the reference).
    static func maxRelativeDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        zip(a, b).map { x, y in zip(x, y).map { abs($0 - $1) }.max()! / y.map(abs).max()! }.max()!
    }

    static func fp32Model(_ source: ModelSource) throws -> LlamaModel {
        try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 2))
    }

    /// Logits of every token: a prefill of the first three (the T > 1 paths), then one token at a time.
    static func logits(_ model: LlamaModel, _ tokens: [Int32]) throws -> [[Float]] {
        try PackedModelTests.prefillThenDecode(model, tokens)
    }

    /// The same weights without the online transform (what a runtime ignoring the flag would run).
    static func withoutOnlineTransform(_ m: LlamaModel) -> LlamaModel {
        LlamaModel(config: m.config, tokenEmbedding: m.tokenEmbedding, blocks: m.blocks, outputNorm: m.outputNorm,
                   output: m.output, pool: m.pool, outputNormHadamard: m.outputNormHadamard)
    }

    /// The model with its final norm's weight applied as usual, not in the Hadamard domain.
    static func withoutHeadNormTransform(_ m: LlamaModel) -> LlamaModel {
        LlamaModel(config: m.config, tokenEmbedding: m.tokenEmbedding, blocks: m.blocks, outputNorm: m.outputNorm,
                   output: m.output, pool: m.pool, downInputHadamard: m.downInputHadamard)
    }

    /// LLaMA-3.2 in miniature: GQA 8/2 heads of 16, llama3 RoPE scaling, FFN 3× hidden
    /// (384 = 12·32: a non-power-of-two online transform).
    static let llamaShape = LlamaConfig(
        blockCount: 2, hidden: 128, ffn: 384, heads: 8, kvHeads: 2, headDim: 16, vocab: 101, contextLength: 64,
        ropeBase: 500_000,
        ropeFrequencyFactors: Llama3RopeScaling(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 16)
            .frequencyFactors(headDim: 16, base: 500_000),
        rmsEps: 1e-5, tiedEmbeddings: true)

    static let tokens: [Int32] = [1, 50, 96, 3, 3, 17, 0, 88]

    // MARK: the transform

    func testHadamardWrapperIsOrthonormal() throws {
        for n in [12, 16, 48, 80, 384] {
            let h = try XCTUnwrap(Hadamard.matrix(n))
            for i in 0..<n {
                for j in 0..<n {
                    let dot = (0..<n).reduce(Float(0)) { $0 + h[i * n + $1] * h[j * n + $1] }
                    XCTAssertEqual(dot, i == j ? Float(n) : 0, "n \(n) (\(i), \(j))")
                }
            }
            var rng = SplitMix64(seed: UInt64(n))
            let x = (0..<n).map { _ in rng.uniform(-1, 1) }
            var y = x
            y.withUnsafeMutableBufferPointer {
                Hadamard.apply($0.baseAddress!, n)
                Hadamard.apply($0.baseAddress!, n, transpose: true)
            }
            for i in 0..<n { XCTAssertEqual(y[i], x[i], accuracy: 1e-5) }
        }
        XCTAssertFalse(Hadamard.isSupported(9 * 2))
        XCTAssertNil(OnlineHadamard(width: 100))
    }

    /// Synthetic models with tied and untied heads, GQA, power-of-two and 12·2^k / 20·2^k widths.
    func testRotatedSyntheticModelsGiveTheSameLogits() throws {
        let cases: [(String, LlamaConfig, tied: Bool, unitFinalNorm: Bool)] = [
            ("llama-shape tied", Self.llamaShape, true, false),
            ("llama-shape tied, final norm 1", Self.llamaShape, true, true),
            ("llama-shape untied", Self.llamaShape, false, false),
            ("tiny 48/80/12 untied", InMemorySource.tinyConfig(), false, false),
            ("tiny 48/80/12 tied", InMemorySource.tinyConfig(), true, false),
        ]
        for (label, config, tied, unitFinalNorm) in cases {
            let base = InMemorySource(config: config, seed: 11, tied: tied)
            if unitFinalNorm { base.tensors[TensorName.outputNorm]!.values = Array(repeating: 1, count: config.hidden) }
            let rotated = try RotatedModelSource(base: base, seed: 7)
            // A tied head stays one table; unless the final norm's weight is 1, that weight then
            // acts in the Hadamard domain (the file says so).
            let normInDomain = tied && !unitFinalNorm
            XCTAssertEqual(rotated.config.tiedEmbeddings, tied, label)
            XCTAssertEqual(rotated.hasTensor(TensorName.output), !tied, label)
            XCTAssertEqual(rotated.rotation, RotationRecord(kind: .hadamard, seed: 7, onlineDownHadamard: true, outputNormHadamard: normInDomain), label)
            XCTAssertEqual(try rotated.floatTensor(TensorName.outputNorm).array,
                           normInDomain ? base.tensors[TensorName.outputNorm]!.values : Array(repeating: 1, count: config.hidden), label)
            // The weights really moved; the norms are folded.
            for name in [TensorName.tokenEmbedding, TensorName.block(1, "attn_v"), TensorName.block(0, "ffn_down")] {
                let a = try rotated.floatTensor(name).array, b = base.tensors[name]!.values
                XCTAssertGreaterThan(Self.maxRelativeDifference([a], [b]), 0.1, "\(label) \(name) unchanged")
            }
            XCTAssertEqual(try rotated.floatTensor(TensorName.block(1, "ffn_norm")).array, Array(repeating: 1, count: config.hidden))

            let reference = try Self.fp32Model(base), model = try Self.fp32Model(rotated)
            XCTAssertNil(reference.downInputHadamard, label)
            XCTAssertEqual(model.downInputHadamard?.width, config.ffn, label)
            XCTAssertEqual(model.output === model.tokenEmbedding, tied, label)
            XCTAssertEqual(model.outputNormHadamard?.width, normInDomain ? config.hidden : nil, label)
            let want = try Self.logits(reference, Self.tokens)
            let diff = Self.maxRelativeDifference(try Self.logits(model, Self.tokens), want)
            XCTAssertLessThanOrEqual(diff, 1e-4, label)
            // Skipping the online transform breaks it: the forward pass must apply it.
            let skipped = Self.maxRelativeDifference(try Self.logits(Self.withoutOnlineTransform(model), Self.tokens), want)
            XCTAssertGreaterThan(skipped, 1e-2, label)
            if normInDomain {
                let plainNorm = Self.maxRelativeDifference(try Self.logits(Self.withoutHeadNormTransform(model), Self.tokens), want)
                XCTAssertGreaterThan(plainNorm, 1e-2, "\(label): the final norm must act in the Hadamard domain")
            }

            // Without the online transform (down_proj not folded with HFᵀ): same function, no transform.
            let plain = try RotatedModelSource(base: base, seed: 7, onlineDown: false)
            let plainModel = try Self.fp32Model(plain)
            XCTAssertNil(plainModel.downInputHadamard, label)
            XCTAssertLessThanOrEqual(Self.maxRelativeDifference(try Self.logits(plainModel, Self.tokens), want), 1e-4, label)
            print("rotation, \(label): max relative logit difference \(diff) (without the online transform: \(skipped))")
        }
    }

    /// The seed draws the signs; different seeds give different weights and the same function.
    func testSeedsAndRefusals() throws {
        let base = InMemorySource(config: Self.llamaShape, seed: 3)
        XCTAssertEqual(HadamardRotation.signs(seed: 5, count: 64), HadamardRotation.signs(seed: 5, count: 64))
        XCTAssertNotEqual(HadamardRotation.signs(seed: 5, count: 64), HadamardRotation.signs(seed: 6, count: 64))
        XCTAssertEqual(Set(HadamardRotation.signs(seed: 5, count: 64)), [1, -1])
        let a = try RotatedModelSource(base: base, seed: 1), b = try RotatedModelSource(base: base, seed: 2)
        XCTAssertNotEqual(try a.floatTensor(TensorName.block(0, "attn_q")).array, try b.floatTensor(TensorName.block(0, "attn_q")).array)
        let la = try Self.logits(try Self.fp32Model(a), Self.tokens), lb = try Self.logits(try Self.fp32Model(b), Self.tokens)
        XCTAssertLessThanOrEqual(Self.maxRelativeDifference(la, lb), 2e-4)
        // Rotating twice, or a width without a Hadamard form, is refused in one line.
        XCTAssertThrowsError(try RotatedModelSource(base: a, seed: 1)) { XCTAssertTrue("\($0)".contains("already rotated"), "\($0)") }
        var odd = Self.llamaShape
        odd.ffn = 100
        XCTAssertThrowsError(try RotatedModelSource(base: InMemorySource(config: odd, seed: 3), seed: 1)) {
            XCTAssertTrue("\($0)".contains("FFN width 100"), "\($0)")
        }
        XCTAssertNoThrow(try RotatedModelSource(base: InMemorySource(config: odd, seed: 3), seed: 1, onlineDown: false))
    }

    /// The demo model (SmolLM2-135M: hidden 576 = 36·16, FFN 1536 = 12·128, head dim 64), its
    /// Q4_1/Q8_0 tensors dequantized to fp32 in memory, rotated in memory.
    func testRotatedDemoModelGivesTheSameLogits() throws {
        let gguf = try GGUFModelSource(gguf: GGUFFile(path: try TestPaths.requireDemoModel()))
        let base = FP32View(gguf)
        let rotated = try RotatedModelSource(base: base, seed: 42)
        XCTAssertTrue(rotated.config.tiedEmbeddings && !rotated.hasTensor(TensorName.output), "the tied head stays one table")
        XCTAssertEqual(rotated.rotation?.outputNormHadamard, true, "SmolLM2's final norm weight is not 1: it acts in the Hadamard domain")
        let reference = try Self.fp32Model(base), model = try Self.fp32Model(rotated)
        XCTAssertTrue(reference.tokenEmbedding is FP32Linear)
        XCTAssertEqual(model.downInputHadamard?.width, 1536)
        XCTAssertEqual(model.outputNormHadamard?.width, 576)
        XCTAssertTrue(model.output === model.tokenEmbedding)
        let tokens: [Int32] = [504, 3575, 282, 4649, 314, 7042, 30]   // "The capital of France is Paris."
        let want = try Self.logits(reference, tokens), got = try Self.logits(model, tokens)
        let diff = Self.maxRelativeDifference(got, want)
        print("rotation, demo model fp32: max relative logit difference \(diff)")
        XCTAssertLessThanOrEqual(diff, 1e-4)
        XCTAssertEqual(want[4].indices.max { want[4][$0] < want[4][$1] }, 7042)
        XCTAssertEqual(got[4].indices.max { got[4][$0] < got[4][$1] }, 7042)
    }

    // MARK: the file

    func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tessera-rotation-\(UUID().uuidString).gguf").path
    }

    /// W8g32 RTN of the rotated model: the file records the rotation, loads with the online
    /// transforms (a tied head stays one table, an untied one stays untied), and runs close to
    /// the unrotated W8g32 file.
    func testRotatedEightBitFileRoundTrip() throws {
        for (label, tied) in [("tied", true), ("untied", false)] {
            let base = InMemorySource(config: Self.llamaShape, seed: 21, tied: tied)
            let plainPath = tempPath(), rotatedPath = tempPath(), noOnlinePath = tempPath()
            defer { for p in [plainPath, rotatedPath, noOnlinePath] { try? FileManager.default.removeItem(atPath: p) } }
            let scheme = PackedFormat.Scheme(bits: 8, group: 32, embedding: .q8)
            try RoundToNearest.write(source: base, tokenizer: nil, scheme: scheme, to: plainPath)
            try RoundToNearest.write(source: try RotatedModelSource(base: base, seed: 9), tokenizer: nil, scheme: scheme, to: rotatedPath)
            try RoundToNearest.write(source: try RotatedModelSource(base: base, seed: 9, onlineDown: false), tokenizer: nil,
                                     scheme: scheme, to: noOnlinePath)
            let plain = try XCTUnwrap(try ModelLoader.open(plainPath) as? PackedModelSource)
            let rotated = try XCTUnwrap(try ModelLoader.open(rotatedPath) as? PackedModelSource)
            let noOnline = try XCTUnwrap(try ModelLoader.open(noOnlinePath) as? PackedModelSource)
            // Metadata.
            XCTAssertNil(plain.rotation)
            XCTAssertNil(plain.gguf.metadata[RotationRecord.kindKey])
            XCTAssertEqual(rotated.gguf.string(RotationRecord.kindKey), "hadamard")
            XCTAssertEqual(rotated.gguf.metadata[RotationRecord.seedKey], .uint64(9))
            XCTAssertEqual(rotated.gguf.bool(RotationRecord.onlineDownKey), true)
            XCTAssertEqual(rotated.gguf.metadata[RotationRecord.outputNormHadamardKey], tied ? .bool(true) : nil, label)
            XCTAssertEqual(rotated.rotation, RotationRecord(kind: .hadamard, seed: 9, onlineDownHadamard: true, outputNormHadamard: tied))
            XCTAssertEqual(noOnline.rotation, RotationRecord(kind: .hadamard, seed: 9, onlineDownHadamard: false, outputNormHadamard: tied))
            // Tied stays tied (one table, no output.weight); a separate head is packed and reads back as separate.
            XCTAssertEqual(plain.config.tiedEmbeddings, tied, label)
            XCTAssertEqual(rotated.config.tiedEmbeddings, tied, label)
            XCTAssertEqual(rotated.isPacked(TensorName.output), !tied, label)
            func bytes(_ p: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0 }
            XCTAssertLessThanOrEqual(try bytes(rotatedPath), try bytes(plainPath) + 4096, "\(label): rotation adds no table")

            let reference = try Self.logits(try Self.fp32Model(base), Self.tokens)
            func run(_ s: PackedModelSource) throws -> (LlamaModel, [[Float]]) {
                let m = try WeightBinder(source: s, activation: .a16).model(pool: ThreadPool(threads: 2))
                return (m, try Self.logits(m, Self.tokens))
            }
            let (plainModel, plainLogits) = try run(plain)
            let (rotatedModel, rotatedLogits) = try run(rotated)
            let (noOnlineModel, noOnlineLogits) = try run(noOnline)
            XCTAssertNil(plainModel.downInputHadamard, label)
            XCTAssertEqual(rotatedModel.downInputHadamard?.width, Self.llamaShape.ffn, label)
            XCTAssertNil(noOnlineModel.downInputHadamard, label)
            XCTAssertEqual(plainModel.output === plainModel.tokenEmbedding, tied, label)
            XCTAssertEqual(rotatedModel.output === rotatedModel.tokenEmbedding, tied, label)
            XCTAssertEqual(rotatedModel.outputNormHadamard != nil, tied, label)
            let toPlain = Self.maxRelativeDifference(rotatedLogits, plainLogits)
            let plainToFP = Self.maxRelativeDifference(plainLogits, reference)
            let rotatedToFP = Self.maxRelativeDifference(rotatedLogits, reference)
            let noOnlineToFP = Self.maxRelativeDifference(noOnlineLogits, reference)
            print("rotation W8g32 \(label): rotated vs plain \(toPlain), plain vs fp32 \(plainToFP), rotated vs fp32 \(rotatedToFP), rotated without online transform vs fp32 \(noOnlineToFP)")
            // 8-bit RTN moves these random-weight logits by 0.2-1 % of their range (measured:
            // plain 0.0024 tied / 0.0093 untied, rotated 0.0033 / 0.0115, rotated vs plain 0.0040 /
            // 0.0138). The two files' rounding errors are independent, so they differ by about
            // the sum of their errors; a wrong rotation moves logits by O(1) (see `skipped`).
            XCTAssertLessThan(plainToFP, 0.02, label)
            XCTAssertLessThan(rotatedToFP, 2 * plainToFP, label)
            XCTAssertLessThan(noOnlineToFP, 2 * plainToFP, label)
            XCTAssertLessThan(toPlain, 3 * plainToFP, label)
            // The flag is what the runtime acts on: the same file run without its transform is far off.
            let skipped = Self.maxRelativeDifference(try Self.logits(Self.withoutOnlineTransform(rotatedModel), Self.tokens), reference)
            XCTAssertGreaterThan(skipped, 0.05, label)
        }
    }

    /// Per-token activations need the rotation: with one outlier channel in the residual (as
    /// the demo model's massive activations), a single 8-bit scale per token leaves the other
    /// channels a few codes; rotated, the outlier is spread over every channel. Per-block scales
    /// (8-block) confine the damage to the outlier's block of 32.
    func testPerTokenActivationsNeedTheRotation() throws {
        let base = InMemorySource(config: Self.llamaShape, seed: 31, tied: false)
        let C = Self.llamaShape.hidden
        var embedding = base.tensors[TensorName.tokenEmbedding]!
        for t in 0..<Self.llamaShape.vocab { embedding.values[t * C + 3] *= 300 }
        base.tensors[TensorName.tokenEmbedding] = embedding
        let plainPath = tempPath(), rotatedPath = tempPath()
        defer { for p in [plainPath, rotatedPath] { try? FileManager.default.removeItem(atPath: p) } }
        let scheme = PackedFormat.Scheme(bits: 8, group: 32, activation: .a8Token, embedding: .q8)
        try RoundToNearest.write(source: base, tokenizer: nil, scheme: scheme, to: plainPath)
        try RoundToNearest.write(source: try RotatedModelSource(base: base, seed: 5), tokenizer: nil, scheme: scheme, to: rotatedPath)
        // The activations' own error: each file at A8 against the same file at A16.
        func error(_ path: String, _ mode: ActivationMode) throws -> Float {
            let source = try ModelLoader.open(path)
            func run(_ m: ActivationMode) throws -> [[Float]] {
                try Self.logits(try WeightBinder(source: source, activation: m).model(pool: ThreadPool(threads: 2)), Self.tokens)
            }
            return Self.maxRelativeDifference(try run(mode), try run(.a16))
        }
        let plainToken = try error(plainPath, .a8Token), rotatedToken = try error(rotatedPath, .a8Token)
        let plainBlock = try error(plainPath, .a8)
        print("outlier channel ×300, W8g32, logits against the same file at A16: A8 per token plain \(plainToken), rotated \(rotatedToken); A8 per block plain \(plainBlock)")
        // Measured: plain 0.052, rotated 0.0054, per block 0.024 (the outlier's block still suffers).
        XCTAssertLessThan(rotatedToken, plainToken / 5)
        XCTAssertLessThan(plainBlock, plainToken / 1.5)
    }

    func testRotationKeysAreReadStrictly() throws {
        func file(_ keys: [(String, GGUFValue)]) throws -> GGUFFile {
            var w = GGUFWriter()
            w.set("general.architecture", .string("llama"))
            for (k, v) in keys { w.set(k, v) }
            let path = tempPath()
            try w.write(to: path)
            addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
            return try GGUFFile(path: path)
        }
        XCTAssertNil(try RotationRecord.read(try file([])))
        XCTAssertNil(try RotationRecord.read(try file([(RotationRecord.kindKey, .string("none"))])))
        let good = try file([(RotationRecord.kindKey, .string("hadamard")), (RotationRecord.seedKey, .uint64(3)),
                             (RotationRecord.onlineDownKey, .bool(false))])
        XCTAssertEqual(try RotationRecord.read(good), RotationRecord(kind: .hadamard, seed: 3, onlineDownHadamard: false))
        let unknown = try file([(RotationRecord.kindKey, .string("spin")), (RotationRecord.seedKey, .uint64(3)),
                                (RotationRecord.onlineDownKey, .bool(true))])
        XCTAssertThrowsError(try RotationRecord.read(unknown)) { XCTAssertTrue("\($0)".contains("unknown rotation \"spin\""), "\($0)") }
        let noSeed = try file([(RotationRecord.kindKey, .string("hadamard")), (RotationRecord.onlineDownKey, .bool(true))])
        XCTAssertThrowsError(try RotationRecord.read(noSeed)) { XCTAssertTrue("\($0)".contains(RotationRecord.seedKey), "\($0)") }
        let noFlag = try file([(RotationRecord.kindKey, .string("hadamard")), (RotationRecord.seedKey, .uint64(3))])
        XCTAssertThrowsError(try RotationRecord.read(noFlag)) { XCTAssertTrue("\($0)".contains(RotationRecord.onlineDownKey), "\($0)") }
        // The final norm's flag is optional (files made before it have none) but must be a bool.
        let headFlag = try file([(RotationRecord.kindKey, .string("hadamard")), (RotationRecord.seedKey, .uint64(3)),
                                 (RotationRecord.onlineDownKey, .bool(true)), (RotationRecord.outputNormHadamardKey, .bool(true))])
        XCTAssertEqual(try RotationRecord.read(headFlag), RotationRecord(kind: .hadamard, seed: 3, onlineDownHadamard: true, outputNormHadamard: true))
        let badHeadFlag = try file([(RotationRecord.kindKey, .string("hadamard")), (RotationRecord.seedKey, .uint64(3)),
                                    (RotationRecord.onlineDownKey, .bool(true)), (RotationRecord.outputNormHadamardKey, .uint64(1))])
        XCTAssertThrowsError(try RotationRecord.read(badHeadFlag)) { XCTAssertTrue("\($0)".contains(RotationRecord.outputNormHadamardKey), "\($0)") }
    }
}

/// A model's tensors decoded to fp32 (so tables, too, bind as FP32Linear).
final class FP32View: ModelSource {
    let base: ModelSource
    init(_ base: ModelSource) { self.base = base }
    var path: String { base.path }
    var config: LlamaConfig { base.config }
    var chatTemplate: String? { base.chatTemplate }
    func makeTokenizer() throws -> Tokenizer { try base.makeTokenizer() }
    func hasTensor(_ name: String) -> Bool { base.hasTensor(name) }
    func tensorShape(_ name: String) -> [Int]? { base.tensorShape(name) }
    func floatTensor(_ name: String) throws -> FloatBuffer { try base.floatTensor(name) }
}
