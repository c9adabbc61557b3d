import XCTest
@testable import Engine
@testable import Eval

/// Tests on the real demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) against figures measured
/// with llama.cpp on the same file (bench/RESULTS.md has the commands).
final class DemoModelTests: XCTestCase {
    // MARK: ggml block decoding, bit for bit

    /// Reference decoding written from the block layouts (ggml's block_q8_0 / block_q4_0 /
    /// block_q4_1), element by element, with Swift's own Float16 conversion.
    static func referenceDecode(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, element i: Int) -> Float {
        let block = i / 32, j = i % 32
        func half(_ offset: Int) -> Float { Float(Float16(bitPattern: UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)) }
        func nibble(_ base: Int) -> Int { j < 16 ? Int(bytes[base + j] & 0x0F) : Int(bytes[base + j - 16] >> 4) }
        switch type {
        case .q8_0:
            let b = block * 34
            return Float(Int8(bitPattern: bytes[b + 2 + j])) * half(b)
        case .q4_0:
            let b = block * 18
            return Float(nibble(b + 2) - 8) * half(b)
        case .q4_1:
            let b = block * 20
            return Float(nibble(b + 4)) * half(b) + half(b + 2)
        default:
            fatalError("not a block type")
        }
    }

    func testEveryQuantizedBlockOfTheDemoFileDecodesBitExactly() throws {
        let gguf = try GGUFFile(path: try TestPaths.requireDemoModel())
        var checked: [GGMLType: Int] = [:]
        for t in gguf.tensors where t.type == .q8_0 || t.type == .q4_1 {
            let decoded = try gguf.floatData(t.name)
            let bytes = UnsafeRawBufferPointer(start: gguf.data(of: t), count: t.byteCount)
            for i in 0..<t.elementCount {
                let expected = Self.referenceDecode(t.type, bytes, element: i)
                if decoded[i].bitPattern != expected.bitPattern {
                    return XCTFail("\(t.name) element \(i): \(decoded[i]) != \(expected)")
                }
            }
            checked[t.type, default: 0] += t.elementCount / 32
        }
        XCTAssertEqual(checked[.q8_0], 49152 * 576 / 32)   // token_embd
        XCTAssertEqual(checked.keys.count, 2)
        XCTAssertGreaterThan(checked[.q4_1] ?? 0, 100_000)
    }

