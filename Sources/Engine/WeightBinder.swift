import Architecture
import Core
import Formats
import Kernels
import Model
import Quant

/// The one place that binds stored weights to runnable `LinearWeights` (and so picks a
/// kernel family for each tensor). Formats only say how a tensor is stored; model code only
/// calls `LinearWeights`.
///
///   stored as                 block linear                 embedding table / head
///   quantized (packed file)   QuantizedLinear(mode)        QuantizedLinear(mode ≥ 8 bits)
///   ggml Q4_0/Q4_1/Q8_0       QuantizedLinear(mode)        QuantizedLinear(mode ≥ 8 bits)
///   fp16                      FP32Linear (decoded)         F16Linear
///   anything else             FP32Linear                   FP32Linear
///
/// mode = the caller's activation override, else the file's (`storedActivation`, a16 for GGUF);
/// likewise the per-token modes' clipping ratio (`storedActivationClip`, 1 unless a file says).
/// Tables run A4 modes as A8 (`ActivationMode.atLeast8Bit`).
/// A rotated source gets the model's online Hadamard transform before down_proj
/// (`rotation.onlineDownHadamard`) and its final norm in the Hadamard domain
/// (`rotation.outputNormHadamard`); every other source binds exactly as before.
/// `linears: .fp32` decodes every block linear to fp32 instead (the reference forward that
/// tests compare the low-bit kernels and llama.cpp's fp32 figures against); tables keep the
/// stored form either way.
/// ggml blocks convert losslessly to group-32 weights (Quant); a block whose scale does not
/// fit the converted offset keeps fp32.
public struct WeightBinder {
    public let source: ModelSource
    public let activation: ActivationMode
    public let activationClip: Float
    public let linears: LinearForm

    /// How block linears are bound: in their stored form (quantized ones on the low-bit
    /// kernels), or all decoded to fp32.
    public enum LinearForm: Sendable { case stored, fp32 }

    public init(source: ModelSource, activation: ActivationMode? = nil, activationClip: Float? = nil, linears: LinearForm = .stored) {
        self.source = source
        self.activation = activation ?? source.storedActivation
        self.activationClip = activationClip ?? source.storedActivationClip
        self.linears = linears
    }

    /// A block linear `name` of shape [out, in].
    public func linear(_ name: String, out: Int, in inFeatures: Int) throws -> LinearWeights {
        try check(name, [out, inFeatures])
        let stored = try source.storedMatrix(name)
        if linears == .stored, let q = quantized(name, stored) {
            return QuantizedLinear(weights: try PackedWeights(q, name: name), activation: activation, activationClip: activationClip)
        }
        return FP32Linear(weight: try fp32(name, stored), outFeatures: out, inFeatures: inFeatures)
    }

    /// A [V, C] table (token embeddings, or an untied head) in its most compact runnable form.
    public func table(_ name: String, rows: Int, cols: Int) throws -> EmbeddingTable {
        try check(name, [rows, cols])
        let stored = try source.storedMatrix(name)
        if case .f16(let bits) = stored { return bits.withUnsafeBytes { F16Linear(copying: $0.baseAddress!, outFeatures: rows, inFeatures: cols) } }
        if let q = quantized(name, stored) {
            return QuantizedLinear(weights: try PackedWeights(q, name: name), activation: activation.atLeast8Bit, activationClip: activationClip)
        }
        return FP32Linear(weight: try fp32(name, stored), outFeatures: rows, inFeatures: cols)
    }

    /// The group-quantized form of `name`, if it is stored as one (or converts to one losslessly).
    private func quantized(_ name: String, _ stored: StoredMatrix) -> QuantizedTensor? {
        switch stored {
        case .quantized(let q): return q
        case .ggmlBlocks(let type, let bytes):
            let shape = source.tensorShape(name) ?? []
            return try? QuantizedTensor.fromGGML(type: type, blocks: bytes.baseAddress!, rows: shape[0], cols: shape[1], name: name)
        case .f16, .float: return nil
        }
    }

    /// `name` decoded to fp32 (reusing the decoded form when that is how it is stored).
    private func fp32(_ name: String, _ stored: StoredMatrix) throws -> FloatBuffer {
        if case .float(let values) = stored { return values }
        return try source.floatTensor(name)
    }

    private func check(_ name: String, _ shape: [Int]) throws {
        guard let found = source.tensorShape(name) else { throw FormatError.missingTensor(path: source.path, tensor: name) }
        guard found == shape else { throw FormatError.shapeMismatch(tensor: name, expected: shape, found: found) }
    }

    private func vector(_ name: String, _ count: Int) throws -> FloatBuffer {
        try check(name, [count])
        return try source.floatTensor(name)
    }

    /// Loads every tensor of the source into a model running on `pool`, checking each shape
    /// against the config (the one block description, Architecture's `BlockPart`).
    public func model(pool: ThreadPool) throws -> LlamaModel {
        let c = source.config
        try c.validate(path: source.path)
        let embedding = try table(TensorName.tokenEmbedding, rows: c.vocab, cols: c.hidden)
        var blocks: [LlamaBlock] = []
        for i in 0..<c.blockCount {
            func lin(_ l: BlockLinear) throws -> LinearWeights {
                let s = l.shape(c)
                return try linear(TensorName.block(i, .linear(l)), out: s.out, in: s.in)
            }
            func norm(_ n: BlockNorm) throws -> FloatBuffer { try vector(TensorName.block(i, .norm(n)), c.hidden) }
            blocks.append(LlamaBlock(
                attentionNorm: try norm(.attention), query: try lin(.query), key: try lin(.key), value: try lin(.value),
                attentionOutput: try lin(.attentionOutput), mlpNorm: try norm(.mlp),
                gate: try lin(.gate), up: try lin(.up), down: try lin(.down)))
        }
        // Tied: the embedding table is the head, the same object (no second copy).
        let output: LinearWeights = source.hasTensor(TensorName.output)
            ? try table(TensorName.output, rows: c.vocab, cols: c.hidden) : embedding
        return LlamaModel(config: c, tokenEmbedding: embedding, blocks: blocks,
                          outputNorm: try vector(TensorName.outputNorm, c.hidden), output: output, pool: pool,
                          downInputHadamard: try downInputHadamard(), outputNormHadamard: try outputNormHadamard())
    }

    /// The final norm's Hadamard-domain transform, when the source's rotation asks for it.
    private func outputNormHadamard() throws -> OnlineHadamard? {
        guard let rotation = source.rotation, rotation.outputNormHadamard else { return nil }
        guard let h = OnlineHadamard(width: source.config.hidden) else {
            throw FormatError.invalid(path: source.path, reason: "the file asks for the final norm in the Hadamard domain of width \(source.config.hidden) (the hidden size), which has no supported form (m·2^k, m = 1, 12, 20, 28 or 36)")
        }
        return h
    }

    /// The online transform before down_proj, when the source's rotation asks for it.
    private func downInputHadamard() throws -> OnlineHadamard? {
        guard let rotation = source.rotation, rotation.onlineDownHadamard else { return nil }
        guard let h = OnlineHadamard(width: source.config.ffn) else {
            throw FormatError.invalid(path: source.path, reason: "the file asks for an online Hadamard transform of width \(source.config.ffn) (the FFN width), which has no supported form (m·2^k, m = 1, 12, 20, 28 or 36)")
        }
        return h
    }
}
