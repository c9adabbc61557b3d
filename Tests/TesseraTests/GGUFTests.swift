import XCTest
@testable import Engine

final class GGUFSmokeTests: XCTestCase {
    func testVocabFileParses() throws {
        let f = try GGUFFile(path: TestPaths.requireShared("data/tokenizer-vectors/ggml-vocab-gpt-2.gguf"))
        XCTAssertEqual(f.string("tokenizer.ggml.model"), "gpt2")
    }
}
