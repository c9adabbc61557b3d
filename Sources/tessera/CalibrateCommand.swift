import Eval
import ArgumentParser
import Calibrate
import Foundation
import Kernels
import Engine

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "The whole calibration in one command: TesseraQ block by block (AWQ init + Progressive Adaptive Rounding + Dequantization Scale Tuning), then the preset's end-to-end tune rounds, into Tessera's packed format.",
        discussion: """
        --preset fast (the default): block-wise fast, then one tune of 256 windows × 512 tokens, \
        480 steps, lr 5e-4. --preset quality: block-wise fast at 80 steps per stage, a 512-token \
        tune (480 steps, lr 1e-3) and two 2048-token rounds of 64 windows (120 steps at lr 1e-3, \
        then 80 at 5e-4 with seed + 1). --preset paper: the reference's block-wise budget, no \
        tune. Block-wise: inputs are the already-quantized blocks' outputs, targets the fp \
        model's; a tune round trains every group's scale and offset end to end against the fp \
        model, as tessera tune does. Everything in between (each stage's file and checkpoint, \
        the plan) is in OUT.calib/; re-run with --resume to continue an interrupted run from \
        any stage. --time-budget 60m scales the steps to fit, --tune-steps 0 stops after the \
        block-wise stage. Writes OUT, OUT.log.json and OUT.svg (block-wise losses), OUT.tuneK.json and \
        OUT.tuneK.svg (round K). With --act 8 or 4 (or 8-block, 4-block) the calibrated blocks \
        quantize the inputs of their linears as the output will run (the fp targets do not); \
        with --rotate hadamard the fp model is rotated first, as tessera quantize --rotate \
        does, and the calibration runs the online transform the output records.
        """)

    @Argument(help: "GGUF file or Hugging Face folder.")
    var model: String

    @Option(help: "Weight bits: 2, 3 or 4.")
    var bits: Int

    @Option(help: "Group size: 32, 64, 128 or row (must divide every row width).")
    var group: String

    @Option(help: "Activation mode the output runs with, and the calibration simulates: \(ActivationMode.flagHelp).")
    var act: String = "16"

    @Option(name: .customLong("act-clip"), help: "Per-token modes (--act 8 or 4): the clipping ratio of each token's scale, used by the calibration and recorded in the file (0 < c ≤ 1).")
    var actClip: Float = 1

    @Option(help: "Rotate the fp weights before calibrating: none, or hadamard (as tessera quantize --rotate: the output records the rotation and runs an online Hadamard transform before down_proj).")
    var rotate: Quantize.Rotation = .none

    @Option(name: .customLong("rotate-seed"), help: "Seed of the rotation's random signs (default 1; recorded in the file; needs --rotate hadamard).")
    var rotateSeed: UInt64?

    @Option(help: "Calibration text (.txt/.raw, or .jsonl with a \"text\" field); the default is relative to the repository root.")
    var data: String = "data/wikitext2/wiki.valid.raw"

    @Option(help: "The chain: fast (block-wise 128×512 windows, 10 stages × 40 steps, lr 1e-2; then one 512-token tune), quality (block-wise fast at 80 steps per stage; a 512-token tune and two 2048-token rounds) or paper (the reference's block-wise budget: 512×2048 windows, 20 stages × 250 steps, batch 4; no tune).")
    var preset: CalibrationChain.Preset = .fast

    @Option(help: "Block-wise method: tesseraq, awq (stop after the AWQ initialisation) or rtn.")
    var method: CalibrationOptions.Method = .tesseraq

    @Option(name: .customLong("init"), help: "Initialisation: awq or rtn.")
    var initialisation: CalibrationOptions.Initialisation = .awq

    @Option(help: "Block-wise calibration windows (default: the preset's).") var samples: Int?
    @Option(name: .customLong("seq-len"), help: "Block-wise: tokens per window.") var seqLen: Int?
    @Option(help: "Block-wise: windows per Adam step.") var batch: Int?
    @Option(help: "Hardening schedule: 20, 10 (the reference's lists) or exp:T[:K] (soft rate e^(−T·k/K)).") var stages: String?
    @Option(help: "Block-wise: Adam steps per stage.") var steps: Int?
    @Option(help: "Block-wise: learning rate of the rounding variables.") var lr: Float?
    @Option(name: .customLong("scale-lr"), help: "Block-wise: learning rate of the dequantization-scale variables.") var scaleLR: Float?
    @Flag(name: .customLong("no-par"), help: "Ablation: keep nearest rounding, tune only the dequantization scales.") var noPAR = false
    @Flag(name: .customLong("no-dst"), help: "Ablation: tune only the rounding, not the dequantization scales.") var noDST = false
    @Option(name: .customLong("guard-seqs"), help: "Windows on which a block's TesseraQ result is compared with its initialisation; a block that ended worse keeps the initialisation (0: no guard).") var guardSeqs: Int = 32
    @Option(name: .customLong("token-norm-cap"), help: "Tokens whose fp output is longer than K × the block's median token (massive activations) count in the loss with their error scaled down to that length (0: all count fully, as the reference; default 16 with --preset fast, 0 with --preset paper).") var tokenNormCap: Float?
    @Option(help: "Random seed (windows and mini-batches; a tune round's windows are drawn with it too, plus the round's offset).") var seed: UInt64 = 42
    @Option(help: "Embedding table and tied head: f16, q8, q6 or q4.") var embed: PackedFormat.Embedding = .f16
    @Option(name: [.customShort("t"), .long], help: "Worker threads (0 = one per fast physical core).") var threads: Int = 0
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    @Option(name: .customLong("max-memory"), help: "RAM the block-wise trajectories may hold, e.g. 512M or 4G (default: all of them; the rest is read from and written to OUT.calib/ at every use), and the tune rounds' fp32 student weights (default: a third of the machine's; above it they are materialized one block at a time). Neither changes the result.") var maxMemory: ByteCount?
    @Flag(help: "Continue the interrupted run whose checkpoint is in OUT.calib/, from whichever stage it stopped in.") var resume = false
    @Option(help: "Tuning: calibrate only the first N blocks, print their losses and stop (no model is written; the checkpoint stays, and --resume continues it).") var blocks: Int?
    @Flag(name: .customLong("keep-intermediate"), help: "Keep OUT.calib/ after success (each stage's file, the plan).") var keepIntermediate = false
    @Flag(name: .customLong("keep-checkpoint"), help: "The same as --keep-intermediate.") var keepCheckpoint = false
    @Option(name: .customLong("tune-steps"), help: "Replace the preset's tune rounds by one 512-token round of N steps (the preset's first round's windows and rate, for paper the fast preset's; 0: block-wise only).") var tuneSteps: Int?
    @Option(name: .customLong("tune-samples"), help: "Windows of every tune round (default: the preset's, 256 or 64).") var tuneSamples: Int?
    @Option(name: .customLong("tune-seq-len"), help: "Tokens per window of every tune round (default: the preset's, 512 or 2048).") var tuneSeqLen: Int?
    @Option(name: .customLong("time-budget"), help: "Scale the chain's steps to fit this long, e.g. 90s, 60m or 2h (estimated from the model's shape and a short speed probe; tune rounds are dropped, latest first, before a stage goes below a quarter of its steps). The plan is printed and kept for --resume.") var timeBudget: String?

    var groupSize: Int? { group == "row" ? 0 : Int(group) }

    func validate() throws {
        guard [2, 3, 4].contains(bits) else { throw ValidationError("--bits must be 2, 3 or 4, got \(bits)") }
        guard let g = groupSize, g == 0 || [32, 64, 128].contains(g) else { throw ValidationError("--group must be 32, 64, 128 or row, got \(group)") }
        if case .failure(let e) = ActivationMode.parse(flag: act) { throw ValidationError(e.description) }
        guard actClip > 0 && actClip <= 1 else { throw ValidationError("--act-clip must be in (0, 1], got \(actClip)") }
        if actClip != 1 && ActivationMode(flag: act)?.perToken != true { throw ValidationError("--act-clip needs per-token activations (--act 8 or 4)") }
        if rotateSeed != nil && rotate == .none { throw ValidationError("--rotate-seed needs --rotate hadamard") }
        if let stages, HardeningSchedule(argument: stages) == nil { throw ValidationError("--stages must be 20, 10 or exp:T[:K], got \(stages)") }
        for (name, value) in [("--samples", samples), ("--seq-len", seqLen), ("--batch", batch), ("--steps", steps)] {
            if let value, value < 1 { throw ValidationError("\(name) must be positive, got \(value)") }
        }
        if let seqLen, seqLen < 2 { throw ValidationError("--seq-len must be at least 2") }
        if let samples, let batch, batch > samples { throw ValidationError("--batch \(batch) exceeds --samples \(samples)") }
        if noPAR && noDST && method == .tesseraq { throw ValidationError("--no-par and --no-dst together leave nothing to train; use --method awq or rtn") }
        guard threads >= 0 else { throw ValidationError("--threads must be 0 or positive") }
        guard guardSeqs >= 0 else { throw ValidationError("--guard-seqs must be 0 or positive") }
        if let tuneSteps, tuneSteps < 0 { throw ValidationError("--tune-steps must be 0 or positive, got \(tuneSteps)") }
        for (name, value) in [("--tune-samples", tuneSamples), ("--tune-seq-len", tuneSeqLen)] {
            if let value, value < 1 { throw ValidationError("\(name) must be positive, got \(value)") }
        }
        if let tuneSeqLen, tuneSeqLen < 2 { throw ValidationError("--tune-seq-len must be at least 2") }
        if let timeBudget, TimeBudget(argument: timeBudget) == nil {
            throw ValidationError("--time-budget must be a positive duration with a unit, like 90s, 60m or 1.5h, got \(timeBudget)")
        }
        if blocks != nil && timeBudget != nil { throw ValidationError("--blocks and --time-budget do not go together: --blocks runs part of the block-wise stage only") }
        if let tokenNormCap, !(tokenNormCap == 0 || tokenNormCap >= 1) { throw ValidationError("--token-norm-cap must be 0 (off) or at least 1, got \(tokenNormCap)") }
    }

    /// The preset's chain with the flags applied: explicit block-wise flags override its
    /// block-wise stage, --tune-steps / --tune-samples / --tune-seq-len its rounds.
    func chain() -> CalibrationChain {
        var chain = CalibrationChain.preset(preset)
        chain.blockwise = options(base: chain.blockwise)
        if let tuneSteps { chain.replaceRounds(steps: tuneSteps) }
        chain.setRoundWindows(samples: tuneSamples, sequenceLength: tuneSeqLen)
        return chain
    }

    func options(base: CalibrationOptions) -> CalibrationOptions {
        var o = base
        o.method = method
        o.initialisation = method == .rtn ? .rtn : initialisation
        o.bits = bits
        o.group = groupSize!
        o.activation = ActivationMode(flag: act)!
        o.activationClip = actClip
        if let samples { o.samples = samples }
        if let seqLen { o.sequenceLength = seqLen }
        if let batch { o.batch = batch }
        if let stages { o.schedule = HardeningSchedule(argument: stages)! }
        if let steps { o.stepsPerStage = steps }
        if let lr { o.learningRate = lr }
        if let scaleLR { o.scaleLearningRate = scaleLR }
        o.adaptiveRounding = !noPAR
        o.scaleTuning = !noDST
        o.seed = seed
        o.guardSequences = guardSeqs
        if let tokenNormCap { o.tokenNormCap = tokenNormCap }
        o.dataName = URL(fileURLWithPath: data).lastPathComponent
        o.batch = min(o.batch, o.samples)
        o.awqSequences = min(o.awqSequences, o.samples)
        return o
    }

    func run() throws {
        guard FileManager.default.isReadableFile(atPath: data) else {
            throw ValidationError("cannot read calibration text \(data): pass --data FILE (the default is relative to the repository root)")
        }
        let chain = chain()
        let o = chain.blockwise
        let opened = try ModelLoader.open(model)
        if opened is PackedModelSource {
            throw ValidationError("\(model) is already a packed Tessera model; calibrate from the original GGUF or Hugging Face folder")
        }
        // The rotation is a view of the fp weights: each block is rotated as it is read.
        let source: ModelSource = rotate == .hadamard ? try RotatedModelSource(base: opened, seed: rotateSeed ?? 1) : opened
        let c = source.config
        try c.checkGroup(o.group)
        if let blocks, !(1..<c.blockCount).contains(blocks) {
            throw ValidationError("--blocks must be between 1 and \(c.blockCount - 1) (the model has \(c.blockCount) blocks), got \(blocks)")
        }
        for round in chain.rounds where round.sequenceLength > c.contextLength {
            throw ValidationError("a tune round's windows of \(round.sequenceLength) tokens exceed the model's context (\(c.contextLength)); pass --tune-seq-len")
        }
        let tokenizer = try source.makeTokenizer()
        let text = try CalibrationData.text(path: data)
        let tokens = tokenizer.encode(text, addBOS: nil, parseSpecial: false)
        // The rounds' windows, checked now: a text too short for them fails before the calibration, not after.
        for round in chain.rounds { _ = try EndToEndTuner.split(tokens: tokens, options: round.options(seed: o.seed)) }
        let pool = ThreadPool(threads: threads)
        let runner = CalibrationChainRunner(source: source, chain: chain, outputPath: output, pool: pool)
        runner.trajectoryBudget = maxMemory?.bytes
        runner.weightBudget = maxMemory?.bytes
        runner.blockLimit = blocks
        runner.keepIntermediate = keepIntermediate || keepCheckpoint
        runner.budget = timeBudget.flatMap(TimeBudget.init(argument:))
        let bar = ChainProgressLine()
        runner.log = { line in
            bar.clear()
            print(line)
            fflush(stdout)
        }
        runner.progress = { bar.update($0) }

        print("calibrate: \(model) → \(output), preset \(preset.rawValue): \(chain.stageCount) stage\(chain.stageCount == 1 ? "" : "s")")
        if let r = source.rotation { print("  rotation: \(r.summary)") }
        if o.activation != .a16 { print("  activations \(o.activation.summary)\(o.activationClip != 1 ? ", clip \(o.activationClip)" : ""), fake-quantized in the calibrated blocks") }
        print("  \(o.method.rawValue) W\(o.bits)g\(group) init \(o.initialisation.rawValue); \(o.samples) windows × \(o.sequenceLength) tokens from \(data) (\(tokens.count) tokens); batch \(o.batch), stages \(o.schedule.argument) × \(o.stepsPerStage) steps, lr \(o.learningRate), scale lr \(o.scaleLearningRate); PAR \(o.adaptiveRounding ? "on" : "off"), DST \(o.scaleTuning ? "on" : "off")\(o.tokenNormCap > 0 ? "; token-norm cap \(o.tokenNormCap)" : ""); seed \(o.seed); \(pool.threads) threads; OpenBLAS core \(Matmul.blasCore)")
        for (k, round) in chain.rounds.enumerated() { print("  then tune \(k + 1): \(round.summary), held-out KL on \(round.evalSamples) windows every \(min(round.evalEvery, round.steps)) steps") }
        let resident = Calibrator(source: source, options: o, outputPath: output, pool: pool)
        resident.trajectoryBudget = maxMemory?.bytes
        let sequenceMB = Double(Trajectory.sequenceBytes(T: o.sequenceLength, C: c.hidden)) / 1e6
        print(String(format: "  trajectories: 4 × %.0f MB (fp16); %d of %d windows each kept in RAM%@", Double(o.samples) * sequenceMB,
                     resident.residentSamples, o.samples, resident.residentSamples < o.samples ? ", the rest paged from \(runner.checkpointDirectory)" : ""))
        fflush(stdout)

        let summary = try runner.run(tokens: tokens, tokenizer: tokenizer, embedding: embed, resume: resume)
        bar.finish()
        guard summary.wroteModel else { return }
        let rss = ProcessStats.peakResidentBytes()
        print(String(format: "wrote %@ in %.1f s; peak RSS %.0f MB", output, summary.seconds, Double(rss ?? 0) / 1e6))
    }
}

