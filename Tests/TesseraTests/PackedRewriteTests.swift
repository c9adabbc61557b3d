import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// The pieces calibrate, tune and average share: the zero point read from stored tensors, the
/// "packed file with tensors replaced" writer (PackedRewrite) and the checkpoint folder.
final class PackedRewriteTests: XCTestCase {
    /// A W4g32 RTN file of the tiny calibration model, with the given zero point and embedding.
    func rtnFile(zeroPoint: ZeroPoint, embedding: PackedFormat.Embedding = .f16) throws -> PackedModelSource {
        let path = temporaryPath("rtn-\(zeroPoint.label)-\(embedding.rawValue).gguf")
        try RoundToNearest.write(source: CalibrationTests.tinySource(), tokenizer: nil,
                                 scheme: .init(bits: 4, group: 32, zeroPoint: zeroPoint, embedding: embedding), to: path)
        return try PackedModelSource(gguf: GGUFFile(path: path))
    }

    /// Every stored tensor's bytes, by name.
    func storedBytes(_ s: PackedModelSource) -> [String: Data] {
        Dictionary(uniqueKeysWithValues: s.gguf.tensors.map { ($0.name, Data(bytes: s.gguf.data(of: $0), count: $0.byteCount)) })
    }

    /// RTN with an integer zero point reads back as integer at every width, with a float one as
    /// float; one offset moved off −z·s makes a tensor float.
    func testZeroPointIsReadFromTheStoredOffsets() throws {
        let source = CalibrationTests.tinySource()
        let w = try source.floatTensor(TensorName.block(0, "ffn_down"))
        for bits in QuantizedTensor.supportedBits {
            let integer = try GroupQuantizer.rtn(weights: w.pointer, rows: 64, cols: 96, bits: bits, group: 32, zeroPoint: .integer)
            XCTAssertEqual(integer.zeroPoint, .integer, "W\(bits)")
            let float = try GroupQuantizer.rtn(weights: w.pointer, rows: 64, cols: 96, bits: bits, group: 32, zeroPoint: .float)
            XCTAssertEqual(float.zeroPoint, .float, "W\(bits)")
            var moved = integer
            moved.offsets[5] = (Float16(bitPattern: moved.offsets[5]) + Float16(bitPattern: moved.scales[5]) * 0.25).bitPattern
            XCTAssertEqual(moved.zeroPoint, .float, "W\(bits)")
        }
        // A calibrated layer (offset −z·s·f from the fp32 grid) is integer too.
        let layer = RoundingLayer(name: "x", weights: w.pointer, rows: 64, cols: 96, bits: 2, group: 32)
        layer.u = layer.u.indices.map { Float($0 % 7) * 0.3 - 1 }
        layer.hardenToNearest()
        XCTAssertEqual(try layer.packed().zeroPoint, .integer)
    }

