import Engine
import Foundation

/// A request in tokens: the model reads `context` then `continuation`, and the continuation's
/// tokens are scored.
public struct EncodedRequest: Sendable, Equatable {
    public var context: [Int32]
    public var continuation: [Int32]

    public init(context: [Int32], continuation: [Int32]) {
        self.context = context
        self.continuation = continuation
    }
}

/// Tokenization of (context, continuation) pairs as lm-eval's causal models do it
/// (`TemplateLM.loglikelihood` and `_encode_pair` in lm_eval/api/model.py).
public enum LMEvalEncoding {
    /// `_encode_pair`: trailing whitespace of the context moves to the front of the
    /// continuation; whole = encode(context + continuation), context = encode(context), and
    /// the continuation is whole[context.count...]. When the last context token merges with
    /// the continuation, the context's own tokens are still what the model reads and the
    /// continuation is whatever of `whole` lies beyond the context's token count.
    public static func encodePair(context: String, continuation: String, encode: (String) -> [Int32]) -> EncodedRequest {
        var scalars = Array(context.unicodeScalars)
        var moved: [Unicode.Scalar] = []
        while let last = scalars.last, ZeroShotTask.isPythonSpace(last) { moved.insert(scalars.removeLast(), at: 0) }
        let ctx = String(String.UnicodeScalarView(scalars))
        let cont = String(String.UnicodeScalarView(moved)) + continuation
        let whole = encode(ctx + cont)
        let contextTokens = encode(ctx)
        return EncodedRequest(context: contextTokens, continuation: Array(whole.dropFirst(contextTokens.count)))
    }

    /// The whole rule of `TemplateLM.loglikelihood`: an empty context becomes the prefix token
    /// (BOS, else EOS) before the continuation encoded without special tokens — or, when the
    /// continuation already starts with that token, its first token; any other context goes
    /// through `encodePair`. `encode` adds BOS when the tokenizer does by default.
    public static func encode(context: String, continuation: String, tokenizer: Tokenizer) -> EncodedRequest {
        if context.isEmpty {
            let cont = tokenizer.encode(continuation, addBOS: false, parseSpecial: true)
            guard let prefix = tokenizer.bosID ?? tokenizer.eosID else { return EncodedRequest(context: [], continuation: cont) }
            if cont.first == prefix { return EncodedRequest(context: [prefix], continuation: Array(cont.dropFirst())) }
            return EncodedRequest(context: [prefix], continuation: cont)
        }
        return encodePair(context: context, continuation: continuation) { tokenizer.encode($0, addBOS: nil, parseSpecial: true) }
    }
}

/// The score of one continuation.
public struct ContinuationScore: Sendable, Equatable {
    /// Σ log p(continuation token | everything before it).
    public var logLikelihood: Double
    /// Whether every continuation token was the argmax of its row (lm-eval's `is_greedy`).
    public var isGreedy: Bool
    public var tokenCount: Int
}

/// Log-likelihoods of continuations under a model, tokenizer-free (token ids in, sums out).
/// An item is the requests of one multiple-choice question. Items are packed into batches of
/// up to `maxBatch` tokens (`InferenceSession.forwardPacked`): per item, the context its
/// requests share is one sequence, evaluated once, and each continuation a sequence that
/// continues it and sees neither its siblings nor other items. An item too long for one batch
/// is scored on its own, sequentially.
public final class LoglikelihoodScorer {
    public let session: InferenceSession
    /// Tokens pushed through the model so far.
    public private(set) var tokensProcessed = 0

    public init(session: InferenceSession) { self.session = session }

    /// Batches built so far by `score(items:)`.
    public private(set) var packedBatches = 0

    /// Scores one item's requests (any contexts; a common token prefix is evaluated once).
    public func score(_ requests: [EncodedRequest]) throws -> [ContinuationScore] {
        try score(items: [requests])[0]
    }

    /// Scores many items, packing consecutive items into shared batches.
    public func score(items: [[EncodedRequest]]) throws -> [[ContinuationScore]] {
        var results = items.map { $0.map { ContinuationScore(logLikelihood: 0, isGreedy: true, tokenCount: $0.continuation.count) } }
        let budget = min(session.maxBatch, session.capacity)
        var batch: [PackedSequence] = [], targets: [[[Target]]] = [], size = 0
        func flush() throws {
            guard !batch.isEmpty else { return }
            session.reset()
            try session.forwardPacked(batch) { sequence, index, row in
                let stats = RowStats(row)
                let scored = index - (batch[sequence].tokens.count - batch[sequence].logitRows)
                for target in targets[sequence][scored] { results[target.item][target.request].add(stats, target: target.token) }
            }
            tokensProcessed += size
            packedBatches += 1
            batch = []; targets = []; size = 0
        }
        for (i, requests) in items.enumerated() {
            for r in requests where !r.continuation.isEmpty && r.context.isEmpty { throw ScorerError.emptyContext }
            let plan = Self.plan(item: i, requests)
            let tokens = plan.reduce(0) { $0 + $1.sequence.tokens.count }
            // lm-eval keeps the last max_length + 1 tokens of a request longer than the window;
            // such items, and items longer than a batch, are scored on their own.
            if tokens > budget || requests.contains(where: { $0.context.count + $0.continuation.count - 1 > session.capacity }) {
                results[i] = try scoreSequentially(requests)
                continue
            }
            if size + tokens > budget { try flush() }
            let base = batch.count
            for (sequence, sequenceTargets) in plan {
                var s = sequence
                s.parent = s.parent.map { $0 + base }
                batch.append(s)
                targets.append(sequenceTargets)
            }
            size += tokens
        }
        try flush()
        return results
    }

    /// The scored token of one logits row: results[item][request] gains log p(token).
    private struct Target { var item: Int; var request: Int; var token: Int32 }

