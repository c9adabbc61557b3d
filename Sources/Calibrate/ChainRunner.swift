import Foundation
import Engine

/// Runs a `CalibrationChain` in one call: the block-wise stage, then every tune round on the
/// previous stage's file, then the last file atomically to `outputPath`.
///
/// Everything in between lives in the checkpoint folder `<output>.calib/`:
///
///   state.json            the plan (after any time budget) and the stages done (the commit point)
///   blockwise.gguf        the block-wise stage's output; its own checkpoint in blockwise.gguf.calib/
///   tuneK.gguf            round K's output; its own checkpoint in tuneK.gguf.e2e/
///
/// Each stage resumes from its own checkpoint, and the chain's state is saved before the first
/// stage and after each one, so a run killed anywhere continues with `resume` and writes the
/// same file. The folder is removed at the end unless `keepIntermediate`. Each stage's logs go
/// beside the output: OUT.log.json and OUT.svg (block-wise), OUT.tuneK.json and OUT.tuneK.svg.
public final class CalibrationChainRunner {
    public let source: ModelSource
    /// The chain as asked for (before a time budget scales it).
    public let requested: CalibrationChain
    public let outputPath: String
    public let pool: ThreadPool
    let checkpoint: Checkpoint<State>
    public var checkpointDirectory: String { checkpoint.directory }
    /// `--max-memory` of the block-wise stage (see `Calibrator.trajectoryBudget`).
    public var trajectoryBudget: Int?
    /// `--max-memory` of the tune rounds: RAM the student's fp32 weights may take (see `EndToEndModel.init`).
    public var weightBudget: Int?
    /// `--blocks N`: the block-wise stage stops after N blocks; no model is written, the
    /// checkpoint stays.
    public var blockLimit: Int?
    /// Keep `<output>.calib/` after success.
    public var keepIntermediate = false
    /// `--time-budget`: the chain's steps are scaled to fit (`ChainPlanner`) when a run starts,
    /// and the rounds left again before each round, at the rate the finished stages measured;
    /// every plan is recorded before its stage starts, so a resumed run keeps it.
    public var budget: TimeBudget?
    /// The stages' costs in seconds for the budget; nil: the cost model at the probed rate.
    public var estimateCosts: ((CalibrationChain) -> [StageCost])?
    /// Tests: stop (throw, as if killed) in `stage` after `step` blocks (block-wise) or steps (a
    /// round, at its checkpoint), or with `step` nil once the stage is committed.
    public var stopAfter: (stage: Int, step: Int?)?
    /// Lines for the terminal (stdout) and the progress line.
    public var log: (String) -> Void = { _ in }
    public var progress: (ChainProgress) -> Void = { _ in }

    public init(source: ModelSource, chain: CalibrationChain, outputPath: String, pool: ThreadPool) {
        self.source = source
        requested = chain
        self.outputPath = outputPath
        self.pool = pool
        checkpoint = Checkpoint(output: outputPath, suffix: ".calib")
    }

    /// The plan a run follows, as recorded in the state (ChainBudget.swift makes it).
    struct Plan: Codable, Equatable {
        var blockwiseSteps: Int
        var rounds: [TuneRound]
        /// Under a budget: each planned round's steps as asked for (a re-plan may give them back),
        /// the measured rate (flops per second) of the cost model, and the stage whose re-plan is
        /// the latest recorded (0: the first plan).
        var requestedRoundSteps: [Int]
        var flopsPerSecond: Double?
        var plannedThrough = 0
        var budgetSummary: String?
    }

    struct State: CheckpointState {
        var version = 1
        var fingerprint: [String]
        var plan: Plan
        var completedStages: Int
        var stageSeconds: [Double]
    }

    public struct Summary {
        /// The chain that ran (after any time budget).
        public var chain: CalibrationChain
        /// False when `blockLimit` stopped the block-wise stage: no model was written.
        public var wroteModel: Bool
        /// Stages already done when this run started.
        public var resumedAtStage: Int
        public var seconds: Double
    }

    func chain(_ plan: Plan) -> CalibrationChain {
        var c = requested
        c.blockwise.stepsPerStage = plan.blockwiseSteps
        c.rounds = plan.rounds
        return c
    }

    func fingerprint(tokens: [Int32]) -> [String] {
        requested.fingerprint + Calibrator.fingerprint(source: source, tokens: tokens) + (budget.map { ["budget=\($0.argument)"] } ?? [])
    }

