import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// The canonical code layout of packed files (format 2), the kernels' load-time repack, the
/// conversion of format-1 files, and the binder's rules.
final class CanonicalLayoutTests: XCTestCase {
    func tempPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tessera-canon-\(UUID().uuidString).gguf").path
    }

    /// Random codes of `bits` for a [rows, cols] tensor.
    static func randomCodes(bits: Int, count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next() % UInt64(1 << bits)) }
    }

    static func randomTensor(bits: Int, group: Int, rows: Int, cols: Int, seed: UInt64) throws -> QuantizedTensor {
        var rng = SplitMix64(seed: seed ^ 0x5eed)
        let groups = rows * cols / group
        let halves = (0..<2 * groups).map { _ in Float16(Float(rng.next() % 2000) / 1000 - 1).bitPattern }
        return try QuantizedTensor(bits: bits, group: group, rows: rows, cols: cols,
                                   unpacked: randomCodes(bits: bits, count: rows * cols, seed: seed),
                                   scales: Array(halves[..<groups]), offsets: Array(halves[groups...]))
    }

    /// Each row is a little-endian bit stream: code k of a row occupies bits k·B ..< (k+1)·B
    /// of the row's bytes, least significant bit first (docs/FORMAT.md).
    func testCanonicalLayoutIsALittleEndianBitStreamPerRow() throws {
        for bits in QuantizedTensor.supportedBits {
            for (rows, cols) in [(1, 32), (3, 96), (5, 576)] {
                let q = Self.randomCodes(bits: bits, count: rows * cols, seed: UInt64(bits * 1000 + cols))
                let t = try QuantizedTensor(bits: bits, group: 32, rows: rows, cols: cols, unpacked: q,
                                            scales: .init(repeating: 0, count: rows * cols / 32),
                                            offsets: .init(repeating: 0, count: rows * cols / 32))
                XCTAssertEqual(t.rowBytes, cols * bits / 8)
                XCTAssertEqual(t.codes.count, rows * cols * bits / 8)
                for r in 0..<rows {
                    let row = Array(t.codes[r * t.rowBytes..<(r + 1) * t.rowBytes])
                    for k in 0..<cols {
                        var v = 0
                        for b in 0..<bits {
                            let bit = k * bits + b
                            v |= Int((row[bit / 8] >> (bit % 8)) & 1) << b
                        }
                        XCTAssertEqual(UInt8(v), q[r * cols + k], "B=\(bits) [\(rows)x\(cols)] row \(r) code \(k)")
                        XCTAssertEqual(t.code(row: r, k), q[r * cols + k])
                    }
                }
                XCTAssertEqual(t.unpackedCodes(), q)
            }
        }
    }

    /// The kernels' repack (tsr_q_from_canonical) and its inverse round-trip every code, scale
    /// and offset, and the repacked weights dequantize to the canonical tensor's values.
    func testKernelRepackRoundTripsAndDequantizesAlike() throws {
        for bits in QuantizedTensor.supportedBits {
            for (rows, cols, group) in [(1, 32, 32), (7, 64, 64), (4, 96, 32), (3, 576, 64), (2, 160, 160), (13, 96, 32)] {
                let t = try Self.randomTensor(bits: bits, group: group, rows: rows, cols: cols, seed: UInt64(rows * 7919 + cols + bits))
                let packed = try PackedWeights(t)
                let back = packed.canonical
                let label = "B=\(bits) [\(rows)x\(cols)] g\(group)"
                XCTAssertEqual(back.codes, t.codes, label)
                XCTAssertEqual(back.scales, t.scales, label)
                XCTAssertEqual(back.offsets, t.offsets, label)
                XCTAssertEqual(packed.dequantize().array, t.dequantize().array, label)
            }
        }
    }

    /// Format-1 codes (the kernels' block layout of the time), written here from the
    /// documented layout.
    static func legacyBlocks(_ t: QuantizedTensor) -> [UInt8] {
        let q = t.unpackedCodes(), blockBytes = 4 * t.bits
        var out = [UInt8](repeating: 0, count: q.count / 32 * blockBytes)
        for b in 0..<q.count / 32 {
            let s = Array(q[32 * b..<32 * b + 32]), o = b * blockBytes
            switch t.bits {
            case 8: for j in 0..<32 { out[o + j] = s[j] }
            case 4: for j in 0..<16 { out[o + j] = s[j] | s[j + 16] << 4 }
            default:
                for j in 0..<8 { out[o + j] = (s[j] & 3) | (s[j + 8] & 3) << 2 | (s[j + 16] & 3) << 4 | (s[j + 24] & 3) << 6 }
                if t.bits == 3 {
                    for j in 0..<32 where s[j] & 4 != 0 { out[o + 8 + j / 8] |= 1 << (j % 8) }
                }
            }
        }
        return out
    }

    /// A format-1 copy of the packed file at `path`: the same tensors and keys, codes in the
    /// old block layout, version 1, fresh checksums.
    static func writeVersion1(of path: String, to out: String) throws {
        let gguf = try GGUFFile(path: path)
        let source = try PackedModelSource(gguf: gguf)
        var w = GGUFWriter()
        for key in gguf.metadataKeys where !key.hasPrefix("tessera.checksum.") {
            w.set(key, gguf.metadata[key]!)
        }
        w.set("tessera.format_version", .uint32(1))
        for t in gguf.tensors {
            let bytes = UnsafeRawBufferPointer(start: gguf.data(of: t), count: t.byteCount)
            if t.name.hasSuffix(PackedFormat.codesSuffix) {
                let name = String(t.name.dropLast(PackedFormat.codesSuffix.count))
                let v1 = legacyBlocks(try source.quantizedTensor(name))
                XCTAssertEqual(v1.count, t.byteCount, t.name)
                try v1.withUnsafeBytes { try w.addTensor(name: t.name, shape: t.shape, type: t.type, bytes: $0) }
            } else {
                try w.addTensor(name: t.name, shape: t.shape, type: t.type, bytes: bytes)
            }
        }
        try PackedFormat.addChecksums(&w)
        try w.write(to: out)
    }

    /// A format-1 file loads to the same weights and logits as its format-2 twin.
    func testVersion1FilesLoadLikeVersion2() throws {
        let config = PackedModelTests.config
        let memory = InMemorySource(config: config, seed: 11)
        for (bits, embedding) in [(2, PackedFormat.Embedding.q4), (3, .q8), (4, .f16), (8, .q4)] {
            let v2 = tempPath(), v1 = tempPath()
            defer { for p in [v1, v2] { try? FileManager.default.removeItem(atPath: p) } }
            try RoundToNearest.write(source: memory, tokenizer: nil, scheme: .init(bits: bits, group: 32, embedding: embedding), to: v2)
            try Self.writeVersion1(of: v2, to: v1)
            let new = try XCTUnwrap(try ModelLoader.open(v2) as? PackedModelSource)
            let old = try XCTUnwrap(try ModelLoader.open(v1) as? PackedModelSource)
            XCTAssertEqual([new.version, old.version], [PackedFormat.version, 1])
            for (name, _) in config.requiredTensorShapes where new.isPacked(name) {
                let a = try new.quantizedTensor(name), b = try old.quantizedTensor(name)
                XCTAssertEqual(a.codes, b.codes, "B=\(bits) \(name)")
                XCTAssertEqual(a.scales, b.scales, name)
                XCTAssertEqual(a.offsets, b.offsets, name)
            }
            let tokens: [Int32] = [1, 50, 96, 3, 17]
            let pool = ThreadPool(threads: 2)
            let la = try InferenceSession(model: WeightBinder(source: new).model(pool: pool), contextLength: 16).forward(tokens, logitRows: tokens.count)
            let lb = try InferenceSession(model: WeightBinder(source: old).model(pool: pool), contextLength: 16).forward(tokens, logitRows: tokens.count)
            XCTAssertEqual(la, lb, "B=\(bits)")
        }
    }

    /// A version this Tessera does not read is refused in one line that says what to do.
    func testUnknownVersionIsRefusedWithTheCommandToRecreate() throws {
        let path = tempPath(), bad = tempPath()
        defer { for p in [path, bad] { try? FileManager.default.removeItem(atPath: p) } }
        try RoundToNearest.write(source: InMemorySource(config: PackedModelTests.config, seed: 12), tokenizer: nil,
                                 scheme: .init(bits: 4, group: 32), to: path)
        let gguf = try GGUFFile(path: path)
        var w = GGUFWriter()
        for key in gguf.metadataKeys { w.set(key, gguf.metadata[key]!) }
        w.set("tessera.format_version", .uint32(UInt32(PackedFormat.version + 1)))
        for t in gguf.tensors {
            try w.addTensor(name: t.name, shape: t.shape, type: t.type, bytes: UnsafeRawBufferPointer(start: gguf.data(of: t), count: t.byteCount))
        }
        try w.write(to: bad)
        XCTAssertThrowsError(try ModelLoader.open(bad)) { error in
            let text = "\(error)"
            XCTAssertFalse(text.contains("\n"), text)
            XCTAssertTrue(text.contains("version \(PackedFormat.version + 1)") && text.contains("tessera quantize"), text)
        }
    }

    /// The binder: stored quantized linears run on the low-bit kernels with the file's
    /// activation mode unless overridden; `.fp32` decodes them; fp32 sources stay fp32; the
    /// tied head is the table itself.
    func testWeightBinderRules() throws {
        let config = PackedModelTests.config
        let memory = InMemorySource(config: config, seed: 13)
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RoundToNearest.write(source: memory, tokenizer: nil,
                                 scheme: .init(bits: 3, group: 32, activation: .a8, embedding: .q8), to: path)
        let packed = try ModelLoader.open(path)
        let pool = ThreadPool(threads: 1)
        func check(_ model: LlamaModel, _ expected: ActivationMode?, _ label: String) throws {
            for block in model.blocks {
                for (role, l) in zip(BlockLinear.allCases, block.linears) {
                    if let mode = expected {
                        let q = try XCTUnwrap(l as? QuantizedLinear, "\(label) \(role)")
                        XCTAssertEqual(q.activation, mode, "\(label) \(role)")
                        XCTAssertEqual(q.weights.bits, 3, "\(label) \(role)")
                    } else {
                        XCTAssertTrue(l is FP32Linear, "\(label) \(role)")
                    }
                }
            }
            XCTAssertTrue(model.output === model.tokenEmbedding, label)
        }
        try check(WeightBinder(source: packed).model(pool: pool), .a8, "file's mode")
        try check(WeightBinder(source: packed, activation: .a16).model(pool: pool), .a16, "override")
        try check(WeightBinder(source: packed, linears: .fp32).model(pool: pool), nil, "fp32")
        try check(WeightBinder(source: memory).model(pool: pool), nil, "fp32 source")
        // A per-token file: its clipping ratio reaches every quantized linear, unless overridden.
        let tokenPath = tempPath()
        defer { try? FileManager.default.removeItem(atPath: tokenPath) }
        var tokenScheme = PackedFormat.Scheme(bits: 3, group: 32, activation: .a4Token, embedding: .q8)
        tokenScheme.activationClip = 0.875
        try RoundToNearest.write(source: memory, tokenizer: nil, scheme: tokenScheme, to: tokenPath)
        let tokenFile = try ModelLoader.open(tokenPath)
        XCTAssertEqual(tokenFile.storedActivation, .a4Token)
        XCTAssertEqual(tokenFile.storedActivationClip, 0.875)
        for (binder, clip) in [(WeightBinder(source: tokenFile), Float(0.875)), (WeightBinder(source: tokenFile, activationClip: 0.5), 0.5)] {
            try check(binder.model(pool: pool), .a4Token, "per-token file")
            let q = try XCTUnwrap(binder.model(pool: pool).blocks[0].linears[0] as? QuantizedLinear)
            XCTAssertEqual(q.activationClip, clip)
        }
        // The q8 table stays quantized under `.fp32` (tables keep their stored form).
        let table = try XCTUnwrap(WeightBinder(source: packed, linears: .fp32).model(pool: pool).tokenEmbedding as? QuantizedLinear)
        XCTAssertEqual(table.weights.bits, 8)
        // A wrong shape is named.
        XCTAssertThrowsError(try WeightBinder(source: packed).linear(TensorName.block(0, .linear(.query)), out: 1, in: 64)) { error in
            XCTAssertTrue("\(error)".contains("attn_q"), "\(error)")
        }
    }
}
