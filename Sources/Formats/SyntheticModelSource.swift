import Tokenizer
import Architecture
import Core
import Foundation

/// Random-weight models of real shapes, for measuring speed and memory of models whose
/// weights cannot be had here, and for cross-checking Tessera against llama.cpp on an
/// identical model (written as an F32 GGUF).
public enum SyntheticShape: String, CaseIterable, Sendable {
    case llama32_1b = "llama-3.2-1b"
    case llama32_3b = "llama-3.2-3b"
    case smollm2_135m = "smollm2-135m"

    public var config: LlamaConfig {
        switch self {
        case .llama32_1b, .llama32_3b:
            let is1B = self == .llama32_1b
            let scaling = Llama3RopeScaling(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192)
            let headDim = is1B ? 64 : 128
            return LlamaConfig(blockCount: is1B ? 16 : 28, hidden: is1B ? 2048 : 3072, ffn: 8192, heads: is1B ? 32 : 24,
                               kvHeads: 8, headDim: headDim, vocab: 128_256, contextLength: 131_072, ropeBase: 500_000,
                               ropeFrequencyFactors: scaling.frequencyFactors(headDim: headDim, base: 500_000),
                               rmsEps: 1e-5, tiedEmbeddings: true)
        case .smollm2_135m:
            return LlamaConfig(blockCount: 30, hidden: 576, ffn: 1536, heads: 9, kvHeads: 3, headDim: 64, vocab: 49_152,
                               contextLength: 8192, ropeBase: 100_000, rmsEps: 1e-5, tiedEmbeddings: true)
        }
    }
}

/// A ModelSource whose tensors are generated on demand from a seed and the tensor's name, so
/// the same weights come out wherever they are asked for (in memory, or written to a file).
///
/// Scales keep activations and logits in a realistic range: linear weights uniform in
/// ±√(3/in) (unit gain), norms near 1, embeddings sized so that logits have a spread of a few
/// nats — a perplexity of such a model is far from uniform and sensitive to arithmetic errors.
public final class SyntheticModelSource: ModelSource {
    public let shape: SyntheticShape
    public let config: LlamaConfig
    public let seed: UInt64
    private let tokenizer: Tokenizer?

    public var path: String { "<synthetic \(shape.rawValue)>" }
    public var chatTemplate: String? { tokenizer?.chatTemplate }

    /// - Parameter tokenizer: the tokenizer to ship with the model (nil: none).
    public init(shape: SyntheticShape, seed: UInt64 = 1, tokenizer: Tokenizer? = nil) throws {
        self.shape = shape
        config = shape.config
        self.seed = seed
        self.tokenizer = tokenizer
        if let tokenizer, tokenizer.vocabularySize > config.vocab {
            throw FormatError.invalid(path: "<synthetic \(shape.rawValue)>", reason: "the tokenizer has \(tokenizer.vocabularySize) tokens, the \(shape.rawValue) shape \(config.vocab)")
        }
    }

    public func makeTokenizer() throws -> Tokenizer {
        guard let tokenizer else { throw FormatError.invalid(path: path, reason: "this synthetic model has no tokenizer") }
        return tokenizer
    }

    private lazy var shapes: [String: [Int]] = Dictionary(uniqueKeysWithValues: config.requiredTensorShapes.map { ($0.name, $0.shape) })

    public func hasTensor(_ name: String) -> Bool { shapes[name] != nil }
    public func tensorShape(_ name: String) -> [Int]? { shapes[name] }

    public func floatTensor(_ name: String) throws -> FloatBuffer {
        guard let shape = shapes[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        let count = shape.reduce(1, *)
        let out = FloatBuffer(count: count)
        // A per-tensor stream: FNV-1a of the name mixed with the seed.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        var rng = SplitMix64(seed: hash ^ seed)
        let (center, halfWidth): (Float, Float)
        if shape.count == 1 {
            (center, halfWidth) = (1, 0.25)                                  // norm weights
        } else if name == TensorName.tokenEmbedding {
            (center, halfWidth) = (0, 4 / Float(config.hidden).squareRoot()) // logit spread ~ 2-3 nats
        } else {
            (center, halfWidth) = (0, (3 / Float(shape[1])).squareRoot())
        }
        for i in 0..<count { out[i] = center + rng.uniform(-halfWidth, halfWidth) }
        return out
    }

    /// Writes the model as an F32 GGUF that llama.cpp runs as-is: llama.* hyper-parameters,
    /// the `rope_freqs` tensor for llama3 RoPE scaling, and the tokenizer's metadata.
    public func writeGGUF(to path: String, progress: (String) -> Void = { _ in }) throws {
        let c = config
        var w = GGUFWriter()
        w.set("general.name", "Tessera synthetic \(shape.rawValue) (random weights, seed \(seed))")
        for (key, value) in c.ggufMetadata() { w.set(key, value) }
        if let tokenizer { for (key, value) in tokenizer.ggufMetadata() { w.set(key, value) } }
        try c.addRopeFrequencies(to: &w)
        for (name, shape) in c.requiredTensorShapes {
            progress(name)
            try w.addTensor(name: name, shape: shape, values: try floatTensor(name))
        }
        try w.write(to: path)
    }
}
