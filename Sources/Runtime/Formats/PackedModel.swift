import Foundation
import KernelsC

/// Tessera's packed model file: a GGUF container (so gguf-dump and friends list it) holding
/// the standard `general.*`, `llama.*` and `tokenizer.*` keys, and for every low-bit linear
/// `X.weight` three tensors:
///
///   `X.weight.codes`   I8  [rows, rowBytes]  codes in the kernels' block layout (KernelsQuant.h)
///   `X.weight.scales`  F16 [rows, groups]    per-group scale s
///   `X.weight.offsets` F16 [rows, groups]    per-group offset m   (w = q·s + m)
///
/// Norms stay F32, the embedding table is F16 (or packed like a linear). `tessera.*` keys:
/// format_version, bits, group (0 = whole row), activation (a16/a8/a4), zero_point
/// (float/integer), embedding (f16/q8/q4), method, and `tessera.checksum.<tensor>` (FNV-1a 64
/// of each tensor's bytes) so a damaged file names the tensor that is wrong.
public enum PackedFormat {
    public static let version = 1
    public static let codesSuffix = ".codes", scalesSuffix = ".scales", offsetsSuffix = ".offsets"

    /// How the embedding table (and a tied output head) is stored.
    public enum Embedding: String, CaseIterable, Sendable { case f16, q8, q4 }

    public struct Scheme: Sendable, Equatable {
        public var bits: Int
        /// Weights per group; 0 = one group per row.
        public var group: Int
        public var activation: ActivationMode
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

    static func isBlockLinear(_ name: String) -> Bool {
        name.hasPrefix("blk.") && !name.hasSuffix("_norm.weight")
    }

    /// What the writer stores for one tensor.
    public enum TensorContent {
        /// The scheme's default: norms F32, block linears RTN-packed, embedding/head per scheme.embedding.
        case standard
        /// fp32 values stored F32 (norms) or per the scheme (2-D tensors are RTN-packed).
        case values(FloatBuffer)
        /// Already-packed weights (calibration output).
        case packed(PackedWeights)
    }

    /// Quantizes `source` with round-to-nearest and writes a packed file atomically.
    /// `progress` is called with (tensor name, index, count).
    public static func writeRTN(source: ModelSource, tokenizer: Tokenizer?, scheme: Scheme, to path: String,
                                progress: (String, Int, Int) -> Void = { _, _, _ in }) throws {
        try write(source: source, tokenizer: tokenizer, scheme: scheme, method: "rtn", to: path, progress: progress) { _ in .standard }
    }

    /// Writes a packed file atomically: every tensor the config requires, each as `content`
    /// says; `metadata` adds string keys (e.g. `tessera.calibration.*`).
    public static func write(source: ModelSource, tokenizer: Tokenizer?, scheme: Scheme, method: String,
                             metadata: [(String, String)] = [], to path: String,
                             progress: (String, Int, Int) -> Void = { _, _, _ in },
                             content: (String) throws -> TensorContent) throws {
        let c = source.config
        var w = GGUFWriter()
        for (key, value) in c.ggufMetadata() { w.set(key, value) }
        if let tokenizer { for (key, value) in tokenizer.ggufMetadata() { w.set(key, value) } }
        if let template = source.chatTemplate { w.set("tokenizer.chat_template", .string(template)) }
        w.set("tessera.format_version", .uint32(UInt32(version)))
        w.set("tessera.method", .string(method))
        w.set("tessera.bits", .uint32(UInt32(scheme.bits)))
        w.set("tessera.group", .uint32(UInt32(scheme.group)))
        w.set("tessera.activation", .string(scheme.activation.name))
        w.set("tessera.zero_point", .string(scheme.zeroPoint == .float ? "float" : "integer"))
        w.set("tessera.embedding", .string(scheme.embedding.rawValue))
        for (key, value) in metadata { w.set(key, .string(value)) }
        try c.addRopeFrequencies(to: &w)

        let tensors = c.requiredTensorShapes
        for (index, (name, shape)) in tensors.enumerated() {
            progress(name, index, tensors.count)
            let given = try content(name)
            if case .packed(let p) = given {
                guard p.rows == shape[0], p.cols == shape[1] else {
                    throw FormatError.shapeMismatch(tensor: name, expected: shape, found: [p.rows, p.cols])
                }
                try add(&w, name: name, p)
                continue
            }
            let values: FloatBuffer
            if case .values(let v) = given { values = v } else { values = try source.floatTensor(name) }
            if shape.count == 1 {
                try w.addTensor(name: name, shape: shape, values: values)
            } else if isBlockLinear(name) {
                try addPacked(&w, name: name, values: values, rows: shape[0], cols: shape[1],
                              bits: scheme.bits, group: scheme.group, zeroPoint: scheme.zeroPoint)
            } else {
                switch scheme.embedding {  // token_embd, output
                case .f16: try w.addTensor(name: name, shape: shape, values: values, type: .f16)
                case .q8: try addPacked(&w, name: name, values: values, rows: shape[0], cols: shape[1], bits: 8, group: 32, zeroPoint: .float)
                case .q4: try addPacked(&w, name: name, values: values, rows: shape[0], cols: shape[1], bits: 4, group: 32, zeroPoint: .float)
                }
            }
        }
        try addChecksums(&w)
        try w.write(to: path)
    }

