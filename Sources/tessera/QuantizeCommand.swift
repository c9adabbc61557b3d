import Calibrate
import Eval
import ArgumentParser
import Foundation
import Engine

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Round-to-nearest group quantization of a model into Tessera's packed format.",
        discussion: "Groups run along each weight row; the group size must divide every row width (576-wide models such as SmolLM2 take 32 or 64, not 128).")

    @Argument(help: "GGUF file or Hugging Face folder.")
    var model: String

    @Option(help: "Weight bits: 2, 3, 4, 6 or 8.")
    var bits: Int

    @Option(help: "Group size: 32, 64, 128 or row.")
    var group: String

    @Option(help: "Activation mode the file runs with by default: \(ActivationMode.flagHelp).")
    var act: String = "16"

    @Option(help: "Per-token modes (--act 8 or 4): the clipping ratio of each token's scale the file records (0 < c ≤ 1; choose it on held-out text with `tessera ppl --act-clip`).")
    var actClip: Float = 1

    @Option(help: "Embedding table and tied head: q8 (default: no measurable perplexity cost, 9 bits per weight), f16, q6 (7 bits per weight; +0.7 % perplexity), or q4 (smaller; +5 % perplexity on the demo model).")
    var embed: PackedFormat.Embedding = .q8

    @Option(help: "Offset form: float (group minimum, like Q4_1) or int (integer zero point).")
    var zeroPoint: String = "float"

    @Option(help: "Rotate the fp weights before quantizing: none, or hadamard (QuaRot-style: RMSNorm weights folded, a random-sign Hadamard rotation of the residual stream, a Hadamard per attention head between v and o, and an online Hadamard transform before down_proj that the file asks the runtime for; the fp model's function is unchanged). A tied head is written separately unless the final norm's weight is 1.")
    var rotate: Rotation = .none

    @Option(help: "Seed of the rotation's random signs (default 1; recorded in the file; needs --rotate hadamard).")
    var rotateSeed: UInt64?

    @Option(name: .shortAndLong, help: "Output file.")
    var output: String

    enum Rotation: String, ExpressibleByArgument, CaseIterable { case none, hadamard }

    var groupSize: Int? { group == "row" ? 0 : Int(group) }
    var activation: ActivationMode? { ActivationMode(flag: act) }

    func validate() throws {
        guard QuantizedTensor.supportedBits.contains(bits) else { throw ValidationError("--bits must be 2, 3, 4, 6 or 8, got \(bits)") }
        guard let g = groupSize, g == 0 || [32, 64, 128].contains(g) else { throw ValidationError("--group must be 32, 64, 128 or row, got \(group)") }
        if case .failure(let e) = ActivationMode.parse(flag: act) { throw ValidationError(e.description) }
        guard actClip > 0 && actClip <= 1 else { throw ValidationError("--act-clip must be in (0, 1], got \(actClip)") }
        if actClip != 1 && activation?.perToken != true { throw ValidationError("--act-clip needs per-token activations (--act 8 or 4)") }
        guard zeroPoint == "float" || zeroPoint == "int" else { throw ValidationError("--zero-point must be float or int, got \(zeroPoint)") }
        if rotateSeed != nil && rotate == .none { throw ValidationError("--rotate-seed needs --rotate hadamard") }
    }

    func run() throws {
        try AtomicFileWriter.checkWritable(path: output)
        let opened = try ModelLoader.open(model)
        let tokenizer = try opened.makeTokenizer()
        // The rotation is a view of the fp weights: each tensor is rotated as RTN reads it.
        let source: ModelSource = rotate == .hadamard ? try RotatedModelSource(base: opened, seed: rotateSeed ?? 1) : opened
        // Every row width must take the group size: say so before any work.
        let group = groupSize!
        try source.config.checkGroup(group)
        var scheme = PackedFormat.Scheme(bits: bits, group: group, activation: activation!,
                                         zeroPoint: zeroPoint == "int" ? .integer : .float, embedding: embed)
        scheme.activationClip = actClip
        let start = ContinuousClock.now
        try RoundToNearest.write(source: source, tokenizer: tokenizer, scheme: scheme, to: output) { name, index, count in
            let width = 30, done = width * (index + 1) / count
            let bar = String(repeating: "█", count: done) + String(repeating: "·", count: width - done)
            FileHandle.standardError.write("\r[\(bar)] \(index + 1)/\(count) \(name)\u{1B}[K".data(using: .utf8)!)
        }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
        let packed = try PackedModelSource(gguf: GGUFFile(path: output))
        let fileBytes = packed.gguf.file.size
        var linearBytes = 0, linearWeights = 0
        for t in packed.gguf.tensors where t.name.hasPrefix("blk.") && !t.name.hasSuffix("_norm.weight") {
            linearBytes += t.byteCount
        }
        for (name, shape) in source.config.requiredTensorShapes where name.hasPrefix("blk.") && shape.count == 2 {
            linearWeights += shape[0] * shape[1]
        }
        if let rotation = source.rotation { print("rotation: \(rotation.summary)") }
        print(String(format: "wrote %@ in %.1f s: W%dg%@ %@, block linears %.3f bits/weight, whole file %.2f MB (%.3f bits/parameter)",
                     output, (ContinuousClock.now - start).seconds, bits, group == 0 ? "row" : "\(group)", activation!.summary + (actClip != 1 ? " (clip \(actClip))" : ""),
                     Double(linearBytes * 8) / Double(linearWeights), Double(fileBytes) / 1e6,
                     Double(fileBytes * 8) / Double(source.config.parameterCount)))
    }
}

extension PackedFormat.Embedding: ExpressibleByArgument {}
