import Foundation

/// Sampling settings. Defaults and order follow llama.cpp's llama-cli:
/// repeat penalty → top-k → top-p → min-p → temperature → draw. Temperature 0 is greedy.
public struct SamplingParameters: Sendable, Equatable {
    public var temperature: Float = 0.8
    public var topK: Int = 40          // 0 = off
    public var topP: Float = 0.95      // 1 = off
    public var minP: Float = 0.05      // 0 = off
    public var repeatPenalty: Float = 1.0  // 1 = off
    public var repeatWindow: Int = 64
    public var seed: UInt64? = nil     // nil = random

    public init() {}

    public static var greedy: SamplingParameters { var p = SamplingParameters(); p.temperature = 0; return p }
}

/// Picks the next token from a row of logits.
public struct Sampler {
    public let parameters: SamplingParameters
    private var rng: SplitMix64

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed ?? UInt64.random(in: 0...UInt64.max))
    }

    /// The next token given the logits and the recent tokens (for the repeat penalty).
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, recent: ArraySlice<Int32> = []) -> Int32 {
        let p = parameters
        var penalised: [Int32: Float] = [:]
        if p.repeatPenalty != 1, p.repeatWindow > 0 {
            for t in recent.suffix(p.repeatWindow) where penalised[t] == nil {
                let l = logits[Int(t)]
                penalised[t] = l > 0 ? l / p.repeatPenalty : l * p.repeatPenalty
            }
        }
        @inline(__always) func logit(_ i: Int) -> Float { penalised.isEmpty ? logits[i] : (penalised[Int32(i)] ?? logits[i]) }

        if p.temperature <= 0 { // greedy: first index of the maximum (as llama.cpp)
            var best = 0
            for i in 1..<logits.count where logit(i) > logit(best) { best = i }
            return Int32(best)
        }
        // Candidates sorted by logit, cut by top-k.
        var candidates: [(id: Int32, logit: Float)]
        if p.topK > 0 && p.topK < logits.count {
            candidates = Sampler.largest(p.topK, logits.count, logit)
        } else {
            candidates = (0..<logits.count).map { (Int32($0), logit($0)) }.sorted { $0.logit > $1.logit }
        }
        // top-p over the softmax of the remaining logits (before temperature, as llama.cpp).
        if p.topP < 1 {
            let probs = Sampler.softmax(candidates.map(\.logit))
            var cumulative: Float = 0, keep = candidates.count
            for (i, q) in probs.enumerated() {
                cumulative += q
                if cumulative >= p.topP { keep = i + 1; break }
            }
            candidates.removeLast(candidates.count - keep)
        }
        // min-p: drop tokens whose probability is below minP × the top probability.
        if p.minP > 0, let top = candidates.first?.logit {
            let threshold = top + logf(p.minP)
            let keep = max(1, candidates.firstIndex { $0.logit < threshold } ?? candidates.count)
            candidates.removeLast(candidates.count - keep)
        }
        // Temperature, then draw.
        let probs = Sampler.softmax(candidates.map { $0.logit / p.temperature })
        let r = Float.random(in: 0..<1, using: &rng)
        var cumulative: Float = 0
        for (i, q) in probs.enumerated() {
            cumulative += q
            if r < cumulative { return candidates[i].id }
        }
        return candidates.last!.id
    }

    static func softmax(_ x: [Float]) -> [Float] {
        guard let m = x.max() else { return [] }
        let e = x.map { expf($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    /// The k largest (id, logit) pairs in descending order, by a partial selection.
    static func largest(_ k: Int, _ n: Int, _ logit: (Int) -> Float) -> [(id: Int32, logit: Float)] {
        var heap: [(id: Int32, logit: Float)] = [] // kept sorted descending; k is small
        heap.reserveCapacity(k + 1)
        for i in 0..<n {
            let l = logit(i)
            if heap.count == k, l <= heap[k - 1].logit { continue }
            var lo = 0, hi = heap.count
            while lo < hi { let mid = (lo + hi) / 2; if heap[mid].logit >= l { lo = mid + 1 } else { hi = mid } }
            heap.insert((Int32(i), l), at: lo)
            if heap.count > k { heap.removeLast() }
        }
        return heap
    }
}
