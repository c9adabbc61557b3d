import Tokenizer
import Architecture
import Foundation
import Core

/// Builds a GGUF v3 file: metadata of every GGUF value type and tensors given as fp32 values
/// (stored as F32, F16, BF16 or Q8_0) or as raw bytes of any `GGMLType`. Tensor data is
/// aligned to `general.alignment` (32 unless set) and the file is written atomically.
///
///     var w = GGUFWriter()
///     w.set("general.architecture", .string("llama"))
///     try w.addTensor(name: "token_embd.weight", shape: [vocab, hidden], values: embedding)
///     try w.write(to: path)
public struct GGUFWriter {
    struct PendingTensor {
        var name: String
        var shape: [Int]
        var type: GGMLType
        var data: Data
    }

    private var keys: [String] = []
    private var values: [String: GGUFValue] = [:]
    private var pending: [PendingTensor] = []
    private var tensorNames: Set<String> = []

    public init() {}

    /// Metadata keys in the order they will be written.
    public var metadataKeys: [String] { keys }
    /// Each tensor's name and encoded bytes, in order.
    public func tensorBytes() -> [(name: String, bytes: Data)] { pending.map { ($0.name, $0.data) } }

    public subscript(key: String) -> GGUFValue? { values[key] }

    /// Sets (or replaces, keeping its position) a metadata value.
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if values.updateValue(value, forKey: key) == nil { keys.append(key) }
    }

    public mutating func remove(_ key: String) {
        if values.removeValue(forKey: key) != nil { keys.removeAll { $0 == key } }
    }

    /// Convenience setters.
    public mutating func set(_ key: String, _ value: String) { set(key, .string(value)) }
    public mutating func set(_ key: String, strings: [String]) { set(key, .array(strings.map { .string($0) })) }
    public mutating func set(_ key: String, float32s: [Float]) { set(key, .array(float32s.map { .float32($0) })) }
    public mutating func set(_ key: String, int32s: [Int32]) { set(key, .array(int32s.map { .int32($0) })) }

    /// The alignment of tensor data: `general.alignment` when set, else 32.
    public var alignment: Int { values["general.alignment"]?.intValue ?? 32 }

    /// Adds a tensor from its raw encoded bytes. `shape` is row-major, outermost first
    /// ([out, in] for a weight); GGUF stores it reversed.
    public mutating func addTensor(name: String, shape: [Int], type: GGMLType, data: Data) throws {
        func bad(_ reason: String) -> FormatError { .badTensor(path: "<GGUF writer>", tensor: name, reason: reason) }
        guard !tensorNames.contains(name) else { throw bad("added twice") }
        guard (1...4).contains(shape.count) else { throw bad("\(shape.count) dimensions (GGUF allows 1 to 4)") }
        guard shape.allSatisfy({ $0 >= 1 }) else { throw bad("shape \(shape) has an empty dimension") }
        guard shape.last! % type.blockSize == 0 else {
            throw bad("row width \(shape.last!) is not a multiple of the \(type) block size \(type.blockSize)")
        }
        let elements = shape.reduce(1, *)
        guard let bytes = type.byteCount(elements: elements), bytes == data.count else {
            throw bad("\(type) \(shape) needs \(type.byteCount(elements: elements) ?? -1) bytes but \(data.count) were given")
        }
        tensorNames.insert(name)
        pending.append(PendingTensor(name: name, shape: shape, type: type, data: data))
    }

    public mutating func addTensor(name: String, shape: [Int], type: GGMLType, bytes: UnsafeRawBufferPointer) throws {
        try addTensor(name: name, shape: shape, type: type, data: Data(bytes))
    }

    /// Adds fp32 values encoded as `type` (F32, F16, BF16 or Q8_0).
    public mutating func addTensor(name: String, shape: [Int], values: [Float], type: GGMLType = .f32) throws {
        try values.withUnsafeBufferPointer { try addTensor(name: name, shape: shape, values: $0, type: type) }
    }

    public mutating func addTensor(name: String, shape: [Int], values: FloatBuffer, type: GGMLType = .f32) throws {
        try addTensor(name: name, shape: shape, values: UnsafeBufferPointer(values.buffer), type: type)
    }

    public mutating func addTensor(name: String, shape: [Int], values: UnsafeBufferPointer<Float>, type: GGMLType = .f32) throws {
        guard shape.reduce(1, *) == values.count else {
            throw FormatError.badTensor(path: "<GGUF writer>", tensor: name,
                                        reason: "shape \(shape) holds \(shape.reduce(1, *)) values but \(values.count) were given")
        }
        guard let data = GGUFWriter.encode(values, as: type) else {
            throw FormatError.badTensor(path: "<GGUF writer>", tensor: name,
                                        reason: "cannot encode floats as \(type) (F32, F16, BF16, Q8_0 only; or pass raw bytes); or \(values.count) is not a whole number of blocks")
        }
        try addTensor(name: name, shape: shape, type: type, data: data)
    }

    /// fp32 values encoded as `type`, or nil for types the writer does not quantise to.
    public static func encode(_ values: UnsafeBufferPointer<Float>, as type: GGMLType) -> Data? {
        switch type {
        case .f32:
            return Data(buffer: values)
        case .f16:
            var out = [UInt16](repeating: 0, count: values.count)
            for i in values.indices { out[i] = Half.fromFloat(values[i]).littleEndian }
            return out.withUnsafeBytes { Data($0) }
        case .bf16:
            var out = [UInt16](repeating: 0, count: values.count)
            for i in values.indices { out[i] = SafetensorsWriter.bfloat16Bits(values[i]).littleEndian }
            return out.withUnsafeBytes { Data($0) }
        case .q8_0:
            // ggml's reference quantize_row_q8_0: d = max|x| / 127, q = round(x / d).
            guard values.count % 32 == 0 else { return nil }
            var out = [UInt8](repeating: 0, count: values.count / 32 * 34)
            for b in 0..<values.count / 32 {
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(values[b * 32 + j])) }
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                let dh = Half.fromFloat(d)
                out[b * 34] = UInt8(dh & 0xFF)
                out[b * 34 + 1] = UInt8(dh >> 8)
                for j in 0..<32 {
                    let q = Int8(clamping: Int((values[b * 32 + j] * id).rounded()))
                    out[b * 34 + 2 + j] = UInt8(bitPattern: q)
                }
            }
            return Data(out)
        default:
            return nil
        }
    }

    // MARK: serialisation

    /// Writes the file atomically (temporary file in the same directory, then rename).
    public func write(to path: String) throws {
        let align = alignment
        guard align > 0, align & (align - 1) == 0 else {
            throw FormatError.badMetadata(path: path, key: "general.alignment", reason: "\(align) is not a power of two")
        }
        var header = ByteSink()
        header.u32(GGUFFile.magic)
        header.u32(3)
        header.u64(UInt64(pending.count))
        header.u64(UInt64(keys.count))
        for key in keys {
            header.string(key)
            try header.value(values[key]!, key: key, path: path)
        }
        var offset = 0
        for t in pending {
            header.string(t.name)
            header.u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { header.u64(UInt64(d)) }
            header.u32(t.type.rawValue)
            header.u64(UInt64(offset))
            offset = (offset + t.data.count + align - 1) / align * align
        }

        let out = try AtomicFileWriter(path: path)
        try out.write(header.bytes)
        try out.pad(to: align)
        let dataStart = out.bytesWritten
        for t in pending {
            try out.pad(to: align)
            precondition(out.bytesWritten >= dataStart)
            try out.write(t.data)
        }
        if !pending.isEmpty { try out.pad(to: align) }
        try out.commit()
    }
}

