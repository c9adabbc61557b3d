import XCTest
@testable import Core
@testable import Kernels
@testable import Quant
@testable import ChatTemplate
@testable import Tokenizer
@testable import Architecture
@testable import Formats
@testable import Model
@testable import Engine
@testable import Eval
@testable import Calibrate

final class GGUFSmokeTests: XCTestCase {
    func testVocabFileParses() throws {
        let f = try GGUFFile(path: TestPaths.requireShared("data/tokenizer-vectors/ggml-vocab-gpt-2.gguf"))
        XCTAssertEqual(f.string("tokenizer.ggml.model"), "gpt2")
    }
}
