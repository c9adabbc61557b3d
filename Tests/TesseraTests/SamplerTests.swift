import XCTest
@testable import Engine
@testable import Eval

final class SamplerTests: XCTestCase {
    func sample(_ logits: [Float], _ p: SamplingParameters, recent: [Int32] = []) -> Int32 {
        var s = Sampler(p)
        return logits.withUnsafeBufferPointer { s.sample($0, recent: recent[...]) }
    }

    func testGreedyTakesFirstMaximum() {
        XCTAssertEqual(sample([0.1, 3, -2, 3, 1], .greedy), 1)
    }

    func testTopKOfOneIsGreedyWhateverTheTemperature() {
        var p = SamplingParameters()
        p.topK = 1
        p.temperature = 5
        for seed in 0..<20 as Range<UInt64> {
            p.seed = seed
            XCTAssertEqual(sample([0.5, 0.2, 2.5, 2.4], p), 2)
        }
    }

    func testMinPDropsUnlikelyTokens() {
        // p(0) ≈ 0.998, p(1) ≈ e^-7 / ... < 0.05·p(0): only token 0 can be drawn.
        var p = SamplingParameters()
        p.topK = 0; p.topP = 1; p.minP = 0.05; p.temperature = 1
        for seed in 0..<200 as Range<UInt64> {
            p.seed = seed
            XCTAssertEqual(sample([7, 0, 0.5], p), 0)
        }
    }

    func testSameSeedSameDrawsAndDistributionFollowsSoftmax() {
        var p = SamplingParameters()
        p.topK = 0; p.topP = 1; p.minP = 0; p.temperature = 1; p.seed = 42
        let logits: [Float] = [0, log(2), log(3), log(4)] // probabilities 0.1 0.2 0.3 0.4
        var a = Sampler(p), b = Sampler(p)
        var counts = [0, 0, 0, 0]
        logits.withUnsafeBufferPointer { buf in
            for _ in 0..<20000 {
                let x = a.sample(buf), y = b.sample(buf)
                XCTAssertEqual(x, y)
                counts[Int(x)] += 1
            }
        }
        for (i, c) in counts.enumerated() {
            XCTAssertEqual(Double(c) / 20000, Double(i + 1) / 10, accuracy: 0.015, "token \(i)")
        }
    }

    func testRepeatPenaltyDemotesRecentTokens() {
        var p = SamplingParameters.greedy
        p.repeatPenalty = 2
        XCTAssertEqual(sample([3, 2, -1], p, recent: [0]), 1)   // 3/2 = 1.5 < 2
        XCTAssertEqual(sample([3, 2, -1], p, recent: [2]), 0)
        p.repeatWindow = 1
        XCTAssertEqual(sample([3, 2, -1], p, recent: [0, 2]), 0) // token 0 fell out of the window
    }

    func testTopPKeepsSmallestSetReachingP() {
        var p = SamplingParameters()
        p.topK = 0; p.minP = 0; p.temperature = 1; p.topP = 0.5
        let logits: [Float] = [log(0.45), log(0.35), log(0.2)] // 0.45 < 0.5 → keep tokens 0 and 1
        var seen = Set<Int32>()
        for seed in 0..<300 as Range<UInt64> { p.seed = seed; seen.insert(sample(logits, p)) }
        XCTAssertEqual(seen, [0, 1])
    }
}

final class PerplexityMathTests: XCTestCase {
    func testNegativeLogLikelihoodMatchesFloat64() {
        var rng = SplitMix64(seed: 4)
        let logits = (0..<5000).map { _ in rng.uniform(-20, 20) }
        let m = logits.map(Double.init).max()!
        let lse = m + log(logits.map { exp(Double($0) - m) }.reduce(0, +))
        logits.withUnsafeBufferPointer { buf in
            for target in [0, 17, 4999] as [Int32] {
                XCTAssertEqual(PerplexityAccumulator.negativeLogLikelihood(buf, target), lse - Double(logits[Int(target)]), accuracy: 1e-5)
            }
        }
    }

    func testPerplexityAndStandardError() {
        // Uniform logits over V tokens: every NLL is log V, so ppl = V and the spread is 0.
        var acc = PerplexityAccumulator()
        let logits = [Float](repeating: 1.5, count: 64)
        logits.withUnsafeBufferPointer { for t in 0..<10 { acc.add(logits: $0, target: Int32(t)) } }
        XCTAssertEqual(acc.perplexity, 64, accuracy: 1e-6)
        XCTAssertEqual(acc.standardError, 0, accuracy: 1e-4) // cancellation in E[x²]−E[x]² leaves ~1e-6
        XCTAssertEqual(acc.count, 10)
    }
}
