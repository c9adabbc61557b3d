import Core
import Foundation

/// Turns a stream of token ids into text, holding back bytes until they form complete UTF-8
/// (a character can be split across tokens in byte-level BPE).
public struct StreamingDecoder {
    let tokenizer: Tokenizer
    var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The text completed by this token (possibly empty). Invalid bytes are replaced by U+FFFD;
    /// only an unfinished character at the end is held back.
    public mutating func append(_ id: Int32) -> String {
        pending.append(contentsOf: tokenizer.tokenBytes(id))
        let cut = Self.incompleteTailStart(pending)
        if cut == 0 { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is left (invalid bytes replaced).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Where a trailing, still incomplete (but so far valid) UTF-8 sequence starts; the count
    /// when the bytes end on a character boundary.
    static func incompleteTailStart(_ b: [UInt8]) -> Int {
        let n = b.count
        var i = n - 1
        // walk back over at most 3 continuation bytes to the lead byte
        while i >= 0 && i >= n - 4 {
            let byte = b[i]
            if byte & 0xC0 == 0x80 { i -= 1; continue }
            let need: Int
            switch byte {
            case 0xC2...0xDF: need = 2
            case 0xE0...0xEF: need = 3
            case 0xF0...0xF4: need = 4
            default: return n // ASCII or an invalid lead: nothing to wait for
            }
            return n - i < need ? i : n
        }
        return n
    }
}
