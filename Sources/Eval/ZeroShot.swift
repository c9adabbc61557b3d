import Engine
import Foundation

/// The outcome of one item, with everything needed to audit it.
public struct ItemResult: Sendable {
    public var task: ZeroShotTask
    /// Position in the task's data file (0-based).
    public var index: Int
    public var item: TaskItem
    public var encoded: [EncodedRequest]
    public var scores: [ContinuationScore]
    /// argmax of the log-likelihood sums (`acc`).
    public var prediction: Int
    /// argmax of the sums divided by the choice's length in characters (`acc_norm`).
    public var normalizedPrediction: Int
    /// argmax of the sums divided by the choice's length in UTF-8 bytes (`acc_bytes`).
    public var bytePrediction: Int

    public var acc: Double { prediction == item.gold ? 1 : 0 }
    public var accNorm: Double { normalizedPrediction == item.gold ? 1 : 0 }
    public var accBytes: Double { bytePrediction == item.gold ? 1 : 0 }
}

/// lm-eval's multiple-choice metrics (`ConfigurableTask.process_results`).
public enum ZeroShotMetrics {
    /// numpy.argmax: the first index of the largest value.
    public static func argmax(_ values: [Double]) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }

    /// `acc`, `acc_norm` and `acc_bytes` predictions. lm-eval's `acc_norm` divides by
    /// `len(choice)`, a count of Unicode code points (= bytes for ASCII text), and its
    /// `acc_bytes` by `len(choice.encode("utf-8"))`; the choice is `doc_to_choice`'s
    /// string, without the leading delimiter.
    public static func predictions(logLikelihoods lls: [Double], choices: [String]) -> (acc: Int, norm: Int, bytes: Int) {
        precondition(lls.count == choices.count)
        let norm = zip(lls, choices).map { $0 / Double($1.unicodeScalars.count) }
        let bytes = zip(lls, choices).map { $0 / Double($1.utf8.count) }
        return (argmax(lls), argmax(norm), argmax(bytes))
    }

    /// Mean and lm-eval's `mean_stderr`: sample standard deviation (n − 1) / √n; for 0/1
    /// scores √(p(1 − p)/(n − 1)).
    public static func meanAndStandardError(_ values: [Double]) -> (mean: Double, stderr: Double) {
        let n = Double(values.count)
        guard values.count > 0 else { return (.nan, .nan) }
        let mean = values.reduce(0, +) / n
        guard values.count > 1 else { return (mean, .nan) }
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
        return (mean, (variance / n).squareRoot())
    }
}

/// Aggregated results of one task.
public struct TaskMetrics: Sendable {
    public var task: ZeroShotTask
    public var count: Int
    public var acc: Double
    public var accStderr: Double
    /// nil for tasks whose lm-eval config has no `acc_norm` (WinoGrande).
    public var accNorm: Double?
    public var accNormStderr: Double?
    public var accBytes: Double?
    public var accBytesStderr: Double?
    public var tokens: Int
    public var seconds: Double

    public init(task: ZeroShotTask, results: [ItemResult], tokens: Int, seconds: Double) {
        self.task = task
        count = results.count
        (acc, accStderr) = ZeroShotMetrics.meanAndStandardError(results.map(\.acc))
        if task.hasAccNorm {
            let norm = ZeroShotMetrics.meanAndStandardError(results.map(\.accNorm))
            let bytes = ZeroShotMetrics.meanAndStandardError(results.map(\.accBytes))
            (accNorm, accNormStderr, accBytes, accBytesStderr) = (norm.mean, norm.stderr, bytes.mean, bytes.stderr)
        }
        self.tokens = tokens
        self.seconds = seconds
    }

    /// The metric the 5-task average uses: acc_norm where defined, else acc.
    public var headline: Double { accNorm ?? acc }
    public var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }
}

/// Progress of a running task.
public struct ZeroShotProgress {
    public var task: ZeroShotTask
    public var done: Int
    public var total: Int
    public var acc: Double
    public var accNorm: Double?
    public var tokens: Int
    public var seconds: Double
}

