import Kernels
import Architecture
import Core
import Foundation

/// The weights of one decoder block.
public final class LlamaBlock {
    public let attentionNorm: FloatBuffer   // [C]
    public let query: LinearWeights         // [H·D, C]
    public let key: LinearWeights           // [KVH·D, C]
    public let value: LinearWeights         // [KVH·D, C]
    public let attentionOutput: LinearWeights // [C, H·D]
    public let mlpNorm: FloatBuffer         // [C]
    public let gate: LinearWeights          // [F, C]
    public let up: LinearWeights            // [F, C]
    public let down: LinearWeights          // [C, F]
    /// q, k and v (they read the same normed input), run as one group.
    public let qkv: LinearGroup
    /// gate and up (they read the same normed input), run as one group.
    public let gateUp: LinearGroup

    public init(attentionNorm: FloatBuffer, query: LinearWeights, key: LinearWeights, value: LinearWeights,
                attentionOutput: LinearWeights, mlpNorm: FloatBuffer, gate: LinearWeights, up: LinearWeights,
                down: LinearWeights) {
        self.attentionNorm = attentionNorm
        self.query = query
        self.key = key
        self.value = value
        self.attentionOutput = attentionOutput
        self.mlpNorm = mlpNorm
        self.gate = gate
        self.up = up
        self.down = down
        qkv = LinearGroup([query, key, value])
        gateUp = LinearGroup([gate, up])
    }

    /// The linear of role `l`.
    public func linear(_ l: BlockLinear) -> LinearWeights {
        switch l {
        case .query: return query
        case .key: return key
        case .value: return value
        case .attentionOutput: return attentionOutput
        case .gate: return gate
        case .up: return up
        case .down: return down
        }
    }

    /// The seven linears in `BlockLinear`'s (forward) order.
    public var linears: [LinearWeights] { BlockLinear.allCases.map(linear) }
}

/// A Llama-architecture decoder: embeddings, blocks, final norm, output head.
public final class LlamaModel {
    public let config: LlamaConfig
    public let tokenEmbedding: EmbeddingTable  // [V, C], in its stored form
    public let blocks: [LlamaBlock]
    public let outputNorm: FloatBuffer      // [C]
    public let output: LinearWeights        // [V, C]; the very tokenEmbedding object when tied
    public let rope: RotaryEmbedding
    public let pool: ThreadPool
    /// A rotated model's online transform of the SwiGLU output before down_proj (its file says
    /// so: `tessera.rotation.online_down`); nil for every other model.
    public let downInputHadamard: OnlineHadamard?
    /// A rotated model that kept its tied head (`tessera.rotation.output_norm_hadamard`): the
    /// final norm is weightless and `outputNorm` acts in the Hadamard domain,
    /// normed := Aᵀ·(g ⊙ A·(x/rms(x))), A = H_C/√C; nil for every other model.
    public let outputNormHadamard: OnlineHadamard?
    /// All ones [C]: the weightless norm that precedes `outputNormHadamard`.
    let unitNorm: FloatBuffer

    public init(config: LlamaConfig, tokenEmbedding: EmbeddingTable, blocks: [LlamaBlock], outputNorm: FloatBuffer,
                output: LinearWeights, pool: ThreadPool, downInputHadamard: OnlineHadamard? = nil,
                outputNormHadamard: OnlineHadamard? = nil) {
        precondition(downInputHadamard.map { $0.width == config.ffn } ?? true, "the down_proj input transform must be FFN-wide")
        precondition(outputNormHadamard.map { $0.width == config.hidden } ?? true, "the final norm's transform must be hidden-wide")
        self.outputNormHadamard = outputNormHadamard
        unitNorm = FloatBuffer(Array(repeating: 1, count: outputNormHadamard == nil ? 0 : config.hidden))
        self.config = config
        self.tokenEmbedding = tokenEmbedding
        self.blocks = blocks
        self.outputNorm = outputNorm
        self.output = output
        self.pool = pool
        self.downInputHadamard = downInputHadamard
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeBase, frequencyFactors: config.ropeFrequencyFactors)
    }

    /// Bytes of the block linears (the quantized part of a packed model).
    public var blockLinearBytes: Int { blocks.reduce(0) { sum, block in sum + block.linears.reduce(0) { $0 + $1.byteCount } } }

    /// Bits per weight of the block linears.
    public var blockLinearBitsPerWeight: Double {
        Double(blockLinearBytes * 8) / Double(config.blockCount * config.blockLinearParameterCount)
    }

    /// Bytes one decode step reads: every block weight and the head (of the embedding table
    /// only one row, left out). Divided by the memory bandwidth: the decode upper bound.
    public var decodeBytesPerToken: Int {
        let norms = blocks.reduce(0) { $0 + ($1.attentionNorm.count + $1.mlpNorm.count) * 4 } + outputNorm.count * 4
        return blockLinearBytes + norms + output.byteCount
    }

    /// Bytes held by the weights (a tied head is counted once, with the embedding table).
    public var weightBytes: Int {
        let blockBytes = blocks.reduce(0) { sum, block in
            sum + block.linears.reduce(0) { $0 + $1.byteCount } + (block.attentionNorm.count + block.mlpNorm.count) * 4
        }
        let headBytes = output === tokenEmbedding ? 0 : output.byteCount
        return blockBytes + tokenEmbedding.byteCount + headBytes + outputNorm.count * 4
    }
}

