import Core
import Foundation

extension Tokenizer {
    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    public static func fromGGUF(_ gguf: GGUFMetadata) throws -> Tokenizer {
        let path = gguf.path
        guard let model = gguf.string("tokenizer.ggml.model") else {
            if gguf.metadata["tokenizer.ggml.model"] != nil {
                throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.model", reason: "expected a string")
            }
            throw FormatError.invalid(path: path, reason: "the file has no tokenizer (metadata key 'tokenizer.ggml.model' is missing)")
        }
        guard model == "gpt2" else {
            throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.model",
                reason: "tokenizer model '\(model)' is not supported (Tessera supports 'gpt2', byte-level BPE)")
        }
        let preName = gguf.string("tokenizer.ggml.pre") ?? "default"
        guard let pre = PreTokenizer.ggufNames[preName] else {
            throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.pre",
                reason: "pre-tokenizer '\(preName)' is not supported (supported: \(PreTokenizer.supportedGGUFNames.joined(separator: ", ")))")
        }
        guard let tokens = try gguf.stringArray("tokenizer.ggml.tokens") else {
            throw FormatError.missingKey(path: path, key: "tokenizer.ggml.tokens")
        }
        guard !tokens.isEmpty else {
            throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.tokens", reason: "the vocabulary is empty")
        }
        guard let merges = try gguf.stringArray("tokenizer.ggml.merges") else {
            throw FormatError.missingKey(path: path, key: "tokenizer.ggml.merges")
        }
        var kinds = [TokenKind](repeating: .normal, count: tokens.count)
        if let types = try gguf.numberArray("tokenizer.ggml.token_type") {
            guard types.count == tokens.count else {
                throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.token_type",
                    reason: "has \(types.count) entries but there are \(tokens.count) tokens")
            }
            for (i, t) in types.enumerated() { kinds[i] = TokenKind(rawValue: UInt8(clamping: Int(t))) ?? .normal }
        }

        var textToID: [String: Int32] = [:]
        textToID.reserveCapacity(tokens.count)
        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            if textToID[t] == nil || kinds[i] == .normal { textToID[t] = Int32(i) }
            switch kinds[i] {
            case .normal: pieces.append(ByteLevel.decode(t))
            case .byte: pieces.append(byteTokenValue(t).map { [$0] } ?? ByteLevel.decode(t))
            default: pieces.append(Array(t.utf8))
            }
        }

        var pairs: [(a: Int32, b: Int32, merged: Int32)] = []
        pairs.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            // "left right"; the separating space is never the first character
            guard let space = m.dropFirst().firstIndex(of: " ") else {
                throw FormatError.badMetadata(path: path, key: "tokenizer.ggml.merges", reason: "entry \(i) '\(m)' is not 'left right'")
            }
            let left = String(m[..<space]), right = String(m[m.index(after: space)...])
            guard let a = textToID[left], let b = textToID[right], let c = textToID[left + right] else { continue }
            pairs.append((a, b, c))
        }

        func id(_ key: String) throws -> Int32? {
            guard let v = gguf.metadata[key] else { return nil }
            guard let i = v.intValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an integer") }
            if i < 0 || i == 0xFFFF_FFFF { return nil } // llama.cpp writes -1 / UINT32_MAX for "none"
            guard i < tokens.count else {
                throw FormatError.badMetadata(path: path, key: key, reason: "token id \(i) is outside the vocabulary of \(tokens.count)")
            }
            return Int32(i)
        }

        var spec = TokenizerSpec(pieces: pieces, kinds: kinds, merges: .pairs(pairs), preTokenizer: pre)
        spec.ignoreMerges = PreTokenizer.ggufIgnoreMerges.contains(preName)
        spec.bosID = try id("tokenizer.ggml.bos_token_id")
        spec.eosID = try id("tokenizer.ggml.eos_token_id")
        spec.unknownID = try id("tokenizer.ggml.unknown_token_id")
        spec.paddingID = try id("tokenizer.ggml.padding_token_id")
        // llama.cpp adds BOS by default for the Llama-3 pre-tokenizer; the key overrides it
        spec.addsBOS = gguf.bool("tokenizer.ggml.add_bos_token") ?? spec.ignoreMerges
        spec.extraEndIDs = try ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"].compactMap { try id($0) }
        spec.chatTemplate = gguf.string("tokenizer.chat_template")
        return Tokenizer(spec)
    }

    /// `<0xAB>` -> 0xAB
    static func byteTokenValue(_ text: String) -> UInt8? {
        guard text.count == 6, text.hasPrefix("<0x"), text.hasSuffix(">") else { return nil }
        return UInt8(text.dropFirst(3).prefix(2), radix: 16)
    }
}
