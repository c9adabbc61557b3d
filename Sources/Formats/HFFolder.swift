import Tokenizer
import Architecture
import Core
import Foundation

/// A Llama model in a Hugging Face folder: config.json, model.safetensors (or shards listed in
/// model.safetensors.index.json), tokenizer.json / tokenizer_config.json / chat_template.jinja.
///
/// Tensors are exposed under GGUF names. HF stores Q and K projections for "rotate-half" RoPE
/// (dimension i pairs with i + D/2); Tessera uses GGUF's interleaved pairs (2i, 2i+1), so
/// `floatTensor` permutes the rows of `attn_q` / `attn_k` per head exactly as llama.cpp's
/// convert_hf_to_gguf.py does.
public final class HFModelSource: ModelSource {
    public let path: String
    public let config: LlamaConfig
    public let chatTemplate: String?
    /// `__metadata__`-independent map: GGUF name → (shard, HF name).
    private let locations: [String: (shard: Int, hfName: String)]
    private let shards: [SafetensorsFile]

    public static let configFile = "config.json"
    public static let singleWeightsFile = "model.safetensors"
    public static let indexFile = "model.safetensors.index.json"
    public static let tokenizerFile = "tokenizer.json"
    public static let tokenizerConfigFile = "tokenizer_config.json"
    public static let chatTemplateFile = "chat_template.jinja"

    public convenience init(path: String) throws { try self.init(folder: path) }

