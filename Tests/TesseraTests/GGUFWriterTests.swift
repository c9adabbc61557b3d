import Foundation
import XCTest
import KernelsC
@testable import Engine

final class GGUFWriterTests: XCTestCase {
    var dir: FormatTempDir!
    override func setUpWithError() throws { dir = try FormatTempDir("ggufwriter") }
    override func tearDown() { dir.remove() }

    func testMetadataOfEveryTypeRoundTrips() throws {
        var w = GGUFWriter()
        let values: [(String, GGUFValue)] = [
            ("general.architecture", .string("llama")),
            ("u8", .uint8(200)), ("i8", .int8(-100)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)),
            ("u64", .uint64(UInt64.max)), ("i64", .int64(Int64.min)),
            ("f32", .float32(3.25)), ("f64", .float64(-1e300)), ("yes", .bool(true)), ("no", .bool(false)),
            ("unicode", .string("héllo ✓ \u{0}")), ("empty.string", .string("")),
            ("strings", .array([.string("a"), .string(""), .string("ü")])),
            ("floats", .array([.float32(1), .float32(-0.5)])),
            ("ints", .array((0..<100).map { .int32(Int32($0) - 50) })),
            ("nested", .array([.array([.uint8(1), .uint8(2)]), .array([.uint8(3)])])),
            ("empty.array", .array([])),
        ]
        for (k, v) in values { w.set(k, v) }
        w.set("u8", .uint8(201))  // replacing keeps the key's position
        let path = dir.file("meta.gguf")
        try w.write(to: path)

        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.metadataKeys, values.map(\.0))
        for (k, v) in values where k != "u8" { XCTAssertEqual(g.metadata[k], v, k) }
        XCTAssertEqual(g.metadata["u8"], .uint8(201))
        XCTAssertEqual(g.tensors.count, 0)
        XCTAssertEqual(try g.stringArray("strings"), ["a", "", "ü"])
        XCTAssertEqual(dir.contents, ["meta.gguf"])
    }

    /// Arrays of GGUFFile.lazyArrayLength elements and more are checked at open and decoded when
    /// asked for: the same values, every time; a file cut inside one is refused at open.
    func testLongArraysAreDecodedOnDemandAndCheckedAtOpen() throws {
        let n = GGUFFile.lazyArrayLength
        let strings: GGUFValue = .array((0..<n + 3).map { .string($0 % 7 == 0 ? "" : "tok \($0) ü") })
        let ints: GGUFValue = .array((0..<n).map { .int32(Int32($0) - 9) })
        let short: GGUFValue = .array((0..<n - 1).map { .uint8(UInt8($0 % 256)) })
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("strings", strings)
        w.set("ints", ints)
        w.set("short", short)
        w.set("after", .uint32(7))
        let path = dir.file("long.gguf")
        try w.write(to: path)

        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.metadataKeys, ["general.architecture", "strings", "ints", "short", "after"])
        XCTAssertEqual(g.metadata.count, 5)
        for _ in 0..<2 {
            XCTAssertEqual(g.metadata["strings"], strings)
            XCTAssertEqual(g.metadata["ints"], ints)
        }
        XCTAssertEqual(g.metadata["short"], short)
        XCTAssertEqual(g.metadata["after"], .uint32(7))
        XCTAssertEqual(try g.stringArray("strings")?.count, n + 3)

        // Cut the file inside the long string array: refused when opened, naming the key.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = dir.file("cut.gguf")
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: cut))
        XCTAssertThrowsError(try GGUFFile(path: cut)) { error in
            XCTAssertTrue("\(error)".contains("strings"), "\(error)")
        }
    }

    func testTensorsRoundTripWithAlignment() throws {
        var rng = FormatTestRNG(seed: 7)
        for alignment in [32, 64, 8] {
            var w = GGUFWriter()
            if alignment != 32 { w.set("general.alignment", .uint32(UInt32(alignment))) }
            let a = rng.floats(3 * 5)
            let b = (0..<10).map { _ in tsr_f16_to_f32(UInt16.random(in: 0..<0x7C00, using: &rng)) }
            let c = (0..<6).map { _ in Float(bitPattern: UInt32(UInt16.random(in: 0..<0x7F80, using: &rng)) << 16) }
            let q = rng.floats(2 * 64, scale: 2)
            try w.addTensor(name: "a", shape: [3, 5], values: a)
            try w.addTensor(name: "b", shape: [10], values: FloatBuffer(b), type: .f16)
            try w.addTensor(name: "c", shape: [1, 2, 3], values: c, type: .bf16)
            try w.addTensor(name: "q", shape: [2, 64], values: q, type: .q8_0)
            // Raw bytes: one Q4_0 block, d = 1.0, nibbles 0..15 → values -8..7.
            var block: [UInt8] = [0x00, 0x3C]
            block += (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
            try block.withUnsafeBytes { try w.addTensor(name: "raw", shape: [32], type: .q4_0, bytes: $0) }
            let path = dir.file("t\(alignment).gguf")
            try w.write(to: path)

            let g = try GGUFFile(path: path)
            XCTAssertEqual(g.alignment, alignment)
            XCTAssertEqual(g.dataOffset % alignment, 0)
            XCTAssertEqual(g.tensors.map(\.name), ["a", "b", "c", "q", "raw"])
            for t in g.tensors { XCTAssertEqual(t.offset % alignment, 0, t.name) }
            XCTAssertEqual(g.tensor("a")?.shape, [3, 5])
            XCTAssertEqual(g.tensor("a")?.dims, [5, 3])
            XCTAssertEqual(g.tensor("c")?.shape, [1, 2, 3])
            XCTAssertEqual(g.tensor("q")?.type, .q8_0)
            XCTAssertEqual(try g.floatData("a").array, a)
            XCTAssertEqual(try g.floatData("b").array, b)
            XCTAssertEqual(try g.floatData("c").array, c)
            let qd = try g.floatData("q").array
            for blockStart in stride(from: 0, to: q.count, by: 32) {
                let amax = q[blockStart..<blockStart + 32].map(abs).max()!
                for j in blockStart..<blockStart + 32 { XCTAssertEqual(qd[j], q[j], accuracy: amax / 127 * 0.51 + 1e-3 * amax) }
            }
            XCTAssertEqual(try g.floatData("raw").array, (0..<16).map { Float($0 - 8) } + (0..<16).map { Float(7 - $0) })
        }
    }

    func testWriterRejectsInconsistentTensors() throws {
        var w = GGUFWriter()
        try w.addTensor(name: "x", shape: [4], values: [1, 2, 3, 4])
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "x", shape: [1], values: [1])))
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "y", shape: [2, 2], values: [1, 2, 3])))
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "z", shape: [2, 16], values: [Float](repeating: 0, count: 32), type: .q8_0)))
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "r", shape: [32], type: .q8_0, data: Data(count: 33))))
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "e", shape: [], values: [])))
        XCTAssertNotNil(assertFormatError(try w.addTensor(name: "i", shape: [4], values: [1, 2, 3, 4], type: .i32)))
        w.set("mixed", .array([.int32(1), .string("a")]))
        XCTAssertNotNil(assertFormatError(try w.write(to: dir.file("mixed.gguf"))))
        XCTAssertEqual(dir.contents, [], "a failed write leaves nothing behind")
    }

    func testOverwriteIsAtomic() throws {
        let path = dir.file("m.gguf")
        var w = GGUFWriter()
        w.set("general.name", "first")
        try w.write(to: path)
        w.set("general.name", "second")
        try w.write(to: path)
        XCTAssertEqual(try GGUFFile(path: path).string("general.name"), "second")
        XCTAssertEqual(dir.contents, ["m.gguf"])
    }
}

