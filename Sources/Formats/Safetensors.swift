import Tokenizer
import Architecture
import Foundation
import Core

/// Element types of the safetensors format. Tessera decodes F32, F16 and BF16; the others are
/// recognised so that a file holding them can still be validated and its float tensors read.
public enum SafetensorsDType: String, CaseIterable, Sendable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16"
    case f64 = "F64", i64 = "I64", u64 = "U64", i32 = "I32", u32 = "U32", i16 = "I16", u16 = "U16"
    case i8 = "I8", u8 = "U8", bool = "BOOL", f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// The ggml type with the same encoding, for the dtypes Tessera decodes.
    public var ggmlType: GGMLType? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        default: return nil
        }
    }
}

/// One entry of a safetensors header.
public struct SafetensorsTensorInfo: Sendable {
    public let name: String
    public let dtype: SafetensorsDType
    /// Row-major shape, outermost first (a PyTorch Linear weight is [out, in]).
    public let shape: [Int]
    /// Byte offset of the data relative to the start of the data section.
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {String: String}}`,
/// then the data section. Every entry is validated against the file at open.
public final class SafetensorsFile {
    public let file: MappedFile
    /// `__metadata__` (string to string), empty when absent.
    public let metadata: [String: String]
    /// Tensors in data order.
    public let tensors: [SafetensorsTensorInfo]
    /// Offset of the data section in the file (8 + header length).
    public let dataOffset: Int
    private let index: [String: Int]

    public var path: String { file.path }

    /// The reference implementation refuses headers above 100 MB.
    public static let maxHeaderBytes = 100_000_000

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        var r = ByteReader(file: file, offset: 0)
        let headerLength = try r.read(UInt64.self, "safetensors header length")
        guard headerLength <= UInt64(file.size - 8) else {
            throw FormatError.truncated(path: path, what: "safetensors header", offset: 8, needed: Int(clamping: headerLength), fileSize: file.size)
        }
        guard headerLength <= UInt64(SafetensorsFile.maxHeaderBytes) else {
            throw FormatError.invalid(path: path, reason: "safetensors header length \(headerLength) exceeds the 100 MB limit")
        }
        guard headerLength >= 2 else {
            throw FormatError.invalid(path: path, reason: "safetensors header length \(headerLength) is too small for a JSON object")
        }
        let headerBytes = try r.readBytes(Int(headerLength), "safetensors header")
        dataOffset = r.offset
        let dataSize = file.size - dataOffset

        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(headerBytes), options: [])
        } catch {
            throw FormatError.invalid(path: path, reason: "safetensors header is not valid JSON (\(SafetensorsFile.describe(error)))")
        }
        guard let header = parsed as? [String: Any] else {
            throw FormatError.invalid(path: path, reason: "safetensors header is not a JSON object")
        }

        var meta: [String: String] = [:]
        if let m = header["__metadata__"] {
            guard let dict = m as? [String: Any] else {
                throw FormatError.badMetadata(path: path, key: "__metadata__", reason: "expected an object of strings")
            }
            for (k, v) in dict {
                guard let s = v as? String else {
                    throw FormatError.badMetadata(path: path, key: "__metadata__.\(k)", reason: "expected a string value")
                }
                meta[k] = s
            }
        }
        metadata = meta

        var infos: [SafetensorsTensorInfo] = []
        for (name, value) in header where name != "__metadata__" {
            func bad(_ reason: String) -> FormatError { .badTensor(path: path, tensor: name, reason: reason) }
            guard let entry = value as? [String: Any] else { throw bad("header entry is not a JSON object") }
            guard let dtypeName = entry["dtype"] as? String else { throw bad("header entry has no 'dtype' string") }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw bad("unknown dtype '\(dtypeName)' (safetensors dtypes: \(SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let shapeValues = entry["shape"] as? [Any] else { throw bad("header entry has no 'shape' array") }
            var shape: [Int] = []
            var elements = 1
            for v in shapeValues {
                guard let d = SafetensorsFile.integer(v), d >= 0 else { throw bad("shape \(shapeValues) holds a value that is not a non-negative integer") }
                shape.append(d)
                let (e, o) = elements.multipliedReportingOverflow(by: d)
                guard !o else { throw bad("element count of shape \(shape) overflows") }
                elements = e
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = SafetensorsFile.integer(offsets[0]), let end = SafetensorsFile.integer(offsets[1]) else {
                throw bad("header entry has no 'data_offsets' pair of integers")
            }
            guard begin >= 0, begin <= end else { throw bad("data_offsets [\(begin), \(end)] are not ordered") }
            guard end <= dataSize else {
                if end <= Int.max - dataOffset {
                    throw FormatError.truncated(path: path, what: "data of tensor '\(name)'", offset: dataOffset + begin, needed: end - begin, fileSize: file.size)
                }
                throw bad("data_offsets [\(begin), \(end)] lie beyond the \(dataSize)-byte data section")
            }
            let (bytes, o) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o, bytes == end - begin else {
                throw bad("data_offsets [\(begin), \(end)] span \(end - begin) bytes but \(dtypeName) \(shape) needs \(o ? "too many" : String(bytes))")
            }
            infos.append(SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, offset: begin, byteCount: bytes))
        }
        infos.sort { ($0.offset, $0.name) < ($1.offset, $1.name) }
        tensors = infos
        index = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
    }

    static func integer(_ v: Any) -> Int? { JSONNumber.int(v) }

    static func describe(_ error: Error) -> String {
        let ns = error as NSError
        if let detail = ns.userInfo[NSDebugDescriptionErrorKey] as? String { return detail }
        return ns.localizedDescription
    }

    // MARK: lookups

    public func tensor(_ name: String) -> SafetensorsTensorInfo? { index[name].map { tensors[$0] } }

    /// The raw bytes of a tensor (bounds were checked at open).
    public func bytes(of info: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: file.base + dataOffset + info.offset, count: info.byteCount)
    }

    /// A tensor decoded to fp32, row-major.
    public func floatData(_ name: String) throws -> FloatBuffer {
        guard let info = tensor(name) else { throw FormatError.missingTensor(path: path, tensor: name) }
        return try floatData(info)
    }

    public func floatData(_ info: SafetensorsTensorInfo) throws -> FloatBuffer {
        guard let type = info.dtype.ggmlType else {
            throw FormatError.badTensor(path: path, tensor: info.name,
                                        reason: "dtype \(info.dtype.rawValue) cannot be read as floats (Tessera reads F32, F16 and BF16)")
        }
        let count = info.elementCount
        let out = FloatBuffer(count: count)
        guard count > 0 else { return out }
        let src = bytes(of: info)
        if Int(bitPattern: src.baseAddress!) % info.dtype.byteSize == 0 {
            GGMLDecode.decode(type, src.baseAddress!, out.pointer, count: count)
        } else {
            // Offsets need not be aligned to the element size; decode from an aligned copy.
            let aligned = UnsafeMutableRawPointer.allocate(byteCount: src.count, alignment: 16)
            defer { aligned.deallocate() }
            aligned.copyMemory(from: src.baseAddress!, byteCount: src.count)
            GGMLDecode.decode(type, aligned, out.pointer, count: count)
        }
        return out
    }
}

/// Writes safetensors files the way the reference implementation lays them out: header
/// padded with spaces to a multiple of 8 bytes, tensors packed in the order given.
public enum SafetensorsWriter {
    /// One tensor to write: fp32 values stored as `dtype` (F32, F16 or BF16).
    public struct Tensor {
        public var name: String
        public var shape: [Int]
        public var values: FloatBuffer
        public var dtype: SafetensorsDType

        public init(name: String, shape: [Int], values: FloatBuffer, dtype: SafetensorsDType = .f32) {
            self.name = name
            self.shape = shape
            self.values = values
            self.dtype = dtype
        }

        public init(name: String, shape: [Int], values: [Float], dtype: SafetensorsDType = .f32) {
            self.init(name: name, shape: shape, values: FloatBuffer(values), dtype: dtype)
        }
    }

    public static func write(tensors: [(name: String, shape: [Int], values: [Float], dtype: SafetensorsDType)],
                             metadata: [String: String] = [:], to path: String) throws {
        try write(tensors: tensors.map { Tensor(name: $0.name, shape: $0.shape, values: $0.values, dtype: $0.dtype) },
                  metadata: metadata, to: path)
    }

    /// Writes `tensors` atomically (temporary file in the same directory, then rename).
    public static func write(tensors: [Tensor], metadata: [String: String] = [:], to path: String) throws {
        var seen = Set<String>()
        var offsets: [(Int, Int)] = []
        var offset = 0
        for t in tensors {
            func bad(_ reason: String) -> FormatError { .badTensor(path: path, tensor: t.name, reason: reason) }
            guard t.name != "__metadata__", !t.name.isEmpty else { throw bad("reserved or empty tensor name") }
            guard seen.insert(t.name).inserted else { throw bad("appears twice") }
            guard t.dtype.ggmlType != nil else { throw bad("cannot write dtype \(t.dtype.rawValue) (F32, F16, BF16 only)") }
            guard t.shape.allSatisfy({ $0 >= 0 }) else { throw bad("negative dimension in \(t.shape)") }
            guard t.shape.reduce(1, *) == t.values.count else {
                throw bad("shape \(t.shape) holds \(t.shape.reduce(1, *)) values but \(t.values.count) were given")
            }
            let n = t.values.count * t.dtype.byteSize
            offsets.append((offset, offset + n))
            offset += n
        }

        var json = "{"
        var entries: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(JSONText.quoted($0)):\(JSONText.quoted(metadata[$0]!))" }
            entries.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        for (t, (b, e)) in zip(tensors, offsets) {
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append("\(JSONText.quoted(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(b),\(e)]}")
        }
        json += entries.joined(separator: ",") + "}"
        var header = Array(json.utf8)
        while header.count % 8 != 0 { header.append(0x20) }

        let out = try AtomicFileWriter(path: path)
        var length = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &length) { try out.write($0) }
        try out.write(header)
        for t in tensors { try out.write(encode(t.values, as: t.dtype)) }
        try out.commit()
    }

    /// The little-endian bytes of `values` in `dtype` (F16 and BF16 round to nearest even).
    public static func encode(_ values: FloatBuffer, as dtype: SafetensorsDType) -> [UInt8] {
        let n = values.count
        switch dtype {
        case .f16:
            var bits = [UInt16](repeating: 0, count: n)
            for i in 0..<n { bits[i] = Half.fromFloat(values[i]).littleEndian }
            return bits.withUnsafeBytes { Array($0) }
        case .bf16:
            var bits = [UInt16](repeating: 0, count: n)
            for i in 0..<n { bits[i] = bfloat16Bits(values[i]).littleEndian }
            return bits.withUnsafeBytes { Array($0) }
        default:
            return Array(UnsafeRawBufferPointer(start: values.pointer, count: n * 4))
        }
    }

    /// fp32 → bfloat16 with round to nearest even; NaNs stay (quiet) NaNs.
    public static func bfloat16Bits(_ f: Float) -> UInt16 {
        let x = f.bitPattern
        if f.isNaN { return UInt16(x >> 16) | 0x0040 }
        let rounded = x &+ 0x7FFF &+ ((x >> 16) & 1)
        return UInt16(rounded >> 16)
    }
}
