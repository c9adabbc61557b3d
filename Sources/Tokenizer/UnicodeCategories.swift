import Core
import Foundation

/// The character classes the pre-tokenizer regexes use, as llama.cpp defines them:
/// `\p{L}` = general category L*, `\p{N}` = N* (Nd, Nl, No), `\s` = the Unicode White_Space
/// property (U+0009...U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000...U+200A, U+2028, U+2029,
/// U+202F, U+205F, U+3000).
struct CharClass: OptionSet {
    let rawValue: UInt8
    static let letter = CharClass(rawValue: 1)
    static let number = CharClass(rawValue: 2)
    static let whitespace = CharClass(rawValue: 4)

    /// Classes of the Basic Multilingual Plane, computed once.
    private static let bmp: [UInt8] = {
        var table = [UInt8](repeating: 0, count: 0x10000)
        for v in 0..<0x10000 {
            guard let s = Unicode.Scalar(UInt32(v)) else { continue } // surrogates
            table[v] = compute(s).rawValue
        }
        return table
    }()

    private static func compute(_ s: Unicode.Scalar) -> CharClass {
        var c: CharClass = []
        let p = s.properties
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            c.insert(.number)
        default:
            break
        }
        if p.isWhitespace { c.insert(.whitespace) }
        return c
    }

    @inline(__always)
    static func of(_ v: UInt32) -> CharClass {
        if v < 0x10000 { return CharClass(rawValue: bmp[Int(v)]) }
        guard let s = Unicode.Scalar(v) else { return [] }
        return compute(s)
    }
}

/// Decodes UTF-8 (valid, as from a Swift String) into code points, remembering where each
/// starts. `offsets` has one extra entry: the end of the text.
@inline(__always)
func decodeScalars(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into cps: inout [UInt32], offsets: inout [Int]) {
    cps.removeAll(keepingCapacity: true)
    offsets.removeAll(keepingCapacity: true)
    var i = range.lowerBound
    let end = range.upperBound
    while i < end {
        let b0 = UInt32(bytes[i])
        offsets.append(i)
        if b0 < 0x80 {
            cps.append(b0); i += 1
        } else if b0 < 0xE0, i + 1 < end {
            cps.append((b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F)); i += 2
        } else if b0 < 0xF0, i + 2 < end {
            cps.append((b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)); i += 3
        } else if i + 3 < end {
            cps.append((b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12 | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)); i += 4
        } else {
            cps.append(0xFFFD); i += 1 // cannot happen for a Swift String
        }
    }
    offsets.append(end)
}
