import Core
import Foundation

/// How adjacent tokens merge.
enum MergeSource {
    /// An explicit merge list in priority order (rank = index): token `a` followed by token `b`
    /// becomes token `merged` (GGUF `tokenizer.ggml.merges`, tokenizer.json `model.merges`).
    case pairs([(a: Int32, b: Int32, merged: Int32)])
    /// tiktoken: any adjacent pair whose concatenation is a token merges, and the token's id is
    /// its rank (lower merges first).
    case concatenationRank
}

/// Merges the byte tokens of one word by lowest rank, leftmost first on ties (the order
/// GPT-2, tiktoken and llama.cpp use). Not thread-safe: the tokenizer serialises access.
final class BPEMerger {
    /// An explicit merge list (nil for tiktoken's concatenation ranks).
    private let rules: MergeRules?
    /// tiktoken: (a << 32 | b) -> (rank << 32 | merged) of the pairs met so far; `noMerge` when
    /// the pair does not merge.
    private var pairTable: [UInt64: UInt64] = [:]
    private let pieces: TokenPieces
    private let bytesToID: PieceIndex
    static let noMerge = UInt64.max

    // scratch
    private var ranks: [UInt64] = []
    private var heap: [HeapEntry] = []
    private var prev: [Int32] = []
    private var next: [Int32] = []
    private var concat: [UInt8] = []

    /// Words with more symbols than this use the heap-based merge (O(n log n)); shorter ones a
    /// plain scan, which is faster for them.
    static let scanLimit = 48

    init(source: MergeSource, pieces: TokenPieces, bytesToID: PieceIndex) {
        self.pieces = pieces
        self.bytesToID = bytesToID
        switch source {
        case .pairs(let list):
            rules = MergeRules(list)
        case .concatenationRank:
            rules = nil
        }
    }

    /// The explicit merge rules in priority order (of a pair listed twice, the first), or nil
    /// for tiktoken's concatenation ranks.
    func rankedPairs() -> [(a: Int32, b: Int32)]? {
        rules?.list.map { ($0.a, $0.b) }
    }

    /// The packed (rank, merged) of a pair, or `noMerge`.
    @inline(__always)
    private func pair(_ a: Int32, _ b: Int32) -> UInt64 {
        if a < 0 || b < 0 { return Self.noMerge }
        if let rules { return rules.lookup(a, b) }
        let k = pairKey(a, b)
        if let v = pairTable[k] { return v }
        concat.removeAll(keepingCapacity: true)
        concat.append(contentsOf: pieces[a])
        concat.append(contentsOf: pieces[b])
        var v = Self.noMerge
        if let m = bytesToID[concat] { v = UInt64(UInt32(bitPattern: m)) << 32 | UInt64(UInt32(bitPattern: m)) }
        pairTable[k] = v
        return v
    }

    /// Merges `symbols` (initial tokens, one per byte) in place.
    func merge(_ symbols: inout [Int32]) {
        if symbols.count < 2 { return }
        if symbols.count <= Self.scanLimit { mergeByScan(&symbols) } else { mergeWithHeap(&symbols) }
    }

    func mergeByScan(_ syms: inout [Int32]) {
        ranks.removeAll(keepingCapacity: true)
        for i in 0..<(syms.count - 1) { ranks.append(pair(syms[i], syms[i + 1])) }
        while true {
            var best = Self.noMerge
            var bi = -1
            for i in 0..<ranks.count where ranks[i] < best { best = ranks[i]; bi = i }
            if bi < 0 { break }
            syms[bi] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
            syms.remove(at: bi + 1)
            ranks.remove(at: bi)
            if bi > 0 { ranks[bi - 1] = pair(syms[bi - 1], syms[bi]) }
            if bi < ranks.count { ranks[bi] = pair(syms[bi], syms[bi + 1]) }
        }
    }

    private struct HeapEntry {
        var rank: UInt32
        var left: Int32
        var right: Int32
        var a: Int32
        var b: Int32
        var merged: Int32
        @inline(__always) func before(_ o: HeapEntry) -> Bool { rank != o.rank ? rank < o.rank : left < o.left }
    }

    private func push(_ e: HeapEntry) {
        heap.append(e)
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if heap[i].before(heap[p]) { heap.swapAt(i, p); i = p } else { break }
        }
    }

    private func pop() -> HeapEntry {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && heap[l].before(heap[m]) { m = l }
                if r < n && heap[r].before(heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m); i = m
            }
        }
        return top
    }

    private func pushPair(_ ids: [Int32], _ l: Int32, _ r: Int32) {
        if l < 0 || r < 0 { return }
        let v = pair(ids[Int(l)], ids[Int(r)])
        if v == Self.noMerge { return }
        push(HeapEntry(rank: UInt32(v >> 32), left: l, right: r, a: ids[Int(l)], b: ids[Int(r)],
                       merged: Int32(truncatingIfNeeded: v & 0xFFFF_FFFF)))
    }

    func mergeWithHeap(_ ids: inout [Int32]) {
        let n = ids.count
        prev = (0..<n).map { Int32($0) - 1 }
        next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        heap.removeAll(keepingCapacity: true)
        for i in 0..<(n - 1) { pushPair(ids, Int32(i), Int32(i + 1)) }
        let dead: Int32 = -2
        while !heap.isEmpty {
            let e = pop()
            let l = Int(e.left), r = Int(e.right)
            // stale entries: either side has changed since the pair was queued
            guard ids[l] == e.a, ids[r] == e.b, next[l] == e.right else { continue }
            ids[l] = e.merged
            ids[r] = dead
            next[l] = next[r]
            if next[r] >= 0 { prev[Int(next[r])] = e.left }
            pushPair(ids, prev[l], e.left)
            pushPair(ids, e.left, next[l])
        }
        var out: [Int32] = []
        var i: Int32 = 0
        while i >= 0 { out.append(ids[Int(i)]); i = next[Int(i)] }
        ids = out
    }
}