    /// One item's sequences (parents relative to the item) and, per sequence, the targets of
    /// each of its logits rows in order. With one shared context, the context is the parent and its
    /// last row scores every continuation's first token; otherwise the common prefix is the
    /// parent and each request's own context tail and continuation follow it.
    private static func plan(item: Int, _ requests: [EncodedRequest]) -> [(sequence: PackedSequence, targets: [[Target]])] {
        let live = requests.indices.filter { !requests[$0].continuation.isEmpty }
        guard let first = live.first else { return [] }
        let contexts = live.map { requests[$0].context }
        var out: [(PackedSequence, [[Target]])] = []
        if contexts.allSatisfy({ $0 == contexts[0] }) {
            out.append((PackedSequence(tokens: contexts[0], logitRows: 1),
                        [live.map { Target(item: item, request: $0, token: requests[$0].continuation[0]) }]))
            for j in live where requests[j].continuation.count > 1 {
                let cont = requests[j].continuation
                out.append((PackedSequence(tokens: Array(cont.dropLast()), parent: 0, logitRows: cont.count - 1),
                            cont.dropFirst().map { [Target(item: item, request: j, token: $0)] }))
            }
            return out
        }
        // At least one context token per request stays out of the prefix: it makes the row
        // of the continuation's first token.
        var shared = contexts.map(\.count).min()! - 1
        for c in contexts.dropFirst() { shared = min(shared, zip(c, requests[first].context).prefix(while: { $0 == $1 }).count) }
        shared = max(shared, 0)
        if shared > 0 { out.append((PackedSequence(tokens: Array(requests[first].context.prefix(shared))), [])) }
        for j in live {
            let r = requests[j]
            out.append((PackedSequence(tokens: Array(r.context[shared...]) + r.continuation.dropLast(), parent: shared > 0 ? 0 : nil,
                                       logitRows: r.continuation.count),
                        r.continuation.map { [Target(item: item, request: j, token: $0)] }))
        }
        return out
    }

    /// One item without packing (too long for a batch, or for the context window).
    private func scoreSequentially(_ requests: [EncodedRequest]) throws -> [ContinuationScore] {
        guard !requests.isEmpty else { return [] }
        let cap = session.capacity
        // A request longer than the context window: lm-eval keeps the last max_length + 1
        // tokens of context + continuation. Score such items one request at a time.
        if requests.contains(where: { $0.context.count + $0.continuation.count - 1 > cap }) {
            return try requests.map { try scoreTruncated($0) }
        }
        var results = requests.map { ContinuationScore(logLikelihood: 0, isGreedy: true, tokenCount: $0.continuation.count) }
        // The packed plan, run one sequence at a time: each starts where its parent (only ever
        // the first sequence) ends, after a rewind; `forward` splits what exceeds a batch.
        let plan = Self.plan(item: 0, requests)
        for (sequence, targets) in plan {
            session.rewind(to: sequence.parent == nil ? 0 : plan[0].sequence.tokens.count)
            let firstScored = sequence.tokens.count - sequence.logitRows
            try run(sequence.tokens, logitRows: sequence.logitRows) { index, row in
                let stats = RowStats(row)
                for target in targets[index - firstScored] { results[target.request].add(stats, target: target.token) }
            }
        }
        return results
    }

    /// lm-eval's truncation: input = (context + continuation)[-(capacity + 1):][:-1].
    private func scoreTruncated(_ r: EncodedRequest) throws -> ContinuationScore {
        var result = ContinuationScore(logLikelihood: 0, isGreedy: true, tokenCount: r.continuation.count)
        guard !r.continuation.isEmpty else { return result }
        guard r.continuation.count <= session.capacity else {
            throw ScorerError.continuationTooLong(tokens: r.continuation.count, capacity: session.capacity)
        }
        let input = Array((r.context + r.continuation).suffix(session.capacity + 1).dropLast())
        let firstRow = input.count - r.continuation.count
        session.reset()
        try run(input, logitRows: r.continuation.count) { index, row in
            result.add(RowStats(row), target: r.continuation[index - firstRow])
        }
        return result
    }

    private func run(_ tokens: [Int32], logitRows: Int, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        guard !tokens.isEmpty else { return }
        try session.forward(tokens, logitRows: logitRows, body)
        tokensProcessed += tokens.count
    }
}

public enum ScorerError: Error, CustomStringConvertible, Equatable {
    case emptyContext
    case continuationTooLong(tokens: Int, capacity: Int)

    public var description: String {
        switch self {
        case .emptyContext: return "a continuation needs at least one context token (use the BOS/EOS prefix for an empty context)"
        case let .continuationTooLong(tokens, capacity):
            return "a continuation of \(tokens) tokens does not fit the context of \(capacity) (use a larger --ctx)"
        }
    }
}

/// Log-softmax of one logits row: one max and one Double sum of exponentials, then any
/// number of targets (the same arithmetic as PerplexityAccumulator.negativeLogLikelihood).
struct RowStats {
    let row: UnsafeBufferPointer<Float>
    let maxLogit: Float
    let argmax: Int
    let logSum: Double

    init(_ row: UnsafeBufferPointer<Float>) {
        self.row = row
        var m = -Float.infinity, a = 0
        for (i, l) in row.enumerated() where l > m { m = l; a = i }
        var sum = 0.0
        for l in row { sum += Double(expf(l - m)) }
        maxLogit = m
        argmax = a
        logSum = log(sum)
    }

    func logProbability(_ target: Int32) -> Double { Double(row[Int(target)] - maxLogit) - logSum }
}

extension ContinuationScore {
    mutating func add(_ stats: RowStats, target: Int32) {
        logLikelihood += stats.logProbability(target)
        if stats.argmax != Int(target) { isGreedy = false }
    }
}
