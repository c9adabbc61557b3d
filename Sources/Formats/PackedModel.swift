import Architecture
import Core
import Foundation
import Tokenizer

/// Tessera's packed model file: a GGUF container (so gguf-dump and friends list it) holding
/// the standard `general.*`, `llama.*` and `tokenizer.*` keys, and for every low-bit linear
/// `X.weight` three tensors:
///
///   `X.weight.codes`   I8  [rows, cols·B/8]  codes in the canonical layout (QuantizedTensor:
///                                            per row a little-endian bit stream, code k at
///                                            bits k·B ..< (k+1)·B)
///   `X.weight.scales`  F16 [rows, groups]    per-group scale s
///   `X.weight.offsets` F16 [rows, groups]    per-group offset m   (w = q·s + m)
///
/// Norms stay F32, the embedding table is F16 (or packed like a linear). `tessera.*` keys:
/// format_version, bits, group (0 = whole row), activation (a16/a8/a4), zero_point
/// (float/integer), embedding (f16/q8/q6/q4), method, the rotation when the source has one
/// (`RotationRecord`), and `tessera.checksum.<tensor>` (FNV-1a 64
/// of each tensor's bytes) so a damaged file names the tensor that is wrong.
///
/// Version 2 stores the canonical layout; version 1 stored the kernels' block layout of the
/// time (KernelsQuant.h before the load-time repack) and is converted when it loads.
public enum PackedFormat {
    public static let version = 2
    /// Versions this Tessera reads (1 is converted at load).
    public static let readableVersions = 1...2
    public static let codesSuffix = ".codes", scalesSuffix = ".scales", offsetsSuffix = ".offsets"

    /// How the embedding table (and a tied output head) is stored.
    public enum Embedding: String, CaseIterable, Sendable {
        case f16, q8, q6, q4

        /// Quantized forms: their code bits, in groups of `group` with free offsets (nil: f16).
        public var bits: Int? {
            switch self {
            case .f16: return nil
            case .q8: return 8
            case .q6: return 6
            case .q4: return 4
            }
        }
        public static let group = 32

        /// The quantized form with `bits`-bit codes in groups of `group`, if there is one.
        public static func quantized(bits: Int, group: Int) -> Embedding? {
            group == Embedding.group ? allCases.first { $0.bits == bits } : nil
        }
    }

    /// What a packed file's `tessera.*` scheme keys say.
    public struct Scheme: Sendable, Equatable {
        public var bits: Int
        /// Weights per group; 0 = one group per row.
        public var group: Int
        public var activation: ActivationMode
        /// Per-token activations: the clipping ratio of their scale (`tessera.activation_clip`,
        /// written only when not 1).
        public var activationClip: Float = 1
        /// The block linears' zero point (`QuantizedTensor.zeroPoint` says which); packed
        /// embeddings always have free offsets. Files made from another model (calibrate, tune,
        /// average: `PackedRewrite`) take it from the tensors they write.
        public var zeroPoint: ZeroPoint
        public var embedding: Embedding

        public init(bits: Int, group: Int, activation: ActivationMode = .a16, zeroPoint: ZeroPoint = .float, embedding: Embedding = .f16) {
            self.bits = bits
            self.group = group
            self.activation = activation
            self.zeroPoint = zeroPoint
            self.embedding = embedding
        }
    }

    /// FNV-1a 64 of a byte range.
    public static func checksum(_ p: UnsafeRawPointer, _ count: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let bytes = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<count { h = (h ^ UInt64(bytes[i])) &* 0x100_0000_01b3 }
        return h
    }

    public static func isBlockLinear(_ name: String) -> Bool {
        name.hasPrefix("blk.") && !name.hasSuffix("_norm.weight")
    }

    /// What the writer stores for one tensor.
    public enum TensorContent {
        /// Stored F32 (norms).
        case f32(FloatBuffer)
        /// A 2-D table stored F16 (an `f16` embedding).
        case f16(FloatBuffer)
        /// Group-quantized weights (block linears; `q8`/`q6`/`q4` embeddings).
        case quantized(QuantizedTensor)
    }

