import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// `tessera calibrate` as one chain (CalibrationChainRunner) on the tiny calibration model: one
/// call writes one file, a run killed in any stage resumes to the same bytes, a time budget's
/// plan is recorded; and the planner, the presets and the ETA on given numbers.
final class CalibrationChainTests: XCTestCase {
    static let tokens = CalibrationTests.tokens(count: 2000)

    /// Block-wise as the calibration tests run it (fewer steps), then two short rounds.
    static func chain() -> CalibrationChain {
        var blockwise = CalibrationTests.options(.tesseraq)
        blockwise.stepsPerStage = 10
        var first = TuneRound(samples: 24, sequenceLength: 16, steps: 30, learningRate: 3e-3, evalEvery: 20)
        first.evalSamples = 3
        var second = TuneRound(samples: 12, sequenceLength: 32, steps: 30, learningRate: 1e-3, seedOffset: 1, evalEvery: 10)
        second.evalSamples = 3
        return CalibrationChain(blockwise: blockwise, rounds: [first, second])
    }

    /// The budget tests' stage costs: block-wise 10 s + 2 s per step per stage, every round 5 s +
    /// 1 s per step (a round below 7 steps is dropped).
    static func givenCosts(_ chain: CalibrationChain) -> [StageCost] {
        [StageCost(name: "block-wise", fixedSeconds: 10, secondsPerStep: 2, steps: chain.blockwise.stepsPerStage, minimumSteps: 2, droppable: false)]
            + chain.rounds.enumerated().map { StageCost(name: "tune \($0.offset + 1)", fixedSeconds: 5, secondsPerStep: 1, steps: $0.element.steps, minimumSteps: 7, droppable: true) }
    }

    func runner(_ path: String, chain: CalibrationChain = chain()) -> CalibrationChainRunner {
        CalibrationChainRunner(source: CalibrationTests.tinySource(), chain: chain, outputPath: path, pool: ThreadPool(threads: 2))
    }

    /// A runner under an 85 s budget at `givenCosts`, its lines to `log`.
    func budgetRunner(_ path: String, log: @escaping (String) -> Void) -> CalibrationChainRunner {
        let r = runner(path)
        r.budget = TimeBudget(argument: "85s")
        r.estimateCosts = Self.givenCosts
        r.log = log
        return r
    }

