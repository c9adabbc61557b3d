import Eval
import ArgumentParser
import Calibrate
import Foundation
import Kernels
import Engine

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "TesseraQ calibration (AWQ init + Progressive Adaptive Rounding + Dequantization Scale Tuning) into Tessera's packed format.",
        discussion: """
        Block by block: inputs are the already-quantized blocks' outputs, targets the fp model's. \
        A checkpoint is written after every block to OUT.calib/; re-run with --resume to continue \
        an interrupted run. Writes OUT, OUT.log.json (losses per block/stage/step) and OUT.svg \
        (block reconstruction loss before and after). With --act 8 or 4 (or 8-block, 4-block) the \
        calibrated blocks quantize the inputs of their linears as the output will run (the fp \
        targets do not); with --rotate hadamard the fp model is rotated first, as tessera quantize \
        --rotate does, and the calibration runs the online transform the output records.
        """)

    enum Preset: String, ExpressibleByArgument, CaseIterable { case paper, fast }

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

    @Option(help: "Hyper-parameter preset: paper (the reference's: 512×2048 samples, 20 stages × 250 steps, batch 4) or fast (128×512, 10 stages × 40 steps, batch 1, lr 1e-2).")
    var preset: Preset = .fast

    @Option(help: "Method: tesseraq, awq (stop after the AWQ initialisation) or rtn.")
    var method: CalibrationOptions.Method = .tesseraq

    @Option(name: .customLong("init"), help: "Initialisation: awq or rtn.")
    var initialisation: CalibrationOptions.Initialisation = .awq

    @Option(help: "Calibration windows (default: the preset's).") var samples: Int?
    @Option(name: .customLong("seq-len"), help: "Tokens per window.") var seqLen: Int?
    @Option(help: "Windows per Adam step.") var batch: Int?
    @Option(help: "Hardening schedule: 20, 10 (the reference's lists) or exp:T[:K] (soft rate e^(−T·k/K)).") var stages: String?
    @Option(help: "Adam steps per stage.") var steps: Int?
    @Option(help: "Learning rate of the rounding variables.") var lr: Float?
    @Option(name: .customLong("scale-lr"), help: "Learning rate of the dequantization-scale variables.") var scaleLR: Float?
    @Flag(name: .customLong("no-par"), help: "Ablation: keep nearest rounding, tune only the dequantization scales.") var noPAR = false
    @Flag(name: .customLong("no-dst"), help: "Ablation: tune only the rounding, not the dequantization scales.") var noDST = false
    @Option(name: .customLong("guard-seqs"), help: "Windows on which a block's TesseraQ result is compared with its initialisation; a block that ended worse keeps the initialisation (0: no guard).") var guardSeqs: Int = 32
    @Option(name: .customLong("token-norm-cap"), help: "Tokens whose fp output is longer than K × the block's median token (massive activations) count in the loss with their error scaled down to that length (0: all count fully, as the reference; default 16 with --preset fast, 0 with --preset paper).") var tokenNormCap: Float?
    @Option(help: "Random seed (windows and mini-batches).") var seed: UInt64 = 42
    @Option(help: "Embedding table and tied head: f16, q8, q6 or q4.") var embed: PackedFormat.Embedding = .f16
    @Option(name: [.customShort("t"), .long], help: "Worker threads (0 = one per fast physical core).") var threads: Int = 0
    @Option(name: .shortAndLong, help: "Output file.") var output: String
    @Option(name: .customLong("max-memory"), help: "RAM the calibration trajectories may hold, e.g. 512M or 4G (default: all of them); the rest is read from and written to OUT.calib/ at every use.") var maxMemory: ByteCount?
    @Flag(help: "Continue the interrupted run whose checkpoint is in OUT.calib/.") var resume = false
    @Option(help: "Tuning: calibrate only the first N blocks, print their losses and stop (no model is written; the checkpoint stays, and --resume continues it).") var blocks: Int?
    @Flag(name: .customLong("keep-checkpoint"), help: "Keep OUT.calib/ after success.") var keepCheckpoint = false
    @Option(name: .customLong("tune-steps"), help: "Then tune the group scales and offsets end to end for N steps on (up to 256 of) the calibration windows, as tessera tune does (not part of TesseraQ; 0: off).") var tuneSteps: Int = 0

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
        guard tuneSteps >= 0 else { throw ValidationError("--tune-steps must be 0 or positive, got \(tuneSteps)") }
        if let tokenNormCap, !(tokenNormCap == 0 || tokenNormCap >= 1) { throw ValidationError("--token-norm-cap must be 0 (off) or at least 1, got \(tokenNormCap)") }
    }

    func options() -> CalibrationOptions {
        var o = preset == .paper ? CalibrationOptions.paper : CalibrationOptions.fast
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
        let o = options()
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
        let tokenizer = try source.makeTokenizer()
        let text = try CalibrationData.text(path: data)
        let tokens = tokenizer.encode(text, addBOS: nil, parseSpecial: false)
        // The tuning's options, checked now: a text too short for its held-out windows fails before the calibration, not after.
        var e2e = EndToEndOptions()
        e2e.steps = tuneSteps
        e2e.seed = seed
        e2e.learningRate = EndToEndOptions.learningRate(bits: o.bits)
        // The first (at most 256) of the calibration's windows: drawn again with the same seed.
        e2e.samples = min(o.samples, e2e.samples)
        e2e.sequenceLength = o.sequenceLength
        if tuneSteps > 0 { _ = try EndToEndTuner.split(tokens: tokens, options: e2e) }
        let pool = ThreadPool(threads: threads)
        let calibrator = Calibrator(source: source, options: o, outputPath: output, pool: pool)
        calibrator.trajectoryBudget = maxMemory?.bytes
        calibrator.blockLimit = blocks
        print("calibrate: \(model) → \(output)")
        if let r = source.rotation { print("  rotation: \(r.summary)") }
        if o.activation != .a16 { print("  activations \(o.activation.summary)\(o.activationClip != 1 ? ", clip \(o.activationClip)" : ""), fake-quantized in the calibrated blocks") }
        print("  \(o.method.rawValue) W\(o.bits)g\(group) init \(o.initialisation.rawValue); \(o.samples) windows × \(o.sequenceLength) tokens from \(data) (\(tokens.count) tokens); batch \(o.batch), stages \(o.schedule.argument) × \(o.stepsPerStage) steps, lr \(o.learningRate), scale lr \(o.scaleLearningRate); PAR \(o.adaptiveRounding ? "on" : "off"), DST \(o.scaleTuning ? "on" : "off")\(o.tokenNormCap > 0 ? "; token-norm cap \(o.tokenNormCap)" : ""); seed \(o.seed); \(pool.threads) threads; OpenBLAS core \(Matmul.blasCore)")
        let sequenceMB = Double(Trajectory.sequenceBytes(T: o.sequenceLength, C: c.hidden)) / 1e6
        print(String(format: "  trajectories: 4 × %.0f MB (fp16); %d of %d windows each kept in RAM%@", Double(o.samples) * sequenceMB,
                     calibrator.residentSamples, o.samples, calibrator.residentSamples < o.samples ? ", the rest paged from \(calibrator.checkpointDirectory)" : ""))
        fflush(stdout)

        let bar = ProgressLine(blocks: c.blockCount)
        if resume { print("resuming from the checkpoint in \(calibrator.checkpointDirectory)") }
        let summary = try calibrator.run(tokens: tokens, tokenizer: tokenizer, embedding: embed, resume: resume,
                                         progress: { bar.update($0) },
                                         blockDone: { r in
            bar.clear()
            // The logged loss uses the first few windows (as the reference); the guard's, when on, uses more.
            func change(_ a: Double, _ b: Double) -> String { String(format: "%.5g → %.5g (%+.1f%%)", a, b, 100 * (b / max(a, 1e-30) - 1)) }
            var losses = "loss \(change(r.lossInitial, r.lossFinal)) on \(min(o.lossSequences, o.samples)) windows"
            if let a = r.checkLossInitial, let b = r.checkLossFinal { losses += ", \(change(a, b)) on \(min(o.guardSequences, o.samples))" }
            print(String(format: "block %2d: %@  %.1f s  peak RSS %.0f MB", r.block, losses, r.seconds, Double(r.peakResidentBytes ?? 0) / 1e6))
            if r.keptInitialisation == true, let a = r.checkLossInitial, let b = r.checkLossFinal {
                print(String(format: "  block %d kept its initialisation: TesseraQ ended at %.5g against %.5g on %d windows", r.block, b, a, min(o.guardSequences, o.samples)))
            }
            fflush(stdout)
        })
        bar.finish()
        guard summary.wroteModel else {
            print("stopped after \(summary.reports.count) of \(c.blockCount) blocks (--blocks); no model written; the checkpoint in \(calibrator.checkpointDirectory) continues with --resume")
            return
        }
        if summary.resumedAt > 0 { print("resumed after block \(summary.resumedAt - 1)") }
        let rss = ProcessStats.peakResidentBytes()
        let log = try CalibrationReport.json(reports: summary.reports, options: o, seconds: summary.seconds, peakResidentBytes: rss)
        try log.write(to: URL(fileURLWithPath: output + ".log.json"), options: .atomic)
        let title = "\(o.method.rawValue) W\(o.bits)g\(group): block reconstruction loss"
        try Data(CalibrationReport.svg(reports: summary.reports, title: title).utf8).write(to: URL(fileURLWithPath: output + ".svg"), options: .atomic)
        let flips = CalibrationReport.flippedByLayer(summary.reports).map { String(format: "%@ %.2f%%", $0.0, 100 * $0.1) }
        print("rounding flipped vs nearest: " + flips.joined(separator: ", "))
        print(String(format: "wrote %@ (+ .log.json, .svg) in %.1f s; peak RSS %.0f MB", output, summary.seconds, Double(rss ?? 0) / 1e6))
        if tuneSteps > 0 {
            // OUT is the block-wise model until the tuning replaces it; a killed tuning resumes
            // with --resume (the calibration checkpoint stays until then).
            let student = try PackedModelSource(gguf: GGUFFile(path: output))
            try TuneCommand.tune(student, teacher: source, tokens: tokens, data: data, options: e2e, output: output, pool: pool, resume: resume)
        }
        if !keepCheckpoint { calibrator.removeCheckpoint() }
    }
}