    /// Reads the three tensors of packed weights `name` [rows, cols] from a GGUF file.
    public static func readPacked(_ gguf: GGUFFile, name: String, rows: Int, cols: Int) throws -> PackedWeights {
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
        guard let bits = PackedWeights.supportedBits.first(where: { Int(tsr_q_row_bytes(Int32($0), Int32(cols))) == rowBytes }) else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "rows of \(rowBytes) bytes match no bit width for width \(cols)")
        }
        let p = try PackedWeights(bits: bits, group: cols / groups, rows: rows, cols: cols, name: name)
        guard codes.byteCount == p.codeBytes else { throw FormatError.badTensor(path: path, tensor: name, reason: "codes have \(codes.byteCount) bytes, expected \(p.codeBytes)") }
        p.codes.update(from: gguf.data(of: codes).assumingMemoryBound(to: UInt8.self), count: p.codeBytes)
        p.scales.update(from: gguf.data(of: scales).assumingMemoryBound(to: UInt16.self), count: rows * groups)
        p.offsets.update(from: gguf.data(of: offsets).assumingMemoryBound(to: UInt16.self), count: rows * groups)
        // The copy is what runs: the file's pages need not stay resident next to it.
        for t in [codes, scales, offsets] { gguf.dropResidentPages(of: t) }
        return p
    }

    static func addPacked(_ w: inout GGUFWriter, name: String, values: FloatBuffer, rows: Int, cols: Int,
                          bits: Int, group: Int, zeroPoint: ZeroPoint) throws {
        let packed = try GroupQuantizer.rtn(weights: values.pointer, rows: rows, cols: cols, bits: bits, group: group,
                                            zeroPoint: zeroPoint, name: name)
        try add(&w, name: name, packed)
    }

    /// Adds the three tensors of packed weights under `name`.
    public static func add(_ w: inout GGUFWriter, name: String, _ p: PackedWeights) throws {
        let groups = p.groupsPerRow
        try w.addTensor(name: name + codesSuffix, shape: [p.rows, p.rowBytes], type: .i8,
                        bytes: UnsafeRawBufferPointer(start: p.codes, count: p.codeBytes))
        try w.addTensor(name: name + scalesSuffix, shape: [p.rows, groups], type: .f16,
                        bytes: UnsafeRawBufferPointer(start: p.scales, count: p.rows * groups * 2))
        try w.addTensor(name: name + offsetsSuffix, shape: [p.rows, groups], type: .f16,
                        bytes: UnsafeRawBufferPointer(start: p.offsets, count: p.rows * groups * 2))
    }

    /// Records a checksum of every tensor added so far.
    public static func addChecksums(_ w: inout GGUFWriter) throws {
        for (name, bytes) in w.tensorBytes() {
            w.set("tessera.checksum.\(name)", .uint64(bytes.withUnsafeBytes { checksum($0.baseAddress!, $0.count) }))
        }
    }
}

extension ActivationMode {
    public var name: String {
        switch self {
        case .a16: return "a16"
        case .a8: return "a8"
        case .a4: return "a4"
        }
    }
    public init?(name: String) {
        guard let m = ActivationMode.allCases.first(where: { $0.name == name }) else { return nil }
        self = m
    }
}

/// A packed Tessera model file.
public final class PackedModelSource: ModelSource {
    public let gguf: GGUFFile
    public let config: LlamaConfig
    public let bits: Int
    public let group: Int
    public let activation: ActivationMode
    private let shapes: [String: [Int]]

    public var path: String { gguf.path }
    public var chatTemplate: String? { gguf.string("tokenizer.chat_template") }

    public init(gguf: GGUFFile) throws {
        self.gguf = gguf
        let path = gguf.path
        guard let version = gguf.int("tessera.format_version") else { throw FormatError.missingKey(path: path, key: "tessera.format_version") }
        guard version == PackedFormat.version else {
            throw FormatError.badMetadata(path: path, key: "tessera.format_version", reason: "version \(version) is not supported (this Tessera reads version \(PackedFormat.version))")
        }
        config = try GGUFModelSource.readConfig(gguf)
        bits = try gguf.requireInt("tessera.bits")
        group = try gguf.requireInt("tessera.group")
        guard let act = gguf.string("tessera.activation").flatMap(ActivationMode.init(name:)) else {
            throw FormatError.badMetadata(path: path, key: "tessera.activation", reason: "expected a16, a8 or a4")
        }
        activation = act
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

    /// Whether `name` is stored packed.
    public func isPacked(_ name: String) -> Bool { gguf.tensor(name) == nil && gguf.tensor(name + PackedFormat.codesSuffix) != nil }

    public func floatTensor(_ name: String) throws -> FloatBuffer {
        if gguf.tensor(name) != nil { return try gguf.floatData(name) }
        return try packedWeights(name).dequantize()
    }

    /// The packed weights of `name`, copied out of the file into aligned buffers.
    public func packedWeights(_ name: String) throws -> PackedWeights {
        guard let shape = shapes[name], shape.count == 2 else {
            throw FormatError.missingTensor(path: path, tensor: name + PackedFormat.codesSuffix)
        }
        return try PackedFormat.readPacked(gguf, name: name, rows: shape[0], cols: shape[1])
    }

    /// Packed tables run with the file's activation mode; F16 tables stay F16.
    public func embeddingTable(_ name: String) throws -> EmbeddingTable {
        if isPacked(name) { return QuantizedLinear(weights: try packedWeights(name), activation: activation) }
        return try GGUFModelSource.compactTable(gguf, name) ?? fp32Table(name)
    }

    /// Builds packed linears (with the file's activation mode, or `activation`); nil (the
    /// model's fp32 default) for anything stored unpacked.
    public func linearLoader(activation: ActivationMode? = nil) -> LinearLoader {
        let mode = activation ?? self.activation
        return { [self] name, _, _ in
            guard self.isPacked(name) else { return nil }
            return QuantizedLinear(weights: try self.packedWeights(name), activation: mode)
        }
    }
}
extension PackedModelSource: GGUFTensorListing {}