    public init(folder: String) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir) else {
            throw FormatError.cannotOpen(path: folder, reason: "no such file or directory")
        }
        guard isDir.boolValue else { throw FormatError.cannotOpen(path: folder, reason: "not a directory (expected a Hugging Face model folder)") }
        path = folder
        func file(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }

        // config.json
        let configPath = file(HFModelSource.configFile)
        let json = try HFModelSource.readJSONObject(configPath, role: "a Hugging Face model folder needs config.json")
        let hf = try HFConfig(json: json, path: configPath)

        // Weights: shards from the index, or one model.safetensors.
        var shardFiles: [SafetensorsFile] = []
        var hfLocations: [(hfName: String, shard: Int)] = []
        let indexPath = file(HFModelSource.indexFile)
        if fm.fileExists(atPath: indexPath) {
            let index = try HFModelSource.readJSONObject(indexPath, role: "")
            guard let weightMap = index["weight_map"] as? [String: Any] else {
                throw FormatError.invalid(path: indexPath, reason: "no 'weight_map' object")
            }
            var shardIndex: [String: Int] = [:]
            for (name, value) in weightMap.sorted(by: { $0.key < $1.key }) {
                guard let shardName = value as? String else {
                    throw FormatError.invalid(path: indexPath, reason: "weight_map entry '\(name)' is not a file name")
                }
                guard !shardName.isEmpty, !shardName.hasPrefix("/"), !shardName.split(separator: "/").contains("..") else {
                    throw FormatError.invalid(path: indexPath, reason: "weight_map entry '\(name)' names '\(shardName)', which is outside the folder")
                }
                let s: Int
                if let known = shardIndex[shardName] {
                    s = known
                } else {
                    let shardPath = file(shardName)
                    guard fm.fileExists(atPath: shardPath) else {
                        throw FormatError.cannotOpen(path: shardPath, reason: "missing: \(HFModelSource.indexFile) lists it as a weight shard")
                    }
                    s = shardFiles.count
                    shardFiles.append(try SafetensorsFile(path: shardPath))
                    shardIndex[shardName] = s
                }
                guard shardFiles[s].tensor(name) != nil else {
                    throw FormatError.missingTensor(path: shardFiles[s].path, tensor: name)
                }
                hfLocations.append((name, s))
            }
        } else {
            let single = file(HFModelSource.singleWeightsFile)
            guard fm.fileExists(atPath: single) else {
                throw FormatError.cannotOpen(path: single, reason: "missing: a Hugging Face model folder needs \(HFModelSource.singleWeightsFile) or \(HFModelSource.indexFile) with its shards")
            }
            let st = try SafetensorsFile(path: single)
            shardFiles = [st]
            hfLocations = st.tensors.map { ($0.name, 0) }
        }
        shards = shardFiles

        // HF names → GGUF names.
        var map: [String: (shard: Int, hfName: String)] = [:]
        for (hfName, s) in hfLocations {
            if hfName.hasPrefix("model.layers."), hfName.hasSuffix(".bias") {
                throw FormatError.badTensor(path: shardFiles[s].path, tensor: hfName, reason: "linear and norm biases are not supported by Tessera's Llama")
            }
            guard let name = HFModelSource.ggufName(hf: hfName) else { continue } // e.g. rotary_emb.inv_freq
            if let layer = HFModelSource.layerIndex(ggufName: name), layer >= hf.blockCount {
                throw FormatError.badTensor(path: shardFiles[s].path, tensor: hfName,
                                            reason: "belongs to layer \(layer) but config.json has num_hidden_layers = \(hf.blockCount)")
            }
            if let other = map[name] {
                throw FormatError.badTensor(path: shardFiles[s].path, tensor: hfName, reason: "maps to '\(name)' like '\(other.hfName)'")
            }
            map[name] = (s, hfName)
        }
        // tie_word_embeddings = false without lm_head.weight: the checkpoint is tied in practice.
        let tied = hf.tieWordEmbeddings || map[TensorName.output] == nil
        if tied { map[TensorName.output] = nil }
        locations = map

        var cfg = LlamaConfig(blockCount: hf.blockCount, hidden: hf.hidden, ffn: hf.ffn, heads: hf.heads, kvHeads: hf.kvHeads,
                              headDim: hf.headDim, vocab: hf.vocab, contextLength: hf.contextLength, ropeBase: hf.ropeTheta,
                              ropeFrequencyFactors: nil, rmsEps: Float(hf.rmsEps), tiedEmbeddings: tied)
        try cfg.validate(path: configPath)
        if let scaling = hf.llama3Scaling {
            cfg.ropeFrequencyFactors = scaling.frequencyFactors(headDim: cfg.headDim, base: cfg.ropeBase)
        }
        config = cfg
        try cfg.checkTensors(path: folder) { name in map[name].flatMap { shardFiles[$0.shard].tensor($0.hfName)?.shape } }
        for (name, _) in cfg.requiredTensorShapes {
            let loc = map[name]!
            let info = shardFiles[loc.shard].tensor(loc.hfName)!
            guard info.dtype.ggmlType != nil else {
                throw FormatError.badTensor(path: shardFiles[loc.shard].path, tensor: loc.hfName,
                                            reason: "dtype \(info.dtype.rawValue) is not supported (Tessera reads F32, F16 and BF16)")
            }
        }

        chatTemplate = try HFModelSource.readChatTemplate(folder: folder)
    }

    // MARK: ModelSource

    public func makeTokenizer() throws -> Tokenizer {
        let tokenizerPath = (path as NSString).appendingPathComponent(HFModelSource.tokenizerFile)
        guard FileManager.default.fileExists(atPath: tokenizerPath) else {
            throw FormatError.cannotOpen(path: tokenizerPath, reason: "missing: a Hugging Face model folder needs \(HFModelSource.tokenizerFile)")
        }
        return try Tokenizer.fromHuggingFace(folder: path)
    }

    public func hasTensor(_ name: String) -> Bool { locations[name] != nil }

    public func tensorShape(_ name: String) -> [Int]? {
        locations[name].flatMap { shards[$0.shard].tensor($0.hfName)?.shape }
    }

    public func floatTensor(_ name: String) throws -> FloatBuffer {
        guard let loc = locations[name], let info = shards[loc.shard].tensor(loc.hfName) else {
            throw FormatError.missingTensor(path: path, tensor: name)
        }
        let values = try shards[loc.shard].floatData(info)
        let part = HFModelSource.blockPart(ggufName: name)
        if part == BlockLinear.query.rawValue || part == BlockLinear.key.rawValue {
            let heads = part == BlockLinear.query.rawValue ? config.heads : config.kvHeads
            return HFModelSource.permuteRotaryHalfToInterleaved(values, rows: info.shape[0], cols: info.shape[1], heads: heads)
        }
        return values
    }

    /// The HF name behind a GGUF name (for messages and tools).
    public func hfName(of name: String) -> String? { locations[name]?.hfName }

    // MARK: names and the Q/K permutation

    private static let layerParts: [String: String] = [
        "input_layernorm.weight": BlockNorm.attention.rawValue,
        "self_attn.q_proj.weight": BlockLinear.query.rawValue,
        "self_attn.k_proj.weight": BlockLinear.key.rawValue,
        "self_attn.v_proj.weight": BlockLinear.value.rawValue,
        "self_attn.o_proj.weight": BlockLinear.attentionOutput.rawValue,
        "post_attention_layernorm.weight": BlockNorm.mlp.rawValue,
        "mlp.gate_proj.weight": BlockLinear.gate.rawValue,
        "mlp.up_proj.weight": BlockLinear.up.rawValue,
        "mlp.down_proj.weight": BlockLinear.down.rawValue,
    ]

    /// The GGUF name of an HF Llama tensor, or nil for tensors Tessera does not use.
    public static func ggufName(hf name: String) -> String? {
        switch name {
        case "model.embed_tokens.weight": return TensorName.tokenEmbedding
        case "model.norm.weight": return TensorName.outputNorm
        case "lm_head.weight": return TensorName.output
        default: break
        }
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: ".") else { return nil }
        let digits = rest[..<dot]
        // Canonical decimal only, so that "01" and "1" cannot both name layer 1.
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits == "0" || !digits.hasPrefix("0"),
              digits.count <= 6, let layer = Int(digits) else { return nil }
        guard let part = layerParts[String(rest[rest.index(after: dot)...])] else { return nil }
        return TensorName.block(layer, part)
    }

    static func layerIndex(ggufName: String) -> Int? {
        guard ggufName.hasPrefix("blk.") else { return nil }
        return ggufName.dropFirst(4).split(separator: ".").first.flatMap { Int($0) }
    }

    static func blockPart(ggufName: String) -> String? {
        let parts = ggufName.split(separator: ".")
        guard parts.count == 4, parts[0] == "blk" else { return nil }
        return String(parts[2])
    }

    /// Reorders the rows of an HF Q or K projection ([heads·D, cols]) from rotate-half to
    /// interleaved RoPE: within each head, view the rows as (2, D/2) and transpose to (D/2, 2),
    /// so GGUF row h·D + 2i + j is HF row h·D + j·D/2 + i.
    public static func permuteRotaryHalfToInterleaved(_ w: FloatBuffer, rows: Int, cols: Int, heads: Int) -> FloatBuffer {
        precondition(heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0 && rows * cols == w.count)
        let d = rows / heads, half = d / 2
        let out = FloatBuffer(count: w.count)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let dst = out.pointer + (h * d + 2 * i + j) * cols
                    let src = w.pointer + (h * d + j * half + i) * cols
                    dst.update(from: src, count: cols)
                }
            }
        }
        return out
    }

    // MARK: files

    static func readJSONObject(_ path: String, role: String) throws -> [String: Any] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw FormatError.cannotOpen(path: path, reason: role.isEmpty ? "no such file" : "missing: \(role)")
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FormatError.cannotOpen(path: path, reason: error.localizedDescription)
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw FormatError.invalid(path: path, reason: "not valid JSON (\(SafetensorsFile.describe(error)))")
        }
        guard let dict = object as? [String: Any] else { throw FormatError.invalid(path: path, reason: "expected a JSON object") }
        return dict
    }

    /// chat_template.jinja if present (transformers lets it override the config), else
    /// tokenizer_config.json's `chat_template`: a string, or a list of {name, template}
    /// from which "default" is taken.
    static func readChatTemplate(folder: String) throws -> String? {
        let jinja = (folder as NSString).appendingPathComponent(chatTemplateFile)
        if FileManager.default.fileExists(atPath: jinja) {
            do { return try String(contentsOfFile: jinja, encoding: .utf8) } catch {
                throw FormatError.cannotOpen(path: jinja, reason: "not readable UTF-8 text")
            }
        }
        let configPath = (folder as NSString).appendingPathComponent(tokenizerConfigFile)
        guard FileManager.default.fileExists(atPath: configPath) else { return nil }
        let json = try readJSONObject(configPath, role: "")
        guard let value = json["chat_template"], !(value is NSNull) else { return nil }
        if let s = value as? String { return s }
        if let list = value as? [Any] {
            let named = list.compactMap { $0 as? [String: Any] }
            if let d = named.first(where: { $0["name"] as? String == "default" }), let t = d["template"] as? String { return t }
            return nil
        }
        throw FormatError.invalid(path: configPath, reason: "chat_template is neither a string nor a list of {name, template}")
    }
}