/// One status line on stderr: block, stage, a bar over the block's steps, loss, hard %, ETA.
final class ProgressLine {
    let blocks: Int
    let start = ContinuousClock.now
    var firstBlock: Int?
    var lastBlock = -1
    var blockStart = ContinuousClock.now

    init(blocks: Int) { self.blocks = blocks }

    func update(_ p: CalibrationProgress) {
        if firstBlock == nil { firstBlock = p.block }
        if p.block != lastBlock {
            lastBlock = p.block
            blockStart = .now
        }
        let total = max(1, p.stages * p.steps)
        let within = p.stages == 0 ? 0 : Double((p.stage - 1) * p.steps + p.step) / Double(total)
        let done = Double(p.block - firstBlock!) + within
        let elapsed = (ContinuousClock.now - start).seconds
        let remaining = done > 0.05 ? elapsed / done * (Double(blocks - firstBlock!) - done) : .nan
        let width = 24, filled = Int(Double(width) * within)
        let barText = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        var line = "block \(p.block + 1)/\(blocks) "
        if p.phase == "train" {
            line += String(format: "stage %d/%d [%@] step %d/%d loss %.4g hard %.1f%%", p.stage, p.stages, barText, p.step, p.steps, p.loss, 100 * p.hardFraction)
        } else {
            line += p.phase
        }
        if remaining.isFinite { line += " ETA " + Self.clock(remaining) }
        FileHandle.standardError.write(Data(("\r" + line + "\u{1B}[K").utf8))
    }

    func finish() { FileHandle.standardError.write(Data("\n".utf8)) }

    /// Erases the status line (before a line of stdout).
    func clear() { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds)
        return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
    }
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
extension CalibrationOptions.Initialisation: ExpressibleByArgument {}
