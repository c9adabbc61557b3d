import Foundation
import XCTest
@testable import Tokenizer
@testable import Engine

/// llama.cpp's tokenizer test vectors (models/ggml-vocab-*.gguf.inp/.out) and the loaders.
final class TokenizerTests: XCTestCase {
    /// llama.cpp's vocabularies and test vectors (ggml-vocab-*.gguf, .inp, .out): not shipped in
    /// the repository, read from ../shared; a missing one skips the test locally, fails it in CI.
    static func vector(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try TestPaths.requireShared("data/tokenizer-vectors/" + name, file: file, line: line)
    }

    // MARK: helpers

    /// The cases of `<vocab>.inp` with the expected ids from `<vocab>.out`.
    static func loadCases(_ name: String) throws -> [(text: String, ids: [Int32])] {
        let inp = try String(contentsOfFile: try vector(name + ".inp"), encoding: .utf8)
        let out = try String(contentsOfFile: try vector(name + ".out"), encoding: .utf8)
        var texts = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
        if texts.last == "" { texts.removeLast() }
        var lines = out.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        XCTAssertEqual(texts.count, lines.count, "\(name): case count of .inp and .out differ")
        return zip(texts, lines).map { text, line in
            (text, line.split(separator: " ").map { Int32($0)! })
        }
    }

    /// Checks every case; returns how many passed.
    @discardableResult
    static func gguf(_ vocab: String) throws -> GGUFFile {
        try GGUFFile(path: try vector("ggml-vocab-\(vocab).gguf"))
    }

    /// Meta's Llama-3 tokenizer: shipped in the repository's data/.
    static let llama3Model = TestPaths.data + "/tokenizer-vectors/llama3_tokenizer.model"

    // MARK: vectors

