import Foundation
import Engine

// A chain under a time budget (`--time-budget`): the first plan when a run starts; a re-plan of
// the blocks left after block 0, of the rounds left before each round, and of a round's steps
// after its first steps. Each is recorded (in the chain's state, the Calibrator's or the
// tuner's checkpoint) before the work it plans starts, so a resumed run follows the same plan.
//
// Each re-plan scales the estimates of a stage kind by what that kind measured: the block-wise
// stage's cost per counted flop is not a tune's (on the demo model it ran at 1.7× its estimate,
// a tune's teacher pass at 0.9× and its steps at 1.1×), so the rounds keep their own estimates
// until a round measures one.

extension CalibrationChainRunner {
    /// The plan of a fresh run: the requested chain, or under a budget the planner's at the
    /// probed rate.
    func makePlan() throws -> Plan {
        var plan = Plan(blockwiseSteps: requested.blockwise.stepsPerStage, rounds: requested.rounds,
                        requestedRoundSteps: requested.rounds.map(\.steps))
        guard let budget else { return plan }
        if estimateCosts == nil {
            plan.flopsPerSecond = ChainCostModel.probe(config: source.config, sequenceLength: min(512, requested.blockwise.sequenceLength), pool: pool)
        }
        let costs = stageCosts(requested, plan: plan)
        let fitted = try ChainPlanner.fit(costs, budget: budget.seconds)
        plan.blockwiseSteps = fitted.steps[0]!
        plan.rounds = []
        plan.requestedRoundSteps = []
        for (k, round) in requested.rounds.enumerated() {
            guard let steps = fitted.steps[k + 1] else { continue }
            var r = round
            r.steps = steps
            plan.rounds.append(r)
            plan.requestedRoundSteps.append(round.steps)
        }
        plan.budgetSummary = ChainPlanner.summary(costs, fitted, budget: budget.seconds)
        return plan
    }

    /// The stages' estimated seconds: the test's costs, or the cost model at the plan's rate.
    func stageCosts(_ chain: CalibrationChain, plan: Plan) -> [StageCost] {
        if let estimateCosts { return estimateCosts(chain) }
        return modelCosts(chain, plan: plan)
    }

    /// The cost model's stages at the plan's probed rate: estimated seconds under a budget,
    /// flop counts without one (no rate was probed).
    func modelCosts(_ chain: CalibrationChain, plan: Plan) -> [StageCost] {
        ChainCostModel(config: source.config, flopsPerSecond: plan.flopsPerSecond ?? 1).costs(chain)
    }

    /// Before stage `k` (a round): the rounds left, at their requested steps, fitted to the time
    /// the budget has left after the finished stages, with their estimates scaled by what the
    /// finished rounds took against theirs (1 before the first round). The new plan is saved
    /// before the stage starts.
    func replan(_ state: inout State, before k: Int) throws {
        guard let budget else { return }
        let done = state.stageSeconds.prefix(k).reduce(0, +)
        let ran = chain(state.plan)
        let roundsTook = state.stageSeconds[1..<k].reduce(0, +)
        let roundsEstimated = stageCosts(ran, plan: state.plan)[1..<k].reduce(0) { $0 + $1.seconds(steps: $1.steps) }
        let measured = roundsEstimated > 0 && roundsTook > 0 ? roundsTook / roundsEstimated : 1
        var asked = ran
        for j in (k - 1)..<asked.rounds.count { asked.rounds[j].steps = state.plan.requestedRoundSteps[j] }
        let left = Array(stageCosts(asked, plan: state.plan)[k...]).map { c -> StageCost in
            var c = c
            c.fixedSeconds *= measured
            c.secondsPerStep *= measured
            return c
        }
        let timeLeft = budget.seconds - done
        let fitted = timeLeft > 0 ? try ChainPlanner.fit(left, budget: timeLeft)
                                  : BudgetPlan(steps: [Int?](repeating: nil, count: left.count), estimatedSeconds: 0)
        var rounds = Array(state.plan.rounds[..<(k - 1)]), requestedSteps = Array(state.plan.requestedRoundSteps[..<(k - 1)])
        for (j, steps) in fitted.steps.enumerated() {
            guard let steps else { continue }
            var r = asked.rounds[k - 1 + j]
            r.steps = steps
            rounds.append(r)
            requestedSteps.append(state.plan.requestedRoundSteps[k - 1 + j])
        }
        state.plan.rounds = rounds
        state.plan.requestedRoundSteps = requestedSteps
        state.plan.plannedThrough = k
        try checkpoint.save(state)
        let parts = Self.describe(left, fitted.steps)
        let rate = k > 1 ? String(format: " (the rounds so far took %.2f× their estimate)", measured) : ""
        log(String(format: "time budget %@, %@ left before %@%@: %@",
                   TimeBudget.format(budget.seconds), TimeBudget.format(max(0, timeLeft)), ran.stageName(k), rate, parts.joined(separator: ", ")))
    }