    func stageOutput(_ k: Int) -> String { checkpoint.path(k == 0 ? "blockwise.gguf" : "tune\(k).gguf") }

    /// Runs the chain (or what is left of it) and writes `outputPath`. `tokens` is the tokenized data.
    public func run(tokens: [Int32], tokenizer: Tokenizer?, embedding: PackedFormat.Embedding, resume: Bool) throws -> Summary {
        let start = ContinuousClock.now
        let print = fingerprint(tokens: tokens)
        var state: State
        if let saved = try checkpoint.open(fingerprint: print, resume: resume) {
            state = saved
            log("resuming from the checkpoint in \(checkpoint.directory): \(saved.completedStages) of \(1 + saved.plan.rounds.count) stages done")
        } else {
            do {
                state = State(fingerprint: print, plan: try makePlan(), completedStages: 0, stageSeconds: [])
                try checkpoint.save(state)
            } catch {
                checkpoint.removeAll()
                throw error
            }
        }
        let resumedAt = state.completedStages
        if let note = state.plan.budgetSummary { log(note) }

        var eta = ChainETA(stageUnits: [])
        while state.completedStages < 1 + state.plan.rounds.count {
            let k = state.completedStages
            if budget != nil && k > 0 && state.plan.plannedThrough < k { try replan(&state, before: k) }
            let chain = chain(state.plan)
            guard k < chain.stageCount else { break }
            let stageStart = ContinuousClock.now
            eta.stageUnits = modelCosts(chain, plan: state.plan).map { $0.seconds(steps: $0.steps) }
            eta.unitsAreSeconds = state.plan.flopsPerSecond != nil
            func show(_ detail: String, _ fraction: Double) {
                let left = eta.update(stage: k, fraction: fraction)
                progress(ChainProgress(stage: k, stages: chain.stageCount, name: chain.stageName(k), detail: detail,
                                       fraction: fraction, remainingSeconds: left))
            }
            log("stage \(k + 1)/\(chain.stageCount): \(chain.summaryLines[k])")
            if k == 0 {
                let before = resumedAt == 0 ? (stageStart - start).seconds : 0
                guard try runBlockwise(chain.blockwise, plan: state.plan, secondsBefore: before, tokens: tokens,
                                       tokenizer: tokenizer, embedding: embedding, show: show) else {
                    return Summary(chain: chain, wroteModel: false, resumedAtStage: resumedAt, seconds: (ContinuousClock.now - start).seconds)
                }
            } else {
                let replan: ((Double, Int, Double) throws -> Int)? = budget == nil ? nil : { [self, state] in
                    replanRound(k, state, secondsSoFar: $0, stepsDone: $1, stepSeconds: $2)
                }
                state.plan.rounds[k - 1].steps = try runRound(k, chain.rounds[k - 1], seed: chain.blockwise.seed, tokens: tokens, replan: replan, show: show)
            }
            state.completedStages = k + 1
            state.stageSeconds.append((ContinuousClock.now - stageStart).seconds)
            try checkpoint.save(state)
            // The stage's own checkpoint is no longer needed once the chain has committed it.
            try? FileManager.default.removeItem(atPath: stageOutput(k) + (k == 0 ? ".calib" : ".e2e"))
            if let stop = stopAfter, stop.stage == k, stop.step == nil { throw CalibrationError("stopped after stage \(k + 1) (test hook)") }
        }

        let chain = chain(state.plan)
        try Self.copyAtomically(stageOutput(chain.stageCount - 1), to: outputPath)
        if !keepIntermediate { checkpoint.removeAll() }
        return Summary(chain: chain, wroteModel: true, resumedAtStage: resumedAt, seconds: (ContinuousClock.now - start).seconds)
    }

