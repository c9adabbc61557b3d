import Foundation

/// Everything that can be wrong with a model file, each with a message a user can act on.
public enum FormatError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case badMagic(path: String, found: String, expected: String)
    case unsupportedVersion(path: String, version: Int)
    case truncated(path: String, what: String, offset: Int, needed: Int, fileSize: Int)
    case absurdCount(path: String, what: String, count: Int)
    case badValueType(path: String, key: String, type: Int)
    case unknownTensorType(path: String, tensor: String, type: Int)
    case badTensor(path: String, tensor: String, reason: String)
    case missingTensor(path: String, tensor: String)
    case missingKey(path: String, key: String)
    case badMetadata(path: String, key: String, reason: String)
    case shapeMismatch(tensor: String, expected: [Int], found: [Int])
    case invalid(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "cannot open \(path): \(reason)"
        case let .badMagic(path, found, expected):
            return "\(path) is not a \(expected) file (magic \(found)); pass a GGUF file, a Hugging Face folder or a Tessera packed model"
        case let .unsupportedVersion(path, version): return "\(path): unsupported GGUF version \(version) (Tessera reads versions 2 and 3)"
        case let .truncated(path, what, offset, needed, fileSize):
            // Corrupt counts can be near Int.max: never let the message itself overflow.
            let (end, overflow) = offset.addingReportingOverflow(needed)
            return "\(path) is truncated or corrupt: \(what) needs bytes \(offset)..<\(overflow ? "beyond Int.max" : String(end)) but the file has \(fileSize) bytes"
        case let .absurdCount(path, what, count): return "\(path) is truncated or corrupt: a \(what) count of \(count) cannot fit in the file"
        case let .badValueType(path, key, type): return "\(path) is corrupt: metadata key '\(key)' has unknown value type \(type)"
        case let .unknownTensorType(path, tensor, type):
            return "\(path): tensor '\(tensor)' has tensor type \(type), which Tessera does not support (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
        case let .badTensor(path, tensor, reason): return "\(path): tensor '\(tensor)': \(reason)"
        case let .missingTensor(path, tensor): return "\(path): required tensor '\(tensor)' is missing"
        case let .missingKey(path, key): return "\(path): required metadata key '\(key)' is missing"
        case let .badMetadata(path, key, reason): return "\(path): metadata '\(key)': \(reason)"
        case let .shapeMismatch(tensor, expected, found):
            return "tensor '\(tensor)' has shape \(found), expected \(expected) from the model's hyper-parameters"
        case let .invalid(path, reason): return "\(path): \(reason)"
        }
    }
}
