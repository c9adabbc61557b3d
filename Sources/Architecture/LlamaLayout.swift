import Core

// The one description of a Llama model's tensors: names, shapes as functions of the config,
// and roles. Loaders, shape checks, writers, calibration buffers and parameter counts all
// derive from it.

/// GGUF tensor names of the Llama architecture (Tessera's names everywhere; Hugging Face
/// sources map onto them).
public enum TensorName {
    public static let tokenEmbedding = "token_embd.weight"
    public static let outputNorm = "output_norm.weight"
    public static let output = "output.weight"
    public static let ropeFrequencies = "rope_freqs.weight"
    public static func block(_ i: Int, _ part: String) -> String { "blk.\(i).\(part).weight" }
    public static func block(_ i: Int, _ part: BlockPart) -> String { block(i, part.name) }
    /// The per-block tensors' short names, in forward order.
    public static let blockParts = BlockPart.forwardOrder.map(\.name)
}

/// An RMSNorm weight [C] of a block.
public enum BlockNorm: String, CaseIterable, Sendable {
    case attention = "attn_norm"
    case mlp = "ffn_norm"
}

/// A linear weight [out, in] of a block, in forward order.
public enum BlockLinear: String, CaseIterable, Sendable {
    case query = "attn_q", key = "attn_k", value = "attn_v", attentionOutput = "attn_output"
    case gate = "ffn_gate", up = "ffn_up", down = "ffn_down"

    /// (out, in) with C = hidden, F = ffn, H·D query width, KVH·D key/value width.
    public func shape(_ c: LlamaConfig) -> (out: Int, in: Int) {
        let C = c.hidden, F = c.ffn, qWidth = c.heads * c.headDim, kvWidth = c.kvHeads * c.headDim
        switch self {
        case .query: return (qWidth, C)
        case .key, .value: return (kvWidth, C)
        case .attentionOutput: return (C, qWidth)
        case .gate, .up: return (F, C)
        case .down: return (C, F)
        }
    }

    /// The norm whose output this linear reads, if any (o reads attention, down reads SwiGLU).
    public var readsNorm: BlockNorm? {
        switch self {
        case .query, .key, .value: return .attention
        case .gate, .up: return .mlp
        case .attentionOutput, .down: return nil
        }
    }
}

/// One tensor of a block.
public enum BlockPart: Sendable, Equatable {
    case norm(BlockNorm)
    case linear(BlockLinear)

    public var name: String {
        switch self {
        case .norm(let n): return n.rawValue
        case .linear(let l): return l.rawValue
        }
    }

    public static let forwardOrder: [BlockPart] = [
        .norm(.attention), .linear(.query), .linear(.key), .linear(.value), .linear(.attentionOutput),
        .norm(.mlp), .linear(.gate), .linear(.up), .linear(.down),
    ]

    public func shape(_ c: LlamaConfig) -> [Int] {
        switch self {
        case .norm: return [c.hidden]
        case .linear(let l): let s = l.shape(c); return [s.out, s.in]
        }
    }
}

extension LlamaConfig {
    /// Every tensor a Llama model of this configuration needs, with its row-major shape
    /// ([out, in] for weights, [C] for norms), in forward order. `output.weight` is listed
    /// only when the embeddings are not tied.
    public var requiredTensorShapes: [(name: String, shape: [Int])] {
        var list: [(name: String, shape: [Int])] = [(TensorName.tokenEmbedding, [vocab, hidden])]
        for i in 0..<blockCount {
            for part in BlockPart.forwardOrder { list.append((TensorName.block(i, part), part.shape(self))) }
        }
        list.append((TensorName.outputNorm, [hidden]))
        if !tiedEmbeddings { list.append((TensorName.output, [vocab, hidden])) }
        return list
    }

    /// Weights in the linears of one block.
    public var blockLinearParameterCount: Int {
        BlockLinear.allCases.reduce(0) { let s = $1.shape(self); return $0 + s.out * s.in }
    }

    /// Parameter count of the block linears, embeddings and head (norms excluded).
    public var parameterCount: Int {
        blockCount * blockLinearParameterCount + vocab * hidden * (tiedEmbeddings ? 1 : 2)
    }

    /// Throws `missingTensor` / `shapeMismatch` for the first required tensor `shapeOf` lacks or
    /// disagrees on.
    public func checkTensors(path: String, shapeOf: (String) -> [Int]?) throws {
        for (name, expected) in requiredTensorShapes {
            guard let found = shapeOf(name) else { throw FormatError.missingTensor(path: path, tensor: name) }
            guard found == expected else { throw FormatError.shapeMismatch(tensor: name, expected: expected, found: found) }
        }
    }
}
