import XCTest
@testable import Runtime

final class ForwardPassTests: XCTestCase {
    /// Largest |a-b| relative to the largest |b| of the row.
    func maxRelativeError(_ a: [Float], _ b: [Double]) -> Double {
        let scale = b.map(abs).max()!
        return zip(a, b).map { abs(Double($0) - $1) }.max()! / scale
    }

    func checkAgainstReference(tied: Bool, llama3Rope: Bool, threads: Int, maxBatch: Int) throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(llama3Rope: llama3Rope), seed: 7, tied: tied)
        let model = try LlamaModel(source: source, pool: ThreadPool(threads: threads))
        let tokens = [3, 17, 96, 0, 42, 42, 5, 77, 8, 61, 12]
        let expected = ReferenceLlama(source: source).logits(tokens)

        // Whole sequence in one call (split internally into batches of maxBatch).
        let session = InferenceSession(model: model, contextLength: 64, maxBatch: maxBatch)
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

    func testContextOverflowAndBadTokenAreErrors() throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: 1)
        let model = try LlamaModel(source: source, pool: ThreadPool(threads: 1))
        let session = InferenceSession(model: model, contextLength: 8)
        XCTAssertThrowsError(try session.forward(Array(repeating: 1, count: 9))) {
            XCTAssertEqual($0 as? InferenceError, .contextFull(position: 0, adding: 9, capacity: 8))
        }
        XCTAssertThrowsError(try session.forward([97])) { XCTAssertEqual($0 as? InferenceError, .badToken(id: 97, vocab: 97)) }
        XCTAssertEqual(session.position, 0)
    }

    func testShapeMismatchIsAnError() throws {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: 1)
        source.tensors[TensorName.block(1, "ffn_up")]!.shape = [81, 48]
        XCTAssertThrowsError(try LlamaModel(source: source, pool: ThreadPool(threads: 1))) {
            XCTAssertEqual($0 as? FormatError, .shapeMismatch(tensor: "blk.1.ffn_up.weight", expected: [80, 48], found: [81, 48]))
        }
    }
}
