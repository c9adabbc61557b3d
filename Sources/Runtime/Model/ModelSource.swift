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
    /// The 2-D tensor `name` (token embeddings or an output head) as a table in the most
    /// compact form that reproduces its stored values (the default decodes to fp32).
    func embeddingTable(_ name: String) throws -> EmbeddingTable
}

extension ModelSource {
    public func embeddingTable(_ name: String) throws -> EmbeddingTable {
        try fp32Table(name)
    }

    /// The tensor decoded to fp32 as a table.
    public func fp32Table(_ name: String) throws -> EmbeddingTable {
        guard let shape = tensorShape(name), shape.count == 2 else {
            throw FormatError.badTensor(path: path, tensor: name, reason: "expected a 2-D table, found shape \(tensorShape(name) ?? [])")
        }
        return FP32Linear(weight: try floatTensor(name), outFeatures: shape[0], inFeatures: shape[1])
    }
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

extension GGUFTensorListing {
    /// After loading: the weights have been copied out, so the file's pages can leave RSS.
    public func releaseFilePages() { gguf.file.dropResidentPages() }
}