/// Writes synthetic Llama GGUF files for the model-source tests.
enum SyntheticGGUF {
    static func config(tied: Bool = false, factors: [Float]? = nil) -> LlamaConfig {
        LlamaConfig(blockCount: 2, hidden: 64, ffn: 96, heads: 4, kvHeads: 2, vocab: 50, contextLength: 256,
                    ropeBase: 500000, ropeFrequencyFactors: factors, rmsEps: 1e-5, tiedEmbeddings: tied)
    }

    /// A writer holding `config`'s metadata and random tensors (F32 except for one F16 and one Q8_0).
    static func writer(_ config: LlamaConfig, seed: UInt64 = 3, skip: String? = nil,
                       override: [String: [Int]] = [:]) throws -> GGUFWriter {
        var rng = FormatTestRNG(seed: seed)
        var w = GGUFWriter()
        w.set("general.name", "synthetic")
        for (key, value) in config.ggufMetadata() { w.set(key, value) }
        w.set("tokenizer.chat_template", "{{ messages }}")
        for (i, (name, shape)) in config.requiredTensorShapes.enumerated() where name != skip {
            let s = override[name] ?? shape
            let type: GGMLType = i == 3 ? .f16 : (i == 4 && s.last! % 32 == 0 ? .q8_0 : .f32)
            try w.addTensor(name: name, shape: s, values: rng.floats(s.reduce(1, *)), type: type)
        }
        if let f = config.ropeFrequencyFactors { try w.addTensor(name: TensorName.ropeFrequencies, shape: [f.count], values: f) }
        return w
    }
}

