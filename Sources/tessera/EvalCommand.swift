import Eval
import ArgumentParser
import CLISupport
import Foundation
import Engine

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Zero-shot multiple-choice accuracy, scored as lm-eval 0.4 does.",
        discussion: """
        Each choice is scored by the sum of its tokens' log-likelihoods given the context; acc = argmax of \
        the sum, acc_norm = argmax of the sum divided by the choice's length (lm-eval: characters, the same \
        as bytes for ASCII; acc_bytes, by UTF-8 bytes, is in --json). WinoGrande uses partial scoring and \
        reports acc only. The last line of stdout is the average over the tasks of acc_norm (acc for winogrande).
        """)

    @Argument(help: "GGUF file or Hugging Face folder.")
    var model: String

    @Option(help: "Comma-separated tasks: piqa, arc_easy, arc_challenge, hellaswag, winogrande.")
    var tasks: String = ZeroShotTask.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Directory holding the task files (piqa/validation.jsonl, arc/…, hellaswag/…, winogrande/…); the default is relative to the repository root.")
    var data: String = "data"

    @Option(name: .customLong("file"), help: ArgumentHelp("Use your own jsonl for a task, in the same schema (repeatable).", valueName: "task=path"))
    var files: [String] = []

    @Option(help: "Score only N items per task (the first N, or a seeded sample with --seed).")
    var limit: Int?

    @Option(help: "With --limit: take a random sample of N items chosen with this seed instead of the first N.")
    var seed: UInt64?

    @Option(help: "Context window in tokens (longer requests are left-truncated as lm-eval does).")
    var ctx: Int = 2048

    @Option(help: "Tokens pushed through the model at once.")
    var batch: Int = 512

    @Option(help: "Write the results as JSON to this file (atomically).")
    var json: String?

    @Option(name: .customLong("log-samples"), help: ArgumentHelp("Write per-item scores as jsonl to this file.", valueName: "path"))
    var logSamples: String?

    @OptionGroup var runtime: RuntimeOptions

    func selectedTasks() throws -> [ZeroShotTask] {
        var out: [ZeroShotTask] = []
        for name in tasks.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
            guard let task = ZeroShotTask(rawValue: name) else { throw ValidationError(TaskError.unknownTask(name).description) }
            if !out.contains(task) { out.append(task) }
        }
        guard !out.isEmpty else { throw ValidationError("--tasks is empty") }
        return out
    }

    func fileOverrides() throws -> [ZeroShotTask: String] {
        var out: [ZeroShotTask: String] = [:]
        for entry in files {
            guard let eq = entry.firstIndex(of: "="), !entry[entry.index(after: eq)...].isEmpty else {
                throw ValidationError("--file expects task=path, got '\(entry)'")
            }
            let name = String(entry[..<eq])
            guard let task = ZeroShotTask(rawValue: name) else { throw ValidationError(TaskError.unknownTask(name).description) }
            out[task] = String(entry[entry.index(after: eq)...])
        }
        return out
    }

    func validate() throws {
        _ = try selectedTasks()
        _ = try fileOverrides()
        if let limit, limit < 1 { throw ValidationError("--limit must be positive, got \(limit)") }
        guard ctx >= 2 else { throw ValidationError("--ctx must be at least 2, got \(ctx)") }
        guard batch >= 1 else { throw ValidationError("--batch must be positive") }
    }

    func run() throws {
        if let json { try AtomicFileWriter.checkWritable(path: json) }
        let chosen = try selectedTasks(), overrides = try fileOverrides()
        // Read every data file first: a bad file fails before the model loads.
        var data: [(task: ZeroShotTask, path: String, items: [TaskItem])] = []
        for task in chosen {
            let path = overrides[task] ?? (self.data as NSString).appendingPathComponent(task.defaultFile)
            if overrides[task] == nil && !FileManager.default.fileExists(atPath: path) {
                throw ValidationError("cannot read \(path): no such file; pass --data DIR (the folder holding \(task.defaultFile)) or --file \(task.rawValue)=FILE")
            }
            data.append((task, path, try task.load(path: path)))
        }
        let loaded = try LoadedModel.load(path: model, threads: runtime.threads, numa: runtime.numa, activation: runtime.activation, activationClip: runtime.actClip)
        let session = try runtime.session(loaded, contextLength: ctx, maxBatch: batch)
        let evaluator = ZeroShotEvaluator(scorer: LoglikelihoodScorer(session: session), tokenizer: loaded.tokenizer)
        var samples: FileHandle?
        if let logSamples {
            guard FileManager.default.createFile(atPath: logSamples, contents: nil), let handle = FileHandle(forWritingAtPath: logSamples) else {
                throw ValidationError("cannot create --log-samples file \(logSamples)")
            }
            samples = handle
        }
        defer { try? samples?.close() }

        print("model: \(model) (\(loaded.model.config.blockCount) blocks, loaded in \(String(format: "%.2f", loaded.loadSeconds)) s, \(loaded.model.pool.threads) threads)")
        print("convention: lm-eval 0.4 multiple_choice, zero-shot; acc_norm divides by the choice's length in characters")
        let selections = data.map { ZeroShotEvaluator.selection(count: $0.items.count, limit: limit, seed: seed) }
        let totalItems = selections.reduce(0) { $0 + $1.count }
        var doneItems = 0
        let clock = ContinuousClock(), start = clock.now
        var lastReport = start
        var metrics: [TaskMetrics] = []
        for (k, (task, path, items)) in data.enumerated() {
            let chosenItems = selections[k].map { (index: $0, item: items[$0]) }
            print("\(task.rawValue): \(chosenItems.count) of \(items.count) items from \(path)")
            fflush(stdout)
            let (m, _) = try evaluator.evaluate(task: task, items: chosenItems) { result, progress in
                doneItems += 1
                if let samples { try samples.write(contentsOf: Data((result.jsonLine + "\n").utf8)) }
                let now = clock.now
                guard (now - lastReport).seconds >= 2 || progress.done == progress.total else { return }
                lastReport = now
                let elapsed = (now - start).seconds
                let eta = elapsed / Double(doneItems) * Double(totalItems - doneItems)
                var line = String(format: "[%@ %d/%d] acc %.4f", task.rawValue, progress.done, progress.total, progress.acc)
                if let n = progress.accNorm { line += String(format: " acc_norm %.4f", n) }
                line += String(format: "  %.0f t/s  all tasks %d/%d, ETA %@", Double(progress.tokens) / max(progress.seconds, 1e-9),
                               doneItems, totalItems, Self.duration(eta))
                printError(line)
            }
            metrics.append(m)
            print(Self.describe(m))
            fflush(stdout)
        }
        let report = ZeroShotReport(model: model, tasks: metrics, limit: limit, seed: seed, threads: loaded.model.pool.threads)
        if let json {
            do {
                try Data(report.json.utf8).write(to: URL(fileURLWithPath: json), options: .atomic)
            } catch {
                throw ValidationError("cannot write --json file \(json): \(error.localizedDescription)")
            }
        }
        print(String(format: "scored %d items, %d tokens in %.1f s (%.1f t/s through the model); %@",
                     totalItems, report.tokens, (clock.now - start).seconds, Double(report.tokens) / max(report.seconds, 1e-9),
                     String(format: "mean acc %.4f", report.averageAcc)))
        let names = metrics.map { $0.task.hasAccNorm ? $0.task.rawValue : "\($0.task.rawValue) acc" }.joined(separator: ", ")
        print(String(format: "average acc_norm over %d tasks (%@): %.4f", metrics.count, names, report.average))
    }

    static func describe(_ m: TaskMetrics) -> String {
        var s = String(format: "%@: n %d  acc %.4f ± %.4f", m.task.rawValue, m.count, m.acc, m.accStderr)
        if let n = m.accNorm, let e = m.accNormStderr { s += String(format: "  acc_norm %.4f ± %.4f", n, e) }
        s += String(format: "  (%d tokens, %.1f s, %.0f t/s)", m.tokens, m.seconds, m.tokensPerSecond)
        return s
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
    }
}
