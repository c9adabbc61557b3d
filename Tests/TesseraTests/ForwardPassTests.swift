import XCTest
@testable import Calibrate
@testable import Engine

final class ForwardPassTests: XCTestCase {
    /// Largest |a-b| relative to the largest |b| of the row.
    func maxRelativeError(_ a: [Float], _ b: [Double]) -> Double {
        let scale = b.map(abs).max()!
        return zip(a, b).map { abs(Double($0) - $1) }.max()! / scale
    }

    func checkAgainstReference(tied: Bool, llama3Rope: Bool, threads: Int, maxBatch: Int, mlpChunk: Int? = nil) throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(llama3Rope: llama3Rope), seed: 7, tied: tied)
        let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: threads))
        let tokens = [3, 17, 96, 0, 42, 42, 5, 77, 8, 61, 12]
        let expected = ReferenceLlama(source: source).logits(tokens)

        // Whole sequence in one call (split internally into batches of maxBatch, their MLPs into
        // chunks of mlpChunk tokens).
        let session = InferenceSession(model: model, contextLength: 64, maxBatch: maxBatch, mlpChunk: mlpChunk)
        let all = try session.forward(tokens.map(Int32.init), logitRows: tokens.count)
        XCTAssertEqual(all.count, tokens.count)
        for t in tokens.indices {
            XCTAssertLessThan(maxRelativeError(all[t], expected[t]), 1e-4, "token \(t)")
        }
        // Prefill then one token at a time through the KV cache gives the same logits.
        session.reset()
        let prefill = try session.forward(tokens[..<6].map(Int32.init))
        XCTAssertLessThan(maxRelativeError(prefill[0], expected[5]), 1e-4)
        for t in 6..<tokens.count {
            let row = try session.forward([Int32(tokens[t])])[0]
            XCTAssertLessThan(maxRelativeError(row, expected[t]), 1e-4, "decode step \(t)")
        }
        XCTAssertEqual(session.position, tokens.count)
    }

    func testTiedLlama3RopeMatchesFloat64Reference() throws {
        try checkAgainstReference(tied: true, llama3Rope: true, threads: 2, maxBatch: 4)
    }

    func testSeparateHeadPlainRopeMatchesFloat64Reference() throws {
        try checkAgainstReference(tied: false, llama3Rope: false, threads: 1, maxBatch: 512)
    }

    /// A batch whose MLP runs in chunks (3 tokens, so the 11-token batch ends in a ragged one).
    func testMLPInChunksMatchesFloat64Reference() throws {
        try checkAgainstReference(tied: true, llama3Rope: true, threads: 2, maxBatch: 512, mlpChunk: 3)
    }

    /// Plain GGUF files keep an F16 table as F16 and repack a Q8_0 table (lossless) into 8-bit
    /// group-32 codes run with fp32 activations; tied or not, the logits are those of the fp32
    /// decoding of the same tables.
    func testGGUFTablesStayCompactAndMatchTheirFP32Decoding() throws {
        let dir = try FormatTempDir("compact-tables")
        defer { dir.remove() }
        let tokens: [Int32] = [3, 17, 49, 0, 42, 42, 5]
        for tied in [true, false] {
            for type in [GGMLType.q8_0, .f16, .f32] {
                let config = SyntheticGGUF.config(tied: tied)
                var w = GGUFWriter()
                for (key, value) in config.ggufMetadata() { w.set(key, value) }
                var rng = FormatTestRNG(seed: 11)
                for (name, shape) in config.requiredTensorShapes {
                    let isTable = name == TensorName.tokenEmbedding || name == TensorName.output
                    try w.addTensor(name: name, shape: shape, values: rng.floats(shape.reduce(1, *), scale: 0.5), type: isTable ? type : .f32)
                }
                let path = dir.file("m-\(tied)-\(type).gguf")
                try w.write(to: path)
                let source = try GGUFModelSource(path: path)
                let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 2))
                let label = "\(type) tied \(tied)"
                let V = config.vocab, C = config.hidden
                let tableBytes: Int
                switch type {
                case .q8_0:
                    let q = try XCTUnwrap(model.tokenEmbedding as? QuantizedLinear, label)
                    XCTAssertEqual([q.weights.bits, q.weights.group], [8, 32], label)
                    XCTAssertEqual(q.activation, .a16, label)
                    XCTAssertTrue(tied || model.output is QuantizedLinear, label)
                    tableBytes = V * (C + C / 32 * 4)
                case .f16:
                    XCTAssertTrue(model.tokenEmbedding is F16Linear, label)
                    XCTAssertTrue(tied || model.output is F16Linear, label)
                    tableBytes = V * C * 2
                default:
                    XCTAssertTrue(model.tokenEmbedding is FP32Linear, label)
                    tableBytes = V * C * 4
                }
                XCTAssertEqual(model.output === model.tokenEmbedding, tied, label)
                XCTAssertEqual(model.tokenEmbedding.byteCount, tableBytes, label)

                // The reference: every table decoded to fp32, same blocks.
                func fp32(_ name: String) throws -> FP32Linear {
                    FP32Linear(weight: try source.floatTensor(name), outFeatures: V, inFeatures: C)
                }
                let table = try fp32(TensorName.tokenEmbedding)
                let reference = LlamaModel(config: model.config, tokenEmbedding: table, blocks: model.blocks, outputNorm: model.outputNorm,
                                           output: tied ? table : try fp32(TensorName.output), pool: model.pool)
                XCTAssertEqual(model.weightBytes, reference.weightBytes + (tableBytes - V * C * 4) * (tied ? 1 : 2), label)
                let got = try PackedModelTests.prefillThenDecode(model, tokens)
                let want = try PackedModelTests.prefillThenDecode(reference, tokens)
                for t in tokens.indices {
                    let scale = want[t].map(abs).max()!
                    let err = zip(got[t], want[t]).map { abs($0 - $1) }.max()!
                    XCTAssertLessThan(err / scale, 1e-4, "\(label) token \(t)")
                }
            }
        }
    }

    func testContextOverflowAndBadTokenAreErrors() throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: 1)
        let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 1))
        let session = InferenceSession(model: model, contextLength: 8)
        XCTAssertThrowsError(try session.forward(Array(repeating: 1, count: 9))) {
            XCTAssertEqual($0 as? InferenceError, .contextFull(position: 0, adding: 9, capacity: 8))
        }
        XCTAssertThrowsError(try session.forward([97])) { XCTAssertEqual($0 as? InferenceError, .badToken(id: 97, vocab: 97)) }
        XCTAssertEqual(session.position, 0)
    }

    /// Every step is timed; the online Hadamard only on a rotated model (none runs otherwise).
    func testStepProfileTimesEveryStepAndChangesNothing() throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: 3)
        for rotated in [false, true] {
            let bound: ModelSource = rotated ? try RotatedModelSource(base: source, seed: 1) : source
            let model = try WeightBinder(source: bound, linears: .fp32).model(pool: ThreadPool(threads: 2))
            let plain = InferenceSession(model: model, contextLength: 16), profiled = InferenceSession(model: model, contextLength: 16)
            let profile = StepProfile()
            profiled.profile = profile
            let tokens: [Int32] = [5, 9, 2, 44, 7]
            XCTAssertEqual(try profiled.forward(tokens, logitRows: 2), try plain.forward(tokens, logitRows: 2))
            XCTAssertEqual(try profiled.forward([3]), try plain.forward([3]))
            XCTAssertEqual(profile.batches, 2)
            for step in StepProfile.Step.allCases {
                if step == .downHadamard && !rotated {
                    XCTAssertNil(profile.seconds[step], step.rawValue)
                } else {
                    XCTAssertGreaterThan(profile.seconds[step] ?? 0, 0, "\(step.rawValue), rotated \(rotated)")
                }
            }
            profile.reset()
            XCTAssertEqual(profile.total, 0)
        }
    }

    func testShapeMismatchIsAnError() throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: 1)
        source.tensors[TensorName.block(1, "ffn_up")]!.shape = [81, 48]
        XCTAssertThrowsError(try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 1))) {
            XCTAssertEqual($0 as? FormatError, .shapeMismatch(tensor: "blk.1.ffn_up.weight", expected: [80, 48], found: [81, 48]))
        }
    }
}