/// Little-endian byte buffer for GGUF headers.
struct ByteSink {
    var bytes: [UInt8] = []

    mutating func int<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        u64(UInt64(u.count))
        bytes.append(contentsOf: u)
    }

    private static func kind(of v: GGUFValue) -> GGUFValue.Kind {
        switch v {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    mutating func value(_ v: GGUFValue, key: String, path: String) throws {
        u32(ByteSink.kind(of: v).rawValue)
        try payload(v, key: key, path: path)
    }

    private mutating func payload(_ v: GGUFValue, key: String, path: String) throws {
        switch v {
        case .uint8(let x): int(x)
        case .int8(let x): int(x)
        case .uint16(let x): int(x)
        case .int16(let x): int(x)
        case .uint32(let x): int(x)
        case .int32(let x): int(x)
        case .uint64(let x): int(x)
        case .int64(let x): int(x)
        case .float32(let x): int(x.bitPattern)
        case .float64(let x): int(x.bitPattern)
        case .bool(let x): bytes.append(x ? 1 : 0)
        case .string(let s): string(s)
        case .array(let items):
            // An empty array has no element to take a type from; any type reads back as [].
            let elementKind = items.first.map(ByteSink.kind(of:)) ?? .int32
            guard items.allSatisfy({ ByteSink.kind(of: $0) == elementKind }) else {
                throw FormatError.badMetadata(path: path, key: key, reason: "GGUF arrays must hold values of one type")
            }
            u32(elementKind.rawValue)
            u64(UInt64(items.count))
            // Nested arrays carry only their own element type and count (the outer array's
            // element type already says "array").
            for item in items { try payload(item, key: key, path: path) }
        }
    }
}

extension LlamaConfig {
    /// The `general.architecture` and `llama.*` keys that describe this configuration, as
    /// llama.cpp's converter writes them.
    public func ggufMetadata() -> [(key: String, value: GGUFValue)] {
        [("general.architecture", .string("llama")),
         ("llama.block_count", .uint32(UInt32(blockCount))),
         ("llama.context_length", .uint32(UInt32(contextLength))),
         ("llama.embedding_length", .uint32(UInt32(hidden))),
         ("llama.feed_forward_length", .uint32(UInt32(ffn))),
         ("llama.attention.head_count", .uint32(UInt32(heads))),
         ("llama.attention.head_count_kv", .uint32(UInt32(kvHeads))),
         ("llama.attention.key_length", .uint32(UInt32(headDim))),
         ("llama.attention.value_length", .uint32(UInt32(headDim))),
         ("llama.rope.dimension_count", .uint32(UInt32(headDim))),
         ("llama.rope.freq_base", .float32(Float(ropeBase))),
         ("llama.attention.layer_norm_rms_epsilon", .float32(rmsEps)),
         ("llama.vocab_size", .uint32(UInt32(vocab)))]
    }

    /// Adds the `rope_freqs` tensor (llama3 frequency factors) when the config has one.
    public func addRopeFrequencies(to writer: inout GGUFWriter) throws {
        if let factors = ropeFrequencyFactors {
            try writer.addTensor(name: TensorName.ropeFrequencies, shape: [factors.count], values: factors)
        }
    }
}