    /// Round `k` (1-based) `secondsSoFar` into its run, after its first `stepsDone` steps took
    /// `stepSeconds`: its steps, up to those asked for, fitted with the later rounds to the time
    /// the budget has left, its cost per step scaled by what those steps took against the
    /// estimate. Returns the round's steps in all; the tuner saves them with its checkpoints.
    func replanRound(_ k: Int, _ state: State, secondsSoFar: Double, stepsDone: Int, stepSeconds: Double) -> Int {
        guard let budget else { return state.plan.rounds[k - 1].steps }
        var asked = chain(state.plan)
        for j in (k - 1)..<asked.rounds.count { asked.rounds[j].steps = state.plan.requestedRoundSteps[j] }
        let costs = stageCosts(asked, plan: state.plan)
        let estimate = costs[k].secondsPerStep * Double(stepsDone)
        let measured = estimate > 0 && stepSeconds > 0 ? stepSeconds / estimate : 1
        var this = costs[k]
        this.fixedSeconds = 0
        this.secondsPerStep *= measured
        this.steps -= stepsDone
        this.minimumSteps = 1
        this.droppable = false
        let timeLeft = budget.seconds - state.stageSeconds.prefix(k).reduce(0, +) - secondsSoFar
        let took = String(format: "time budget %@: %@'s first %d steps took %@ (%.2f× their estimate)", TimeBudget.format(budget.seconds),
                          asked.stageName(k), stepsDone, TimeBudget.format(stepSeconds), measured)
        guard this.steps > 0, timeLeft > 0, let fitted = try? ChainPlanner.fit([this] + costs[(k + 1)...], budget: timeLeft) else {
            log(took + "; the budget is spent, it stops there")
            return stepsDone
        }
        let steps = stepsDone + fitted.steps[0]!, total = stepsDone + this.steps
        log(String(format: "%@, %@ left: %@ (estimated %@ more)", took, TimeBudget.format(timeLeft),
                   steps == total ? "\(steps) steps" : "\(total) → \(steps) steps", TimeBudget.format(this.seconds(steps: fitted.steps[0]!))))
        return steps
    }

    /// "tune 1 480 → 385 steps", "tune 2 dropped", … for a re-plan's line.
    static func describe(_ stages: [StageCost], _ steps: [Int?]) -> [String] {
        zip(stages, steps).map { c, n in
            n.map { $0 == c.steps ? "\(c.name) \($0) steps" : "\(c.name) \(c.steps) → \($0) steps" } ?? "\(c.name) dropped"
        }
    }

    /// After block 0 of the block-wise stage, `secondsSoFar` into the run: the blocks left and
    /// every round, at their requested steps, fitted to the time the budget has left, the blocks'
    /// estimate scaled by what block 0 measured against its share (1/L) of the stage's.
    /// Returns the later blocks' steps per stage (the Calibrator commits them with block 0); the
    /// rounds are only planned here to leave them their share, and re-planned before each starts.
    func replanBlocks(_ plan: Plan, secondsSoFar: Double) -> Int {
        guard let budget else { return plan.blockwiseSteps }
        let L = Double(source.config.blockCount)
        let asked = stageCosts(requested, plan: plan)
        let block0 = asked[0].seconds(steps: plan.blockwiseSteps) / L
        let measured = block0 > 0 && secondsSoFar > 0 ? secondsSoFar / block0 : 1
        let left = asked.enumerated().map { j, c -> StageCost in
            var c = c
            guard j == 0 else { return c }
            c.fixedSeconds *= measured * (L - 1) / L
            c.secondsPerStep *= measured * (L - 1) / L
            return c
        }
        let timeLeft = budget.seconds - secondsSoFar
        // Past the budget already, or too short even at 1 step: the later blocks get 1 step.
        guard timeLeft > 0, let fitted = try? ChainPlanner.fit(left, budget: timeLeft) else {
            log(String(format: "time budget %@: block 0 took %@ (%.2f× its estimate); the blocks left get 1 step per stage, the rounds are dropped",
                       TimeBudget.format(budget.seconds), TimeBudget.format(secondsSoFar), measured))
            return 1
        }
        let parts = Self.describe(left, fitted.steps)
        log(String(format: "time budget %@: block 0 took %@ (%.2f× its estimate), %@ left for blocks 1–%d and the rounds: %@ (estimated %@)",
                   TimeBudget.format(budget.seconds), TimeBudget.format(secondsSoFar), measured, TimeBudget.format(timeLeft),
                   Int(L) - 1, parts.joined(separator: ", "), TimeBudget.format(secondsSoFar + fitted.estimatedSeconds)))
        return fitted.steps[0]!
    }
}