/// A merge list with an open-addressing index of its pairs: 12 bytes a rule and 4 a slot, at most
/// three quarters full (5.4 MB for LLaMA-3's 280,147 merges; a [UInt64: UInt64] dictionary of
/// them took 8.4 MB, and the list was kept beside it for re-export).
struct MergeRules {
    /// The rules in priority order, a pair listed twice kept at its first place: rank = index.
    private(set) var list: [(a: Int32, b: Int32, merged: Int32)] = []
    private var slots: [Int32]
    private let mask: Int

    init(_ rules: [(a: Int32, b: Int32, merged: Int32)]) {
        var n = 16
        while n * 3 < rules.count * 4 { n <<= 1 }
        slots = [Int32](repeating: -1, count: n)
        mask = n - 1
        list.reserveCapacity(rules.count)
        for r in rules {
            var i = Self.slot(r.a, r.b) & mask
            while slots[i] >= 0 && !(list[Int(slots[i])].a == r.a && list[Int(slots[i])].b == r.b) { i = (i + 1) & mask }
            if slots[i] < 0 { slots[i] = Int32(list.count); list.append(r) }
        }
    }

    /// rank << 32 | merged for the pair (a, b), or BPEMerger.noMerge.
    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> UInt64 {
        var i = Self.slot(a, b) & mask
        while slots[i] >= 0 {
            let r = list[Int(slots[i])]
            if r.a == a && r.b == b { return UInt64(UInt32(slots[i])) << 32 | UInt64(UInt32(bitPattern: r.merged)) }
            i = (i + 1) & mask
        }
        return BPEMerger.noMerge
    }

    @inline(__always)
    private static func slot(_ a: Int32, _ b: Int32) -> Int {
        Int(truncatingIfNeeded: (pairKey(a, b) &* 0x9E37_79B9_7F4A_7C15) >> 32)
    }
}

/// The pair (a, b) as one key: a << 32 | b.
@inline(__always)
private func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
    UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
}

/// Token ids by their bytes: open addressing over `TokenPieces`, one Int32 a slot, at most half
/// full (1 MB for LLaMA-3's 128,256 tokens). A dictionary keyed by byte arrays took ~9 MB: one
/// heap array per token plus its buckets.
struct PieceIndex {
    private let pieces: TokenPieces
    private var slots: [Int32]
    private let mask: Int

    /// Indexes the ids for which `include` holds; of ids with the same bytes the first is kept.
    init(_ pieces: TokenPieces, including include: (Int) -> Bool) {
        self.pieces = pieces
        var n = 16
        while n < 2 * pieces.count { n <<= 1 }
        slots = [Int32](repeating: -1, count: n)
        mask = n - 1
        for id in 0..<pieces.count where include(id) {
            var i = Self.hash(pieces[Int32(id)]) & mask
            while slots[i] >= 0 && !pieces[slots[i]].elementsEqual(pieces[Int32(id)]) { i = (i + 1) & mask }
            if slots[i] < 0 { slots[i] = Int32(id) }
        }
    }

    /// The id of the token spelled by `bytes`, or nil.
    subscript<C: Collection>(bytes: C) -> Int32? where C.Element == UInt8 {
        var i = Self.hash(bytes) & mask
        while slots[i] >= 0 {
            if pieces[slots[i]].elementsEqual(bytes) { return slots[i] }
            i = (i + 1) & mask
        }
        return nil
    }

    /// FNV-1a, 64-bit.
    private static func hash<C: Collection>(_ bytes: C) -> Int where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }
}

/// All tokens' bytes in one buffer.
struct TokenPieces {
    private(set) var bytes: [UInt8] = []
    private(set) var starts: [Int] = [0]

    init(_ pieces: [[UInt8]]) {
        bytes.reserveCapacity(pieces.reduce(0) { $0 + $1.count })
        starts.reserveCapacity(pieces.count + 1)
        for p in pieces { bytes.append(contentsOf: p); starts.append(bytes.count) }
    }

    var count: Int { starts.count - 1 }

    subscript(_ id: Int32) -> ArraySlice<UInt8> {
        let i = Int(id)
        guard i >= 0 && i < count else { return [] }
        return bytes[starts[i]..<starts[i + 1]]
    }
}
