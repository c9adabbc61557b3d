import XCTest
@testable import Runtime

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

    /// Logits of `tokens` under a model loaded from `source` with its own linears.
    func logits(_ source: ModelSource, linear: LinearLoader? = nil, tokens: [Int32]) throws -> [[Float]] {
        let model = try LlamaModel(source: source, pool: ThreadPool(threads: 2), linear: linear)
        return try InferenceSession(model: model, contextLength: 32).forward(tokens, logitRows: tokens.count)
    }

    func testEightBitRTNRunsCloseToFP32AndReportsItsScheme() throws {
        let memory = InMemorySource(config: Self.config, seed: 5)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PackedFormat.writeRTN(source: memory, tokenizer: nil, scheme: .init(bits: 8, group: 32, embedding: .q8), to: path)
        let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
        XCTAssertEqual(packed.config, memory.config)
        XCTAssertEqual([packed.bits, packed.group], [8, 32])
        XCTAssertTrue(packed.isPacked(TensorName.block(0, "attn_q")))
        XCTAssertTrue(packed.isPacked(TensorName.tokenEmbedding))
        XCTAssertFalse(packed.isPacked(TensorName.block(0, "attn_norm")))
        let tokens: [Int32] = [1, 50, 96, 3, 3, 17]
        let reference = try logits(memory, tokens: tokens)
        for mode in [ActivationMode.a16, .a8] {
            let quantized = try logits(packed, linear: packed.linearLoader(activation: mode), tokens: tokens)
            for t in tokens.indices {
                XCTAssertLessThan(maxRelativeError(quantized[t], reference[t]), mode == .a16 ? 0.02 : 0.05, "\(mode) token \(t)")
            }
        }
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
        try PackedFormat.writeRTN(source: memory, tokenizer: nil, scheme: .init(bits: 4, group: 32), to: path)
        let packed = try XCTUnwrap(try ModelLoader.open(path) as? PackedModelSource)
        for name in [TensorName.block(0, "attn_q"), TensorName.block(1, "ffn_down")] {
            XCTAssertEqual(try packed.floatTensor(name).array, memory.tensors[name]!.values, name)
        }
    }

    func testDamagedTensorIsNamedAndBadGroupIsRefused() throws {
        let memory = InMemorySource(config: Self.config, seed: 7)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try PackedFormat.writeRTN(source: memory, tokenizer: nil, scheme: .init(bits: 2, group: 0), to: path)
        let gguf = try GGUFFile(path: path)
        let target = try XCTUnwrap(gguf.tensor(TensorName.block(1, "ffn_up") + PackedFormat.codesSuffix))
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[gguf.dataOffset + target.offset + 5] ^= 0x40
        try data.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ModelLoader.open(path)) { error in
            XCTAssertTrue("\(error)".contains("blk.1.ffn_up.weight.codes") && "\(error)".contains("checksum"), "\(error)")
        }
        // ffn_down rows are 96 wide: groups of 64 do not divide them.
        XCTAssertThrowsError(try PackedFormat.writeRTN(source: memory, tokenizer: nil, scheme: .init(bits: 4, group: 64), to: path)) { error in
            XCTAssertTrue("\(error)".contains("does not divide"), "\(error)")
        }
    }
}
