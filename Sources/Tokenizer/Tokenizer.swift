import Core
import Foundation

/// Everything needed to build a tokenizer; the loaders (GGUF, tokenizer.json, tiktoken) fill it.
struct TokenizerSpec {
    /// Each token's raw bytes (special tokens: their text).
    var pieces: [[UInt8]]
    var kinds: [TokenKind]
    var merges: MergeSource
    var preTokenizer: PreTokenizer
    /// Look a whole word up in the vocabulary before merging (Llama-3, tiktoken).
    var ignoreMerges = false
    /// Prepend a space to text that does not start with one (tokenizer.json `add_prefix_space`).
    var addPrefixSpace = false
    /// Apply Unicode NFC to the text first (tokenizer.json `normalizer: NFC`).
    var normalizeNFC = false
    var bosID: Int32?
    var eosID: Int32?
    var unknownID: Int32?
    var paddingID: Int32?
    var addsBOS = false
    /// Further end-of-generation ids (GGUF eot/eom ids).
    var extraEndIDs: [Int32] = []
    var chatTemplate: String?
}

/// Byte-level BPE tokenizer (GPT-2 / SmolLM / StarCoder / Refact / Llama-3 pre-tokenizers).
///
/// Encoding: special tokens written in the text are cut out first (longest first), the rest is
/// split into words by the pre-tokenizer, each word's UTF-8 bytes start as one token per byte
/// (the GPT-2 byte alphabet) and adjacent tokens are merged by lowest rank. Safe to use from
/// several threads (encoding is serialised by a lock).
public final class Tokenizer: @unchecked Sendable { // mutable state (caches) is behind `lock`
    public let vocabularySize: Int
    public internal(set) var bosID: Int32?
    public internal(set) var eosID: Int32?
    public internal(set) var unknownID: Int32?
    public internal(set) var paddingID: Int32?
    /// Whether encode adds BOS by default (GGUF `tokenizer.ggml.add_bos_token`).
    public internal(set) var addsBOS: Bool
    /// Token ids that end a generation (EOS, `<|im_end|>`, `<|eot_id|>`, `<|eom_id|>` ...).
    public internal(set) var endOfGenerationIDs: Set<Int32>
    /// The Jinja chat template shipped with the tokenizer, if any.
    public internal(set) var chatTemplate: String?
    public let preTokenizer: PreTokenizer

    let pieces: TokenPieces
    let kinds: [TokenKind]
    /// Normal tokens by their bytes.
    let bytesToID: PieceIndex
    /// Special tokens (control, user-defined, unknown) by their text.
    let specialByText: [String: Int32]
    let specials: SpecialTokenMatcher
    let ignoreMerges: Bool
    let addPrefixSpace: Bool
    let normalizeNFC: Bool
    /// The token of each single byte (-1 when the vocabulary lacks it).
    let byteTokens: [Int32]

    private let lock = NSLock()
    let merger: BPEMerger
    private var wordCache: [[UInt8]: [Int32]] = [:]
    private static let wordCacheLimit = 200_000
    private static let endTokenNames = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>"]

    init(_ spec: TokenizerSpec) {
        precondition(spec.pieces.count == spec.kinds.count)
        vocabularySize = spec.pieces.count
        let tokenPieces = TokenPieces(spec.pieces)
        pieces = tokenPieces
        kinds = spec.kinds
        preTokenizer = spec.preTokenizer
        ignoreMerges = spec.ignoreMerges
        addPrefixSpace = spec.addPrefixSpace
        normalizeNFC = spec.normalizeNFC
        var special: [String: Int32] = [:]
        var matchList: [(bytes: [UInt8], id: Int32, always: Bool)] = []
        for (i, p) in spec.pieces.enumerated() where spec.kinds[i].isSpecial {
            if special[String(decoding: p, as: UTF8.self)] == nil { special[String(decoding: p, as: UTF8.self)] = Int32(i) }
            matchList.append((p, Int32(i), spec.kinds[i].alwaysMatched))
        }
        let byBytes = PieceIndex(tokenPieces) { spec.kinds[$0] == .normal || spec.kinds[$0] == .byte }
        bytesToID = byBytes
        specialByText = special
        specials = SpecialTokenMatcher(matchList)
        byteTokens = (0..<256).map { byBytes[[UInt8($0)]] ?? -1 }
        merger = BPEMerger(source: spec.merges, pieces: tokenPieces, bytesToID: byBytes)
        bosID = spec.bosID
        eosID = spec.eosID
        unknownID = spec.unknownID
        paddingID = spec.paddingID
        addsBOS = spec.addsBOS
        chatTemplate = spec.chatTemplate
        var ends = Set(spec.extraEndIDs)
        if let e = spec.eosID { ends.insert(e) }
        for name in Self.endTokenNames {
            if let id = special[name] ?? byBytes[Array(name.utf8)] { ends.insert(id) }
        }
        endOfGenerationIDs = ends
    }