    /// Writes a packed file atomically: every tensor the config requires, each as `content`
    /// says; `metadata` adds string keys (e.g. `tessera.calibration.*`).
    /// `progress` is called with (tensor name, index, count). `settledScheme`, when given, is
    /// called after the last tensor is made and its labels replace `scheme`'s in place (the keys
    /// keep their position), for writers whose labels follow from the tensors they write.
    public static func write(source: ModelSource, tokenizer: Tokenizer?, scheme: Scheme, method: String,
                             metadata: [(String, String)] = [], to path: String,
                             progress: (String, Int, Int) -> Void = { _, _, _ in },
                             settledScheme: (() throws -> Scheme)? = nil,
                             content: (_ name: String, _ shape: [Int]) throws -> TensorContent) throws {
        let c = source.config
        var w = GGUFWriter()
        for (key, value) in c.ggufMetadata() { w.set(key, value) }
        if let tokenizer { for (key, value) in tokenizer.ggufMetadata() { w.set(key, value) } }
        if let template = source.chatTemplate { w.set("tokenizer.chat_template", .string(template)) }
        w.set("tessera.format_version", .uint32(UInt32(version)))
        w.set("tessera.method", .string(method))
        setScheme(&w, scheme)
        source.rotation?.write(&w)
        for (key, value) in metadata { w.set(key, .string(value)) }
        try c.addRopeFrequencies(to: &w)

        let tensors = c.requiredTensorShapes
        for (index, (name, shape)) in tensors.enumerated() {
            progress(name, index, tensors.count)
            switch try content(name, shape) {
            case .quantized(let q):
                guard q.rows == shape[0], q.cols == shape[1] else {
                    throw FormatError.shapeMismatch(tensor: name, expected: shape, found: [q.rows, q.cols])
                }
                try add(&w, name: name, q)
            case .f32(let values):
                try w.addTensor(name: name, shape: shape, values: values)
            case .f16(let values):
                try w.addTensor(name: name, shape: shape, values: values, type: .f16)
            }
        }
        if let settledScheme { setScheme(&w, try settledScheme()) }
        try addChecksums(&w)
        try w.write(to: path)
    }

    /// The scheme's `tessera.*` keys (replaced in place when already set).
    static func setScheme(_ w: inout GGUFWriter, _ scheme: Scheme) {
        w.set("tessera.bits", .uint32(UInt32(scheme.bits)))
        w.set("tessera.group", .uint32(UInt32(scheme.group)))
        w.set("tessera.activation", .string(scheme.activation.name))
        if scheme.activationClip != 1 { w.set("tessera.activation_clip", .float32(scheme.activationClip)) } else { w.remove("tessera.activation_clip") }
        w.set("tessera.zero_point", .string(scheme.zeroPoint.label))
        w.set("tessera.embedding", .string(scheme.embedding.rawValue))
    }

    /// Reads the three tensors of packed weights `name` [rows, cols] from a GGUF file written
    /// with format `version` (version 1's codes are converted to the canonical layout).
    public static func readQuantized(_ gguf: GGUFFile, name: String, rows: Int, cols: Int, version: Int = version) throws -> QuantizedTensor {
        let path = gguf.path
        guard let codes = gguf.tensor(name + codesSuffix),
              let scales = gguf.tensor(name + scalesSuffix),
              let offsets = gguf.tensor(name + offsetsSuffix) else {
            throw FormatError.missingTensor(path: path, tensor: name + codesSuffix)
        }
        let groups = scales.shape.last ?? 0
        guard groups > 0, cols % groups == 0, scales.shape == [rows, groups], offsets.shape == [rows, groups] else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "scales \(scales.shape) and offsets \(offsets.shape) do not fit [\(rows), \(cols)]")
        }
        // Packed embeddings may use their own bit width: infer it from the row size.
        let rowBytes = codes.shape.last ?? 0
        guard let bits = QuantizedTensor.supportedBits.first(where: { QuantizedTensor.rowBytes(bits: $0, cols: cols) == rowBytes }) else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "rows of \(rowBytes) bytes match no bit width for width \(cols)")
        }
        guard codes.byteCount == rows * rowBytes else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "codes have \(codes.byteCount) bytes, expected \(rows * rowBytes)")
        }
        func array<T>(_ t: GGUFTensorInfo, _: T.Type, _ n: Int) -> [T] {
            Array(UnsafeBufferPointer(start: gguf.data(of: t).assumingMemoryBound(to: T.self), count: n))
        }
        if version == 1 && !LegacyBlockLayout.bits.contains(bits) {
            throw FormatError.badTensor(path: path, tensor: name, reason: "\(bits)-bit codes in a version-1 file (version 1 had 2, 3, 4 and 8 bits only)")
        }
        var codeBytes = array(codes, UInt8.self, rows * rowBytes)
        if version == 1 { codeBytes = LegacyBlockLayout.canonical(codeBytes, bits: bits, rows: rows, cols: cols) }
        let q: QuantizedTensor
        do {
            q = try QuantizedTensor(bits: bits, group: cols / groups, rows: rows, cols: cols, codes: codeBytes,
                                    scales: array(scales, UInt16.self, rows * groups), offsets: array(offsets, UInt16.self, rows * groups),
                                    name: name)
        } catch let e as QuantizationError {
            throw FormatError.badTensor(path: path, tensor: name, reason: e.description)
        }
        // The copy is what runs: the file's pages need not stay resident next to it.
        for t in [codes, scales, offsets] { gguf.dropResidentPages(of: t) }
        return q
    }

    /// Adds the three tensors of quantized weights under `name`.
    public static func add(_ w: inout GGUFWriter, name: String, _ q: QuantizedTensor) throws {
        let groups = q.groupsPerRow
        try q.codes.withUnsafeBytes {
            try w.addTensor(name: name + codesSuffix, shape: [q.rows, q.rowBytes], type: .i8, bytes: $0)
        }
        try q.scales.withUnsafeBytes { try w.addTensor(name: name + scalesSuffix, shape: [q.rows, groups], type: .f16, bytes: $0) }
        try q.offsets.withUnsafeBytes { try w.addTensor(name: name + offsetsSuffix, shape: [q.rows, groups], type: .f16, bytes: $0) }
    }

    /// Records a checksum of every tensor added so far.
    public static func addChecksums(_ w: inout GGUFWriter) throws {
        for (name, bytes) in w.tensorBytes() {
            w.set("tessera.checksum.\(name)", .uint64(bytes.withUnsafeBytes { checksum($0.baseAddress!, $0.count) }))
        }
    }
}

