import Tokenizer
import Architecture
import Core
import Foundation

/// A tensor's entry in the GGUF directory.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// ggml order: dims[0] is the contiguous (fastest) dimension, e.g. [in, out] for a weight.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset relative to the start of the data section.
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { dims.reduce(1, *) }
    /// Row-major shape, outermost first (e.g. [out, in] for a weight).
    public var shape: [Int] { dims.reversed() }
}

/// A parsed GGUF file (v2 or v3): metadata, tensor directory, memory-mapped tensor data.
/// Every count, size and offset is validated against the file before use.
public final class GGUFFile {
    public let file: MappedFile
    public let version: Int
    public let metadata: GGUFMetadataTable
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    private let tensorIndex: [String: Int]

    public var path: String { file.path }

    public static let magic: UInt32 = 0x4655_4747 // "GGUF" read little-endian

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        var r = ByteReader(file: file, offset: 0)
        guard file.size >= 4 else {
            throw FormatError.truncated(path: path, what: "GGUF magic", offset: 0, needed: 4, fileSize: file.size)
        }
        let magic = try r.read(UInt32.self, "GGUF magic")
        guard magic == GGUFFile.magic else {
            let bytes = withUnsafeBytes(of: magic.littleEndian) { Array($0) }
            let shown = bytes.map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            throw FormatError.badMagic(path: path, found: "'\(shown)'", expected: "GGUF")
        }
        version = Int(try r.read(UInt32.self, "GGUF version"))
        guard version == 2 || version == 3 else { throw FormatError.unsupportedVersion(path: path, version: version) }
        let tensorCount = try r.read(UInt64.self, "tensor count")
        let kvCount = try r.read(UInt64.self, "metadata count")
        // Each tensor entry takes at least 8+4+8+4+8 bytes and each key/value at least 8+4 bytes.
        guard tensorCount <= UInt64(file.size / 32) else { throw FormatError.absurdCount(path: path, what: "tensor", count: Int(clamping: tensorCount)) }
        guard kvCount <= UInt64(file.size / 12) else { throw FormatError.absurdCount(path: path, what: "metadata", count: Int(clamping: kvCount)) }

