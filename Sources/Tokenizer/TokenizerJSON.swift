import Core
import Foundation

extension Tokenizer {
    /// A Hugging Face tokenizer folder: `tokenizer.json` (byte-level BPE) plus, when present,
    /// `tokenizer_config.json` (BOS/EOS, `add_bos_token`, `chat_template`) and `chat_template.jinja`.
    public static func fromHuggingFace(folder: String) throws -> Tokenizer {
        let jsonPath = (folder as NSString).appendingPathComponent("tokenizer.json")
        let root = try readJSONObject(jsonPath)
        let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
        let config = FileManager.default.fileExists(atPath: configPath) ? try readJSONObject(configPath) : [:]
        var spec = try specFromTokenizerJSON(root, path: jsonPath)

        // tokenizer_config.json
        func tokenText(_ v: Any?) -> String? {
            if let s = v as? String { return s }
            if let d = v as? [String: Any] { return d["content"] as? String }
            return nil
        }
        func lookup(_ text: String) -> Int32? {
            let bytes = Array(text.utf8)
            if let i = spec.pieces.indices.first(where: { spec.kinds[$0].isSpecial && spec.pieces[$0] == bytes }) { return Int32(i) }
            return spec.pieces.indices.first(where: { spec.pieces[$0] == bytes }).map { Int32($0) }
        }
        if let bos = tokenText(config["bos_token"]) {
            guard let id = lookup(bos) else {
                throw FormatError.invalid(path: configPath, reason: "bos_token '\(bos)' is not in the vocabulary")
            }
            spec.bosID = id
        }
        if let eos = tokenText(config["eos_token"]) {
            guard let id = lookup(eos) else {
                throw FormatError.invalid(path: configPath, reason: "eos_token '\(eos)' is not in the vocabulary")
            }
            spec.eosID = id
        }
        if let pad = tokenText(config["pad_token"]) { spec.paddingID = lookup(pad) }
        if let unk = tokenText(config["unk_token"]) { spec.unknownID = lookup(unk) }
        if let add = config["add_bos_token"] as? Bool {
            spec.addsBOS = add
        }
        if spec.addsBOS && spec.bosID == nil { spec.addsBOS = false }

        if let t = config["chat_template"] as? String {
            spec.chatTemplate = t
        } else if let list = config["chat_template"] as? [[String: Any]] {
            let chosen = list.first { ($0["name"] as? String) == "default" } ?? list.first
            spec.chatTemplate = chosen?["template"] as? String
        }
        let jinjaPath = (folder as NSString).appendingPathComponent("chat_template.jinja")
        if spec.chatTemplate == nil, let t = try? String(contentsOfFile: jinjaPath, encoding: .utf8) {
            spec.chatTemplate = t
        }
        return Tokenizer(spec)
    }

    static func readJSONObject(_ path: String) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FormatError.cannotOpen(path: path, reason: error.localizedDescription)
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw FormatError.invalid(path: path, reason: "not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = object as? [String: Any] else { throw FormatError.invalid(path: path, reason: "expected a JSON object at the top level") }
        return dict
    }