/// A packed Tessera model file.
public final class PackedModelSource: ModelSource {
    public let gguf: GGUFFile
    public let config: LlamaConfig
    public let bits: Int
    public let group: Int
    public let activation: ActivationMode
    /// `tessera.activation_clip` (1 when absent).
    public let activationClip: Float
    /// The file's format version (1 is converted to the canonical layout as it is read).
    public let version: Int
    /// `tessera.rotation.*` (nil: not rotated).
    public let rotation: RotationRecord?
    private let shapes: [String: [Int]]

    public var path: String { gguf.path }
    public var chatTemplate: String? { gguf.string("tokenizer.chat_template") }

    public init(gguf: GGUFFile) throws {
        self.gguf = gguf
        let path = gguf.path
        guard let version = gguf.int("tessera.format_version") else { throw FormatError.missingKey(path: path, key: "tessera.format_version") }
        guard PackedFormat.readableVersions.contains(version) else {
            throw FormatError.badMetadata(path: path, key: "tessera.format_version",
                                          reason: "version \(version) is not supported (this Tessera reads versions \(PackedFormat.readableVersions.lowerBound)-\(PackedFormat.readableVersions.upperBound)); re-create the file with this Tessera's `tessera quantize` or `tessera calibrate`")
        }
        self.version = version
        var config = try GGUFModelSource.readConfig(gguf)
        // A separate head stored packed is `output.weight.codes`, not `output.weight`.
        if gguf.tensor(TensorName.output + PackedFormat.codesSuffix) != nil { config.tiedEmbeddings = false }
        self.config = config
        rotation = try RotationRecord.read(gguf)
        bits = try gguf.requireInt("tessera.bits")
        group = try gguf.requireInt("tessera.group")
        guard let act = gguf.string("tessera.activation").flatMap(ActivationMode.init(name:)) else {
            throw FormatError.badMetadata(path: path, key: "tessera.activation",
                                          reason: "expected one of \(ActivationMode.allCases.map(\.name).joined(separator: ", ")) (a newer Tessera's mode?)")
        }
        activation = act
        switch gguf.metadata["tessera.activation_clip"] {
        case nil: activationClip = 1
        case .float32(let c)? where c > 0 && c <= 1: activationClip = c
        default: throw FormatError.badMetadata(path: path, key: "tessera.activation_clip", reason: "expected a float32 in (0, 1]")
        }
        // Every tensor's checksum first: a damaged file names its damaged tensor.
        for t in gguf.tensors {
            guard case .uint64(let stored)? = gguf.metadata["tessera.checksum.\(t.name)"] else {
                throw FormatError.badTensor(path: path, tensor: t.name, reason: "has no checksum (not written by Tessera?)")
            }
            guard PackedFormat.checksum(gguf.data(of: t), t.byteCount) == stored else {
                throw FormatError.badTensor(path: path, tensor: t.name, reason: "checksum mismatch: the file is damaged")
            }
            gguf.dropResidentPages(of: t)
        }
        var shapes: [String: [Int]] = [:]
        for (name, expected) in config.requiredTensorShapes {
            if let t = gguf.tensor(name) {
                guard t.shape == expected else { throw FormatError.shapeMismatch(tensor: name, expected: expected, found: t.shape) }
            } else {
                guard let codes = gguf.tensor(name + PackedFormat.codesSuffix) else { throw FormatError.missingTensor(path: path, tensor: name) }
                guard codes.shape.first == expected[0] else {
                    throw FormatError.shapeMismatch(tensor: name + PackedFormat.codesSuffix, expected: [expected[0], codes.shape.last ?? 0], found: codes.shape)
                }
            }
            shapes[name] = expected
        }
        self.shapes = shapes
    }