    // MARK: encoding

    /// Encodes text; special tokens written in the text are matched when `parseSpecial`
    /// (user-defined tokens always are). `addBOS` nil means `addsBOS`.
    public func encode(_ text: String, addBOS: Bool? = nil, parseSpecial: Bool = true) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? addsBOS, let bos = bosID { out.append(bos) }
        var utf8 = Array((normalizeNFC ? text.precomposedStringWithCanonicalMapping : text).utf8)
        if addPrefixSpace && utf8.first != 0x20 && !utf8.isEmpty { utf8.insert(0x20, at: 0) }
        out.reserveCapacity(out.count + utf8.count / 3)
        lock.lock()
        defer { lock.unlock() }
        utf8.withUnsafeBufferPointer { bytes in
            var cps: [UInt32] = []
            var offsets: [Int] = []
            var ends: [Int] = []
            for fragment in specials.partition(bytes, parseSpecial: parseSpecial) {
                switch fragment {
                case .token(let id):
                    out.append(id)
                case .text(let range):
                    decodeScalars(bytes, range, into: &cps, offsets: &offsets)
                    ends.removeAll(keepingCapacity: true)
                    cps.withUnsafeBufferPointer { preTokenizer.split($0, 0, $0.count, into: &ends) }
                    var start = 0
                    for end in ends {
                        encodeWord(bytes, offsets[start]..<offsets[end], into: &out)
                        start = end
                    }
                }
            }
        }
        return out
    }

    /// One pre-tokenized word (bytes `range`), with the cache. Caller holds the lock.
    private func encodeWord(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int32]) {
        if range.count == 1, byteTokens[Int(bytes[range.lowerBound])] >= 0 {
            out.append(byteTokens[Int(bytes[range.lowerBound])])
            return
        }
        let word = Array(bytes[range])
        if let cached = wordCache[word] {
            out.append(contentsOf: cached)
            return
        }
        var ids: [Int32]
        if ignoreMerges, let whole = bytesToID[word] {
            ids = [whole]
        } else {
            ids = word.map { byteTokens[Int($0)] }
            merger.merge(&ids)
            if ids.contains(where: { $0 < 0 }) {
                // bytes the vocabulary cannot spell
                ids = ids.compactMap { $0 >= 0 ? $0 : unknownID }
            }
        }
        if wordCache.count >= Self.wordCacheLimit { wordCache.removeAll(keepingCapacity: true) }
        wordCache[word] = ids
        out.append(contentsOf: ids)
    }

    // MARK: decoding

    /// The raw bytes of one token (special tokens: their text); empty for an unknown id.
    public func tokenBytes(_ id: Int32) -> [UInt8] { Array(pieces[id]) }

    /// Decodes ids to text (invalid UTF-8 replaced).
    public func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: pieces[id]) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The id of a token given as text: a special token's text (`"<|im_end|>"`) or the text a
    /// normal token stands for (`" Hello"`, not the byte-level `"ĠHello"`).
    public func tokenID(_ text: String) -> Int32? {
        specialByText[text] ?? bytesToID[text.utf8]
    }

    /// Whether the id is a control / user-defined / unknown token.
    public func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < kinds.count && kinds[Int(id)].isSpecial
    }
}