    func testQ4_0BlocksDecodeBitExactly() throws {
        // The demo file has no Q4_0 tensor: random blocks with finite scales.
        var rng = SplitMix64(seed: 8)
        var bytes: [UInt8] = []
        for _ in 0..<500 {
            let d = Float16(rng.uniform(-0.1, 0.1)).bitPattern
            bytes += [UInt8(d & 0xFF), UInt8(d >> 8)]
            for _ in 0..<16 { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
        }
        var out = [Float](repeating: 0, count: 500 * 32)
        bytes.withUnsafeBytes { raw in
            GGMLDecode.decode(.q4_0, raw.baseAddress!, &out, count: out.count)
            for i in 0..<out.count {
                XCTAssertEqual(out[i].bitPattern, Self.referenceDecode(.q4_0, raw, element: i).bitPattern, "element \(i)")
            }
        }
    }

    // MARK: perplexity against llama.cpp

    func testPerplexityMatchesLlamaCppOnTheSameFile() throws {
        // llama-perplexity -m SmolLM2-135M-Instruct.F32.gguf (the exact fp32 dequantization of
        // the demo file) -f wiki.test.raw -c 512 --chunks 32: running values of chunks 1-4.
        let llamaCpp = [12.9550, 21.3732, 22.5235, 22.7447]
        let loaded = try LoadedModel.load(path: try TestPaths.requireDemoModel(), threads: 2)
        let text = try String(contentsOfFile: TestPaths.data + "/wikitext2/wiki.test.raw", encoding: .utf8)
        let tokens = loaded.tokenizer.encode(text, addBOS: nil, parseSpecial: false)
        XCTAssertEqual(tokens.count, 303_415) // llama.cpp's count for this file
        let session = InferenceSession(model: loaded.model, contextLength: 512)
        let run = PerplexityRun(session: session, convention: .llamacpp, contextLength: 512, bos: nil)
        var running: [Double] = []
        let result = try run.run(tokens: tokens, chunks: 4) { _, acc in running.append(acc.perplexity) }
        XCTAssertEqual(result.count, 4 * 255)
        for (ours, theirs) in zip(running, llamaCpp) {
            XCTAssertEqual(ours, theirs, accuracy: theirs * 5e-4, "running ppl \(running) vs llama.cpp \(llamaCpp)")
        }
    }

    // MARK: greedy generation against llama.cpp

    /// Greedy ids from llama.cpp (llama-simple's loop, F32 dequantization of the demo file,
    /// no BOS, 32 new tokens or up to EOS id 2) — bench/RESULTS.md has the commands.
    static let llamaCppGreedy: [(prompt: String, promptIDs: [Int32], generated: [Int32])] = [
        ("The capital of France is", [504, 3575, 282, 4649, 314],
         [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34, 32, 33, 40, 29, 32, 33, 29, 34, 34, 216, 33, 34, 42, 33, 34, 42, 37, 35, 30, 2]),
        ("Once upon a time", [6403, 1980, 253, 655],
         [28, 260, 2240, 282, 23324, 27108, 436, 253, 15114, 39228, 28, 351, 25854, 41658, 284, 14055, 9018, 30, 1249, 347, 260, 929, 3514, 411, 28, 260, 2240, 2585, 288, 5946, 624, 2798]),
        ("def fibonacci(n):", [1604, 3987, 46477, 24, 94, 727],
         [472, 585, 304, 1758, 216, 32, 42, 448, 1003, 216, 33, 472, 1003, 304, 1672, 3987, 46477, 24, 94, 731, 216, 33, 25, 198, 198, 19, 4246, 260, 1517, 198, 3272, 24]),
    ]

    func greedy(_ loaded: LoadedModel, _ prompt: [Int32], maxTokens: Int) throws -> [Int32] {
        let session = InferenceSession(model: loaded.model, contextLength: 256)
        var generator = Generator(session: session, sampling: .greedy, stopTokens: [2])
        var ids: [Int32] = []
        let stats = try generator.generate(prompt: prompt, maxTokens: maxTokens) { ids.append($0); return true }
        if stats.stopReason == .endOfGeneration { ids.append(2) }
        return ids
    }

    func testGreedyGenerationMatchesLlamaCpp() throws {
        let loaded = try LoadedModel.load(path: try TestPaths.requireDemoModel(), threads: 2)
        for case let (prompt, promptIDs, expected) in Self.llamaCppGreedy {
            let ids = loaded.tokenizer.encode(prompt, addBOS: nil, parseSpecial: true)
            XCTAssertEqual(ids, promptIDs, prompt)
            // The smallest top-2 logit margin on these runs is 0.05, far above fp32 noise:
            // every token must agree.
            XCTAssertEqual(try greedy(loaded, ids, maxTokens: 32), expected, prompt)
        }
    }

    func testChatTemplatePromptMatchesLlamaCpp() throws {
        let loaded = try LoadedModel.load(path: try TestPaths.requireDemoModel(), threads: 2)
        let template = try ChatTemplate.resolve(override: nil, modelTemplate: loaded.chatTemplate)
        let text = try template.render(messages: [ChatMessage(role: "user", content: "What is the capital of France?")],
                                       addGenerationPrompt: true, bosToken: "<|im_start|>", eosToken: "<|im_end|>")
        let ids = loaded.tokenizer.encode(text, addBOS: nil, parseSpecial: true)
        XCTAssertEqual(ids, [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
                             8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198])
        XCTAssertEqual(try greedy(loaded, ids, maxTokens: 32), [504, 3575, 282, 4649, 314, 7042, 30, 2])
    }

    func testFirstLogitsMatchLlamaCpp() throws {
        let loaded = try LoadedModel.load(path: try TestPaths.requireDemoModel(), threads: 2)
        let session = InferenceSession(model: loaded.model, contextLength: 16)
        let logits = try session.forward([504, 3575, 282, 4649, 314])[0]
        // llama.cpp's top-5 after "The capital of France is" (F32 file).
        let expected: [(Int, Float)] = [(7042, 17.375675), (260, 14.890076), (4528, 13.250639), (2250, 13.014355), (1315, 12.954283)]
        let top = logits.indices.sorted { logits[$0] > logits[$1] }.prefix(5)
        XCTAssertEqual(Array(top), expected.map(\.0))
        // llama.cpp keeps its KV cache in F16 by default (ours is fp32): measured differences
        // are ≤ 0.006 (3e-4 relative); a real error in the forward pass moves logits by O(1).
        for (id, value) in expected { XCTAssertEqual(logits[id], value, accuracy: 1e-2, "logit of \(id)") }
    }

    // MARK: damaged files

    func testTruncatedAndCorruptDemoFilesAreClearErrors() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: try TestPaths.requireDemoModel()))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("damaged.gguf").path

        // Cut inside the tensor data: the directory parses, the last tensors run past the end.
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ModelLoader.open(path)) { error in
            guard case FormatError.truncated = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
        }
        // Cut inside the metadata: too short for the tensor directory it announces.
        try data.prefix(5000).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ModelLoader.open(path)) { error in
            XCTAssertTrue("\(error)".contains("truncated or corrupt"), "\(error)")
        }
        // Wrong magic.
        var bad = data.prefix(4096)
        bad[0] = UInt8(ascii: "X")
        try bad.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ModelLoader.open(path)) { error in
            guard case FormatError.badMagic = error else { return XCTFail("\(error)") }
        }
    }
}
