import XCTest
@testable import Engine

final class SyntheticModelTests: XCTestCase {
    func testShapesAreTheTargetModels() {
        // ../shared/reference/MODELS.md
        let b1 = SyntheticShape.llama32_1b.config, b3 = SyntheticShape.llama32_3b.config
        XCTAssertEqual([b1.blockCount, b1.hidden, b1.ffn, b1.heads, b1.kvHeads, b1.headDim, b1.vocab], [16, 2048, 8192, 32, 8, 64, 128_256])
        XCTAssertEqual([b3.blockCount, b3.hidden, b3.ffn, b3.heads, b3.kvHeads, b3.headDim, b3.vocab], [28, 3072, 8192, 24, 8, 128, 128_256])
        XCTAssertTrue(b1.tiedEmbeddings && b3.tiedEmbeddings)
        XCTAssertEqual(b1.ropeBase, 500_000)
        XCTAssertEqual(b1.ropeFrequencyFactors?.first, 1)
        XCTAssertEqual(b1.ropeFrequencyFactors?.last, 32)
        XCTAssertEqual(Double(b1.parameterCount) / 1e9, 1.236, accuracy: 0.01)
        XCTAssertEqual(Double(b3.parameterCount) / 1e9, 3.21, accuracy: 0.01)
    }

    func testWeightsAreDeterministicPerName() throws {
        let a = try SyntheticModelSource(shape: .smollm2_135m, seed: 3)
        let b = try SyntheticModelSource(shape: .smollm2_135m, seed: 3)
        let name = TensorName.block(4, "attn_k")
        XCTAssertEqual(try a.floatTensor(name).array, try b.floatTensor(name).array)
        XCTAssertNotEqual(try a.floatTensor(name).array, try a.floatTensor(TensorName.block(5, "attn_k")).array)
        XCTAssertNotEqual(try a.floatTensor(name).array, try SyntheticModelSource(shape: .smollm2_135m, seed: 4).floatTensor(name).array)
    }

    func testGGUFOfASyntheticModelLoadsWithTheSameConfigAndWeights() throws {
        let tok = try Tokenizer.fromGGUF(GGUFFile(path: TestPaths.requireShared("data/tokenizer-vectors/ggml-vocab-gpt-2.gguf")))
        // gpt-2's 50257 tokens exceed the smollm2 shape's 49152 embeddings: a clear error.
        XCTAssertThrowsError(try SyntheticModelSource(shape: .smollm2_135m, tokenizer: tok))
        let source = try SyntheticModelSource(shape: .smollm2_135m, seed: 9)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-synth-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try source.writeGGUF(to: path)
        let loaded = try ModelLoader.open(path)
        XCTAssertEqual(loaded.config, source.config)
        for name in [TensorName.tokenEmbedding, TensorName.block(29, "ffn_down"), TensorName.outputNorm] {
            XCTAssertEqual(try loaded.floatTensor(name).array, try source.floatTensor(name).array, name)
        }
    }
}
