import Tokenizer
import Architecture
import Core
import Foundation

/// A Llama model in a GGUF file (llama.cpp layout: tensors already in interleaved-RoPE order).
public final class GGUFModelSource: ModelSource {
    public let gguf: GGUFFile
    public let config: LlamaConfig

    public var path: String { gguf.path }
    public var chatTemplate: String? { gguf.string("tokenizer.chat_template") }

    public convenience init(path: String) throws {
        try self.init(gguf: GGUFFile(path: path))
    }

    public init(gguf: GGUFFile) throws {
        self.gguf = gguf
        config = try GGUFModelSource.readConfig(gguf)
        try config.checkTensors(path: gguf.path) { gguf.tensor($0)?.shape }
    }

    static func readConfig(_ g: GGUFFile) throws -> LlamaConfig {
        let path = g.path
        guard let archValue = g.metadata["general.architecture"] else { throw FormatError.missingKey(path: path, key: "general.architecture") }
        guard let arch = archValue.stringValue else {
            throw FormatError.badMetadata(path: path, key: "general.architecture", reason: "expected a string")
        }
        guard arch == "llama" else {
            throw FormatError.invalid(path: path, reason: "architecture \(arch) is not supported (Tessera runs llama)")
        }
        func optionalInt(_ key: String) throws -> Int? {
            guard let v = g.metadata[key] else { return nil }
            guard let i = v.intValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected an integer") }
            return i
        }
        func optionalDouble(_ key: String) throws -> Double? {
            guard let v = g.metadata[key] else { return nil }
            guard let d = v.doubleValue else { throw FormatError.badMetadata(path: path, key: key, reason: "expected a number") }
            return d
        }

        let blocks = try g.requireInt("llama.block_count")
        let hidden = try g.requireInt("llama.embedding_length")
        let ffn = try g.requireInt("llama.feed_forward_length")
        let heads = try g.requireInt("llama.attention.head_count")
        let kvHeads = try optionalInt("llama.attention.head_count_kv") ?? heads
        let keyLength = try optionalInt("llama.attention.key_length")
        let valueLength = try optionalInt("llama.attention.value_length")
        let ropeDims = try optionalInt("llama.rope.dimension_count")
        let headDim = keyLength ?? (heads > 0 ? hidden / heads : 0)
        if let valueLength, valueLength != headDim {
            throw FormatError.badMetadata(path: path, key: "llama.attention.value_length",
                                          reason: "\(valueLength) differs from the key length \(headDim), which Tessera does not support")
        }
        if let ropeDims, ropeDims != headDim {
            throw FormatError.badMetadata(path: path, key: "llama.rope.dimension_count",
                                          reason: "rotary dimension \(ropeDims) differs from the head dimension \(headDim) (partial RoPE is not supported)")
        }
        if let scaling = g.metadata["llama.rope.scaling.type"] {
            let type = scaling.stringValue ?? scaling.summary
            if type != "none" {
                throw FormatError.badMetadata(path: path, key: "llama.rope.scaling.type", reason: "unsupported rope scaling type \(type)")
            }
        }
        let vocab: Int
        if let v = try optionalInt("llama.vocab_size") {
            vocab = v
        } else if let tokens = g.metadata["tokenizer.ggml.tokens"]?.arrayValue {
            vocab = tokens.count
        } else if let embd = g.tensor(TensorName.tokenEmbedding), embd.shape.count == 2 {
            vocab = embd.shape[0]
        } else {
            throw FormatError.missingKey(path: path, key: "llama.vocab_size")
        }
        let context = try g.requireInt("llama.context_length")
        let ropeBase = try optionalDouble("llama.rope.freq_base") ?? 10000
        guard let eps = try optionalDouble("llama.attention.layer_norm_rms_epsilon") else {
            throw FormatError.missingKey(path: path, key: "llama.attention.layer_norm_rms_epsilon")
        }

        var factors: [Float]?
        if let info = g.tensor(TensorName.ropeFrequencies) {
            guard info.shape == [headDim / 2] else {
                throw FormatError.shapeMismatch(tensor: TensorName.ropeFrequencies, expected: [headDim / 2], found: info.shape)
            }
            let f = try g.floatData(TensorName.ropeFrequencies).array
            guard f.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw FormatError.badTensor(path: path, tensor: TensorName.ropeFrequencies, reason: "frequency factors must be positive and finite")
            }
            factors = f
        }

        let config = LlamaConfig(blockCount: blocks, hidden: hidden, ffn: ffn, heads: heads, kvHeads: kvHeads, headDim: headDim,
                                 vocab: vocab, contextLength: context, ropeBase: ropeBase, ropeFrequencyFactors: factors,
                                 rmsEps: Float(eps), tiedEmbeddings: g.tensor(TensorName.output) == nil)
        try config.validate(path: path)
        return config
    }

    public func makeTokenizer() throws -> Tokenizer { try Tokenizer.fromGGUF(gguf) }
    public func hasTensor(_ name: String) -> Bool { gguf.tensor(name) != nil }
    public func tensorShape(_ name: String) -> [Int]? { gguf.tensor(name)?.shape }
    public func floatTensor(_ name: String) throws -> FloatBuffer { try gguf.floatData(name) }

    /// F16 tensors stay F16 and Q8_0, Q4_0, Q4_1 tensors stay ggml blocks (the binder decides
    /// how each runs); anything else is decoded to fp32.
    public func storedMatrix(_ name: String) throws -> StoredMatrix {
        try GGUFModelSource.storedMatrix(gguf, name) ?? .float(floatTensor(name))
    }

    public func releaseResidentPages() { gguf.file.dropResidentPages() }

    /// The 2-D tensor `name` in a compact stored form, or nil when it has none.
    static func storedMatrix(_ gguf: GGUFFile, _ name: String) throws -> StoredMatrix? {
        guard let t = gguf.tensor(name) else { throw FormatError.missingTensor(path: gguf.path, tensor: name) }
        guard t.shape.count == 2 else { return nil }
        switch t.type {
        case .f16:
            let n = t.shape[0] * t.shape[1]
            return .f16(Array(UnsafeBufferPointer(start: gguf.data(of: t).assumingMemoryBound(to: UInt16.self), count: n)))
        case .q8_0, .q4_0, .q4_1:
            guard t.shape[1] % 32 == 0, let type = GGMLBlockType(rawValue: t.type.rawValue) else { return nil }
            return .ggmlBlocks(type, UnsafeRawBufferPointer(start: gguf.data(of: t), count: t.byteCount))
        default:
            return nil
        }
    }
}
extension GGUFModelSource: GGUFTensorListing {}
