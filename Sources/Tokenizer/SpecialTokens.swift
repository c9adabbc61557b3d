import Core
import Foundation

/// What a vocabulary entry is (GGUF `tokenizer.ggml.token_type` numbering).
enum TokenKind: UInt8 {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6

    /// Tokens matched in the raw text before splitting.
    var isSpecial: Bool { self == .control || self == .userDefined || self == .unknown }
    /// Matched even when the caller does not ask for special tokens to be parsed (as in llama.cpp,
    /// user-defined tokens are ordinary text pieces that happen to bypass BPE).
    var alwaysMatched: Bool { self == .userDefined }
}

/// A piece of the text after special tokens have been cut out.
enum Fragment: Equatable {
    case text(Range<Int>)
    case token(Int32)
}

/// Finds special tokens written in the text, like llama.cpp's `tokenizer_st_partition`:
/// longer tokens take precedence over shorter ones wherever they are, and each token's
/// occurrences are taken left to right.
struct SpecialTokenMatcher {
    struct Entry {
        let bytes: [UInt8]
        let id: Int32
        let always: Bool
    }
    /// Sorted by length (longest first), then id.
    let entries: [Entry]
    /// Entries starting with each byte.
    private let byFirstByte: [[Int]]
    /// Whether any entry starts with each byte (checked first: most bytes start none).
    private let startsEntry: [Bool]

    init(_ list: [(bytes: [UInt8], id: Int32, always: Bool)]) {
        let sorted = list.filter { !$0.bytes.isEmpty }
            .sorted { $0.bytes.count != $1.bytes.count ? $0.bytes.count > $1.bytes.count : $0.id < $1.id }
        entries = sorted.map { Entry(bytes: $0.bytes, id: $0.id, always: $0.always) }
        var table = [[Int]](repeating: [], count: 256)
        for (i, e) in entries.enumerated() { table[Int(e.bytes[0])].append(i) }
        byFirstByte = table
        startsEntry = table.map { !$0.isEmpty }
    }

    var isEmpty: Bool { entries.isEmpty }

    func partition(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        let n = bytes.count
        guard n > 0 else { return [] }
        guard !entries.isEmpty else { return [.text(0..<n)] }
        // every occurrence of every allowed token: (entry index, position)
        var found: [(entry: Int, pos: Int)] = []
        for i in 0..<n where startsEntry[Int(bytes[i])] {
            for ei in byFirstByte[Int(bytes[i])] {
                let e = entries[ei]
                if !parseSpecial && !e.always { continue }
                let len = e.bytes.count
                if i + len > n { continue }
                var ok = true
                e.bytes.withUnsafeBufferPointer { tb in
                    for k in 1..<len where bytes[i + k] != tb[k] { ok = false; break }
                }
                if ok { found.append((ei, i)) }
            }
        }
        if found.isEmpty { return [.text(0..<n)] }
        // longest tokens first (the entries' order), each left to right; keep those that do not
        // overlap one already kept
        found.sort { $0.entry != $1.entry ? $0.entry < $1.entry : $0.pos < $1.pos }
        var taken = [Bool](repeating: false, count: n)
        var kept: [(pos: Int, len: Int, id: Int32)] = []
        for f in found {
            let len = entries[f.entry].bytes.count
            var free = true
            for k in f.pos..<(f.pos + len) where taken[k] { free = false; break }
            if !free { continue }
            for k in f.pos..<(f.pos + len) { taken[k] = true }
            kept.append((f.pos, len, entries[f.entry].id))
        }
        kept.sort { $0.pos < $1.pos }
        var out: [Fragment] = []
        var cursor = 0
        for k in kept {
            if k.pos > cursor { out.append(.text(cursor..<k.pos)) }
            out.append(.token(k.id))
            cursor = k.pos + k.len
        }
        if cursor < n { out.append(.text(cursor..<n)) }
        return out
    }
}
