import ArgumentParser
import Foundation
import CLISupport
import Runtime

/// Throughput benchmark with llama-bench's tests and columns: pp<P> (prompt processing, one
/// batch of P tokens into an empty cache) and tg<N> (N tokens decoded one at a time from an
/// empty cache), each repeated after a warm-up run. Tokenization and sampling are excluded.
@main
struct Bench: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Prompt-processing and generation throughput (llama-bench's pp/tg tests).")

    @Argument(help: "GGUF files or Hugging Face folders.")
    var models: [String] = []

    @Option(help: "Also measure a random-weight model of this shape: \(SyntheticShape.allCases.map(\.rawValue).joined(separator: ", ")).")
    var synthetic: SyntheticShape?

    @Option(name: .customShort("t"), help: "Comma-separated thread counts.")
    var threads: String = "\(ThreadPool.physicalCores)"

    @Option(name: .customShort("p"), help: "Prompt tokens for the pp test (0 skips it).")
    var prompt: Int = 512

    @Option(name: .customShort("n"), help: "Generated tokens for the tg test (0 skips it).")
    var generate: Int = 128

    @Option(name: .customShort("r"), help: "Repetitions after the warm-up.")
    var repetitions: Int = 5

    @Option(name: .customShort("o"), help: "Output: md or json.")
    var output: String = "md"

    func validate() throws {
        guard !models.isEmpty || synthetic != nil else { throw ValidationError("name at least one model or --synthetic SHAPE") }
        guard threadList != nil else { throw ValidationError("-t takes positive thread counts like 1,2, got \(threads)") }
        guard prompt >= 0, generate >= 0, repetitions >= 1 else { throw ValidationError("-p and -n must be ≥ 0 and -r ≥ 1") }
        guard prompt > 0 || generate > 0 else { throw ValidationError("-p 0 and -n 0 leave nothing to measure") }
        guard output == "md" || output == "json" else { throw ValidationError("-o takes md or json, got \(output)") }
    }

    var threadList: [Int]? {
        let parts = threads.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        return parts.map { $0! }
    }

    struct Row: Codable {
        var model: String
        var sizeBytes: Int
        var parameters: Int
        var threads: Int
        var test: String
        var samples: [Double]  // tokens per second per repetition
        var mean: Double { samples.reduce(0, +) / Double(samples.count) }
        var sd: Double {
            guard samples.count > 1 else { return 0 }
            let m = mean
            return (samples.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(samples.count - 1)).squareRoot()
        }
    }

    func run() throws {
        var rows: [Row] = []
        if output == "md" {
            print("| model | size | params | backend | threads | test | t/s |")
            print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
        }
        let entries = models.map { Optional($0) } + (synthetic == nil ? [] : [nil])
        for path in entries {
            for n in threadList! {
                let m: LlamaModel
                if let path {
                    m = try LoadedModel.load(path: path, threads: n).model
                } else {
                    m = try LlamaModel(source: SyntheticModelSource(shape: synthetic!), pool: ThreadPool(threads: n))
                }
                var tests: [(String, () throws -> Double)] = []
                if prompt > 0 { tests.append(("pp\(prompt)", { try measurePrompt(m) })) }
                if generate > 0 { tests.append(("tg\(generate)", { try measureGeneration(m) })) }
                for (name, measure) in tests {
                    _ = try measure() // warm-up
                    let samples = try (0..<repetitions).map { _ in try measure() }
                    let row = Row(model: path.map { ($0 as NSString).lastPathComponent } ?? "synthetic \(synthetic!.rawValue)", sizeBytes: m.weightBytes,
                                  parameters: m.config.parameterCount, threads: n, test: name, samples: samples)
                    rows.append(row)
                    if output == "md" {
                        print(String(format: "| %@ | %.2f MiB | %.2f M | CPU | %d | %@ | %.2f ± %.2f |", row.model,
                                     Double(row.sizeBytes) / 1048576, Double(row.parameters) / 1e6, n, name, row.mean, row.sd))
                        fflush(stdout)
                    }
                }
            }
        }
        if output == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(rows), as: UTF8.self))
        }
    }

    /// Tokens per second of one batch of `prompt` tokens into an empty cache.
    func measurePrompt(_ model: LlamaModel) throws -> Double {
        let session = InferenceSession(model: model, contextLength: prompt, maxBatch: prompt)
        let tokens = randomTokens(prompt, vocab: model.config.vocab)
        let start = ContinuousClock.now
        try session.forward(tokens, logitRows: 1) { _, _ in }
        return Double(prompt) / (ContinuousClock.now - start).seconds
    }

    /// Tokens per second of `generate` single-token steps from an empty cache.
    func measureGeneration(_ model: LlamaModel) throws -> Double {
        let session = InferenceSession(model: model, contextLength: generate, maxBatch: 1)
        let tokens = randomTokens(generate, vocab: model.config.vocab)
        let start = ContinuousClock.now
        for t in tokens { try session.forward([t], logitRows: 1) { _, _ in } }
        return Double(generate) / (ContinuousClock.now - start).seconds
    }

    func randomTokens(_ n: Int, vocab: Int) -> [Int32] {
        var rng = SplitMix64(seed: 1)
        return (0..<n).map { _ in Int32.random(in: 0..<Int32(vocab), using: &rng) }
    }
}

extension SyntheticShape: ExpressibleByArgument {}
