import Foundation
import Engine

// A chain under a time budget (`--time-budget`): the first plan when a run starts, and a re-plan
// of the rounds left before each round, both recorded in the chain's state before their stage
// starts, so a resumed run follows the same plan.

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
        return ChainCostModel(config: source.config, flopsPerSecond: plan.flopsPerSecond ?? 1).costs(chain)
    }

    /// Before stage `k` (a round): the rounds left, at their requested steps, fitted to the time
    /// the budget has left after the finished stages, with every estimate scaled by what those
    /// stages measured against theirs. The new plan is saved before the stage starts.
    func replan(_ state: inout State, before k: Int) throws {
        guard let budget else { return }
        let done = state.stageSeconds.prefix(k).reduce(0, +)
        let ran = chain(state.plan)
        let estimated = stageCosts(ran, plan: state.plan).prefix(k).reduce(0) { $0 + $1.seconds(steps: $1.steps) }
        let measured = estimated > 0 && done > 0 ? done / estimated : 1
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
        let parts = zip(left, fitted.steps).map { c, n in
            n.map { $0 == c.steps ? "\(c.name) \($0) steps" : "\(c.name) \(c.steps) → \($0) steps" } ?? "\(c.name) dropped"
        }
        log(String(format: "time budget %@, %@ left before %@ (the stages so far took %.2f× their estimate): %@",
                   TimeBudget.format(budget.seconds), TimeBudget.format(max(0, timeLeft)), ran.stageName(k), measured, parts.joined(separator: ", ")))
    }
}
