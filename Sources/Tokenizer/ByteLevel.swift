import Core
import Foundation

/// GPT-2's reversible byte <-> Unicode mapping used by byte-level BPE vocabularies.
///
/// Printable Latin-1 bytes (`!`...`~`, `¡`...`¬`, `®`...`ÿ`) stand for themselves; the other 68
/// bytes are given the code points U+0100, U+0101, ... in byte order (so a space is `Ġ`, U+0120,
/// and a newline is `Ċ`, U+010A). Vocabularies store their tokens in this alphabet.
enum ByteLevel {
    /// byte -> code point
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var extra: UInt32 = 0
        for b in 0..<256 {
            if isPrintable(UInt8(b)) {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + extra
                extra += 1
            }
        }
        return table
    }()

    /// code point -> byte, for the 256 code points in the alphabet (nil otherwise)
    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for b in 0..<256 { map[byteToScalar[b]] = UInt8(b) }
        return map
    }()

    @inline(__always)
    static func isPrintable(_ b: UInt8) -> Bool {
        (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
    }

    /// The byte-level text for raw bytes (e.g. `[0x20, 0x61]` -> `"Ġa"`).
    static func encode(_ bytes: [UInt8]) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// The raw bytes a byte-level token text stands for. Characters outside the alphabet
    /// (which a well-formed vocabulary does not contain) are kept as their UTF-8 bytes.
    static func decode(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if let b = scalarToByte[scalar.value] {
                out.append(b)
            } else {
                out.append(contentsOf: Array(String(scalar).utf8))
            }
        }
        return out
    }

    /// Whether every character of the text is in the byte-level alphabet.
    static func isByteLevel(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { scalarToByte[$0.value] != nil }
    }
}
