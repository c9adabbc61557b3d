import Foundation
import XCTest
import KernelsC
@testable import Engine
@testable import Calibrate

final class SafetensorsTests: XCTestCase {
    var dir: FormatTempDir!
    override func setUpWithError() throws { dir = try FormatTempDir("safetensors") }
    override func tearDown() { dir.remove() }

    /// A safetensors file with a hand-written header (padded to 8 bytes like the reference).
    func rawFile(_ name: String, header: String, data: [UInt8], pad: Bool = true) throws -> String {
        var h = Array(header.utf8)
        if pad { while h.count % 8 != 0 { h.append(0x20) } }
        var bytes: [UInt8] = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) }
        bytes += h + data
        try dir.write(name, bytes: bytes)
        return dir.file(name)
    }

    func testRoundTripExactInAllDtypes() throws {
        var rng = FormatTestRNG(seed: 1)
        let f32 = rng.floats(6 * 5, scale: 3)
        // Values exactly representable in the narrow types: decode random finite bit patterns.
        let f16 = (0..<24).map { _ -> Float in
            var b: UInt16
            repeat { b = UInt16.random(in: 0...UInt16.max, using: &rng) } while (b >> 10) & 0x1F == 0x1F
            return tsr_f16_to_f32(b)
        }
        let bf16 = (0..<7).map { _ -> Float in
            var b: UInt16
            repeat { b = UInt16.random(in: 0...UInt16.max, using: &rng) } while (b >> 7) & 0xFF == 0xFF
            return Float(bitPattern: UInt32(b) << 16)
        }
        let path = dir.file("rt.safetensors")
        try SafetensorsWriter.write(tensors: [
            .init(name: "a.f32", shape: [6, 5], values: f32, dtype: .f32),
            .init(name: "b.f16", shape: [2, 3, 4], values: FloatBuffer(f16), dtype: .f16),
            .init(name: "c.bf16", shape: [7], values: bf16, dtype: .bf16),
            .init(name: "d.scalar", shape: [], values: [42.5], dtype: .f32),
            .init(name: "e.empty", shape: [0, 3], values: [], dtype: .f16),
        ], metadata: ["format": "pt", "quote\"d": "line\nbreak"], to: path)

        let st = try SafetensorsFile(path: path)
        XCTAssertEqual(st.metadata, ["format": "pt", "quote\"d": "line\nbreak"])
        XCTAssertEqual(st.dataOffset % 8, 0, "header must be padded to 8 bytes")
        XCTAssertEqual(st.tensors.map(\.name), ["a.f32", "b.f16", "c.bf16", "d.scalar", "e.empty"])
        XCTAssertEqual(st.tensor("a.f32")?.shape, [6, 5])
        XCTAssertEqual(st.tensor("b.f16")?.dtype, .f16)
        XCTAssertEqual(st.tensor("d.scalar")?.shape, [])
        XCTAssertEqual(try st.floatData("a.f32").array, f32)
        XCTAssertEqual(try st.floatData("b.f16").array, f16)
        XCTAssertEqual(try st.floatData("c.bf16").array, bf16)
        XCTAssertEqual(try st.floatData("d.scalar").array, [42.5])
        XCTAssertEqual(try st.floatData("e.empty").count, 0)
        // The padding is spaces, and nothing is left behind by the atomic write.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(bytes[st.dataOffset - 1], 0x20)
        XCTAssertEqual(dir.contents, ["rt.safetensors"])
    }

    func testNarrowEncodingsRoundToNearestEven() {
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(1 + 0x1p-8), 0x3F80)          // tie → even (down)
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(1 + 3 * 0x1p-8), 0x3F82)      // tie → even (up)
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(1 + 0x1p-8 + 0x1p-12), 0x3F81)
        XCTAssertTrue(Float(bitPattern: UInt32(SafetensorsWriter.bfloat16Bits(.nan)) << 16).isNaN)
        XCTAssertEqual(SafetensorsWriter.encode(FloatBuffer([Float(1) + 0x1p-11]), as: .f16), [0x00, 0x3C])
    }

    func testUnalignedOffsetsDecode() throws {
        // A 1-byte U8 tensor first puts the F32 and F16 data at odd offsets.
        let values: [Float] = [1.5, -2.25]
        var data: [UInt8] = [7]
        for v in values { data += withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        data += [0x00, 0x3C]  // f16 1.0
        let path = try rawFile("u.safetensors", header: """
            {"flag":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},\
            "w":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},\
            "h":{"dtype":"F16","shape":[1],"data_offsets":[9,11]}}
            """, data: data)
        let st = try SafetensorsFile(path: path)
        XCTAssertEqual(try st.floatData("w").array, values)
        XCTAssertEqual(try st.floatData("h").array, [1])
        // U8 is a known dtype: the file opens, but the tensor cannot be read as floats.
        let e = assertFormatError(try st.floatData("flag"))
        XCTAssertTrue("\(e!)".contains("U8"), "\(e!)")
        XCTAssertEqual(assertFormatError(try st.floatData("nope")), .missingTensor(path: path, tensor: "nope"))
    }

    func testCorruptFilesGiveDistinctClearErrors() throws {
        let f32x2 = [UInt8](repeating: 0, count: 8)
        func open(_ name: String, _ header: String, data: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0]) throws -> FormatError? {
            assertFormatError(try SafetensorsFile(path: try rawFile(name, header: header, data: data)))
        }
        var messages: [String] = []
        func expect(_ e: FormatError?, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
            guard let e else { return }
            let m = "\(e)"
            for f in fragments { XCTAssertTrue(m.contains(f), "'\(m)' lacks '\(f)'", file: file, line: line) }
            messages.append(m)
        }

        // Shorter than the length prefix.
        try dir.write("tiny.safetensors", bytes: [1, 2, 3])
        let tiny = assertFormatError(try SafetensorsFile(path: dir.file("tiny.safetensors")))
        if case .truncated = tiny {} else { XCTFail("\(String(describing: tiny))") }
        expect(tiny, ["header length"])

        // Header length beyond the file.
        try dir.write("long.safetensors", bytes: withUnsafeBytes(of: UInt64(1000).littleEndian) { Array($0) } + Array("{}".utf8))
        let long = assertFormatError(try SafetensorsFile(path: dir.file("long.safetensors")))
        if case .truncated = long {} else { XCTFail("\(String(describing: long))") }
        expect(long, ["safetensors header", "1008"])

        // Absurd header length.
        try dir.write("huge.safetensors", bytes: withUnsafeBytes(of: UInt64.max.littleEndian) { Array($0) } + [0x7B, 0x7D])
        expect(assertFormatError(try SafetensorsFile(path: dir.file("huge.safetensors"))), ["truncated"])

        expect(try open("json.safetensors", "{\"w\": {\"dtype\": \"F32\",, }"), ["not valid JSON"])
        expect(try open("array.safetensors", "[1, 2, 3]"), ["not a JSON object"])
        expect(try open("dtype.safetensors", #"{"w":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}"#), ["'w'", "unknown dtype 'F128'"])
        expect(try open("noshape.safetensors", #"{"w":{"dtype":"F32","data_offsets":[0,8]}}"#), ["'w'", "'shape'"])
        expect(try open("negshape.safetensors", #"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#), ["'w'", "non-negative"])
        expect(try open("fracshape.safetensors", #"{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#), ["'w'", "non-negative integer"])
        expect(try open("nooffsets.safetensors", #"{"w":{"dtype":"F32","shape":[2]}}"#), ["'w'", "data_offsets"])
        expect(try open("order.safetensors", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#), ["'w'", "not ordered"])
        expect(try open("size.safetensors", #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#), ["'w'", "span 8 bytes", "needs 12"])
        let past = try open("past.safetensors", #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: f32x2)
        if case .truncated = past {} else { XCTFail("\(String(describing: past))") }
        expect(past, ["data of tensor 'w'"])
        expect(try open("far.safetensors", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[9223372036854775800,9223372036854775807]}}"#),
               ["'w'", "beyond"])
        expect(try open("meta.safetensors", #"{"__metadata__":{"k":3}}"#), ["__metadata__.k", "string"])
        expect(try open("entry.safetensors", #"{"w":[1,2]}"#), ["'w'", "not a JSON object"])

        XCTAssertEqual(Set(messages).count, messages.count, "every corruption should have its own message")

        // A file truncated inside its data section.
        let good = dir.file("good.safetensors")
        try SafetensorsWriter.write(tensors: [.init(name: "w", shape: [4, 4], values: [Float](repeating: 1, count: 16))], to: good)
        let full = try Data(contentsOf: URL(fileURLWithPath: good))
        try full.prefix(full.count - 3).write(to: URL(fileURLWithPath: dir.file("cut.safetensors")))
        let cut = assertFormatError(try SafetensorsFile(path: dir.file("cut.safetensors")))
        if case .truncated = cut {} else { XCTFail("\(String(describing: cut))") }
    }

    func testWriterRejectsBadInput() throws {
        let path = dir.file("bad.safetensors")
        XCTAssertNotNil(assertFormatError(try SafetensorsWriter.write(tensors: [.init(name: "w", shape: [2, 2], values: [1, 2, 3])], to: path)))
        XCTAssertNotNil(assertFormatError(try SafetensorsWriter.write(
            tensors: [.init(name: "w", shape: [1], values: [1]), .init(name: "w", shape: [1], values: [1])], to: path)))
        XCTAssertNotNil(assertFormatError(try SafetensorsWriter.write(tensors: [.init(name: "w", shape: [1], values: [1], dtype: .i32)], to: path)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(dir.contents, [], "no temporary files left behind")
    }

    func testFuzzedHeadersNeverCrash() throws {
        var rng = FormatTestRNG(seed: 0x5AFE)
        let good = dir.file("good.safetensors")
        try SafetensorsWriter.write(tensors: [
            .init(name: "model.embed_tokens.weight", shape: [4, 8], values: rng.floats(32), dtype: .bf16),
            .init(name: "model.norm.weight", shape: [8], values: rng.floats(8), dtype: .f32),
            .init(name: "lm_head.weight", shape: [4, 8], values: rng.floats(32), dtype: .f16),
        ], metadata: ["format": "pt"], to: good)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        let headerEnd = try SafetensorsFile(path: good).dataOffset
        var opened = 0, rejected = 0
        let interesting: [UInt8] = Array("{}[]\",:0123456789-.eE ".utf8) + [0, 0xFF, 0x80]
        for i in 0..<400 {
            var bytes = original
            if i % 10 == 9 {
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            } else {
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let at = Int.random(in: 0..<headerEnd, using: &rng)
                    bytes[at] = Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
                }
            }
            let path = dir.file("fuzz-\(i).safetensors")
            try dir.write("fuzz-\(i).safetensors", bytes: bytes)
            do {
                let st = try SafetensorsFile(path: path)
                for t in st.tensors { _ = try? st.floatData(t) }
                opened += 1
            } catch let e as FormatError {
                XCTAssertFalse(e.description.isEmpty)
                rejected += 1
            }
            try FileManager.default.removeItem(atPath: path)
        }
        XCTAssertEqual(opened + rejected, 400)
        XCTAssertGreaterThan(rejected, 100)
    }
}
