import Core
import Architecture
import Foundation
import Tokenizer

/// A 2-D weight as a model file stores it. Formats only read and describe; Engine's
/// WeightBinder is the one place that turns these into runnable `LinearWeights`.
public enum StoredMatrix {
    /// Decoded to fp32 (F32, BF16, and types without a compact run-time form).
    case float(FloatBuffer)
    /// IEEE fp16 bit patterns, row-major.
    case f16([UInt16])
    /// ggml Q4_0 / Q4_1 / Q8_0 blocks as stored (rows × cols/32 blocks).
    case ggmlBlocks(GGMLBlockType, UnsafeRawBufferPointer)
    /// Tessera's group-quantized weights, canonical layout.
    case quantized(QuantizedTensor)
}

/// Where a model's tensors and tokenizer come from (GGUF file, Hugging Face folder, packed
/// Tessera file, synthetic weights). Tensor names are GGUF's (`blk.3.attn_q.weight`); weights
/// are row-major [out, in]; Q and K projections use GGUF's interleaved RoPE layout (HF sources
/// permute).
public protocol ModelSource: AnyObject {
    var path: String { get }
    var config: LlamaConfig { get }
    /// The Jinja chat template the model ships with, if any.
    var chatTemplate: String? { get }
    /// The activation mode the file asks its quantized weights to run with (.a16 unless a
    /// packed file says otherwise).
    var storedActivation: ActivationMode { get }
    /// The clipping ratio of per-token activation scales the file asks for (1 unless a packed
    /// file says otherwise).
    var storedActivationClip: Float { get }
    /// The rotation the weights carry (`RotationRecord`: a rotated packed file, or Calibrate's
    /// rotated view of an fp model); nil for every other model.
    var rotation: RotationRecord? { get }
    func makeTokenizer() throws -> Tokenizer
    func hasTensor(_ name: String) -> Bool
    /// Row-major shape (outermost first), or nil when absent.
    func tensorShape(_ name: String) -> [Int]?
    /// The tensor decoded to fp32.
    func floatTensor(_ name: String) throws -> FloatBuffer
    /// The 2-D tensor `name` in its stored form (the default decodes to fp32). Byte views
    /// (`.ggmlBlocks`) are valid while the source is alive.
    func storedMatrix(_ name: String) throws -> StoredMatrix
    /// After loading: the weights have been copied out, so the file's pages can leave RSS.
    func releaseResidentPages()
}

extension ModelSource {
    public var storedActivation: ActivationMode { .a16 }
    public var storedActivationClip: Float { 1 }
    public var rotation: RotationRecord? { nil }
    public func storedMatrix(_ name: String) throws -> StoredMatrix { .float(try floatTensor(name)) }
    public func releaseResidentPages() {}
}

/// Sources backed by a GGUF file expose it (inspect lists its metadata and tensors).
public protocol GGUFTensorListing { var gguf: GGUFFile { get } }
