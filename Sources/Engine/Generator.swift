import Foundation

/// Why a generation ended.
public enum StopReason: String, Sendable {
    case endOfGeneration = "end of generation token"
    case maxTokens = "token limit"
    case contextFull = "context full"
    case cancelled = "stopped"
}

/// Timings and counts of one prompt + reply, as the speed line shows them.
public struct GenerationStats: Sendable {
    public var promptTokens = 0
    public var promptSeconds = 0.0
    public var generatedTokens = 0
    public var generationSeconds = 0.0
    public var stopReason = StopReason.maxTokens
    /// False when the last emitted token could not be fed to the cache (context full).
    public var lastTokenInCache = true

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    public var generationTokensPerSecond: Double { generationSeconds > 0 ? Double(generatedTokens) / generationSeconds : 0 }

    public var speedLine: String {
        String(format: "[ Prompt: %d tok, %.1f t/s | Generation: %d tok, %.1f t/s | %@ ]",
               promptTokens, promptTokensPerSecond, generatedTokens, generationTokensPerSecond, stopReason.rawValue)
    }
}

/// Feeds a prompt into a session and samples a reply token by token.
public struct Generator {
    public let session: InferenceSession
    public var sampler: Sampler
    /// Tokens that end the reply (not fed back into the cache).
    public var stopTokens: Set<Int32>
    /// Every token in the cache, for the repeat penalty.
    public private(set) var history: [Int32] = []

    public init(session: InferenceSession, sampling: SamplingParameters, stopTokens: Set<Int32>) {
        self.session = session
        sampler = Sampler(sampling)
        self.stopTokens = stopTokens
    }

    public mutating func reset() {
        session.reset()
        history = []
    }

    /// Prefills `prompt` (appended to what the cache holds) and generates up to `maxTokens`
    /// tokens (negative = until the context is full). `onToken` returns false to stop early.
    public mutating func generate(prompt: [Int32], maxTokens: Int, onToken: (Int32) -> Bool) throws -> GenerationStats {
        var stats = GenerationStats()
        stats.promptTokens = prompt.count
        guard !prompt.isEmpty else { stats.stopReason = .endOfGeneration; return stats }
        let clock = ContinuousClock()
        var start = clock.now
        var next: Int32 = 0
        let window = sampler.parameters.repeatWindow
        try session.forward(prompt, logitRows: 1) { _, logits in
            history += prompt
            next = sampler.sample(logits, recent: history.suffix(window))
        }
        stats.promptSeconds = (clock.now - start).seconds
        if maxTokens == 0 { return stats }
        start = clock.now
        while true {
            if stopTokens.contains(next) { stats.stopReason = .endOfGeneration; break }
            stats.generatedTokens += 1
            guard onToken(next) else { stats.stopReason = .cancelled; break }
            if maxTokens >= 0 && stats.generatedTokens >= maxTokens { stats.stopReason = .maxTokens; break }
            guard session.position < session.capacity else { stats.stopReason = .contextFull; break }
            let token = next
            try session.forward([token], logitRows: 1) { _, logits in
                history.append(token)
                next = sampler.sample(logits, recent: history.suffix(window))
            }
        }
        // A reply cut short leaves its last emitted token outside the cache: feed it, so the
        // cache holds exactly the prompt and every emitted token.
        if stats.stopReason != .endOfGeneration && stats.generatedTokens > 0 {
            if session.position < session.capacity {
                try session.forward([next], logitRows: 0) { _, _ in }
                history.append(next)
            } else {
                stats.lastTokenInCache = false
            }
        }
        stats.generationSeconds = (clock.now - start).seconds
        return stats
    }
}

extension Duration {
    /// The duration in seconds as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
