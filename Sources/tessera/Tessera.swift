import Eval
import ArgumentParser
import Foundation
import CLISupport
import Engine

@main
struct Tessera: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "tessera",
        abstract: "Tessera: ultra-low-bit LLMs on CPUs — inspect, quantize, calibrate, perplexity, zero-shot eval, synthetic models.",
        subcommands: [Perplexity.self, Eval.self, Inspect.self, Quantize.self, CalibrateCommand.self, TuneCommand.self, AverageCommand.self, Synthesize.self])
}

/// Options every model-running command shares.
struct RuntimeOptions: ParsableArguments {
    @Option(name: [.customShort("t"), .long], help: "Worker threads (0 = one per fast physical core).")
    var threads: Int = 0

    @Flag(help: "Pin threads to CPUs and use node-local memory (multi-socket machines).")
    var numa = false

    @Option(help: "Packed models: run with activations \(ActivationMode.flagHelp) instead of the file's mode.")
    var act: String?

    @Option(help: "Per-token activations: clip each token's scale to this share of its largest value (0 < c ≤ 1) instead of the file's ratio (1 unless the file says).")
    var actClip: Float?

    @Option(help: "KV cache: f32, or q8 (int8 with one scale per 32 values, as llama.cpp's -ctk q8_0 -ctv q8_0: 1.125 bytes a value instead of 4).")
    var kvCache: KVCacheType = .f32

    var activation: ActivationMode? { act.flatMap { ActivationMode(flag: $0) } }

    /// An inference session on `loaded` with these options' KV cache.
    func session(_ loaded: LoadedModel, contextLength: Int, maxBatch: Int) throws -> InferenceSession {
        if let reason = kvCache.unsupportedReason(headDim: loaded.model.config.headDim) { throw ValidationError(reason) }
        return InferenceSession(model: loaded.model, contextLength: contextLength, maxBatch: maxBatch, kvCache: kvCache)
    }

    func validate() throws {
        guard threads >= 0 else { throw ValidationError("--threads must be 0 (one per fast physical core) or positive, got \(threads)") }
        if let act, case .failure(let e) = ActivationMode.parse(flag: act) { throw ValidationError(e.description) }
        if let actClip, !(actClip > 0 && actClip <= 1) { throw ValidationError("--act-clip must be in (0, 1], got \(actClip)") }
    }
}

extension KVCacheType: ExpressibleByArgument {}

extension LlamaConfig {
    /// Refuses a group size (0 = whole row) that does not divide every weight's row width.
    func checkGroup(_ group: Int) throws {
        guard group > 0 else { return }
        for (name, shape) in requiredTensorShapes where shape.count == 2 && shape[1] % group != 0 {
            throw ValidationError("group size \(group) does not divide the row width \(shape[1]) of \(name); use a group that divides every row width (e.g. 32 or 64)")
        }
    }
}
