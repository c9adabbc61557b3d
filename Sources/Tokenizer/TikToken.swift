import Core
import Foundation

extension Tokenizer {
    /// The special tokens of Meta's Llama-3 tokenizer, appended after the 128,000 ranked tokens.
    public static let llama3SpecialTokens: [String] = {
        var names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                     "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                     "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                     "<|python_tag|>", "<|image|>"]
        for i in 2...245 { names.append("<|reserved_special_token_\(i)|>") }
        return names
    }()

    /// A tiktoken-format BPE file (`base64(token) rank` per line; the rank is the token id and
    /// the merge priority). `specialTokens` are appended after the ranked tokens in order (by
    /// default Llama-3's 256, with BOS `<|begin_of_text|>` and EOS `<|end_of_text|>`); the
    /// pre-tokenizer defaults to Llama-3's.
    public static func fromTikToken(path: String, specialTokens: [String]? = nil,
                                    preTokenizer: PreTokenizer = .llama3, addsBOS: Bool = true) throws -> Tokenizer {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FormatError.cannotOpen(path: path, reason: error.localizedDescription)
        }
        var pieces: [[UInt8]] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            lineNumber += 1
            var fields = line.split(separator: UInt8(ascii: " "))
            if let last = fields.last, last.last == UInt8(ascii: "\r") { fields[fields.count - 1] = last.dropLast() }
            guard fields.count == 2, let bytes = Data(base64Encoded: Data(fields[0])),
                  let rank = Int(String(decoding: fields[1], as: UTF8.self)) else {
                throw FormatError.invalid(path: path, reason: "line \(lineNumber) is not 'base64-token rank'")
            }
            guard rank == pieces.count else {
                throw FormatError.invalid(path: path, reason: "line \(lineNumber) has rank \(rank), expected \(pieces.count) (ranks must count up from 0)")
            }
            pieces.append(Array(bytes))
        }
        guard !pieces.isEmpty else { throw FormatError.invalid(path: path, reason: "no tokens in the file") }
        let ranked = pieces.count
        let specials = specialTokens ?? llama3SpecialTokens
        var kinds = [TokenKind](repeating: .normal, count: ranked)
        for s in specials { pieces.append(Array(s.utf8)); kinds.append(.control) }

        var spec = TokenizerSpec(pieces: pieces, kinds: kinds, merges: .concatenationRank, preTokenizer: preTokenizer)
        spec.ignoreMerges = true
        func sid(_ name: String) -> Int32? { specials.firstIndex(of: name).map { Int32(ranked + $0) } }
        spec.bosID = sid("<|begin_of_text|>")
        spec.eosID = sid("<|end_of_text|>")
        spec.addsBOS = addsBOS && spec.bosID != nil
        return Tokenizer(spec)
    }
}