    /// The block-wise stage into `blockwise.gguf`, its logs beside the output; under a budget the
    /// blocks after block 0 are re-planned (`replanBlocks`, `secondsBefore` the stage into the run;
    /// the Calibrator records the answer). False when `blockLimit` stopped it.
    func runBlockwise(_ o: CalibrationOptions, plan: Plan, secondsBefore: Double, tokens: [Int32], tokenizer: Tokenizer?,
                      embedding: PackedFormat.Embedding, show: (String, Double) -> Void) throws -> Bool {
        let calibrator = Calibrator(source: source, options: o, outputPath: stageOutput(0), pool: pool)
        calibrator.trajectoryBudget = trajectoryBudget
        if budget != nil {
            calibrator.replanAfterFirstBlock = { [self] seconds in replanBlocks(plan, secondsSoFar: secondsBefore + seconds) }
        }
        calibrator.blockLimit = blockLimit
        if let stop = stopAfter, stop.stage == 0, let blocks = stop.step { calibrator.blockLimit = blocks }
        let summary = try calibrator.run(tokens: tokens, tokenizer: tokenizer, embedding: embedding, resume: true, progress: { p in
            var detail = "block \(p.block + 1)/\(p.blocks) "
            var within = 0.0
            if p.phase == "train" {
                within = Double((p.stage - 1) * p.steps + p.step) / Double(max(1, p.stages * p.steps))
                detail += String(format: "stage %d/%d step %d/%d loss %.4g hard %.1f%%", p.stage, p.stages, p.step, p.steps, p.loss, 100 * p.hardFraction)
            } else {
                detail += p.phase
            }
            show(detail, (Double(p.block) + within) / Double(p.blocks))
        }, blockDone: { [self] r in r.summaryLines(options: o).forEach(log) })
        guard summary.wroteModel else {
            if stopAfter?.stage == 0 && blockLimit == nil { throw CalibrationError("stopped after \(summary.reports.count) blocks (test hook)") }
            log("stopped after \(summary.reports.count) of \(source.config.blockCount) blocks (--blocks); no model written; the checkpoint in \(checkpoint.directory) continues with --resume")
            return false
        }
        if summary.resumedAt > 0 { log("resumed after block \(summary.resumedAt - 1)") }
        try CalibrationReport.writeLogs(summary, options: o, output: outputPath)
        log(CalibrationReport.flippedLine(summary.reports))
        log(String(format: "block-wise stage done (+ %@.log.json, .svg) in %.1f s", outputPath, summary.seconds))
        return true
    }

    /// Tune round `k` (1-based) on stage k − 1's file into `tuneK.gguf`; its logs are
    /// OUT.tuneK.json/.svg. `replan`: a time budget's re-plan of its steps after its first steps
    /// (`EndToEndTuner.replanAfterSteps`). Returns the steps it ran.
    func runRound(_ k: Int, _ round: TuneRound, seed: UInt64, tokens: [Int32], replan: ((Double, Int, Double) throws -> Int)?,
                  show: (String, Double) -> Void) throws -> Int {
        let student = try PackedModelSource(gguf: GGUFFile(path: stageOutput(k - 1)))
        let o = round.options(seed: seed)
        let tuner = try EndToEndTuner(teacher: source, student: student, options: o, outputPath: stageOutput(k), pool: pool, weightBudget: weightBudget)
        if let note = tuner.weightNote { log(note) }
        if let stop = stopAfter, stop.stage == k, let steps = stop.step { tuner.stopAfterSteps = steps }
        tuner.replanAfterSteps = replan
        let units = ChainCostModel(config: source.config).round(round)
        let report = try tuner.run(tokens: tokens, resume: true) { p in
            let total = units.fixed + units.perStep * Double(p.phase == "teacher" ? round.steps : p.steps)
            switch p.phase {
            case "teacher":
                show("teacher outputs, block \(p.step + 1)/\(p.steps)", units.fixed * Double(p.step) / Double(max(1, p.steps)) / total)
            case "eval":
                show("step \(p.step)/\(p.steps), held-out KL…", (units.fixed + units.perStep * Double(p.step)) / total)
            default:
                show(String(format: "step %d/%d KL %.4f", p.step, p.steps, p.loss), (units.fixed + units.perStep * Double(p.step)) / total)
            }
        }
        if report.resumedAt > 0 { log("resumed after step \(report.resumedAt)") }
        report.summaryLines.forEach(log)
        try tuner.writeLogs(report, prefix: outputPath + ".tune\(k)")
        log(String(format: "tune %d done (+ %@.tune%d.json, .svg) in %.1f s", k, outputPath, k, report.seconds))
        return report.stepLosses.count
    }

    /// Copies `source` over `path` atomically (a temporary file beside it, then a rename).
    static func copyAtomically(_ source: String, to path: String) throws {
        guard let input = InputStream(fileAtPath: source) else { throw CalibrationError("cannot read \(source)") }
        let writer = try AtomicFileWriter(path: path)
        input.open()
        defer { input.close() }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = input.read(&buffer, maxLength: buffer.count)
            if n < 0 { throw CalibrationError("cannot read \(source)") }
            if n == 0 { break }
            try buffer.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
        }
        try writer.commit()
    }
}