    /// The writer: the replaced tensors hold what was given, every other tensor is byte-identical
    /// to the base's, every checksum verifies (the file opens), the base's calibration keys and
    /// method carry over, and the labels follow from the tensors: a replaced linear with free
    /// offsets makes the file `float`; replacing nothing keeps `integer`.
    func testRewriteReplacesNamedTensorsAndCopiesTheRest() throws {
        let base = try rtnFile(zeroPoint: .integer, embedding: .q8)
        XCTAssertEqual(base.scheme.zeroPoint, .integer)
        let linear = TensorName.block(0, "attn_q"), norm = TensorName.block(1, "ffn_norm")
        var tuned = try base.quantizedTensor(linear)
        for k in tuned.offsets.indices {
            tuned.offsets[k] = (Float16(bitPattern: tuned.offsets[k]) + Float16(bitPattern: tuned.scales[k]) * 0.375).bitPattern
        }
        XCTAssertEqual(tuned.zeroPoint, .float)
        let newNorm = FloatBuffer(count: 64)
        for i in 0..<64 { newNorm[i] = 1 + Float(i) / 64 }

        let path = temporaryPath("rewritten.gguf")
        let scheme = try PackedRewrite.write(copying: base, metadata: [("tessera.test", "yes")], to: path) { name in
            switch name {
            case linear: return .quantized(tuned)
            case norm: return .f32(newNorm)
            default: return nil
            }
        }
        let out = try PackedModelSource(gguf: GGUFFile(path: path))   // checks every tensor's checksum
        XCTAssertEqual(scheme, out.scheme)
        XCTAssertEqual(out.scheme, PackedFormat.Scheme(bits: 4, group: 32, activation: .a16, zeroPoint: .float, embedding: .q8))
        XCTAssertEqual(out.gguf.string("tessera.zero_point"), "float")
        XCTAssertEqual(out.gguf.string("tessera.method"), "rtn")
        XCTAssertEqual(out.gguf.string("tessera.test"), "yes")
        XCTAssertEqual(try out.quantizedTensor(linear), tuned)
        XCTAssertEqual(try out.floatTensor(norm).array, newNorm.array)
        let before = storedBytes(base), after = storedBytes(out)
        XCTAssertEqual(Set(before.keys), Set(after.keys))
        let replaced = Set([norm] + [PackedFormat.codesSuffix, PackedFormat.scalesSuffix, PackedFormat.offsetsSuffix].map { linear + $0 })
        for (name, bytes) in before where !replaced.contains(name) { XCTAssertEqual(after[name], bytes, name) }
        XCTAssertEqual(after[linear + PackedFormat.codesSuffix], before[linear + PackedFormat.codesSuffix], "same codes")
        XCTAssertNotEqual(after[linear + PackedFormat.offsetsSuffix], before[linear + PackedFormat.offsetsSuffix])

        // Nothing replaced: every tensor as it was, and the label stays integer.
        let copy = temporaryPath("copy.gguf")
        XCTAssertEqual(try PackedRewrite.write(copying: base, metadata: [], to: copy) { _ in nil }.zeroPoint, .integer)
        let copied = try PackedModelSource(gguf: GGUFFile(path: copy))
        XCTAssertEqual(copied.gguf.string("tessera.zero_point"), "integer")
        XCTAssertEqual(storedBytes(copied), before)
        // And a float file stays float.
        let float = try rtnFile(zeroPoint: .float)
        XCTAssertEqual(try PackedRewrite.write(copying: float, metadata: [], to: temporaryPath("f.gguf")) { _ in nil }.zeroPoint, .float)
    }

    /// A block linear of other bits than the file's is refused in one line.
    func testRewriteRefusesALinearOfAnotherScheme() throws {
        let base = try rtnFile(zeroPoint: .integer)
        let name = TensorName.block(1, "ffn_up")
        let w = try base.floatTensor(name)
        let other = try GroupQuantizer.rtn(weights: w.pointer, rows: 96, cols: 64, bits: 2, group: 32)
        XCTAssertThrowsError(try PackedRewrite.write(copying: base, metadata: [], to: temporaryPath("bad.gguf")) {
            $0 == name ? .quantized(other) : nil
        }) { error in
            XCTAssertTrue("\(error)".contains("\(name) is W2g32, not the file's W4g32"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
    }

    struct TestState: CheckpointState, Equatable {
        var fingerprint: [String]
        var step: Int
    }

    /// The checkpoint folder: a fresh start creates it; an existing state needs resume and the
    /// same fingerprint, and the refusal names the settings that differ; arrays round-trip.
    func testCheckpointRefusesWithoutResumeAndNamesChangedSettings() throws {
        let output = temporaryPath("out.gguf")
        let checkpoint = Checkpoint<TestState>(output: output, suffix: ".test")
        let print = ["steps=30", "lr=0.01", "seed=42"]
        XCTAssertNil(try checkpoint.open(fingerprint: print, resume: false))
        XCTAssertTrue(FileManager.default.fileExists(atPath: output + ".test"))
        try checkpoint.save(TestState(fingerprint: print, step: 7))
        XCTAssertThrowsError(try checkpoint.open(fingerprint: print, resume: false)) { XCTAssertTrue("\($0)".contains("pass --resume"), "\($0)") }
        XCTAssertEqual(try checkpoint.open(fingerprint: print, resume: true), TestState(fingerprint: print, step: 7))
        XCTAssertThrowsError(try checkpoint.open(fingerprint: ["steps=31", "lr=0.01", "seed=42", "norms=true"], resume: true)) {
            XCTAssertTrue("\($0)".contains("other settings: steps=30 (now 31), no norms (now norms=true); use the same flags or delete it"), "\($0)")
        }
        try checkpoint.writeArrays([[1, 2, 3], [4]], to: "a.bin")
        XCTAssertEqual(try checkpoint.readArrays("a.bin", counts: [3, 1]), [[1, 2, 3], [4]])
        XCTAssertThrowsError(try checkpoint.readArrays("a.bin", counts: [3, 2])) { XCTAssertTrue("\($0)".contains("truncated")) }
        checkpoint.removeAll()
        XCTAssertFalse(FileManager.default.fileExists(atPath: output + ".test"))
    }
}