/// The chain's one status line on stderr: stage k/n and its name, what it is doing, and the
/// ETA of the whole remaining chain.
final class ChainProgressLine {
    func update(_ p: ChainProgress) {
        var line = "stage \(p.stage + 1)/\(p.stages) \(p.name): \(p.detail)"
        if let left = p.remainingSeconds { line += " ETA " + TimeBudget.format(left) }
        FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
    }

    func finish() { FileHandle.standardError.write(Data("\n".utf8)) }

    /// Erases the status line (before a line of stdout).
    func clear() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
}

/// A size in bytes written as 123, 512K, 512M, 1.5G (powers of 1024; a trailing B or iB is allowed).
struct ByteCount: ExpressibleByArgument {
    let bytes: Int

    init?(argument: String) {
        var text = argument.uppercased()
        for suffix in ["IB", "B"] where text.hasSuffix(suffix) && text.count > suffix.count { text.removeLast(suffix.count); break }
        let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024, "T": 1024 * 1024 * 1024 * 1024]
        var scale = 1.0
        if let last = text.last, let unit = units[last] { scale = unit; text.removeLast() }
        guard let value = Double(text), value.isFinite, value >= 0, value * scale < Double(Int.max) else { return nil }
        bytes = Int(value * scale)
    }
}

extension CalibrationOptions.Method: ExpressibleByArgument {}
extension CalibrationChain.Preset: ExpressibleByArgument {}
extension CalibrationOptions.Initialisation: ExpressibleByArgument {}