        var meta = GGUFMetadataTable()
        var keys: [String] = []
        for i in 0..<Int(kvCount) {
            let key = try GGUFFile.readString(&r, "metadata key #\(i)")
            let typeRaw = try r.read(UInt32.self, "type of '\(key)'")
            guard let kind = GGUFValue.Kind(rawValue: typeRaw) else { throw FormatError.badValueType(path: path, key: key, type: Int(typeRaw)) }
            let start = r.offset
            // A long flat array is checked now and decoded when asked for (see GGUFMetadataTable).
            if kind == .array, try GGUFFile.isLongFlatArray(r, key: key) {
                try GGUFFile.skipValue(&r, kind: kind, key: key, depth: 0)
                let new = meta.set(key) { [file] in
                    var again = ByteReader(file: file, offset: start)
                    // The bytes were checked above; the file is mapped read-only and private.
                    return (try? GGUFFile.readValue(&again, kind: .array, key: key, depth: 0)) ?? .array([])
                }
                if new { keys.append(key) }
                continue
            }
            let value = try GGUFFile.readValue(&r, kind: kind, key: key, depth: 0)
            if meta.set(key, value) { keys.append(key) }
        }
        metadata = meta
        // The metadata's pages are read: give them back (the long arrays map them in again when asked for).
        file.dropResidentPages(offset: 0, count: r.offset)
        metadataKeys = keys
        let align = meta["general.alignment"]?.intValue ?? 32
        guard align > 0, align & (align - 1) == 0, align <= 1 << 20 else {
            throw FormatError.badMetadata(path: path, key: "general.alignment", reason: "\(align) is not a power of two")
        }
        alignment = align

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(Int(tensorCount))
        var index: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let name = try GGUFFile.readString(&r, "name of tensor #\(i)")
            let nDims = try r.read(UInt32.self, "dimension count of '\(name)'")
            guard nDims >= 1, nDims <= 4 else { throw FormatError.badTensor(path: path, tensor: name, reason: "\(nDims) dimensions (GGUF allows 1 to 4)") }
            var dims: [Int] = []
            var elements = 1
            for _ in 0..<nDims {
                let d = try r.read(UInt64.self, "dimensions of '\(name)'")
                guard d >= 1, d <= UInt64(Int32.max) else { throw FormatError.badTensor(path: path, tensor: name, reason: "dimension \(d) is impossible") }
                dims.append(Int(d))
                let (e, o) = elements.multipliedReportingOverflow(by: Int(d))
                guard !o else { throw FormatError.badTensor(path: path, tensor: name, reason: "element count overflows") }
                elements = e
            }
            let typeRaw = try r.read(UInt32.self, "type of '\(name)'")
            guard let type = GGMLType(rawValue: typeRaw) else { throw FormatError.unknownTensorType(path: path, tensor: name, type: Int(typeRaw)) }
            let offset = try r.read(UInt64.self, "offset of '\(name)'")
            guard dims[0] % type.blockSize == 0, let bytes = type.byteCount(elements: elements) else {
                throw FormatError.badTensor(path: path, tensor: name, reason: "row width \(dims[0]) is not a multiple of the \(type) block size \(type.blockSize)")
            }
            guard offset <= UInt64(file.size) else {
                throw FormatError.truncated(path: path, what: "tensor '\(name)'", offset: Int(clamping: offset), needed: bytes, fileSize: file.size)
            }
            guard index[name] == nil else { throw FormatError.badTensor(path: path, tensor: name, reason: "appears twice in the tensor directory") }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: Int(offset), byteCount: bytes))
        }
        dataOffset = (r.offset + align - 1) / align * align
        for t in infos {
            guard t.offset % align == 0 else { throw FormatError.badTensor(path: path, tensor: t.name, reason: "offset \(t.offset) is not aligned to \(align)") }
            let (start, o) = dataOffset.addingReportingOverflow(t.offset)
            guard !o, start <= file.size, t.byteCount <= file.size - start else {
                throw FormatError.truncated(path: path, what: "data of tensor '\(t.name)'", offset: start, needed: t.byteCount, fileSize: file.size)
            }
        }
        tensors = infos
        tensorIndex = index
    }

    private static func readString(_ r: inout ByteReader, _ what: String) throws -> String {
        String(decoding: try stringBytes(&r, what), as: UTF8.self)
    }

    /// A GGUF string's bytes (its UInt64 length checked against the file), and `r` past them.
    private static func stringBytes(_ r: inout ByteReader, _ what: String) throws -> UnsafeRawBufferPointer {
        let n = try r.read(UInt64.self, "length of \(what)")
        guard n <= UInt64(r.file.size - r.offset) else {
            throw FormatError.truncated(path: r.file.path, what: what, offset: r.offset, needed: Int(clamping: n), fileSize: r.file.size)
        }
        return try r.readBytes(Int(n), what)
    }

    /// An array's element type and length (checked against the file), and `r` at its first element.
    private static func arrayHeader(_ r: inout ByteReader, key: String, depth: Int) throws -> (kind: GGUFValue.Kind, count: Int) {
        guard depth < 4 else { throw FormatError.badMetadata(path: r.file.path, key: key, reason: "arrays nested too deeply") }
        let typeRaw = try r.read(UInt32.self, "element type of '\(key)'")
        guard let elementKind = GGUFValue.Kind(rawValue: typeRaw) else { throw FormatError.badValueType(path: r.file.path, key: key, type: Int(typeRaw)) }
        let n = try r.read(UInt64.self, "length of '\(key)'")
        guard n <= UInt64(r.file.size - r.offset) else { throw FormatError.absurdCount(path: r.file.path, what: "array '\(key)'", count: Int(clamping: n)) }
        return (elementKind, Int(n))
    }

    private static func readValue(_ r: inout ByteReader, kind: GGUFValue.Kind, key: String, depth: Int) throws -> GGUFValue {
        let w = "value of '\(key)'"
        switch kind {
        case .uint8: return .uint8(try r.read(UInt8.self, w))
        case .int8: return .int8(try r.read(Int8.self, w))
        case .uint16: return .uint16(try r.read(UInt16.self, w))
        case .int16: return .int16(try r.read(Int16.self, w))
        case .uint32: return .uint32(try r.read(UInt32.self, w))
        case .int32: return .int32(try r.read(Int32.self, w))
        case .uint64: return .uint64(try r.read(UInt64.self, w))
        case .int64: return .int64(try r.read(Int64.self, w))
        case .float32: return .float32(try r.readFloat(w))
        case .float64: return .float64(try r.readDouble(w))
        case .bool: return .bool(try r.read(UInt8.self, w) != 0)
        case .string: return .string(try readString(&r, w))
        case .array:
            let (elementKind, n) = try arrayHeader(&r, key: key, depth: depth)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n { items.append(try readValue(&r, kind: elementKind, key: key, depth: depth + 1)) }
            return .array(items)
        }
    }

    /// Arrays of at least this many scalar or string elements are decoded on demand.
    public static let lazyArrayLength = 4096

    /// Whether the array whose element type `r` is at is long and flat (scalars or strings).
    /// Does not move `r`.
    private static func isLongFlatArray(_ r: ByteReader, key: String) throws -> Bool {
        var peek = r
        let (elementKind, n) = try arrayHeader(&peek, key: key, depth: 0)
        return elementKind != .array && n >= lazyArrayLength
    }

    /// Moves `r` past a value with the checks readValue makes, without building it.
    private static func skipValue(_ r: inout ByteReader, kind: GGUFValue.Kind, key: String, depth: Int) throws {
        let w = "value of '\(key)'"
        switch kind {
        case .uint8, .int8, .bool: _ = try r.readBytes(1, w)
        case .uint16, .int16: _ = try r.readBytes(2, w)
        case .uint32, .int32, .float32: _ = try r.readBytes(4, w)
        case .uint64, .int64, .float64: _ = try r.readBytes(8, w)
        case .string: _ = try stringBytes(&r, w)
        case .array:
            let (elementKind, n) = try arrayHeader(&r, key: key, depth: depth)
            for _ in 0..<n { try skipValue(&r, kind: elementKind, key: key, depth: depth + 1) }
        }
    }

    // MARK: lookups

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The raw bytes of a tensor (bounds were checked at open).
    public func data(of info: GGUFTensorInfo) -> UnsafeRawPointer { file.base + dataOffset + info.offset }

    /// Lets a tensor's pages leave the resident set once it has been read or copied.
    public func dropResidentPages(of info: GGUFTensorInfo) {
        file.dropResidentPages(offset: dataOffset + info.offset, count: info.byteCount)
    }

    /// A tensor decoded to fp32, row-major.
    public func floatData(_ name: String) throws -> FloatBuffer {
        guard let info = tensor(name) else { throw FormatError.missingTensor(path: path, tensor: name) }
        let out = FloatBuffer(count: info.elementCount)
        GGMLDecode.decode(info.type, data(of: info), out.pointer, count: info.elementCount)
        dropResidentPages(of: info)
        return out
    }
}

extension GGUFFile: GGUFMetadata {}
