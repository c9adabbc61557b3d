import Core
import Foundation
import Formats
import Kernels
import Model
import Tokenizer

/// A model ready to run: its source, weights, tokenizer and chat template.
public struct LoadedModel {
    public let source: ModelSource
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let loadSeconds: Double

    public var chatTemplate: String? { source.chatTemplate }

    /// Opens a GGUF file or Hugging Face folder and loads it for inference on `threads`
    /// workers (0 = one per fast physical core).
    /// Packed Tessera files run on the low-bit kernels (`activation` and `activationClip`
    /// override the file's mode and per-token clipping ratio).
    public static func load(path: String, threads: Int = 0, numa: Bool = false, activation: ActivationMode? = nil,
                            activationClip: Float? = nil) throws -> LoadedModel {
        let start = ContinuousClock.now
        let source = try ModelLoader.open(path)
        let tokenizer = try source.makeTokenizer()
        guard tokenizer.vocabularySize <= source.config.vocab else {
            throw FormatError.invalid(path: path, reason: "the tokenizer has \(tokenizer.vocabularySize) tokens but the model only \(source.config.vocab) embeddings")
        }
        let model = try WeightBinder(source: source, activation: activation, activationClip: activationClip).model(pool: ThreadPool(threads: threads, numa: numa))
        // Every weight now lives in the model's own buffers: the file map need not stay resident.
        source.releaseResidentPages()
        return LoadedModel(source: source, model: model, tokenizer: tokenizer, loadSeconds: (ContinuousClock.now - start).seconds)
    }
}
