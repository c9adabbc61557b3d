import Eval
import ArgumentParser
import Calibrate
import Foundation
import Kernels
import Engine

struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "End-to-end tuning of a packed model's group scales and offsets, by distillation from the fp model (after calibrate).",
        discussion: """
        The integer codes stay as calibrate left them; every group's scale and offset train so \
        that the whole quantized model's next-token distribution matches the fp model's (mean \
        KL per token). The KL on held-out windows is measured before, every --eval-every steps \
        and after; if it did not go down, OUT is the input unchanged. A checkpoint is written to \
        OUT.e2e/ every 25 steps; re-run with --resume to continue. Writes OUT, OUT.tune.json (losses and held-out KL) and OUT.tune.svg (their plot).
        """)

    @Argument(help: "Packed model to tune (the output of tessera calibrate).")
    var packed: String

    @Option(name: .customLong("from"), help: "The fp model the packed one was made from (GGUF file or Hugging Face folder): the teacher.")
    var teacher: String

    @Option(help: "Training text (.txt/.raw, or .jsonl with a \"text\" field); the default is relative to the repository root.")
    var data: String = "data/wikitext2/wiki.valid.raw"
    @Option(help: "Training windows (256 × 512 tokens is half of wiki.valid.raw; 64 overfit more, see bench/RESULTS.md).") var samples: Int = 256
    @Option(name: .customLong("seq-len"), help: "Tokens per window.") var seqLen: Int = 512
    @Option(help: "Adam steps (one window each; ~3.3 s per step for the demo model on 2 cores, after a teacher pass of about 4 min).") var steps: Int = 480
    @Option(help: "Peak learning rate, decayed to 0 on a cosine (default 5e-4 at 2 bits, halved per extra bit; the scale factor and the offset, in steps of the grid, are unitless).") var lr: Float?
    @Option(help: "Steps over which the rate ramps up linearly before the cosine (0: none).") var warmup: Int = 0
    @Option(name: .customLong("eval-samples"), help: "Held-out windows for the KL check.") var evalSamples: Int = 8
    @Option(name: .customLong("eval-every"), help: "Steps between held-out checks.") var evalEvery: Int = 80
    @Option(help: "Random seed (windows).") var seed: UInt64 = 42
    @Option(name: [.customShort("t"), .long], help: "Worker threads (0 = one per fast physical core).") var threads: Int = 0
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    @Flag(help: "Train the RMSNorm weights too (per channel, w·(1+γ); they are stored in fp32, so no extra bits).") var norms = false
    @Flag(help: "Continue the interrupted run whose checkpoint is in OUT.e2e/.") var resume = false
    @Option(name: .customLong("max-memory"), help: "RAM the student's fp32 block weights may take, e.g. 4G (default: a third of the machine's); above it they are materialized one block at a time as the passes reach them: the same result.") var maxMemory: ByteCount?

    func validate() throws {
        for (name, value) in [("--samples", samples), ("--steps", steps), ("--eval-samples", evalSamples), ("--eval-every", evalEvery)] {
            guard value >= 1 else { throw ValidationError("\(name) must be positive, got \(value)") }
        }
        guard warmup >= 0 && warmup <= steps else { throw ValidationError("--warmup must be between 0 and --steps (\(steps)), got \(warmup)") }
        guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2, got \(seqLen)") }
        if let lr { guard lr > 0 && lr.isFinite else { throw ValidationError("--lr must be positive, got \(lr)") } }
        guard threads >= 0 else { throw ValidationError("--threads must be 0 or positive") }
    }

    func run() throws {
        guard FileManager.default.isReadableFile(atPath: data) else {
            throw ValidationError("cannot read training text \(data): pass --data FILE (the default is relative to the repository root)")
        }
        guard let student = try ModelLoader.open(packed) as? PackedModelSource else {
            throw ValidationError("\(packed) is not a packed Tessera model; run tessera calibrate first")
        }
        let source = try ModelLoader.open(teacher)
        if source is PackedModelSource { throw ValidationError("--from \(teacher) is a packed model; give the fp model the packed one was made from") }
        guard seqLen <= student.config.contextLength else {
            throw ValidationError("--seq-len \(seqLen) exceeds the model's context (\(student.config.contextLength))")
        }
        var o = EndToEndOptions()
        o.samples = samples
        o.sequenceLength = seqLen
        o.steps = steps
        o.warmupSteps = warmup
        o.learningRate = lr ?? EndToEndOptions.learningRate(bits: student.bits)
        o.evalSamples = evalSamples
        o.evalEvery = evalEvery
        o.seed = seed
        o.trainNorms = norms
        let tokenizer = try source.makeTokenizer()
        let tokens = tokenizer.encode(try CalibrationData.text(path: data), addBOS: nil, parseSpecial: false)
        try Self.tune(student, teacher: source, tokens: tokens, data: data, options: o, output: output,
                      pool: ThreadPool(threads: threads), resume: resume, weightBudget: maxMemory?.bytes)
    }

    /// Runs a tuning with a progress line and prints its summary.
    static func tune(_ student: PackedModelSource, teacher: ModelSource, tokens: [Int32], data: String, options o: EndToEndOptions,
                     output: String, pool: ThreadPool, resume: Bool, weightBudget: Int? = nil) throws {
        let tuner = try EndToEndTuner(teacher: teacher, student: student, options: o, outputPath: output, pool: pool, weightBudget: weightBudget)
        tuner.headerLines(data: data, tokens: tokens.count, pool: pool).forEach { print($0) }
        if resume && FileManager.default.fileExists(atPath: tuner.checkpointDirectory) { print("resuming from the checkpoint in \(tuner.checkpointDirectory)") }
        fflush(stdout)
        let start = ContinuousClock.now
        var firstTrainStep: (Int, ContinuousClock.Instant)?
        let report = try tuner.run(tokens: tokens, resume: resume) { p in
            var line: String
            switch p.phase {
            case "teacher": line = "tune: teacher outputs, block \(p.step + 1)/\(p.steps)"
            case "eval": line = "tune: step \(p.step)/\(p.steps), held-out KL…"
            default:
                if firstTrainStep == nil { firstTrainStep = (p.step - 1, .now) }
                let width = 24, filled = width * p.step / max(1, p.steps)
                line = "tune: step \(p.step)/\(p.steps) [" + String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
                line += String(format: "] KL %.4f", p.loss)
                if let (s0, t0) = firstTrainStep, p.step - s0 >= 2 {
                    let perStep = (ContinuousClock.now - t0).seconds / Double(p.step - s0)
                    line += " ETA " + TimeBudget.format(perStep * Double(p.steps - p.step))
                }
            }
            FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        report.summaryLines.forEach { print($0) }
        try tuner.writeLogs(report, prefix: output + ".tune")
        let rss = ProcessStats.peakResidentBytes()
        print(String(format: "wrote %@ (+ .tune.json, .tune.svg) in %.1f s; peak RSS %.0f MB", output, (ContinuousClock.now - start).seconds, Double(rss ?? 0) / 1e6))
        tuner.removeCheckpoint()
    }
}
