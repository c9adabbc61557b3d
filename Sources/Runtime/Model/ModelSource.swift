import Foundation

/// Where a model's tensors and tokenizer come from (GGUF file, Hugging Face folder, packed
/// Tessera file). Tensor names are GGUF's (`blk.3.attn_q.weight`); weights are row-major
/// [out, in]; Q and K projections use GGUF's interleaved RoPE layout (HF sources permute).
public protocol ModelSource: AnyObject {
    var path: String { get }
    var config: LlamaConfig { get }
    /// The Jinja chat template the model ships with, if any.
    var chatTemplate: String? { get }
    func makeTokenizer() throws -> Tokenizer
    func hasTensor(_ name: String) -> Bool
    /// Row-major shape (outermost first), or nil when absent.
    func tensorShape(_ name: String) -> [Int]?
    /// The tensor decoded to fp32.
    func floatTensor(_ name: String) throws -> FloatBuffer
}

/// GGUF tensor names of the Llama architecture.
public enum TensorName {
    public static let tokenEmbedding = "token_embd.weight"
    public static let outputNorm = "output_norm.weight"
    public static let output = "output.weight"
    public static let ropeFrequencies = "rope_freqs.weight"
    public static func block(_ i: Int, _ part: String) -> String { "blk.\(i).\(part).weight" }
    /// The per-block tensors, in forward order.
    public static let blockParts = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
}

/// Sources backed by a GGUF file expose it (inspect lists its metadata and tensors).
public protocol GGUFTensorListing { var gguf: GGUFFile { get } }
