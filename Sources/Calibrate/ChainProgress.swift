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

/// The whole chain's ETA: every stage's estimated cost (`ChainCostModel`, any unit) and the
/// seconds per unit measured so far, so the stages not started yet are estimated from the plan
/// at the measured rate.
public struct ChainETA: Sendable {
    /// Every stage's estimated cost, in order (replaced when a time budget re-plans).
    public var stageUnits: [Double]
    /// Seconds per unit, from the last stage with enough progress; nil before that.
    public private(set) var secondsPerUnit: Double?
    var stage = -1
    var stageStart = ContinuousClock.now
    var fractionAtStart = 0.0

    public init(stageUnits: [Double]) { self.stageUnits = stageUnits }

    /// The units left: the rest of `stage` and every later stage.
    public static func unitsLeft(_ stageUnits: [Double], stage: Int, fraction: Double) -> Double {
        stageUnits[stage] * max(0, 1 - fraction) + stageUnits[(stage + 1)...].reduce(0, +)
    }

    /// Records progress (`fraction` of `stage`, `elapsed` seconds since this process began the
    /// stage) and returns the seconds left in the chain.
    public mutating func update(stage: Int, fraction: Double, now: ContinuousClock.Instant = .now) -> Double? {
        if stage != self.stage {
            self.stage = stage
            stageStart = now
            fractionAtStart = fraction
        }
        let done = (fraction - fractionAtStart) * stageUnits[stage]
        // A rate from at least 1 % of a stage (its start is dominated by one-off work).
        if done > 0.01 * stageUnits[stage] && done > 0 {
            secondsPerUnit = (now - stageStart).seconds / done
        }
        return secondsPerUnit.map { $0 * Self.unitsLeft(stageUnits, stage: stage, fraction: fraction) }
    }
}