    func files(beside path: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path).sorted()
    }

    /// One call runs every stage and leaves the output and the stages' logs only; the file is
    /// the one the separate commands (calibrate, then tune twice) write.
    func testChainWritesOneFileAndTheStagesLogs() throws {
        let out = temporaryPath("chain.gguf")
        let r = runner(out)
        var lines: [String] = [], stages = Set<Int>(), lastETA: Double?, longestETA = 0.0
        r.log = { lines.append($0) }
        r.progress = { p in
            stages.insert(p.stage)
            XCTAssertEqual(p.stages, 3)
            if let left = p.remainingSeconds {
                XCTAssertGreaterThanOrEqual(left, 0)
                lastETA = left
                longestETA = max(longestETA, left)
            }
        }
        let summary = try r.run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: false)
        XCTAssertTrue(summary.wroteModel)
        XCTAssertEqual(stages, [0, 1, 2])
        XCTAssertNotNil(lastETA)
        // Without a budget the costs are flop counts: a round not started yet must be timed at
        // the block-wise stage's measured rate, not at one second per flop.
        XCTAssertLessThan(longestETA, max(600, 1000 * summary.seconds), "ETA \(longestETA) s for a \(summary.seconds) s run")
        XCTAssertEqual(try files(beside: out), ["chain.gguf", "chain.gguf.log.json", "chain.gguf.svg", "chain.gguf.tune1.json",
                                                "chain.gguf.tune1.svg", "chain.gguf.tune2.json", "chain.gguf.tune2.svg"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("stage 3/3: tune 2") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("block  1: loss") }, "\(lines)")

        // The same steps as separate runs.
        let chain = Self.chain(), pool = ThreadPool(threads: 2), source = CalibrationTests.tinySource()
        let blockwise = temporaryPath("blockwise.gguf")
        _ = try Calibrator(source: source, options: chain.blockwise, outputPath: blockwise, pool: pool)
            .run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: false)
        var input = blockwise
        for (k, round) in chain.rounds.enumerated() {
            let next = temporaryPath("tune\(k + 1).gguf")
            _ = try EndToEndTuner(teacher: source, student: PackedModelSource(gguf: GGUFFile(path: input)), options: round.options(seed: chain.blockwise.seed),
                                  outputPath: next, pool: pool).run(tokens: Self.tokens, resume: false)
            input = next
        }
        XCTAssertEqual(FileManager.default.contents(atPath: out), FileManager.default.contents(atPath: input))
        let tuned = try PackedModelSource(gguf: GGUFFile(path: out))
        XCTAssertEqual(tuned.gguf.string("tessera.calibration.steps"), "10")
        XCTAssertNotNil(tuned.gguf.string("tessera.e2e.settings"))
    }

    /// Killed in the block-wise stage, at a stage boundary, and in each round, and resumed each
    /// time: the same file as an uninterrupted run; --keep-intermediate keeps the stages' files.
    func testKilledInEveryStageAndResumedGivesTheSameFile() throws {
        let whole = temporaryPath("whole.gguf"), parts = temporaryPath("parts.gguf")
        _ = try runner(whole).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: false)
        let stops: [(Int, Int?)] = [(0, 1), (0, nil), (1, 25), (1, nil), (2, 25)]   // rounds stop at their checkpoints (every 25 steps)
        for (n, stop) in stops.enumerated() {
            let r = runner(parts)
            r.stopAfter = stop
            XCTAssertThrowsError(try r.run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: n > 0)) {
                XCTAssertTrue("\($0)".contains("test hook"), "\(stop): \($0)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: parts), "no output before the chain ends")
        }
        // Without --resume the checkpoint is refused; with other settings too.
        XCTAssertThrowsError(try runner(parts).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: false)) {
            XCTAssertTrue("\($0)".contains("--resume"), "\($0)")
        }
        var other = Self.chain()
        other.rounds[1].steps = 31
        XCTAssertThrowsError(try runner(parts, chain: other).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: true)) {
            XCTAssertTrue("\($0)".contains("other settings"), "\($0)")
        }
        let last = runner(parts)
        last.keepIntermediate = true
        let summary = try last.run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: true)
        XCTAssertEqual(summary.resumedAtStage, 2)
        XCTAssertEqual(FileManager.default.contents(atPath: whole), FileManager.default.contents(atPath: parts))
        let kept = try FileManager.default.contentsOfDirectory(atPath: parts + ".calib").sorted()
        XCTAssertEqual(kept, ["blockwise.gguf", "state.json", "tune1.gguf", "tune2.gguf"])
    }

    /// Under a time budget the first plan is made when the run starts, and the rounds left are
    /// re-planned before each round at the rate the finished stages measured; each plan is
    /// recorded before its stage starts, so a run resumed inside a stage keeps it.
    func testTimeBudgetPlansAreRecordedAndKeptOnResume() throws {
        let out = temporaryPath("budget.gguf")
        // Given costs: block-wise 10 s + 2 s per step per stage, the rounds 5 s + 1 s per step.
        var estimates = 0
        let costs: (CalibrationChain) -> [StageCost] = { chain in
            estimates += 1
            return Self.givenCosts(chain)
        }
        var lines: [String] = []
        func runner(stop: (Int, Int?)?) -> CalibrationChainRunner {
            let r = self.runner(out)
            r.budget = TimeBudget(argument: "85s")
            r.estimateCosts = costs
            r.stopAfter = stop
            r.log = { lines.append($0) }
            return r
        }
        // 85 s: 10 + 5 + 5 fixed and 20 + 30 + 30 s of steps at full length: 65/80 of each, and
        // the second left back to tune 1. Stopped after block 0: its re-plan of the later blocks
        // (block 0 took a fraction of a second against 13 s, so they get their 10 steps back)
        // is committed with it, and the resumed stage follows it without a new one.
        XCTAssertThrowsError(try runner(stop: (0, 1)).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: false))
        XCTAssertTrue(lines.contains("time budget 1m25s: block-wise 10 → 8 steps per stage, tune 1 30 → 25 steps, tune 2 30 → 24 steps (estimated 1m25s)"), "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("time budget 1m25s: block 0 took ") && $0.contains(": block-wise 10 steps, tune 1 30 steps, tune 2 30 steps") }, "\(lines)")
        lines = []
        XCTAssertThrowsError(try runner(stop: (0, nil)).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: true))
        XCTAssertFalse(lines.contains { $0.contains("block 0 took") }, "\(lines)")
        // Before tune 1: the block-wise stage took a fraction of a second against 26 s estimated,
        // so the rounds get their steps back; that plan is recorded, and the run stops inside tune 1.
        lines = []
        XCTAssertThrowsError(try runner(stop: (1, 25)).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: true))
        XCTAssertTrue(lines.contains { $0.hasPrefix("time budget 1m25s, ") && $0.contains("before tune 1") && $0.hasSuffix(": tune 1 30 steps, tune 2 30 steps") }, "\(lines)")
        // Resumed inside tune 1 (from its checkpoint after 25 steps): no new plan for it; one
        // before tune 2, one after tune 2's first 10 steps (far less than their 10 s) and one at
        // half of the 30 steps that gave.
        lines = []
        estimates = 0
        let summary = try runner(stop: nil).run(tokens: Self.tokens, tokenizer: nil, embedding: .f16, resume: true)
        XCTAssertEqual(lines.filter { $0.contains(" left before ") }.count, 1, "\(lines)")
        XCTAssertTrue(lines.contains { $0.contains("before tune 2") }, "\(lines)")
        XCTAssertEqual(lines.filter { $0.contains(" steps took ") }.count, 2, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("time budget 1m25s: tune 2's first 10 steps took ") && $0.contains(": 30 steps") }, "\(lines)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("time budget 1m25s: tune 2's first 15 steps took ") && $0.contains(": 30 steps") }, "\(lines)")
        XCTAssertEqual(estimates, 4, "the rounds done and those left before tune 2, and tune 2's after its first steps and at half")
        XCTAssertEqual(summary.chain.blockwise.stepsPerStage, 8)
        XCTAssertEqual(summary.chain.rounds.map(\.steps), [30, 30])
        let file = try PackedModelSource(gguf: GGUFFile(path: out))
        XCTAssertEqual(file.gguf.string("tessera.calibration.steps"), "8")
        XCTAssertEqual(file.gguf.string("tessera.calibration.steps_after_block0"), "10")
        XCTAssertTrue(file.gguf.string("tessera.e2e.settings")?.contains("steps=30") == true)
    }

    /// The re-plan before a round on given numbers (85 s budget; rounds 5 s + 1 s per step, 30
    /// asked). Before tune 1 the block-wise stage took 13 s, 52 s or 100 s: the rounds keep their
    /// own estimates for the time left. Before tune 2, tune 1 (25 steps, 30 s estimated) took
    /// 17.5 s or 60 s: tune 2 is scaled by that factor (all 30 steps, or dropped).
    func testReplanBeforeARoundScalesByTheFinishedRounds() throws {
        let out = temporaryPath("replan.gguf")
        try FileManager.default.createDirectory(atPath: out + ".calib", withIntermediateDirectories: true)
        let r = budgetRunner(out) { _ in }
        let first = CalibrationChainRunner.Plan(blockwiseSteps: 8, rounds: Self.chain().rounds.map { var r = $0; r.steps = 25; return r },
                                                requestedRoundSteps: [30, 30])
        for (seconds, expected) in [([13.0], [30, 30]), ([52], [12, 11]), ([100], []), ([13, 17.5], [25, 30]), ([13, 60], [25])] {
            let k = seconds.count
            var state = CalibrationChainRunner.State(fingerprint: [], plan: first, completedStages: k, stageSeconds: seconds)
            try r.replan(&state, before: k)
            XCTAssertEqual(state.plan.rounds.map(\.steps), expected, "\(seconds) s")
            XCTAssertEqual(state.plan.plannedThrough, k)
            XCTAssertEqual(state.plan.blockwiseSteps, 8)
            XCTAssertEqual(r.checkpoint.load()?.plan, state.plan, "recorded before the stage starts")
        }
    }

    /// The re-plan inside tune 1 after its first 10 steps (1 s each estimated; the block-wise
    /// stage took 13 s of 85): at half the estimate it keeps its 30 steps; at 2.4× (24 s, 30 s
    /// into the round) it gets 19, sharing what is left with tune 2 (5 s + 1 s per step); past
    /// the budget it stops at 10.
    func testRoundReplanAfterItsFirstSteps() throws {
        var lines: [String] = []
        let r = budgetRunner(temporaryPath("round.gguf")) { lines.append($0) }
        let plan = CalibrationChainRunner.Plan(blockwiseSteps: 8, rounds: Self.chain().rounds.map { var r = $0; r.steps = 25; return r },
                                               requestedRoundSteps: [30, 30])
        let state = CalibrationChainRunner.State(fingerprint: [], plan: plan, completedStages: 1, stageSeconds: [13])
        for (seconds, steps, expected) in [(10.0, 5.0, 30), (30, 24, 19), (80, 70, 10)] {
            XCTAssertEqual(r.replanRound(1, state, secondsSoFar: seconds, stepsDone: 10, stepSeconds: steps), expected, "\(seconds) s: \(lines.last ?? "")")
        }
        XCTAssertEqual(lines[1], "time budget 1m25s: tune 1's first 10 steps took 24s (2.40× their estimate), 42s left: 30 → 19 steps (estimated 22s more)")
        XCTAssertTrue(lines[2].hasSuffix("the budget is spent, it stops there"), lines[2])
    }

    /// The re-plan after block 0 on given numbers (2 blocks; block-wise 10 s + 2 s per step per
    /// stage, planned at 8 steps, so block 0 is estimated at 13 s; each round 5 s + 1 s per step,
    /// 30 asked): block 0 taking half its estimate gives the later block all 10 steps; as
    /// estimated, 9 (the rounds then share what is left); 60 s or past the 85 s budget, 1 step.
    func testBlockwiseReplanAfterBlockZero() throws {
        var lines: [String] = []
        let r = budgetRunner(temporaryPath("blocks.gguf")) { lines.append($0) }
        let plan = CalibrationChainRunner.Plan(blockwiseSteps: 8, rounds: Self.chain().rounds, requestedRoundSteps: [30, 30])
        for (seconds, expected) in [(6.5, 10), (13, 9), (60, 1), (100, 1)] {
            XCTAssertEqual(r.replanBlocks(plan, secondsSoFar: seconds), expected, "\(seconds) s: \(lines.last ?? "")")
        }
        XCTAssertEqual(lines[1], "time budget 1m25s: block 0 took 13s (1.00× its estimate), 1m12s left for blocks 1–1 and the rounds: block-wise 10 → 9 steps, tune 1 30 → 24 steps, tune 2 30 → 24 steps (estimated 1m25s)")
        XCTAssertTrue(lines[3].hasSuffix("the blocks left get 1 step per stage, the rounds are dropped"), lines[3])
    }

    // MARK: - Planner (given costs, no clock)

    /// Costs shaped like the demo model's quality chain: block-wise 10 min + 30 s per step per
    /// stage (40 steps), a 512-token tune 4 min + 3.5 s per step, two 2048-token rounds 5 min
    /// + 20 s per step.
    static let demoCosts = [
        StageCost(name: "block-wise", fixedSeconds: 600, secondsPerStep: 30, steps: 80, minimumSteps: 20, droppable: false),
        StageCost(name: "tune 1", fixedSeconds: 240, secondsPerStep: 3.5, steps: 480, minimumSteps: 120, droppable: true),
        StageCost(name: "tune 2", fixedSeconds: 300, secondsPerStep: 20, steps: 120, minimumSteps: 30, droppable: true),
        StageCost(name: "tune 3", fixedSeconds: 300, secondsPerStep: 20, steps: 80, minimumSteps: 20, droppable: true),
    ]

    func estimate(_ costs: [StageCost], _ plan: BudgetPlan) -> Double {
        zip(costs, plan.steps).reduce(0) { total, stage in total + (stage.1.map { stage.0.seconds(steps: $0) } ?? 0) }
    }

    func testPlannerFitsTheBudgetWithinTenPercent() throws {
        let costs = Self.demoCosts
        let full = costs.reduce(0) { $0 + $1.seconds(steps: $1.steps) }
        for minutes in stride(from: 20, through: 200, by: 5) {
            let budget = Double(minutes) * 60
            let plan = try ChainPlanner.fit(costs, budget: budget)
            let seconds = estimate(costs, plan)
            XCTAssertEqual(seconds, plan.estimatedSeconds, accuracy: 1e-6)
            XCTAssertLessThanOrEqual(seconds, budget + 1e-9, "\(minutes) min")
            if budget < full {
                XCTAssertGreaterThanOrEqual(seconds, 0.9 * budget, "\(minutes) min: \(plan.steps)")
            } else {
                XCTAssertEqual(plan.steps, costs.map(\.steps), "a chain that fits runs as it is")
            }
            // Never more steps than asked; the block-wise stage always runs; rounds drop latest first.
            for (cost, steps) in zip(costs, plan.steps) { if let steps { XCTAssertLessThanOrEqual(steps, cost.steps) } }
            XCTAssertNotNil(plan.steps[0])
            let kept = plan.steps.map { $0 != nil }
            XCTAssertEqual(kept, kept.sorted { $0 && !$1 }, "a round is dropped only with every later one: \(plan.steps)")
        }
    }

    func testPlannerDropsLateRoundsBeforeScalingTooFar() throws {
        let costs = Self.demoCosts
        // 45 min: the whole chain is ~159 min, and with any 2048-token round kept some stage
        // would go below a quarter of its steps, so both go and the rest is scaled.
        let plan = try ChainPlanner.fit(costs, budget: 2700)
        XCTAssertNil(plan.steps[2])
        XCTAssertNil(plan.steps[3])
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(plan.steps[0]), 20)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(plan.steps[1]), 120)
        let text = ChainPlanner.summary(costs, plan, budget: 2700)
        XCTAssertTrue(text.hasPrefix("time budget 45m00s: block-wise 80 → 36 steps per stage, tune 1 480 → "), text)
        XCTAssertTrue(text.contains("tune 2 and tune 3 dropped"), text)
        // Below the rounds' minimum: only the block-wise stage, down to 1 step per stage.
        let short = try ChainPlanner.fit(costs, budget: 900)
        XCTAssertEqual(short.steps[1...].compactMap { $0 }, [])
        XCTAssertEqual(short.steps[0], 10)
        // Below its fixed cost plus 1 step: refused, saying how long it needs.
        XCTAssertThrowsError(try ChainPlanner.fit(costs, budget: 600)) {
            XCTAssertTrue("\($0)".contains("too short") && "\($0)".contains("10m30s"), "\($0)")
        }
        // Uniform scaling: each kept stage keeps about the same share of its steps.
        let half = try ChainPlanner.fit(Array(costs.prefix(2)), budget: 600 + 240 + 0.5 * (30 * 80 + 3.5 * 480))
        XCTAssertEqual(Double(half.steps[0]!) / 80, 0.5, accuracy: 0.05)
        XCTAssertEqual(Double(half.steps[1]!) / 480, 0.5, accuracy: 0.05)
    }

    func testTimeBudgetArguments() {
        XCTAssertEqual(TimeBudget(argument: "90s")?.seconds, 90)
        XCTAssertEqual(TimeBudget(argument: "60m")?.seconds, 3600)
        XCTAssertEqual(TimeBudget(argument: "1.5h")?.seconds, 5400)
        for bad in ["0", "0m", "banana", "60", "-5m", "m", "inf", "nanh", "5d"] { XCTAssertNil(TimeBudget(argument: bad), bad) }
        XCTAssertEqual(TimeBudget.format(45), "45s")
        XCTAssertEqual(TimeBudget.format(725), "12m05s")
        XCTAssertEqual(TimeBudget.format(7380), "2h03m")
        // Hours past 2^31 (a 32-bit `%d` wrapped them negative) are clamped; nonsense is not shown.
        XCTAssertEqual(TimeBudget.format(3.6e15), "277777h46m")
        XCTAssertEqual(TimeBudget.format(-5), "0s")
        XCTAssertEqual(TimeBudget.format(.nan), "?")
    }

    // MARK: - Presets and the ETA

    func testPresetsAreTodaysRecipes() {
        let fast = CalibrationChain.preset(.fast)
        XCTAssertEqual(fast.blockwise, .fast)
        XCTAssertEqual(fast.rounds, [TuneRound(samples: 256, sequenceLength: 512, steps: 480, learningRate: 5e-4, evalEvery: 80)])
        let quality = CalibrationChain.preset(.quality)
        XCTAssertEqual(quality.blockwise.stepsPerStage, 80)
        XCTAssertEqual(quality.rounds.map(\.sequenceLength), [512, 2048, 2048])
        XCTAssertEqual(quality.rounds.map(\.samples), [256, 64, 64])
        XCTAssertEqual(quality.rounds.map(\.steps), [480, 120, 80])
        XCTAssertEqual(quality.rounds.map(\.learningRate), [1e-3, 1e-3, 5e-4])
        XCTAssertEqual(quality.rounds.map(\.seedOffset), [0, 0, 1])
        XCTAssertEqual(quality.rounds[2].options(seed: 42).seed, 43)
        let paper = CalibrationChain.preset(.paper)
        XCTAssertEqual(paper.blockwise, .paper)
        XCTAssertTrue(paper.rounds.isEmpty)
        // --tune-steps N: one 512-token round of N steps (the preset's first round's rate); 0: none.
        var q = quality
        q.replaceRounds(steps: 100)
        XCTAssertEqual(q.rounds, [TuneRound(samples: 256, sequenceLength: 512, steps: 100, learningRate: 1e-3, evalEvery: 80)])
        var p = paper
        p.replaceRounds(steps: 50)
        XCTAssertEqual(p.rounds.map(\.learningRate), [5e-4])
        p.replaceRounds(steps: 0)
        XCTAssertTrue(p.rounds.isEmpty)
    }

    func testETACoversTheRemainingStagesAtEachKindsOwnRate() {
        let units = [100.0, 50, 30]
        XCTAssertEqual(ChainETA.unitsLeft(units, stage: 0, fraction: 0.25), 75 + 80)
        XCTAssertEqual(ChainETA.unitsLeft(units, stage: 2, fraction: 1), 0)
        var eta = ChainETA(stageUnits: units)
        let t0 = ContinuousClock.now
        XCTAssertNil(eta.update(stage: 0, fraction: 0, now: t0))
        // 20 % of stage 0 (20 units) in 40 s: 2 s per unit for its other 80 units; the rounds
        // (80 units) at their estimate, 1 s per unit, as the planner takes them.
        let left = try! XCTUnwrap(eta.update(stage: 0, fraction: 0.2, now: t0 + .seconds(40)))
        XCTAssertEqual(left, 2 * 80 + 80, accuracy: 1e-6)
        // The first round starts at its estimate, then runs at its own rate: half of it (25
        // units) in 30 s is 1.2 s per unit, for the rest of it and the next round.
        XCTAssertEqual(try! XCTUnwrap(eta.update(stage: 1, fraction: 0, now: t0 + .seconds(200))), 80, accuracy: 1e-6)
        XCTAssertEqual(try! XCTUnwrap(eta.update(stage: 1, fraction: 0.5, now: t0 + .seconds(230))), 1.2 * 55, accuracy: 1e-6)
        XCTAssertEqual(try! XCTUnwrap(eta.update(stage: 2, fraction: 0, now: t0 + .seconds(260))), 1.2 * 30, accuracy: 1e-6)
        XCTAssertEqual(eta.blockwiseSecondsPerUnit ?? 0, 2, accuracy: 1e-9)

        // Costs in flops (no budget, so no probed rate): the rounds not measured yet run at the
        // block-wise stage's rate, as one rate for all did before each kind had its own.
        var flops = ChainETA(stageUnits: units.map { $0 * 1e9 }, unitsAreSeconds: false)
        XCTAssertNil(flops.update(stage: 0, fraction: 0, now: t0))
        XCTAssertEqual(try! XCTUnwrap(flops.update(stage: 0, fraction: 0.2, now: t0 + .seconds(40))), 2 * 80 + 2 * 80, accuracy: 1e-6)
        XCTAssertEqual(try! XCTUnwrap(flops.update(stage: 1, fraction: 0.5, now: t0 + .seconds(230))), 2 * 55, accuracy: 1e-6)
    }
}
