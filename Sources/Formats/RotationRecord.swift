import Core
import Foundation

/// What a rotated model's file says about its rotation (Calibrate's `HadamardRotation` makes
/// such models; docs/FORMAT.md lists the keys):
///
///   `tessera.rotation`             string  "hadamard" (absent, or "none": not rotated)
///   `tessera.rotation.seed`        uint64  the seed of the residual rotation's random signs
///   `tessera.rotation.online_down` bool    the forward pass must transform the SwiGLU output
///                                          u := H_F·u/√F before down_proj (F = FFN width)
///   `tessera.rotation.output_norm_hadamard` bool (optional, false when absent)
///                                          the final norm's weight g acts in the Hadamard
///                                          domain: normed := Aᵀ·(g ⊙ A·(x/rms(x))), A = H_C/√C
///                                          (so a tied head keeps one table; C = hidden size)
///
/// The seed is a record (the weights already hold the rotation); `online_down` and
/// `output_norm_hadamard` are what the runtime acts on. A file without the keys loads exactly
/// as before.
public struct RotationRecord: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable {
        case hadamard
    }

    public static let kindKey = "tessera.rotation"
    public static let seedKey = "tessera.rotation.seed"
    public static let onlineDownKey = "tessera.rotation.online_down"
    public static let outputNormHadamardKey = "tessera.rotation.output_norm_hadamard"

    public var kind: Kind
    public var seed: UInt64
    /// Whether the forward pass applies the online Hadamard transform before down_proj.
    public var onlineDownHadamard: Bool
    /// Whether the final norm's weight is applied between two Hadamard transforms of the
    /// residual width (a tied head kept as one table, its weight not folded into the head).
    public var outputNormHadamard: Bool

    public init(kind: Kind = .hadamard, seed: UInt64, onlineDownHadamard: Bool, outputNormHadamard: Bool = false) {
        self.kind = kind
        self.seed = seed
        self.onlineDownHadamard = onlineDownHadamard
        self.outputNormHadamard = outputNormHadamard
    }

    /// One line for `inspect` and logs.
    public var summary: String {
        "\(kind.rawValue), seed \(seed), online Hadamard before down_proj: \(onlineDownHadamard ? "yes" : "no")"
            + (outputNormHadamard ? ", final norm in the Hadamard domain (tied head kept)" : "")
    }

    /// The record of `g`: nil when the file has no `tessera.rotation` key (or says "none").
    public static func read(_ g: GGUFFile) throws -> RotationRecord? {
        guard let value = g.metadata[kindKey] else { return nil }
        guard let name = value.stringValue else { throw FormatError.badMetadata(path: g.path, key: kindKey, reason: "expected a string") }
        if name == "none" { return nil }
        guard let kind = Kind(rawValue: name) else {
            throw FormatError.badMetadata(path: g.path, key: kindKey,
                                          reason: "unknown rotation \"\(name)\" (this Tessera knows none and hadamard); re-create the file with this Tessera's `tessera quantize --rotate`")
        }
        guard case .uint64(let seed)? = g.metadata[seedKey] else {
            throw FormatError.badMetadata(path: g.path, key: seedKey, reason: "a rotated file must record its seed as a uint64")
        }
        guard case .bool(let online)? = g.metadata[onlineDownKey] else {
            throw FormatError.badMetadata(path: g.path, key: onlineDownKey, reason: "a rotated file must say (bool) whether down_proj's input is transformed online")
        }
        var outputNorm = false
        if let value = g.metadata[outputNormHadamardKey] {
            guard case .bool(let flag) = value else {
                throw FormatError.badMetadata(path: g.path, key: outputNormHadamardKey, reason: "expected a bool (whether the final norm acts in the Hadamard domain)")
            }
            outputNorm = flag
        }
        return RotationRecord(kind: kind, seed: seed, onlineDownHadamard: online, outputNormHadamard: outputNorm)
    }

    /// Sets the record's keys on `w`.
    public func write(_ w: inout GGUFWriter) {
        w.set(Self.kindKey, .string(kind.rawValue))
        w.set(Self.seedKey, .uint64(seed))
        w.set(Self.onlineDownKey, .bool(onlineDownHadamard))
        if outputNormHadamard { w.set(Self.outputNormHadamardKey, .bool(true)) }
    }
}