/// Runs multiple-choice items through a scorer, lm-eval style, zero-shot.
public final class ZeroShotEvaluator {
    public let scorer: LoglikelihoodScorer
    /// Tokenizes one (context, continuation) pair.
    public let encode: (ChoiceRequest) -> EncodedRequest

    public init(scorer: LoglikelihoodScorer, encode: @escaping (ChoiceRequest) -> EncodedRequest) {
        self.scorer = scorer
        self.encode = encode
    }

    /// With lm-eval's tokenization through `tokenizer`.
    public convenience init(scorer: LoglikelihoodScorer, tokenizer: Tokenizer) {
        self.init(scorer: scorer) { LMEvalEncoding.encode(context: $0.context, continuation: $0.continuation, tokenizer: tokenizer) }
    }

    /// Items scored per call to the scorer (packed into batches there).
    static let itemsPerChunk = 32

    /// Scores one item.
    public func evaluate(_ item: TaskItem, task: ZeroShotTask, index: Int) throws -> ItemResult {
        let encoded = item.requests.map(encode)
        return result(item, task: task, index: index, encoded: encoded, scores: try scorer.score(encoded))
    }

    private func result(_ item: TaskItem, task: ZeroShotTask, index: Int, encoded: [EncodedRequest],
                        scores: [ContinuationScore]) -> ItemResult {
        let p = ZeroShotMetrics.predictions(logLikelihoods: scores.map(\.logLikelihood), choices: item.choices)
        return ItemResult(task: task, index: index, item: item, encoded: encoded, scores: scores,
                          prediction: p.acc, normalizedPrediction: p.norm, bytePrediction: p.bytes)
    }

    /// Scores `items` (index, item) of `task`, calling `each` after every item.
    public func evaluate(task: ZeroShotTask, items: [(index: Int, item: TaskItem)],
                         each: (ItemResult, ZeroShotProgress) throws -> Void = { _, _ in }) throws -> (TaskMetrics, [ItemResult]) {
        let clock = ContinuousClock(), begin = clock.now
        let tokens0 = scorer.tokensProcessed
        var results: [ItemResult] = []
        var correct = 0.0, correctNorm = 0.0
        var start = 0
        while start < items.count {
            // A chunk of items is scored in packed batches; `each` still runs per item.
            let chunk = items[start..<min(items.count, start + Self.itemsPerChunk)]
            start += chunk.count
            let encoded = chunk.map { $0.item.requests.map(encode) }
            let scores = try scorer.score(items: encoded)
            for ((index, item), (e, s)) in zip(chunk, zip(encoded, scores)) {
                let r = result(item, task: task, index: index, encoded: e, scores: s)
                results.append(r)
                correct += r.acc
                correctNorm += r.accNorm
                let n = Double(results.count)
                try each(r, ZeroShotProgress(task: task, done: results.count, total: items.count, acc: correct / n,
                                             accNorm: task.hasAccNorm ? correctNorm / n : nil,
                                             tokens: scorer.tokensProcessed - tokens0, seconds: (clock.now - begin).seconds))
            }
        }
        let metrics = TaskMetrics(task: task, results: results, tokens: scorer.tokensProcessed - tokens0, seconds: (clock.now - begin).seconds)
        return (metrics, results)
    }

    /// Which items of `count` to run: the first `limit` (lm-eval's --limit), or with a seed a
    /// seeded random sample of `limit`, kept in file order.
    public static func selection(count: Int, limit: Int?, seed: UInt64?) -> [Int] {
        guard let limit, limit < count else { return Array(0..<count) }
        guard let seed else { return Array(0..<limit) }
        var rng = SplitMix64(seed: seed)
        var all = Array(0..<count)
        all.shuffle(using: &rng)
        return all.prefix(limit).sorted()
    }
}

