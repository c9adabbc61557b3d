import XCTest
@testable import Tokenizer
@testable import Engine

/// A tokenizer exported as GGUF metadata and loaded back (Tessera's GGUF path, which follows
/// llama.cpp's) still reproduces llama.cpp's test vectors.
final class TokenizerExportTests: XCTestCase {
    func roundTrip(_ tok: Tokenizer) throws -> Tokenizer {
        var w = GGUFWriter()
        w.set("general.architecture", "llama")
        for (key, value) in tok.ggufMetadata() { w.set(key, value) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-tok-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try w.write(to: path)
        return try Tokenizer.fromGGUF(GGUFFile(path: path))
    }

    func testLlama3TikTokenExportsToGGUF() throws {
        let tiktoken = try Tokenizer.fromTikToken(path: TokenizerTests.llama3Model)
        // Every split of a multi-byte token into two tokens (Hugging Face's conversion of this
        // vocabulary has 280,147 merges).
        XCTAssertEqual(tiktoken.mergeList().count, 280_147)
        let exported = try roundTrip(tiktoken)
        XCTAssertEqual(exported.vocabularySize, 128_256)
        XCTAssertEqual(exported.bosID, 128_000)
        XCTAssertEqual(exported.preTokenizer, .llama3)
        XCTAssertTrue(exported.endOfGenerationIDs.contains(128_009))
        let passed = try checkVectors(exported, "ggml-vocab-llama-bpe.gguf")
        XCTAssertEqual(passed, 46)
        // Whole text, not just the vectors: the same ids through both paths.
        let text = String(try String(contentsOfFile: TestPaths.data + "/wikitext2/wiki.valid.raw", encoding: .utf8).prefix(200_000))
        XCTAssertEqual(exported.encode(text, addBOS: false), tiktoken.encode(text, addBOS: false))
    }

    func testGPT2VocabularyRoundTrips() throws {
        let gguf = try TokenizerTests.gguf("gpt-2")
        let original = try Tokenizer.fromGGUF(gguf)
        // The merge list, read back from the pair table, is the file's, in its order.
        XCTAssertEqual(original.mergeList(), try gguf.stringArray("tokenizer.ggml.merges"))
        let exported = try roundTrip(original)
        XCTAssertEqual(try checkVectors(exported, "ggml-vocab-gpt-2.gguf"), 46)
    }
}
