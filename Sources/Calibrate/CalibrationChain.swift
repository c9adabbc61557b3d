import Foundation

/// One end-to-end tune round of a chain (`tessera tune` on the previous stage's file).
public struct TuneRound: Codable, Equatable, Sendable {
    /// Training windows and their length in tokens.
    public var samples: Int
    public var sequenceLength: Int
    public var steps: Int
    /// Peak learning rate (cosine to 0 over the steps).
    public var learningRate: Float
    /// Added to the chain's seed (successive rounds draw other windows).
    public var seedOffset: UInt64 = 0
    /// Held-out windows and the steps between their KL checks.
    public var evalSamples = 8
    public var evalEvery: Int

    public init(samples: Int, sequenceLength: Int, steps: Int, learningRate: Float, seedOffset: UInt64 = 0, evalEvery: Int) {
        self.samples = samples
        self.sequenceLength = sequenceLength
        self.steps = steps
        self.learningRate = learningRate
        self.seedOffset = seedOffset
        self.evalEvery = evalEvery
    }

    /// The round's tuner options under the chain's `seed`.
    public func options(seed: UInt64) -> EndToEndOptions {
        var o = EndToEndOptions()
        o.samples = samples
        o.sequenceLength = sequenceLength
        o.steps = steps
        o.learningRate = learningRate
        o.evalSamples = evalSamples
        o.evalEvery = min(evalEvery, steps)
        o.seed = seed &+ seedOffset
        return o
    }

    /// "256 × 512 tokens, 480 steps, lr 0.0005"
    public var summary: String { "\(samples) × \(sequenceLength) tokens, \(steps) steps, lr \(learningRate)\(seedOffset > 0 ? ", seed +\(seedOffset)" : "")" }
}

/// The whole calibration of `tessera calibrate`: the block-wise TesseraQ stage, then zero or more
/// end-to-end tune rounds, each on the previous stage's file.
///
/// The presets are today's recipes (bench/RESULTS.md, "W4g64 and W2g64 recipes" and "W3g64
/// recipe"), chosen on the test set; they are to be re-selected on held-out data. This is the
/// one place they are written down.
public struct CalibrationChain: Equatable, Sendable {
    public enum Preset: String, CaseIterable, Sendable {
        /// Block-wise `CalibrationOptions.fast`, then one 512-token tune (the W4g64/W2g64 recipe).
        case fast
        /// Block-wise fast at 80 steps per stage, a 512-token tune and two 2048-token rounds (the W3g64 recipe).
        case quality
        /// The reference's block-wise budget (`CalibrationOptions.paper`), no tune.
        case paper
    }

    /// The block-wise stage (its bits, group, activations … are set by the caller).
    public var blockwise: CalibrationOptions
    public var rounds: [TuneRound]

    public init(blockwise: CalibrationOptions, rounds: [TuneRound]) {
        self.blockwise = blockwise
        self.rounds = rounds
    }

    /// The 512-token round of the fast recipe: 256 windows (half of wiki.valid.raw), 480 steps, lr 5e-4.
    public static let round512 = TuneRound(samples: 256, sequenceLength: 512, steps: 480, learningRate: 5e-4, evalEvery: 80)

    public static func preset(_ preset: Preset) -> CalibrationChain {
        switch preset {
        case .fast:
            return CalibrationChain(blockwise: .fast, rounds: [round512])
        case .quality:
            var blockwise = CalibrationOptions.fast
            blockwise.stepsPerStage = 80
            var first = round512
            first.learningRate = 1e-3
            return CalibrationChain(blockwise: blockwise, rounds: [
                first,
                TuneRound(samples: 64, sequenceLength: 2048, steps: 120, learningRate: 1e-3, evalEvery: 20),
                TuneRound(samples: 64, sequenceLength: 2048, steps: 80, learningRate: 5e-4, seedOffset: 1, evalEvery: 20),
            ])
        case .paper:
            return CalibrationChain(blockwise: .paper, rounds: [])
        }
    }

    /// `--tune-steps N`: the rounds replaced by one 512-token round of N steps (the preset's first
    /// round's windows and rate, or the fast recipe's); 0 leaves the block-wise stage alone.
    public mutating func replaceRounds(steps: Int) {
        var round = rounds.first ?? Self.round512
        round.steps = steps
        round.seedOffset = 0
        rounds = steps > 0 ? [round] : []
    }

    /// `--tune-samples` / `--tune-seq-len`: every round's windows.
    public mutating func setRoundWindows(samples: Int?, sequenceLength: Int?) {
        for k in rounds.indices {
            if let samples { rounds[k].samples = samples }
            if let sequenceLength { rounds[k].sequenceLength = sequenceLength }
        }
    }

    /// Stages in order: the block-wise one, then the rounds.
    public var stageCount: Int { 1 + rounds.count }

    /// "block-wise", "tune 1", …
    public func stageName(_ k: Int) -> String { k == 0 ? "block-wise" : "tune \(k)" }

    /// One line per stage, for the run's header.
    public var summaryLines: [String] {
        let b = blockwise
        return ["block-wise: \(b.samples) × \(b.sequenceLength) tokens, stages \(b.schedule.argument) × \(b.stepsPerStage) steps, lr \(b.learningRate)"]
            + rounds.enumerated().map { "tune \($0.offset + 1): \($0.element.summary)" }
    }

    /// What a resumed chain must agree on (the block-wise options, every round).
    var fingerprint: [String] {
        blockwise.metadata.map { "\($0.0)=\($0.1)" }
            + rounds.enumerated().map { "round\($0.offset + 1)=\($0.element.samples)x\($0.element.sequenceLength):\($0.element.steps):\($0.element.learningRate):+\($0.element.seedOffset):\($0.element.evalSamples)/\($0.element.evalEvery)" }
    }
}
