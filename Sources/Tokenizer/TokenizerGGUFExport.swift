import Core
import Foundation

extension PreTokenizer {
    /// The `tokenizer.ggml.pre` name llama.cpp uses for this splitting rule.
    var ggufName: String {
        switch self {
        case .gpt2: return "gpt2"
        case .gpt2SplitDigits: return "smollm"
        case .llama3: return "llama-bpe"
        case .qwen2: return "qwen2"
        }
    }
}

extension Tokenizer {
    /// The `tokenizer.*` GGUF metadata that makes llama.cpp (and Tessera) rebuild this
    /// tokenizer: byte-level token strings, token types, merges, special ids, chat template.
    /// For a tiktoken vocabulary the merge list is derived from the ranks, as Hugging Face's
    /// tiktoken conversion does.
    public func ggufMetadata() -> [(key: String, value: GGUFValue)] {
        var tokens: [GGUFValue] = []
        var types: [GGUFValue] = []
        tokens.reserveCapacity(vocabularySize)
        types.reserveCapacity(vocabularySize)
        for id in 0..<vocabularySize {
            let bytes = Array(pieces[Int32(id)])
            let kind = kinds[id]
            tokens.append(.string(kind.isSpecial ? String(decoding: bytes, as: UTF8.self) : ByteLevel.encode(bytes)))
            types.append(.int32(Int32(kind.rawValue)))
        }
        var meta: [(key: String, value: GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string(preTokenizer.ggufName)),
            ("tokenizer.ggml.tokens", .array(tokens)),
            ("tokenizer.ggml.token_type", .array(types)),
            ("tokenizer.ggml.merges", .array(mergeList().map { .string($0) })),
            ("tokenizer.ggml.add_bos_token", .bool(addsBOS)),
        ]
        if let bosID { meta.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(bosID)))) }
        if let eosID { meta.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(eosID)))) }
        if let unknownID { meta.append(("tokenizer.ggml.unknown_token_id", .uint32(UInt32(unknownID)))) }
        if let paddingID { meta.append(("tokenizer.ggml.padding_token_id", .uint32(UInt32(paddingID)))) }
        if let chatTemplate { meta.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return meta
    }

    /// Merges as "A B" strings of byte-level token text, in priority order.
    func mergeList() -> [String] {
        let text = { (id: Int32) in ByteLevel.encode(Array(self.pieces[id])) }
        if let pairs = merger.rankedPairs() { return pairs.map { text($0.a) + " " + text($0.b) } }
        // tiktoken ranks, as Hugging Face's tiktoken conversion (and so Llama-3 GGUFs) lists them:
        // every split of a multi-byte token into two tokens is a merge, ordered by the merged
        // token's rank, then the left and right parts' ranks. Merging by these ranks is tiktoken's BPE.
        var merges: [String] = []
        for id in 0..<vocabularySize where kinds[id] == .normal {
            let bytes = Array(pieces[Int32(id)])
            guard bytes.count >= 2 else { continue }
            var splits: [(a: Int32, b: Int32)] = []
            for cut in 1..<bytes.count {
                if let a = bytesToID[bytes[..<cut]], let b = bytesToID[bytes[cut...]] { splits.append((a, b)) }
            }
            for s in splits.sorted(by: { ($0.a, $0.b) < ($1.a, $1.b) }) { merges.append(text(s.a) + " " + text(s.b)) }
        }
        return merges
    }
}