    func testGPT2Vectors() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("gpt-2"))
        XCTAssertEqual(tok.preTokenizer, .gpt2)
        XCTAssertEqual(tok.vocabularySize, 50257)
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-gpt-2.gguf"), 46)
    }

    func testStarcoderVectors() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("starcoder"))
        XCTAssertEqual(tok.preTokenizer, .gpt2SplitDigits)
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-starcoder.gguf"), 46)
    }

    func testRefactVectors() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("refact"))
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-refact.gguf"), 46)
    }

    func testLlama3VectorsWithTikToken() throws {
        let tok = try Tokenizer.fromTikToken(path: Self.llama3Model)
        XCTAssertEqual(tok.vocabularySize, 128256)
        XCTAssertEqual(tok.bosID, 128000)
        XCTAssertEqual(tok.eosID, 128001)
        XCTAssertTrue(tok.addsBOS)
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-llama-bpe.gguf"), 46)
    }

    // MARK: special tokens

    func testLlama3SpecialTokens() throws {
        let tok = try Tokenizer.fromTikToken(path: Self.llama3Model)
        XCTAssertEqual(tok.tokenID("<|eot_id|>"), 128009)
        XCTAssertEqual(tok.tokenID("<|eom_id|>"), 128008)
        XCTAssertEqual(tok.tokenID("<|end_of_text|>"), 128001)
        XCTAssertEqual(tok.tokenID("Hello"), 9906)
        XCTAssertEqual(tok.endOfGenerationIDs, [128001, 128008, 128009])
        let text = "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        let ids = tok.encode(text)
        XCTAssertEqual(ids.first, 128000, "BOS added by default")
        XCTAssertEqual(Array(ids.dropFirst()), [128006, 882, 128007, 271, 9906, 128009])
        XCTAssertEqual(tok.decode(ids), "<|begin_of_text|>" + text)
        // not parsed: the markers are ordinary text
        let plain = tok.encode("<|eot_id|>", addBOS: false, parseSpecial: false)
        XCTAssertFalse(plain.contains(128009))
        XCTAssertEqual(tok.decode(plain), "<|eot_id|>")
        XCTAssertEqual(tok.tokenBytes(128009), Array("<|eot_id|>".utf8))
    }

    func testSpecialTokensLongestMatchAndUserDefined() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("refact"))
        // <fim_prefix> (control) is only matched when parsing special tokens
        XCTAssertEqual(tok.encode("a<fim_prefix>b", parseSpecial: true).count, 3)
        XCTAssertGreaterThan(tok.encode("a<fim_prefix>b", parseSpecial: false).count, 3)
        // user-defined tokens are always matched (llama.cpp does the same)
        let pad = tok.tokenID("[PAD49152]")!
        XCTAssertTrue(tok.encode("x[PAD49152]y", parseSpecial: false).contains(pad))
        XCTAssertEqual(tok.endOfGenerationIDs, [0])

        // overlapping special tokens: the longer wins wherever it is
        let spec = TokenizerSpec(
            pieces: [[0x61], [0x62], [0x63], [0x64], Array("ab".utf8), Array("bcd".utf8)],
            kinds: [.normal, .normal, .normal, .normal, .control, .control],
            merges: .pairs([]), preTokenizer: .gpt2)
        let t = Tokenizer(spec)
        XCTAssertEqual(t.encode("abcd"), [0, 5])
        XCTAssertEqual(t.encode("abab"), [4, 4])
    }

    // MARK: tokenizer.json

    /// A tokenizer.json (with tokenizer_config.json) made from a vocab GGUF.
    func writeHuggingFaceFolder(from vocab: String, digits: Bool, arrayMerges: Bool) throws -> String {
        let g = try Self.gguf(vocab)
        let tokens = try g.stringArray("tokenizer.ggml.tokens")!
        let types = try g.numberArray("tokenizer.ggml.token_type")!
        let merges = try g.stringArray("tokenizer.ggml.merges")!
        var vocabDict: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (i, t) in tokens.enumerated() {
            vocabDict[t] = i
            if types[i] == 3 || types[i] == 4 {
                added.append(["id": i, "content": t, "special": types[i] == 3, "single_word": false,
                              "lstrip": false, "rstrip": false, "normalized": false])
            }
        }
        let mergeValues: [Any] = arrayMerges
            ? merges.map { m -> [String] in let p = m.split(separator: " ", maxSplits: 1); return [String(p[0]), String(p[1])] }
            : merges
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let pre: [String: Any] = digits
            ? ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
            : byteLevel
        let root: [String: Any] = [
            "version": "1.0", "normalizer": NSNull(), "pre_tokenizer": pre, "added_tokens": added,
            "model": ["type": "BPE", "vocab": vocabDict, "merges": mergeValues],
            "decoder": ["type": "ByteLevel"],
        ]
        let dir = NSTemporaryDirectory() + "tessera-tok-\(vocab)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: root).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        let eos = tokens[g.int("tokenizer.ggml.eos_token_id")!]
        let config: [String: Any] = ["bos_token": ["content": eos], "eos_token": eos,
                                     "add_bos_token": false, "chat_template": "{{ messages }}"]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        return dir
    }

    func testGPT2VectorsThroughTokenizerJSON() throws {
        let dir = try writeHuggingFaceFolder(from: "gpt-2", digits: false, arrayMerges: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tok = try Tokenizer.fromHuggingFace(folder: dir)
        XCTAssertEqual(tok.preTokenizer, .gpt2)
        XCTAssertEqual(tok.chatTemplate, "{{ messages }}")
        XCTAssertEqual(tok.eosID, 50256)
        XCTAssertFalse(tok.addsBOS)
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-gpt-2.gguf"), 46)
    }

    func testStarcoderVectorsThroughTokenizerJSON() throws {
        let dir = try writeHuggingFaceFolder(from: "starcoder", digits: true, arrayMerges: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tok = try Tokenizer.fromHuggingFace(folder: dir)
        XCTAssertEqual(tok.preTokenizer, .gpt2SplitDigits)
        XCTAssertEqual(try checkVectors(tok, "ggml-vocab-starcoder.gguf"), 46)
    }

    func testSmallSyntheticTokenizerJSON() throws {
        let dir = NSTemporaryDirectory() + "tessera-tok-small-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let json = #"""
        {"version":"1.0","normalizer":null,
         "added_tokens":[{"id":9,"content":"<|im_end|>","special":true},{"id":10,"content":"<s>","special":true}],
         "pre_tokenizer":{"type":"Sequence","pretokenizers":[
            {"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
            {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},
         "model":{"type":"BPE","ignore_merges":false,
            "vocab":{"a":0,"b":1,"c":2,"Ġ":3,"ab":4,"abc":5,"Ġab":6,"Ċ":7,"1":8},
            "merges":["a b","ab c",["Ġ","ab"]]}}
        """#
        try json.write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
        let config = #"{"bos_token":{"content":"<s>"},"eos_token":"<|im_end|>","add_bos_token":true,"chat_template":"T"}"#
        try config.write(toFile: dir + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        let tok = try Tokenizer.fromHuggingFace(folder: dir)
        XCTAssertEqual(tok.preTokenizer, .llama3)
        XCTAssertEqual(tok.vocabularySize, 11)
        XCTAssertEqual(tok.bosID, 10)
        XCTAssertEqual(tok.eosID, 9)
        XCTAssertTrue(tok.addsBOS)
        XCTAssertEqual(tok.chatTemplate, "T")
        XCTAssertEqual(tok.endOfGenerationIDs, [9])
        XCTAssertEqual(tok.encode("abc ab<|im_end|>"), [10, 5, 6, 9])
        XCTAssertEqual(tok.encode("ab\n1", addBOS: false), [4, 7, 8])
        XCTAssertEqual(tok.decode([10, 5, 6, 9]), "<s>abc ab<|im_end|>")
        XCTAssertEqual(tok.tokenID(" ab"), 6)
    }

    func testUnsupportedTokenizerJSON() throws {
        let dir = NSTemporaryDirectory() + "tessera-tok-bad-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"model":{"type":"Unigram","vocab":[]}}"#.write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Tokenizer.fromHuggingFace(folder: dir)) { e in
            XCTAssertTrue("\(e)".contains("Unigram"), "\(e)")
        }
        XCTAssertThrowsError(try Tokenizer.fromHuggingFace(folder: dir + "/missing")) { e in
            XCTAssertTrue("\(e)".contains("cannot open"), "\(e)")
        }
    }

    // MARK: streaming

    func testStreamingDecoderHoldsBackSplitCharacters() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("gpt-2"))
        // 😀 is F0 9F 98 80: feed it one byte token at a time
        let bytes = Array("😀".utf8)
        let ids = bytes.map { tok.byteTokens[Int($0)] }
        XCTAssertFalse(ids.contains(-1))
        var d = StreamingDecoder(tokenizer: tok)
        XCTAssertEqual(d.append(ids[0]), "")
        XCTAssertEqual(d.append(ids[1]), "")
        XCTAssertEqual(d.append(ids[2]), "")
        XCTAssertEqual(d.append(ids[3]), "😀")
        XCTAssertEqual(d.flush(), "")

        // whole sentences with multi-byte characters split across tokens
        let text = "Hello 😀 world, 🚀 (normal) 😶‍🌫️ and Ärger"
        var s = StreamingDecoder(tokenizer: tok)
        var out = ""
        var held = false
        for id in tok.encode(text) {
            let piece = s.append(id)
            if piece.isEmpty { held = true }
            XCTAssertFalse(piece.contains("\u{FFFD}"), "partial character emitted: \(piece.debugDescription)")
            out += piece
        }
        out += s.flush()
        XCTAssertEqual(out, text)
        XCTAssertTrue(held, "expected at least one token to end inside a character")

        // a dangling lead byte becomes U+FFFD on flush
        var f = StreamingDecoder(tokenizer: tok)
        XCTAssertEqual(f.append(tok.byteTokens[0xF0]), "")
        XCTAssertEqual(f.flush(), "\u{FFFD}")
        // an invalid byte in the middle is not held back forever
        var g = StreamingDecoder(tokenizer: tok)
        XCTAssertEqual(g.append(tok.byteTokens[0x80]), "\u{FFFD}")
        XCTAssertEqual(g.append(tok.tokenID("a")!), "a")
    }

    // MARK: merge engine

    func testHeapMergeMatchesScanMerge() throws {
        let tok = try Tokenizer.fromGGUF(Self.gguf("gpt-2"))
        let tik = try Tokenizer.fromTikToken(path: Self.llama3Model)
        var rng = SystemRandomNumberGenerator()
        for t in [tok, tik] {
            for trial in 0..<20 {
                let letters = Array("abcdefghijklmnopqrstuvwxyz   eeeaaaoo".utf8)
                let word = (0..<(60 + trial * 7)).map { _ in letters.randomElement(using: &rng)! }
                let initial = word.map { t.byteTokens[Int($0)] }
                var a = initial, b = initial
                t.merger.mergeByScan(&a)
                t.merger.mergeWithHeap(&b)
                XCTAssertEqual(a, b, "word \(String(decoding: word, as: UTF8.self))")
                XCTAssertEqual(t.decode(b), String(decoding: word, as: UTF8.self))
            }
        }
        // a long word goes through the heap path and still round-trips
        let long = String(repeating: "abracadabra", count: 500)
        XCTAssertEqual(tok.decode(tok.encode(long)), long)
    }

    // MARK: errors

    /// A GGUF file with only the given metadata.
    func writeGGUF(_ kv: [(String, GGUFTestValue)]) throws -> String {
        var d = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); d.append(contentsOf: Array(s.utf8)) }
        u32(0x4655_4747); u32(3); u64(0); u64(UInt64(kv.count))
        for (k, v) in kv {
            str(k)
            switch v {
            case .string(let s): u32(8); str(s)
            case .strings(let a): u32(9); u32(8); u64(UInt64(a.count)); a.forEach(str)
            }
        }
        let path = NSTemporaryDirectory() + "tessera-tok-\(UUID().uuidString).gguf"
        try d.write(to: URL(fileURLWithPath: path))
        return path
    }
    enum GGUFTestValue { case string(String), strings([String]) }

    func testGGUFErrors() throws {
        let none = try writeGGUF([("general.architecture", .string("llama"))])
        defer { try? FileManager.default.removeItem(atPath: none) }
        XCTAssertThrowsError(try Tokenizer.fromGGUF(GGUFFile(path: none))) { e in
            XCTAssertTrue("\(e)".contains("no tokenizer"), "\(e)")
        }
        let spm = try writeGGUF([("tokenizer.ggml.model", .string("llama"))])
        defer { try? FileManager.default.removeItem(atPath: spm) }
        XCTAssertThrowsError(try Tokenizer.fromGGUF(GGUFFile(path: spm))) { e in
            XCTAssertTrue("\(e)".contains("'llama' is not supported"), "\(e)")
        }
        let pre = try writeGGUF([("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("made-up")),
                                 ("tokenizer.ggml.tokens", .strings(["a"])), ("tokenizer.ggml.merges", .strings([]))])
        defer { try? FileManager.default.removeItem(atPath: pre) }
        XCTAssertThrowsError(try Tokenizer.fromGGUF(GGUFFile(path: pre))) { e in
            XCTAssertTrue("\(e)".contains("'made-up'") && "\(e)".contains("smollm"), "\(e)")
        }
        let noTokens = try writeGGUF([("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("gpt2"))])
        defer { try? FileManager.default.removeItem(atPath: noTokens) }
        XCTAssertThrowsError(try Tokenizer.fromGGUF(GGUFFile(path: noTokens))) { e in
            XCTAssertEqual(e as? FormatError, .missingKey(path: noTokens, key: "tokenizer.ggml.tokens"))
        }
        XCTAssertThrowsError(try Tokenizer.fromTikToken(path: "/nonexistent/tokenizer.model"))
    }

    // MARK: the demo model (SmolLM2)

    func testDemoModelTokenizer() throws {
        let path = try TestPaths.requireDemoModel()
        let tok = try Tokenizer.fromGGUF(GGUFFile(path: path))
        XCTAssertEqual(tok.preTokenizer, .gpt2SplitDigits)
        XCTAssertFalse(tok.addsBOS)
        XCTAssertNotNil(tok.chatTemplate)
        let imEnd = try XCTUnwrap(tok.tokenID("<|im_end|>"))
        XCTAssertTrue(tok.endOfGenerationIDs.contains(imEnd))
        XCTAssertTrue(tok.endOfGenerationIDs.contains(0)) // <|endoftext|>
        XCTAssertEqual(tok.decode([imEnd]), "<|im_end|>")
        let ids = tok.encode("<|im_start|>user\nHi 123<|im_end|>")
        XCTAssertEqual(ids.first, tok.tokenID("<|im_start|>"))
        XCTAssertEqual(ids.last, imEnd)

        // llama.cpp counts 303,415 tokens for wiki.test.raw with this vocabulary (no BOS)
        let wiki = TestPaths.data + "/wikitext2/wiki.test.raw"
        let text = try String(contentsOfFile: wiki, encoding: .utf8)
        let start = Date()
        let all = tok.encode(text, addBOS: false)
        print("wiki.test.raw: \(all.count) tokens in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(all.count, 303_415)
        XCTAssertEqual(tok.decode(all), text)
    }

    /// The byte-string index: every included id found by its bytes, the first of duplicates kept,
    /// excluded ids and unknown strings not found, across a table that fills it half way.
    func testPieceIndexFindsFirstIdsByBytes() {
        var pieces: [[UInt8]] = [Array("a".utf8), Array("b".utf8), Array("ab".utf8), Array("a".utf8), [], [0xFF, 0]]
        pieces += (0..<3000).map { Array("w\($0 % 2500)".utf8) }   // 500 duplicates
        let index = PieceIndex(TokenPieces(pieces)) { $0 != 1 }
        XCTAssertEqual(index[Array("a".utf8)], 0)
        XCTAssertNil(index[Array("b".utf8)])
        XCTAssertEqual(index["ab".utf8], 2)
        XCTAssertEqual(index[[UInt8]()], 4)
        XCTAssertEqual(index[[0xFF, 0] as [UInt8]], 5)
        XCTAssertNil(index["abc".utf8])
        for k in 0..<2500 { XCTAssertEqual(index["w\(k)".utf8], Int32(6 + k)) }
    }
}

extension XCTestCase {
    /// Runs every case of a llama.cpp vector file through `tok`; returns how many passed.
    func checkVectors(_ tok: Tokenizer, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let cases = try TokenizerTests.loadCases(name)
        XCTAssertEqual(cases.count, 46, file: file, line: line)
        var passed = 0
        for (i, c) in cases.enumerated() {
            let got = tok.encode(c.text, addBOS: false, parseSpecial: false)
            if got == c.ids { passed += 1 }
            XCTAssertEqual(got, c.ids, "\(name) case \(i) \(c.text.debugDescription): expected \(c.ids) got \(got)", file: file, line: line)
            XCTAssertEqual(tok.decode(got), c.text, "\(name) case \(i): decode does not round-trip", file: file, line: line)
        }
        print("\(name): \(passed)/\(cases.count) vector cases pass")
        return passed
    }
}