/// The fields of an HF LlamaConfig that Tessera uses, with transformers' defaults.
struct HFConfig {
    var blockCount = 0, hidden = 0, ffn = 0, heads = 0, kvHeads = 0, vocab = 0, contextLength = 2048
    var headDim: Int?
    var ropeTheta = 10000.0
    var rmsEps = 1e-6
    var tieWordEmbeddings = false
    var llama3Scaling: Llama3RopeScaling?

    init(json: [String: Any], path: String) throws {
        func bad(_ key: String, _ reason: String) -> FormatError { .badMetadata(path: path, key: key, reason: reason) }
        func int(_ key: String, in dict: [String: Any]? = nil, prefix: String = "", default def: Int? = nil) throws -> Int {
            let v = (dict ?? json)[key]
            if JSONNumber.isNull(v) {
                guard let def else { throw FormatError.missingKey(path: path, key: prefix + key) }
                return def
            }
            guard let i = JSONNumber.int(v) else { throw bad(prefix + key, "expected an integer, found \(v!)") }
            return i
        }
        func double(_ key: String, in dict: [String: Any]? = nil, prefix: String = "", default def: Double? = nil) throws -> Double {
            let v = (dict ?? json)[key]
            if JSONNumber.isNull(v) {
                guard let def else { throw FormatError.missingKey(path: path, key: prefix + key) }
                return def
            }
            guard let d = JSONNumber.double(v) else { throw bad(prefix + key, "expected a number, found \(v!)") }
            return d
        }

        let architectures = (json["architectures"] as? [Any])?.compactMap { $0 as? String } ?? []
        let modelType = json["model_type"] as? String
        guard architectures.contains("LlamaForCausalLM") || (architectures.isEmpty && modelType == "llama") else {
            let arch = architectures.first ?? modelType ?? "(none given)"
            throw FormatError.invalid(path: path, reason: "architecture \(arch) is not supported (Tessera runs llama)")
        }
        for flag in ["attention_bias", "mlp_bias"] where JSONNumber.bool(json[flag]) == true {
            throw bad(flag, "biases are not supported by Tessera's Llama")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw bad("hidden_act", "activation \(act) is not supported (Tessera's Llama uses silu)")
        }

        blockCount = try int("num_hidden_layers")
        hidden = try int("hidden_size")
        ffn = try int("intermediate_size")
        heads = try int("num_attention_heads")
        kvHeads = try int("num_key_value_heads", default: heads)
        headDim = JSONNumber.isNull(json["head_dim"]) ? nil : try int("head_dim")
        vocab = try int("vocab_size")
        contextLength = try int("max_position_embeddings", default: 2048)
        rmsEps = try double("rms_norm_eps", default: 1e-6)
        if let t = json["tie_word_embeddings"], !(t is NSNull) {
            guard let b = JSONNumber.bool(t) else { throw bad("tie_word_embeddings", "expected true or false") }
            tieWordEmbeddings = b
        }

        // rope_scaling (transformers 4.x) or rope_parameters (transformers 5, which also holds rope_theta).
        var ropeParameters: [String: Any]?
        var scalingKey = "rope_scaling"
        if let p = json["rope_parameters"], !(p is NSNull) {
            guard let dict = p as? [String: Any] else { throw bad("rope_parameters", "expected an object") }
            ropeParameters = dict
            scalingKey = "rope_parameters"
        }
        if let s = json["rope_scaling"], !(s is NSNull) {
            guard let dict = s as? [String: Any] else { throw bad("rope_scaling", "expected an object or null") }
            ropeParameters = dict
            scalingKey = "rope_scaling"
        }
        if !JSONNumber.isNull(json["rope_theta"]) {
            ropeTheta = try double("rope_theta")
        } else if let p = ropeParameters, !JSONNumber.isNull(p["rope_theta"]) {
            ropeTheta = try double("rope_theta", in: p, prefix: scalingKey + ".")
        }
        if let p = ropeParameters {
            let type = (p["rope_type"] as? String) ?? (p["type"] as? String) ?? "default"
            switch type {
            case "default":
                break
            case "llama3":
                let factor = try double("factor", in: p, prefix: scalingKey + ".")
                let low = try double("low_freq_factor", in: p, prefix: scalingKey + ".")
                let high = try double("high_freq_factor", in: p, prefix: scalingKey + ".")
                let original = try int("original_max_position_embeddings", in: p, prefix: scalingKey + ".")
                guard factor > 0, low > 0, high > low, original > 0 else {
                    throw bad(scalingKey, "llama3 parameters factor \(factor), low_freq_factor \(low), high_freq_factor \(high), original_max_position_embeddings \(original) are impossible")
                }
                llama3Scaling = Llama3RopeScaling(factor: factor, lowFreqFactor: low, highFreqFactor: high, originalContext: original)
            default:
                throw FormatError.invalid(path: path, reason: "unsupported rope_scaling type \(type) (Tessera supports llama3 scaling or none)")
            }
        }
    }
}