final class GGUFModelSourceTests: XCTestCase {
    var dir: FormatTempDir!
    override func setUpWithError() throws { dir = try FormatTempDir("ggufsource") }
    override func tearDown() { dir.remove() }

    func testConfigAndTensorsUntiedAndTied() throws {
        for tied in [false, true] {
            let factors: [Float]? = tied ? (0..<8).map { Float($0 + 1) } : nil
            let expected = SyntheticGGUF.config(tied: tied, factors: factors)
            let path = dir.file("m\(tied).gguf")
            try SyntheticGGUF.writer(expected).write(to: path)

            let src = try GGUFModelSource(path: path)
            XCTAssertEqual(src.config, expected)
            XCTAssertEqual(src.config.headDim, 16)
            XCTAssertEqual(src.hasTensor(TensorName.output), !tied)
            XCTAssertEqual(src.chatTemplate, "{{ messages }}")
            XCTAssertEqual(src.tensorShape(TensorName.block(1, "ffn_down")), [64, 96])
            XCTAssertNil(src.tensorShape("nope.weight"))
            let g = try GGUFFile(path: path)
            let name = TensorName.block(0, "attn_k")
            XCTAssertEqual(try src.floatTensor(name).array, try g.floatData(name).array)
            XCTAssertTrue(try ModelLoader.open(path) is GGUFModelSource)
        }
    }

    func testVocabFallsBackToTokensThenEmbeddingRows() throws {
        let cfg = SyntheticGGUF.config()
        var w = try SyntheticGGUF.writer(cfg)
        w.remove("llama.vocab_size")
        w.set("tokenizer.ggml.tokens", strings: (0..<50).map { "t\($0)" })
        try w.write(to: dir.file("tokens.gguf"))
        XCTAssertEqual(try GGUFModelSource(path: dir.file("tokens.gguf")).config.vocab, 50)
        w.remove("tokenizer.ggml.tokens")
        try w.write(to: dir.file("rows.gguf"))
        XCTAssertEqual(try GGUFModelSource(path: dir.file("rows.gguf")).config.vocab, 50)
    }

    func testErrors() throws {
        let cfg = SyntheticGGUF.config()
        func open(_ w: GGUFWriter, _ name: String) throws -> FormatError? {
            try w.write(to: dir.file(name))
            return assertFormatError(try GGUFModelSource(path: dir.file(name)))
        }
        let qName = TensorName.block(1, "attn_q")
        XCTAssertEqual(try open(SyntheticGGUF.writer(cfg, override: [qName: [32, 64]]), "shape.gguf"),
                       .shapeMismatch(tensor: qName, expected: [64, 64], found: [32, 64]))
        let upName = TensorName.block(0, "ffn_up")
        XCTAssertEqual(try open(SyntheticGGUF.writer(cfg, skip: upName), "missing.gguf"),
                       .missingTensor(path: dir.file("missing.gguf"), tensor: upName))

        var arch = try SyntheticGGUF.writer(cfg)
        arch.set("general.architecture", "gpt2")
        let archError = try open(arch, "arch.gguf")
        XCTAssertTrue("\(archError!)".contains("architecture gpt2 is not supported (Tessera runs llama)"), "\(archError!)")

        var noBlocks = try SyntheticGGUF.writer(cfg)
        noBlocks.remove("llama.block_count")
        XCTAssertEqual(try open(noBlocks, "noblocks.gguf"), .missingKey(path: dir.file("noblocks.gguf"), key: "llama.block_count"))

        var badRot = try SyntheticGGUF.writer(cfg)
        badRot.set("llama.rope.dimension_count", .uint32(8))
        XCTAssertTrue("\(try open(badRot, "rot.gguf")!)".contains("partial RoPE"))

        var badFreqs = try SyntheticGGUF.writer(cfg)
        try badFreqs.addTensor(name: TensorName.ropeFrequencies, shape: [4], values: [1, 1, 1, 1])
        XCTAssertEqual(try open(badFreqs, "freqs.gguf"), .shapeMismatch(tensor: TensorName.ropeFrequencies, expected: [8], found: [4]))

        var heads = try SyntheticGGUF.writer(cfg)
        heads.set("llama.attention.head_count_kv", .uint32(3))
        XCTAssertTrue("\(try open(heads, "heads.gguf")!)".contains("impossible hyper-parameter"))
    }

