import Engine
import Foundation

/// How text is cut into windows and which tokens are scored.
public enum PerplexityConvention: String, CaseIterable, Sendable {
    /// Non-overlapping windows of ctx tokens, every predicted token scored (GPTQ / the paper).
    case gptq
    /// llama.cpp's llama-perplexity: windows of ctx tokens, BOS replacing the first token when
    /// the model adds BOS, only the second half of each window scored.
    case llamacpp
}

/// Running perplexity: negative log-likelihoods accumulated in Double.
public struct PerplexityAccumulator: Sendable {
    public private(set) var count = 0
    private var nll = 0.0
    private var nll2 = 0.0

    public init() {}

    /// Adds the score of `target` under one row of logits: −log softmax(logits)[target].
    public mutating func add(logits: UnsafeBufferPointer<Float>, target: Int32) {
        let x = PerplexityAccumulator.negativeLogLikelihood(logits, target)
        nll += x
        nll2 += x * x
        count += 1
    }

    /// −log p(target) with a float max-shift and a Double sum of exponentials (as llama.cpp).
    public static func negativeLogLikelihood(_ logits: UnsafeBufferPointer<Float>, _ target: Int32) -> Double {
        var maxLogit = -Float.infinity
        for l in logits { maxLogit = max(maxLogit, l) }
        var sum = 0.0
        for l in logits { sum += Double(expf(l - maxLogit)) }
        return -(Double(logits[Int(target)] - maxLogit) - log(sum))
    }

    public var perplexity: Double { count > 0 ? exp(nll / Double(count)) : .nan }

    /// Standard error of the perplexity estimate (llama.cpp's formula).
    public var standardError: Double {
        guard count > 1 else { return .nan }
        let mean = nll / Double(count), mean2 = nll2 / Double(count)
        let variance = mean2 - mean * mean
        return variance > 0 ? (variance / Double(count - 1)).squareRoot() * perplexity : 0
    }
}

/// Perplexity of a token stream under a model.
public struct PerplexityRun {
    public let session: InferenceSession
    public let convention: PerplexityConvention
    public let contextLength: Int
    public let bos: Int32?

    public init(session: InferenceSession, convention: PerplexityConvention, contextLength: Int, bos: Int32?) {
        self.session = session
        self.convention = convention
        self.contextLength = contextLength
        self.bos = bos
    }

    /// Number of whole windows in `tokenCount` tokens.
    public func chunkCount(_ tokenCount: Int) -> Int { tokenCount / contextLength }

    /// Scores windows 0..<chunks of `tokens`, calling `progress` after each window.
    public func run(tokens: [Int32], chunks: Int, progress: (Int, PerplexityAccumulator) -> Void) throws -> PerplexityAccumulator {
        var acc = PerplexityAccumulator()
        let n = contextLength
        for chunk in 0..<chunks {
            var window = Array(tokens[chunk * n..<(chunk + 1) * n])
            session.reset()
            switch convention {
            case .gptq:
                // Row i predicts window[i+1]; every token after the first is scored.
                try session.forward(window, logitRows: n) { i, logits in
                    if i + 1 < n { acc.add(logits: logits, target: window[i + 1]) }
                }
            case .llamacpp:
                if let bos { window[0] = bos }
                let first = n / 2
                try session.forward(window, logitRows: n - first) { i, logits in
                    if i + 1 < n { acc.add(logits: logits, target: tokens[chunk * n + i + 1]) }
                }
            }
            progress(chunk, acc)
        }
        return acc
    }
}