    public func makeTokenizer() throws -> Tokenizer { try Tokenizer.fromGGUF(gguf) }
    public func hasTensor(_ name: String) -> Bool { shapes[name] != nil }
    public func tensorShape(_ name: String) -> [Int]? { shapes[name] }
    public var storedActivation: ActivationMode { activation }
    public var storedActivationClip: Float { activationClip }
    public func releaseResidentPages() { gguf.file.dropResidentPages() }

    /// The scheme the file's `tessera.*` keys state.
    public var scheme: PackedFormat.Scheme {
        var s = PackedFormat.Scheme(bits: bits, group: group, activation: activation,
                                    zeroPoint: gguf.string("tessera.zero_point") == "integer" ? .integer : .float,
                                    embedding: gguf.string("tessera.embedding").flatMap(PackedFormat.Embedding.init(rawValue:)) ?? .f16)
        s.activationClip = activationClip
        return s
    }

    /// Whether `name` is stored packed.
    public func isPacked(_ name: String) -> Bool { gguf.tensor(name) == nil && gguf.tensor(name + PackedFormat.codesSuffix) != nil }

    public func floatTensor(_ name: String) throws -> FloatBuffer {
        if gguf.tensor(name) != nil { return try gguf.floatData(name) }
        return try quantizedTensor(name).dequantize()
    }

    /// The quantized weights of `name`, copied out of the file (canonical layout).
    public func quantizedTensor(_ name: String) throws -> QuantizedTensor {
        guard let shape = shapes[name], shape.count == 2 else {
            throw FormatError.missingTensor(path: path, tensor: name + PackedFormat.codesSuffix)
        }
        return try PackedFormat.readQuantized(gguf, name: name, rows: shape[0], cols: shape[1], version: version)
    }

    /// Packed tensors as `.quantized`, F16 tables as `.f16`, the rest decoded to fp32.
    public func storedMatrix(_ name: String) throws -> StoredMatrix {
        if isPacked(name) { return .quantized(try quantizedTensor(name)) }
        return try GGUFModelSource.storedMatrix(gguf, name) ?? .float(floatTensor(name))
    }
}
extension PackedModelSource: GGUFTensorListing {}

/// Version 1 files stored codes in the kernels' block layout of the time: per 32-weight block,
/// B = 8: byte j = q[j]; B = 4: byte j = q[j] | q[j+16] << 4; B = 2: byte j = q[j] | q[j+8] << 2 |
/// q[j+16] << 4 | q[j+24] << 6; B = 3: the B = 2 bytes of (q & 3), then a little-endian uint32
/// whose bit j is bit 2 of q[j].
enum LegacyBlockLayout {
    /// The widths version 1 had.
    static let bits = [2, 3, 4, 8]

    static func code(_ block: UnsafePointer<UInt8>, bits: Int, _ j: Int) -> UInt8 {
        switch bits {
        case 8: return block[j]
        case 4: return j < 16 ? block[j] & 15 : block[j - 16] >> 4
        case 2: return (block[j & 7] >> (2 * (j >> 3))) & 3
        default: return ((block[j & 7] >> (2 * (j >> 3))) & 3) | (((block[8 + (j >> 3)] >> (j & 7)) & 1) << 2)
        }
    }

    /// Version-1 codes of [rows, cols] in the canonical layout.
    static func canonical(_ v1: [UInt8], bits: Int, rows: Int, cols: Int) -> [UInt8] {
        let blockBytes = 4 * bits
        var q = [UInt8](repeating: 0, count: rows * cols)
        v1.withUnsafeBufferPointer { src in
            for b in 0..<rows * cols / 32 {
                for j in 0..<32 { q[32 * b + j] = code(src.baseAddress! + b * blockBytes, bits: bits, j) }
            }
        }
        return QuantizedTensor.pack(q, bits: bits)
    }
}
