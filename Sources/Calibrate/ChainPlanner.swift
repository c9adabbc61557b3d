import Foundation

/// What one stage of a chain costs: a fixed part (AWQ search and trajectories, a tune's teacher
/// pass) plus a cost per step (block-wise: per Adam step of every stage of every block; a tune:
/// per Adam step).
public struct StageCost: Equatable, Sendable {
    public var name: String
    public var fixedSeconds: Double
    public var secondsPerStep: Double
    public var steps: Int
    /// Scaling a stage below this many steps drops a droppable stage instead (the latest first).
    public var minimumSteps: Int
    /// Tune rounds may be dropped; the block-wise stage may not (it only goes down to 1 step).
    public var droppable: Bool

    public init(name: String, fixedSeconds: Double, secondsPerStep: Double, steps: Int, minimumSteps: Int, droppable: Bool) {
        self.name = name
        self.fixedSeconds = fixedSeconds
        self.secondsPerStep = secondsPerStep
        self.steps = steps
        self.minimumSteps = minimumSteps
        self.droppable = droppable
    }

    public func seconds(steps: Int) -> Double { fixedSeconds + secondsPerStep * Double(steps) }
}

/// A chain fitted to a time budget: the steps of every stage (nil: dropped) and the estimate.
public struct BudgetPlan: Equatable, Sendable {
    public var steps: [Int?]
    public var estimatedSeconds: Double
}

/// Fits a chain's steps to a time budget (`--time-budget`), from the stages' costs only: no
/// clock, so it is tested on given costs.
///
/// A chain that fits runs as it is (a budget never adds steps). Otherwise every kept stage is
/// scaled by one factor (fixed costs stay); when that would take a stage below its minimum, the
/// last droppable stage is dropped and the rest scaled again. With only the block-wise stage
/// left it goes down to 1 step; a budget below even that is refused. After rounding down, the
/// time left is handed back one step at a time, stage by stage, so the plan ends just under the
/// budget.
public enum ChainPlanner {
    public static func fit(_ stages: [StageCost], budget: Double) throws -> BudgetPlan {
        precondition(budget > 0)
        var kept = Array(stages.indices)
        while true {
            let fixed = kept.reduce(0) { $0 + stages[$1].fixedSeconds }
            let variable = kept.reduce(0) { $0 + stages[$1].secondsPerStep * Double(stages[$1].steps) }
            if fixed + variable <= budget { return plan(stages, kept: kept, steps: kept.map { stages[$0].steps }) }
            let factor = variable > 0 ? max(0, (budget - fixed) / variable) : 0
            var steps = kept.map { Int((factor * Double(stages[$0].steps)).rounded(.down)) }
            if zip(kept, steps).allSatisfy({ $1 >= stages[$0].minimumSteps }) {
                fill(&steps, stages: stages, kept: kept, budget: budget)
                return plan(stages, kept: kept, steps: steps)
            }
            if let last = kept.lastIndex(where: { stages[$0].droppable }) {
                kept.remove(at: last)
                continue
            }
            // Only stages that cannot be dropped: down to 1 step each, if even that fits.
            steps = steps.map { max(1, $0) }
            let least = kept.reduce(0) { $0 + stages[$1].seconds(steps: 1) }
            guard least <= budget else {
                let names = kept.map { stages[$0].name }.joined(separator: " and ")
                throw CalibrationError("time budget \(TimeBudget.format(budget)) is too short: the \(names) stage alone takes about \(TimeBudget.format(least)) at 1 step; give at least that")
            }
            fill(&steps, stages: stages, kept: kept, budget: budget)
            return plan(stages, kept: kept, steps: steps)
        }
    }

    /// Adds steps (round robin, up to each stage's own) while the total stays within the budget.
    static func fill(_ steps: inout [Int], stages: [StageCost], kept: [Int], budget: Double) {
        func total() -> Double { zip(kept, steps).reduce(0) { $0 + stages[$1.0].seconds(steps: $1.1) } }
        var added = true
        while added {
            added = false
            for (i, k) in kept.enumerated() where steps[i] < stages[k].steps {
                if total() + stages[k].secondsPerStep <= budget {
                    steps[i] += 1
                    added = true
                }
            }
        }
    }

    static func plan(_ stages: [StageCost], kept: [Int], steps: [Int]) -> BudgetPlan {
        var all = [Int?](repeating: nil, count: stages.count)
        var seconds = 0.0
        for (k, n) in zip(kept, steps) {
            all[k] = n
            seconds += stages[k].seconds(steps: n)
        }
        return BudgetPlan(steps: all, estimatedSeconds: seconds)
    }

    /// "time budget 60m: block-wise 40 → 23 steps per stage, tune 1 480 → 260 steps, tune 2 and tune 3 dropped (estimated 59m30s)"
    public static func summary(_ stages: [StageCost], _ plan: BudgetPlan, budget: Double, blockwiseUnit: String = " per stage") -> String {
        var parts: [String] = []
        var dropped: [String] = []
        for (k, stage) in stages.enumerated() {
            let unit = stage.droppable ? "" : blockwiseUnit
            guard let n = plan.steps[k] else { dropped.append(stage.name); continue }
            parts.append(n == stage.steps ? "\(stage.name) \(n) steps\(unit) (as planned)" : "\(stage.name) \(stage.steps) → \(n) steps\(unit)")
        }
        if !dropped.isEmpty { parts.append(dropped.joined(separator: " and ") + " dropped") }
        return "time budget \(TimeBudget.format(budget)): " + parts.joined(separator: ", ") + " (estimated \(TimeBudget.format(plan.estimatedSeconds)))"
    }
}

/// A duration written as 90s, 60m, 1.5h (`--time-budget`).
public struct TimeBudget: Equatable, Sendable {
    public let seconds: Double
    public let argument: String

    public init?(argument: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600]
        guard let last = argument.last, let unit = units[last], let value = Double(argument.dropLast()),
              value.isFinite, value > 0 else { return nil }
        seconds = value * unit
        self.argument = argument
    }

    /// "45s", "12m05s", "2h03m".
    public static func format(_ seconds: Double) -> String {
        // Clamped, and formatted without `%d` (which reads 32 bits of a Swift Int on Linux).
        guard seconds.isFinite else { return "?" }
        let s = Int(min(max(seconds, 0), 1e9).rounded())
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        if s < 60 { return "\(s)s" }
        return s >= 3600 ? "\(s / 3600)h\(two(s / 60 % 60))m" : "\(s / 60)m\(two(s % 60))s"
    }
}