    /// The parts of tokenizer.json this runtime understands.
    static func specFromTokenizerJSON(_ root: [String: Any], path: String) throws -> TokenizerSpec {
        func bad(_ reason: String) -> FormatError { FormatError.invalid(path: path, reason: reason) }
        guard let model = root["model"] as? [String: Any] else { throw bad("no 'model' section") }
        let type = model["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw bad("tokenizer model '\(type)' is not supported (Tessera supports byte-level 'BPE')") }
        guard let vocab = model["vocab"] as? [String: Any] else { throw bad("model.vocab is missing") }
        let mergeList = model["merges"] as? [Any] ?? []

        // normalizer: none, or NFC
        var nfc = false
        if let norm = root["normalizer"] as? [String: Any] {
            let steps = (norm["type"] as? String) == "Sequence" ? (norm["normalizers"] as? [[String: Any]] ?? []) : [norm]
            for step in steps {
                let t = step["type"] as? String ?? "?"
                guard t == "NFC" else { throw bad("normalizer '\(t)' is not supported (only NFC)") }
                nfc = true
            }
        }

        // pre-tokenizer
        var steps: [[String: Any]] = []
        func flatten(_ p: [String: Any]) {
            if (p["type"] as? String) == "Sequence" {
                for q in p["pretokenizers"] as? [[String: Any]] ?? [] { flatten(q) }
            } else {
                steps.append(p)
            }
        }
        if let pre = root["pre_tokenizer"] as? [String: Any] { flatten(pre) }
        var splitDigits = false
        var pattern: PreTokenizer?
        var byteLevel = false
        var byteLevelRegex = false
        var prefixSpace = false
        for step in steps {
            let t = step["type"] as? String ?? "?"
            switch t {
            case "ByteLevel":
                byteLevel = true
                byteLevelRegex = step["use_regex"] as? Bool ?? true
                prefixSpace = step["add_prefix_space"] as? Bool ?? false
            case "Digits":
                guard step["individual_digits"] as? Bool ?? false else {
                    throw bad("pre-tokenizer Digits without individual_digits is not supported")
                }
                splitDigits = true
            case "Split":
                let p = step["pattern"] as? [String: Any]
                guard let regex = p?["Regex"] as? String else { throw bad("pre-tokenizer Split without a Regex pattern is not supported") }
                guard let known = PreTokenizer.fromPattern(regex) else {
                    throw bad("pre-tokenizer Split pattern \(regex) is not one of the supported (GPT-2, Llama-3, Qwen2)")
                }
                pattern = known
            default:
                throw bad("pre-tokenizer '\(t)' is not supported (supported: ByteLevel, Digits, Split with the GPT-2/Llama-3/Qwen2 regex)")
            }
        }
        guard byteLevel else { throw bad("not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer)") }
        if byteLevelRegex {
            if let p = pattern, p != .gpt2 { throw bad("a Split regex followed by ByteLevel(use_regex) is not supported") }
            pattern = .gpt2
        }
        guard var pre = pattern else { throw bad("byte-level pre-tokenizer without a split regex is not supported") }
        if splitDigits {
            guard pre == .gpt2 else { throw bad("Digits with a non-GPT-2 split regex is not supported") }
            pre = .gpt2SplitDigits
        }

        // vocabulary
        var textToID: [String: Int32] = [:]
        textToID.reserveCapacity(vocab.count)
        var maxID = -1
        for (text, v) in vocab {
            guard let id = (v as? NSNumber)?.intValue, id >= 0 else { throw bad("model.vocab entry '\(text)' has no valid id") }
            textToID[text] = Int32(id)
            maxID = max(maxID, id)
        }
        let added = root["added_tokens"] as? [[String: Any]] ?? []
        for a in added {
            if let id = (a["id"] as? NSNumber)?.intValue { maxID = max(maxID, id) }
        }
        guard maxID >= 0 else { throw bad("the vocabulary is empty") }
        guard maxID < 10_000_000 else { throw bad("token id \(maxID) is implausibly large") }
        var pieces = [[UInt8]](repeating: [], count: maxID + 1)
        var kinds = [TokenKind](repeating: .unused, count: maxID + 1)
        for (text, id) in textToID {
            pieces[Int(id)] = ByteLevel.decode(text)
            kinds[Int(id)] = .normal
        }
        for a in added {
            guard let id = (a["id"] as? NSNumber)?.intValue, let content = a["content"] as? String else {
                throw bad("an added_tokens entry lacks id or content")
            }
            pieces[id] = Array(content.utf8)
            kinds[id] = (a["special"] as? Bool ?? false) ? .control : .userDefined
        }

        // merges
        var pairs: [(a: Int32, b: Int32, merged: Int32)] = []
        pairs.reserveCapacity(mergeList.count)
        for (i, m) in mergeList.enumerated() {
            let left: String, right: String
            if let s = m as? String {
                guard let space = s.dropFirst().firstIndex(of: " ") else { throw bad("merge \(i) '\(s)' is not 'left right'") }
                left = String(s[..<space]); right = String(s[s.index(after: space)...])
            } else if let arr = m as? [String], arr.count == 2 {
                left = arr[0]; right = arr[1]
            } else {
                throw bad("merge \(i) is neither 'left right' nor [left, right]")
            }
            guard let a = textToID[left], let b = textToID[right], let c = textToID[left + right] else { continue }
            pairs.append((a, b, c))
        }

        var spec = TokenizerSpec(pieces: pieces, kinds: kinds, merges: .pairs(pairs), preTokenizer: pre)
        spec.ignoreMerges = model["ignore_merges"] as? Bool ?? false
        spec.addPrefixSpace = prefixSpace
        spec.normalizeNFC = nfc
        if let unk = model["unk_token"] as? String { spec.unknownID = textToID[unk] }

        // BOS as added by the post-processor (Llama-3 style TemplateProcessing)
        if let post = root["post_processor"] as? [String: Any] {
            let processors = (post["type"] as? String) == "Sequence" ? (post["processors"] as? [[String: Any]] ?? []) : [post]
            for p in processors where (p["type"] as? String) == "TemplateProcessing" {
                if let single = p["single"] as? [[String: Any]], let first = single.first?["SpecialToken"] as? [String: Any],
                   let name = first["id"] as? String,
                   let id = added.first(where: { $0["content"] as? String == name })?["id"] as? NSNumber {
                    spec.bosID = Int32(id.intValue)
                    spec.addsBOS = true
                }
            }
        }
        return spec
    }
}
