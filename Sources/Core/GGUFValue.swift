import Foundation

/// One GGUF metadata value (all value types of GGUF v2/v3).
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// GGUF's numeric type ids.
    public enum Kind: UInt32 {
        case uint8 = 0, int8, uint16, int16, uint32, int32, float32, bool, string, array, uint64, int64, float64
    }

    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .int64(let v): return Int(v)
        case .bool(let v): return v ? 1 : 0
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return intValue.map(Double.init)
        }
    }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return intValue.map { $0 != 0 } } }
    public var arrayValue: [GGUFValue]? { if case .array(let a) = self { return a } else { return nil } }

    /// A short human-readable rendering (arrays summarised).
    public var summary: String {
        switch self {
        case .string(let s): return s.count > 60 ? "\"\(s.prefix(57))...\"" : "\"\(s)\""
        case .array(let a): return "[\(a.count) items]"
        case .bool(let b): return "\(b)"
        case .float32(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        default: return intValue.map { "\($0)" } ?? "?"
        }
    }
}

/// Metadata values by key. Long arrays (a tokenizer's tokens, merges, token types) can be
/// held as a way to decode them on demand instead of as values: as [GGUFValue] they take
/// 24 bytes an element and more (~24 MB for LLaMA-3's vocabulary) for the whole life of a
/// file that needs them once, to build its tokenizer.
public struct GGUFMetadataTable {
    private var values: [String: GGUFValue] = [:]
    private var decoders: [String: () -> GGUFValue] = [:]

    public init() {}

    /// The value of `key`; a long array is decoded anew on every call.
    public subscript(key: String) -> GGUFValue? {
        if let v = values[key] { return v }
        return decoders[key]?()
    }

    public var count: Int { values.count + decoders.count }

    /// Sets `key`; returns whether it was new.
    @discardableResult
    public mutating func set(_ key: String, _ value: GGUFValue) -> Bool {
        let new = values[key] == nil && decoders[key] == nil
        decoders[key] = nil
        values[key] = value
        return new
    }

    /// Sets `key` to a value made by `decode` when asked for (it must not fail: the caller has
    /// validated what it decodes); returns whether it was new.
    @discardableResult
    public mutating func set(_ key: String, decodedBy decode: @escaping () -> GGUFValue) -> Bool {
        let new = values[key] == nil && decoders[key] == nil
        values[key] = nil
        decoders[key] = decode
        return new
    }
}

/// Typed access to GGUF metadata (a GGUF file, or any key/value set in GGUF's value types):
/// what tokenizers and configs read and write.
public protocol GGUFMetadata {
    /// Where the metadata comes from (for error messages).
    var path: String { get }
    var metadata: GGUFMetadataTable { get }
}

extension GGUFMetadata {
    public func string(_ key: String) -> String? { metadata[key]?.stringValue }
    public func int(_ key: String) -> Int? { metadata[key]?.intValue }
    public func double(_ key: String) -> Double? { metadata[key]?.doubleValue }
    public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }

    public func requireInt(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw FormatError.missingKey(path: path, key: key) }
        guard let i = v.intValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an integer") }
        return i
    }

    /// A string array (tokens, merges), or nil when absent.
    public func stringArray(_ key: String) throws -> [String]? {
        guard let v = metadata[key] else { return nil }
        guard let a = v.arrayValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an array of strings") }
        return try a.map {
            guard let s = $0.stringValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an array of strings") }
            return s
        }
    }

    /// A numeric array (scores, token types), or nil when absent.
    public func numberArray(_ key: String) throws -> [Double]? {
        guard let v = metadata[key] else { return nil }
        guard let a = v.arrayValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an array of numbers") }
        return try a.map {
            guard let d = $0.doubleValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an array of numbers") }
            return d
        }
    }
}
