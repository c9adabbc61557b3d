import XCTest
@testable import Runtime

final class GGUFSmokeTests: XCTestCase {
    func testVocabFileParses() throws {
        let f = try GGUFFile(path: TestPaths.shared + "/data/tokenizer-vectors/ggml-vocab-gpt-2.gguf")
        XCTAssertEqual(f.string("tokenizer.ggml.model"), "gpt2")
    }
}
