import XCTest
@testable import Engine

/// A model written to disk (GGUF, or a sharded Hugging Face folder) loads and computes the
/// same logits as the float64 reference: loaders, name mapping, RoPE layouts and the forward
/// pass checked together.
final class ModelFileTests: XCTestCase {
    let tokens = [5, 99, 250, 7, 7, 130, 64, 1]

    func maxRelativeError(_ a: [Float], _ b: [Double]) -> Double {
        zip(a, b).map { abs(Double($0) - $1) }.max()! / b.map(abs).max()!
    }

    func testHuggingFaceFolderMatchesRotateHalfReference() throws {
        let dir = try FormatTempDir("hf-forward")
        defer { dir.remove() }
        let written = try SyntheticHF.write(to: dir, sharded: true)
        let source = try ModelLoader.open(dir.path)
        XCTAssertNotNil(source.config.ropeFrequencyFactors)
        XCTAssertTrue(source.config.tiedEmbeddings)

        // The reference reads the HF tensors as written (rotate-half layout) under GGUF names.
        var tensors: [String: (shape: [Int], values: [Float])] = [:]
        for (name, shape) in SyntheticHF.tensorShapes(lmHead: false) {
            tensors[HFModelSource.ggufName(hf: name)!] = (shape, written[name]!)
        }
        let reference = ReferenceLlama(source: InMemorySource(config: source.config, tensors: tensors), rotateHalf: true)
        let expected = reference.logits(tokens)

        let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 2))
        let session = InferenceSession(model: model, contextLength: 32, maxBatch: 3)
        let logits = try session.forward(tokens.map(Int32.init), logitRows: tokens.count)
        for t in tokens.indices { XCTAssertLessThan(maxRelativeError(logits[t], expected[t]), 1e-4, "token \(t)") }
    }

    func testGGUFFileMatchesReference() throws {
        for tied in [true, false] {
            let memory = InMemorySource(config: InMemorySource.tinyConfig(llama3Rope: true), seed: 21, tied: tied)
            let c = memory.config
            var w = GGUFWriter()
            for (key, value) in c.ggufMetadata() { w.set(key, value) }
            for (name, t) in memory.tensors.sorted(by: { $0.key < $1.key }) {
                try w.addTensor(name: name, shape: t.shape, values: t.values)
            }
            try c.addRopeFrequencies(to: &w)
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-\(UUID().uuidString).gguf").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            try w.write(to: path)

            let source = try ModelLoader.open(path)
            XCTAssertEqual(source.config, c)
            let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 1))
            let ids = tokens.map { $0 % c.vocab }
            let logits = try InferenceSession(model: model, contextLength: 32).forward(ids.map(Int32.init), logitRows: ids.count)
            let expected = ReferenceLlama(source: memory).logits(ids)
            for t in tokens.indices { XCTAssertLessThan(maxRelativeError(logits[t], expected[t]), 1e-4, "tied \(tied) token \(t)") }
        }
    }
}