extension ItemResult {
    /// One jsonl line for --log-samples.
    public var jsonLine: String {
        func q(_ s: String) -> String { JSONText.quoted(s) }
        func num(_ x: Double) -> String { x.isFinite ? String(format: "%.6f", x) : "null" }
        var choices: [String] = []
        for i in item.requests.indices {
            let r = item.requests[i], e = encoded[i], s = scores[i]
            choices.append("{\"context\":\(q(r.context)),\"continuation\":\(q(r.continuation)),"
                + "\"context_tokens\":\(e.context.count),\"continuation_tokens\":\(e.continuation.map(String.init).joined(separator: ",").wrappedInBrackets),"
                + "\"loglikelihood\":\(num(s.logLikelihood)),\"is_greedy\":\(s.isGreedy),"
                + "\"length_chars\":\(item.choices[i].unicodeScalars.count),\"length_bytes\":\(item.choices[i].utf8.count)}")
        }
        return "{\"task\":\(q(task.rawValue)),\"index\":\(index),\"id\":\(q(item.id)),\"gold\":\(item.gold),"
            + "\"pred\":\(prediction),\"pred_norm\":\(normalizedPrediction),\"pred_bytes\":\(bytePrediction),"
            + "\"acc\":\(Int(acc)),\"acc_norm\":\(task.hasAccNorm ? String(Int(accNorm)) : "null"),"
            + "\"choices\":[\(choices.joined(separator: ","))]}"
    }
}

private extension String {
    var wrappedInBrackets: String { "[" + self + "]" }
}

/// The 5-task (or n-task) summary and its JSON form for --json.
public struct ZeroShotReport {
    public var model: String
    public var tasks: [TaskMetrics]
    public var limit: Int?
    public var seed: UInt64?
    public var threads: Int

    public init(model: String, tasks: [TaskMetrics], limit: Int?, seed: UInt64?, threads: Int) {
        self.model = model
        self.tasks = tasks
        self.limit = limit
        self.seed = seed
        self.threads = threads
    }

    /// Mean over tasks of acc_norm (acc where a task has no acc_norm: WinoGrande).
    public var average: Double { tasks.isEmpty ? .nan : tasks.map(\.headline).reduce(0, +) / Double(tasks.count) }
    /// Mean over tasks of plain acc.
    public var averageAcc: Double { tasks.isEmpty ? .nan : tasks.map(\.acc).reduce(0, +) / Double(tasks.count) }
    public var tokens: Int { tasks.reduce(0) { $0 + $1.tokens } }
    public var seconds: Double { tasks.reduce(0) { $0 + $1.seconds } }

    public var json: String {
        func num(_ x: Double?) -> String { x.map { $0.isFinite ? String(format: "%.6f", $0) : "null" } ?? "null" }
        let entries = tasks.map { t in
            "    \(JSONText.quoted(t.task.rawValue)): {\"n\": \(t.count), \"acc\": \(num(t.acc)), \"acc_stderr\": \(num(t.accStderr)), "
                + "\"acc_norm\": \(num(t.accNorm)), \"acc_norm_stderr\": \(num(t.accNormStderr)), "
                + "\"acc_bytes\": \(num(t.accBytes)), \"acc_bytes_stderr\": \(num(t.accBytesStderr)), "
                + "\"headline_metric\": \(JSONText.quoted(t.task.headlineMetric)), "
                + "\"tokens\": \(t.tokens), \"seconds\": \(num(t.seconds)), \"tokens_per_second\": \(num(t.tokensPerSecond))}"
        }
        return """
        {
          "model": \(JSONText.quoted(model)),
          "convention": "lm-eval 0.4 multiple_choice, zero-shot, target delimiter \\" \\"",
          "limit": \(limit.map(String.init) ?? "null"),
          "seed": \(seed.map { String($0) } ?? "null"),
          "threads": \(threads),
          "results": {
        \(entries.joined(separator: ",\n"))
          },
          "average": {"metric": "acc_norm (acc where the task has none: winogrande)", "value": \(num(average)), "acc": \(num(averageAcc)), "tasks": \(tasks.count)},
          "tokens": \(tokens),
          "seconds": \(num(seconds)),
          "tokens_per_second": \(num(seconds > 0 ? Double(tokens) / seconds : nil))
        }

        """
    }
}
