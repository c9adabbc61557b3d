import XCTest
@testable import Engine
@testable import Calibrate

/// The packed file: written by RTN, loaded back onto the low-bit kernels.
final class PackedModelTests: XCTestCase {
    func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tessera-packed-\(UUID().uuidString).gguf").path
    }

    /// Widths that are multiples of 32 (rows are made of 32-weight blocks); FFN 96 takes
    /// groups of 32 but not 64.
    static let config = LlamaConfig(blockCount: 2, hidden: 64, ffn: 96, heads: 4, kvHeads: 2, headDim: 16, vocab: 97,
                                    contextLength: 64, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: true)

    func maxRelativeError(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()! / b.map(abs).max()!
    }

    /// Logits of `tokens` under a model loaded from `source`: all fp32 linears, or (given an
    /// activation mode) its stored linears on the low-bit kernels.
    func logits(_ source: ModelSource, activation: ActivationMode? = nil, tokens: [Int32]) throws -> [[Float]] {
        let binder = activation.map { WeightBinder(source: source, activation: $0) } ?? WeightBinder(source: source, linears: .fp32)
        let model = try binder.model(pool: ThreadPool(threads: 2))
        return try InferenceSession(model: model, contextLength: 32).forward(tokens, logitRows: tokens.count)
    }

    func testEightBitRTNRunsCloseToFP32AndReportsItsScheme() throws {
        let memory = InMemorySource(config: Self.config, seed: 5)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 8, group: 32, embedding: .q8), to: path)
        let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
        XCTAssertEqual(packed.config, memory.config)
        XCTAssertEqual([packed.bits, packed.group], [8, 32])
        XCTAssertTrue(packed.isPacked(TensorName.block(0, "attn_q")))
        XCTAssertTrue(packed.isPacked(TensorName.tokenEmbedding))
        XCTAssertFalse(packed.isPacked(TensorName.block(0, "attn_norm")))
        let tokens: [Int32] = [1, 50, 96, 3, 3, 17]
        let reference = try logits(memory, tokens: tokens)
        for mode in [ActivationMode.a16, .a8] {
            let quantized = try logits(packed, activation: mode, tokens: tokens)
            for t in tokens.indices {
                XCTAssertLessThan(maxRelativeError(quantized[t], reference[t]), mode == .a16 ? 0.02 : 0.05, "\(mode) token \(t)")
            }
        }
    }

    /// Logits of every token of `tokens`: a prefill of the first three (the head's T > 1 path),
    /// then one token at a time (its GEMV).
    static func prefillThenDecode(_ model: LlamaModel, _ tokens: [Int32]) throws -> [[Float]] {
        let session = InferenceSession(model: model, contextLength: 32)
        var rows = try session.forward(Array(tokens[..<3]), logitRows: 3)
        for t in tokens[3...] { rows += try session.forward([t]) }
        return rows
    }

    /// The same model with its table (and tied head) replaced by the fp32 decoding of the table.
    static func withFP32Table(_ model: LlamaModel, _ source: ModelSource) throws -> LlamaModel {
        let c = model.config
        let table = FP32Linear(weight: try source.floatTensor(TensorName.tokenEmbedding), outFeatures: c.vocab, inFeatures: c.hidden)
        return LlamaModel(config: c, tokenEmbedding: table, blocks: model.blocks, outputNorm: model.outputNorm,
                          output: model.output === model.tokenEmbedding ? table : model.output, pool: model.pool)
    }

    func testCompactEmbeddingTablesRunLikeTheirFP32Decoding() throws {
        let memory = InMemorySource(config: Self.config, seed: 8)
        let tokens: [Int32] = [1, 50, 96, 3, 3, 17, 0]
        let V = Self.config.vocab, C = Self.config.hidden
        for embedding in PackedFormat.Embedding.allCases {
            let path = tempPath()
            defer { try? FileManager.default.removeItem(atPath: path) }
            try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 4, group: 32, embedding: embedding), to: path)
            let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
            for mode in [ActivationMode.a16, .a8] {
                let model = try WeightBinder(source: packed, activation: mode).model(pool: ThreadPool(threads: 2))
                let label = "\(embedding) \(mode)"
                // The table stays in its stored form and is the tied head itself.
                XCTAssertTrue(model.output === model.tokenEmbedding, label)
                let tableBytes: Int
                switch embedding {
                case .f16:
                    XCTAssertTrue(model.tokenEmbedding is F16Linear, label)
                    tableBytes = V * C * 2
                case .q8, .q6, .q4:
                    let q = try XCTUnwrap(model.tokenEmbedding as? QuantizedLinear, label)
                    XCTAssertEqual(q.weights.bits, [PackedFormat.Embedding.q8: 8, .q6: 6, .q4: 4][embedding], label)
                    XCTAssertEqual(q.activation, mode, label)
                    tableBytes = V * (C * q.weights.bits / 8 + C / 32 * 4)
                }
                XCTAssertEqual(model.tokenEmbedding.byteCount, tableBytes, label)
                let reference = try Self.withFP32Table(model, packed)
                XCTAssertEqual(model.weightBytes, reference.weightBytes - V * C * 4 + tableBytes, label)
                // Same rows on lookup.
                let row = FloatBuffer(count: C), expected = try packed.floatTensor(TensorName.tokenEmbedding)
                for r in [0, 42, V - 1] {
                    model.tokenEmbedding.lookup(r, into: row.pointer)
                    XCTAssertEqual(row.array, Array(expected.buffer[r * C..<(r + 1) * C]), label)
                }
                // And the same logits, up to fp32 rounding (A8 heads also quantize the activations).
                let got = try Self.prefillThenDecode(model, tokens), want = try Self.prefillThenDecode(reference, tokens)
                let tolerance: Float = mode == .a8 && embedding != .f16 ? 0.03 : 1e-4
                for t in tokens.indices {
                    XCTAssertLessThan(maxRelativeError(got[t], want[t]), tolerance, "\(label) token \(t)")
                }
            }
        }
    }

    /// A `--embed q6` file: the table and tied head are 6-bit group-32 codes (24 bytes per 32
    /// weights plus two fp16), the file says `q6`, reads back to the RTN tensor it was written
    /// from, rewrites keep the label, and it runs close to the fp32 model, closer than q4.
    func testSixBitEmbeddingWritesReadsBackAndRuns() throws {
        let memory = InMemorySource(config: Self.config, seed: 9)
        let V = Self.config.vocab, C = Self.config.hidden
        let tokens: [Int32] = [1, 50, 96, 3, 3, 17, 0]
        var errors: [PackedFormat.Embedding: Float] = [:]
        for embedding in [PackedFormat.Embedding.q6, .q4] {
            let path = tempPath(), copy = tempPath()
            defer { for p in [path, copy] { try? FileManager.default.removeItem(atPath: p) } }
            try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 8, group: 32, embedding: embedding), to: path)
            let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
            XCTAssertEqual(packed.scheme.embedding, embedding)
            XCTAssertEqual(packed.gguf.string("tessera.embedding"), embedding.rawValue)
            let bits = embedding == .q6 ? 6 : 4
            let table = try packed.quantizedTensor(TensorName.tokenEmbedding)
            XCTAssertEqual([table.bits, table.group, table.rows, table.cols], [bits, 32, V, C])
            XCTAssertEqual(packed.gguf.tensor(TensorName.tokenEmbedding + PackedFormat.codesSuffix)?.shape, [V, C * bits / 8])
            let values = try memory.floatTensor(TensorName.tokenEmbedding)
            let rtn = try GroupQuantizer.rtn(weights: values.pointer, rows: V, cols: C, bits: bits, group: 32, zeroPoint: .float)
            XCTAssertEqual(table, rtn)
            // The kernels' copy of the table gives the canonical tensor back.
            XCTAssertEqual(try PackedWeights(table).canonical, table)
            // A rewrite (PackedRewrite) names the stored form again.
            XCTAssertEqual(try PackedRewrite.write(copying: packed, metadata: [], to: copy) { _ in nil }.embedding, embedding)
            XCTAssertEqual(try XCTUnwrap(try ModelLoader.open(copy) as? PackedModelSource).scheme.embedding, embedding)
            // Runs: A16 and A8, prefill and decode, the tied head on the 6-bit kernels.
            let reference = try Self.prefillThenDecode(try WeightBinder(source: memory, linears: .fp32).model(pool: ThreadPool(threads: 2)), tokens)
            var worst: Float = 0
            for mode in [ActivationMode.a16, .a8] {
                let model = try WeightBinder(source: packed, activation: mode).model(pool: ThreadPool(threads: 2))
                let head = try XCTUnwrap(model.output as? QuantizedLinear)
                XCTAssertEqual(head.weights.bits, bits)
                XCTAssertTrue(model.output === model.tokenEmbedding)
                XCTAssertEqual(head.byteCount, V * (C / 32) * (4 * bits + 4))
                let got = try Self.prefillThenDecode(model, tokens)
                for t in tokens.indices {
                    XCTAssertTrue(got[t].allSatisfy(\.isFinite), "\(embedding) \(mode) token \(t)")
                    let e = maxRelativeError(got[t], reference[t])
                    XCTAssertLessThan(e, 0.1, "\(embedding) \(mode) token \(t)")
                    if mode == .a16 { worst = max(worst, e) }
                }
            }
            errors[embedding] = worst
        }
        XCTAssertLessThan(errors[.q6]!, errors[.q4]!, "q6 head error \(errors[.q6]!) vs q4 \(errors[.q4]!)")
    }

    func testWeightsAlreadyOnTheGridAreReproducedExactly() throws {
        // Put every block linear on a 4-bit g32 grid first; W4 g32 RTN must then give the very
        // same weights back (the demo model's situation), so A16 logits match fp32 closely.
        let memory = InMemorySource(config: Self.config, seed: 6)
        for (name, t) in memory.tensors where PackedFormat.isBlockLinear(name) {
            let (rows, cols) = (t.shape[0], t.shape[1])
            let p = try t.values.withUnsafeBufferPointer {
                try GroupQuantizer.rtn(weights: $0.baseAddress!, rows: rows, cols: cols, bits: 4, group: 32)
            }
            memory.tensors[name] = (t.shape, p.dequantize().array)
        }
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 4, group: 32), to: path)
        let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
        for name in [TensorName.block(0, "attn_q"), TensorName.block(1, "ffn_down")] {
            XCTAssertEqual(try packed.floatTensor(name).array, memory.tensors[name]!.values, name)
        }
    }

    func testDamagedTensorIsNamedAndBadGroupIsRefused() throws {
        let memory = InMemorySource(config: Self.config, seed: 7)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 2, group: 0), to: path)
        let gguf = try GGUFFile(path: path)
        let target = try XCTUnwrap(gguf.tensor(TensorName.block(1, "ffn_up") + PackedFormat.codesSuffix))
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[gguf.dataOffset + target.offset + 5] ^= 0x40
        try data.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ModelLoader.open(path)) { error in
            XCTAssertTrue("\(error)".contains("blk.1.ffn_up.weight.codes") && "\(error)".contains("checksum"), "\(error)")
        }
        // ffn_down rows are 96 wide: groups of 64 do not divide them.
        XCTAssertThrowsError(try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: 4, group: 64), to: path)) { error in
            XCTAssertTrue("\(error)".contains("does not divide"), "\(error)")
        }
    }
}