    func testModelLoaderDispatch() throws {
        XCTAssertEqual(assertFormatError(try ModelLoader.open(dir.file("absent.gguf"))),
                       .cannotOpen(path: dir.file("absent.gguf"), reason: "no such file or directory"))
        try dir.write("junk.bin", bytes: Array("PK\u{3}\u{4}rest".utf8))
        let junk = assertFormatError(try ModelLoader.open(dir.file("junk.bin")))
        if case .badMagic(_, let found, _) = junk { XCTAssertEqual(found, "'PK\\x3\\x4'") } else { XCTFail("\(String(describing: junk))") }
        try dir.write("w.safetensors", bytes: [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        XCTAssertTrue("\(assertFormatError(try ModelLoader.open(dir.file("w.safetensors")))!)".contains("pass its folder"))
        try dir.write("x.gguf", bytes: [])
        if case .truncated = assertFormatError(try ModelLoader.open(dir.file("x.gguf"))) {} else { XCTFail() }
    }

    /// A key length near UInt64.max once made the truncation message itself overflow (a trap).
    func testHugeLengthGivesReadableError() throws {
        var bytes: [UInt8] = Array("GGUF".utf8)
        bytes += withUnsafeBytes(of: UInt32(3).littleEndian) { Array($0) }  // version
        // tensor count, metadata count, length of the first key
        for v: UInt64 in [0, 1, UInt64.max] { bytes += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        bytes += [UInt8](repeating: 0x41, count: 64)
        try dir.write("huge.gguf", bytes: bytes)
        let e = assertFormatError(try GGUFFile(path: dir.file("huge.gguf")))
        XCTAssertTrue("\(e!)".contains("metadata key #0"), "\(e!)")
    }

    /// Random byte mutations and truncations of a valid file's header region: opening must
    /// either succeed or throw a FormatError (with a printable message), never crash.
    func testFuzzedHeadersNeverCrash() throws {
        let path = dir.file("good.gguf")
        try SyntheticGGUF.writer(SyntheticGGUF.config(factors: [Float](repeating: 2, count: 8))).write(to: path)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let headerEnd = try GGUFFile(path: path).dataOffset
        var rng = FormatTestRNG(seed: 0xF022)
        var opened = 0, sourced = 0, rejected = 0
        let interesting: [UInt8] = [0, 1, 2, 3, 4, 8, 9, 12, 0x20, 0x7F, 0x80, 0xFE, 0xFF]
        for i in 0..<500 {
            var bytes = original
            switch i % 10 {
            case 9: bytes = Array(bytes.prefix(Int.random(in: 0..<headerEnd + 64, using: &rng)))
            case 8:  // a random little-endian u64 at a random 4-byte boundary (counts, lengths, offsets)
                let at = Int.random(in: 0..<(headerEnd - 8) / 4, using: &rng) * 4
                let v: UInt64 = Bool.random(using: &rng) ? UInt64.random(in: 0...UInt64.max, using: &rng) : UInt64.random(in: 0...300, using: &rng)
                withUnsafeBytes(of: v.littleEndian) { for k in 0..<8 { bytes[at + k] = $0[k] } }
            default:
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let at = Int.random(in: 0..<headerEnd, using: &rng)
                    bytes[at] = Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
                }
            }
            let fuzzPath = dir.file("fuzz\(i).gguf")
            try dir.write("fuzz\(i).gguf", bytes: bytes)
            do {
                let g = try GGUFFile(path: fuzzPath)
                opened += 1
                for t in g.tensors.prefix(4) { _ = try g.floatData(t.name) }
                let src = try GGUFModelSource(gguf: g)
                _ = try src.floatTensor(TensorName.tokenEmbedding)
                sourced += 1
            } catch let e as FormatError {
                XCTAssertFalse(e.description.isEmpty)
                rejected += 1
            }
            try FileManager.default.removeItem(atPath: fuzzPath)
        }
        XCTAssertEqual(sourced + rejected, 500)
        XCTAssertGreaterThan(rejected, 100)
        XCTAssertGreaterThan(sourced, 10)
        print("GGUF fuzz: \(opened) parsed, \(sourced) usable models, \(rejected) rejected")
    }
}
