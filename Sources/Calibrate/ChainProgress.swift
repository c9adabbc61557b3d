import Foundation
import Engine

/// Where a chain is: the stage, what it is doing, and the time left in the whole chain.
public struct ChainProgress: Sendable {
    /// 0-based stage, of `stages`.
    public var stage: Int, stages: Int
    public var name: String
    /// "block 3/30 stage 2/10 step 5/40 loss 0.012 hard 45.0%", "step 120/480 KL 0.0123", …
    public var detail: String
    /// Share of the stage done (0…1).
    public var fraction: Double
    /// Seconds left in the whole chain; nil until a rate has been measured.
    public var remainingSeconds: Double?
}

/// The whole chain's ETA: every stage's estimated cost (`ChainCostModel`) and the seconds per
/// unit measured so far. As the time budget's planner does, each kind of stage runs at its own
/// rate: the block-wise stage (stage 0) at the rate it measured, the tune rounds at the rate the
/// rounds measured. A kind not measured yet runs at its estimate (1 s per unit) when the costs
/// are in estimated seconds (a time budget probed the machine's rate), otherwise at the other
/// kind's measured rate (the costs are then bare flop counts, whose ratios are all they give).
/// (The block-wise stage runs at about 1.7× its estimate here and the rounds at about 1.1×, so
/// one rate for both overstates the tune by half.)
public struct ChainETA: Sendable {
    /// Every stage's estimated cost, in order (replaced when a time budget re-plans).
    public var stageUnits: [Double]
    /// True when `stageUnits` are estimated seconds; false when they are flop counts.
    public var unitsAreSeconds: Bool
    /// Seconds per unit of the block-wise stage and of the rounds; nil until measured.
    public private(set) var blockwiseSecondsPerUnit: Double?
    public private(set) var roundSecondsPerUnit: Double?
    var stage = -1
    var stageStart = ContinuousClock.now
    var fractionAtStart = 0.0

    public init(stageUnits: [Double], unitsAreSeconds: Bool = true) {
        self.stageUnits = stageUnits
        self.unitsAreSeconds = unitsAreSeconds
    }

    /// The units left: the rest of `stage` and every later stage.
    public static func unitsLeft(_ stageUnits: [Double], stage: Int, fraction: Double) -> Double {
        stageUnits[stage] * max(0, 1 - fraction) + stageUnits[(stage + 1)...].reduce(0, +)
    }

    /// Records progress (`fraction` of `stage` at `now`) and returns the seconds left in the
    /// chain; nil until some stage has measured a rate.
    public mutating func update(stage: Int, fraction: Double, now: ContinuousClock.Instant = .now) -> Double? {
        if stage != self.stage {
            self.stage = stage
            stageStart = now
            fractionAtStart = fraction
        }
        let done = (fraction - fractionAtStart) * stageUnits[stage]
        // A rate from at least 1 % of a stage (its start is dominated by one-off work).
        if done > 0.01 * stageUnits[stage] && done > 0 {
            let rate = (now - stageStart).seconds / done
            if stage == 0 { blockwiseSecondsPerUnit = rate } else { roundSecondsPerUnit = rate }
        }
        guard blockwiseSecondsPerUnit != nil || roundSecondsPerUnit != nil else { return nil }
        func rate(_ j: Int) -> Double {
            let own = j == 0 ? blockwiseSecondsPerUnit : roundSecondsPerUnit
            let other = j == 0 ? roundSecondsPerUnit : blockwiseSecondsPerUnit
            return own ?? (unitsAreSeconds ? 1 : other ?? 1)
        }
        var seconds = rate(stage) * stageUnits[stage] * max(0, 1 - fraction)
        for j in (stage + 1)..<stageUnits.count { seconds += rate(j) * stageUnits[j] }
        return seconds
    }
}
