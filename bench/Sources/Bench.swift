import ArgumentParser
import Foundation
import CLISupport
import Engine

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
    var threads: String = "\(ThreadPool.defaultThreads)"

    @Option(name: .customShort("p"), help: "Prompt tokens for the pp test (0 skips it).")
    var prompt: Int = 512

    @Option(name: .customShort("n"), help: "Generated tokens for the tg test (0 skips it).")
    var generate: Int = 128

    @Option(name: .customShort("r"), help: "Repetitions after the warm-up.")
    var repetitions: Int = 5

    @Option(name: .customShort("o"), help: "Output: md or json.")
    var output: String = "md"

    @Option(help: "Packed and ggml-block models: run with activations \(ActivationMode.flagHelp) instead of the file's mode (llama.cpp runs Q4_0/Q4_1/Q8_0 with 8-bit activations per block of 32: 8-block).")
    var act: String?

    @Option(help: "KV cache: f32, or q8 (int8 with one scale per 32 values, as llama.cpp's -ctk q8_0 -ctv q8_0: 1.125 bytes a value instead of 4).")
    var kvCache: KVCacheType = .f32

    @Flag(help: "After the tests, time one more pp and tg run step by step (norms, linears, attention, head...) and print where the time goes.")
    var profile = false

    @Flag(help: "First measure the memory read bandwidth at each thread count; then report each model's decode upper bound (bytes read per token / bandwidth) and tg as a share of it.")
    var bandwidth = false

    func validate() throws {
        guard !models.isEmpty || synthetic != nil || bandwidth else { throw ValidationError("name at least one model or --synthetic SHAPE") }
        guard threadList != nil else { throw ValidationError("-t takes positive thread counts like 1,2, got \(threads)") }
        guard prompt >= 0, generate >= 0, repetitions >= 1 else { throw ValidationError("-p and -n must be ≥ 0 and -r ≥ 1") }
        guard prompt > 0 || generate > 0 || bandwidth else { throw ValidationError("-p 0 and -n 0 leave nothing to measure") }
        if let act, case .failure(let e) = ActivationMode.parse(flag: act) { throw ValidationError(e.description) }
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

    /// What a model is, besides its speed: sizes, bits per weight, first-token latency, memory.
    struct ModelSummary: Codable {
        var model: String
        var threads: Int
        var fileBytes: Int?
        var bitsPerWeightBlockLinears: Double
        var bitsPerWeightAll: Double
        var decodeBytesPerToken: Int
        /// Mean time of the pp test: prompt in, first token's logits out.
        var timeToFirstTokenSeconds: Double?
        var peakResidentBytes: Int?
        /// Bandwidth / decodeBytesPerToken, with --bandwidth.
        var decodeBoundTokensPerSecond: Double?
        var generationShareOfBound: Double?
        /// With --profile: seconds per step, per generated token (tg) and per prompt (pp).
        var decodeProfile: [String: Double]?
        var prefillProfile: [String: Double]?
        /// The pool's parallel regions over all tests, those its caller ran alone after stalls
        /// (a worker descheduled by another process), and the stalls.
        var poolRegions = 0, poolSoloRegions = 0, poolStalls = 0
    }

    struct BandwidthRow: Codable {
        var threads: Int
        var bytes: Int
        var bestBytesPerSecond: Double
        var medianBytesPerSecond: Double
    }

    struct Report: Codable {
        var bandwidth: [BandwidthRow]
        var rows: [Row]
        var models: [ModelSummary]
    }

    func run() throws {
        var report = Report(bandwidth: [], rows: [], models: [])
        if bandwidth {
            for n in threadList! {
                let m = MemoryBandwidth.measure(pool: ThreadPool(threads: n))
                report.bandwidth.append(BandwidthRow(threads: n, bytes: m.bytes, bestBytesPerSecond: m.best, medianBytesPerSecond: m.median))
            }
            if output == "md" {
                print("| threads | read bandwidth, best of 7 passes over 1 GiB | median |")
                print("| ---: | ---: | ---: |")
                for b in report.bandwidth {
                    print(String(format: "| %d | %.1f GB/s | %.1f GB/s |", b.threads, b.bestBytesPerSecond / 1e9, b.medianBytesPerSecond / 1e9))
                }
                print()
            }
        }
        if output == "md" && (!models.isEmpty || synthetic != nil) {
            print("| model | size | params | backend | threads | test | t/s |")
            print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
        }
        let entries = models.map { Optional($0) } + (synthetic == nil ? [] : [nil])
        for path in entries {
            for n in threadList! {
                ProcessStats.resetPeakResident()
                let m: LlamaModel
                if let path {
                    m = try LoadedModel.load(path: path, threads: n, activation: act.flatMap { ActivationMode(flag: $0) }).model
                } else {
                    m = try WeightBinder(source: SyntheticModelSource(shape: synthetic!)).model(pool: ThreadPool(threads: n))
                }
                if let reason = kvCache.unsupportedReason(headDim: m.config.headDim) { throw ValidationError(reason) }
                let name = (path.map { ($0 as NSString).lastPathComponent } ?? "synthetic \(synthetic!.rawValue)") + (act.map { " (--act \($0))" } ?? "")
                    + (kvCache == .f32 ? "" : " (--kv-cache \(kvCache.rawValue))")
                var tests: [(String, () throws -> Double)] = []
                if prompt > 0 { tests.append(("pp\(prompt)", { try measurePrompt(m) })) }
                if generate > 0 { tests.append(("tg\(generate)", { try measureGeneration(m) })) }
                var summary = ModelSummary(
                    model: name, threads: n, fileBytes: path.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.size] as? Int },
                    bitsPerWeightBlockLinears: m.blockLinearBitsPerWeight,
                    bitsPerWeightAll: Double(m.weightBytes * 8) / Double(m.config.parameterCount),
                    decodeBytesPerToken: m.decodeBytesPerToken)
                for (test, measure) in tests {
                    _ = try measure() // warm-up
                    let samples = try (0..<repetitions).map { _ in try measure() }
                    let row = Row(model: name, sizeBytes: m.weightBytes, parameters: m.config.parameterCount, threads: n, test: test, samples: samples)
                    report.rows.append(row)
                    if test.hasPrefix("pp") { summary.timeToFirstTokenSeconds = samples.map { Double(prompt) / $0 }.reduce(0, +) / Double(samples.count) }
                    if let b = report.bandwidth.first(where: { $0.threads == n }) {
                        summary.decodeBoundTokensPerSecond = b.bestBytesPerSecond / Double(m.decodeBytesPerToken)
                        if test.hasPrefix("tg") { summary.generationShareOfBound = row.mean / summary.decodeBoundTokensPerSecond! }
                    }
                    if output == "md" {
                        print(String(format: "| %@ | %.2f MiB | %.2f M | CPU | %d | %@ | %.2f ± %.2f |", row.model,
                                     Double(row.sizeBytes) / 1048576, Double(row.parameters) / 1e6, n, test, row.mean, row.sd))
                        fflush(stdout)
                    }
                }
                summary.peakResidentBytes = ProcessStats.peakResidentBytes()
                (summary.poolRegions, summary.poolSoloRegions, summary.poolStalls) = m.pool.regionStats
                if profile {
                    let steps = StepProfile()
                    if prompt > 0 {
                        _ = try measurePrompt(m, profile: steps)
                        summary.prefillProfile = Dictionary(uniqueKeysWithValues: steps.seconds.map { ($0.key.rawValue, $0.value) })
                    }
                    if generate > 0 {
                        steps.reset()
                        _ = try measureGeneration(m, profile: steps)
                        summary.decodeProfile = Dictionary(uniqueKeysWithValues: steps.seconds.map { ($0.key.rawValue, $0.value / Double(generate)) })
                    }
                }
                report.models.append(summary)
            }
        }
        if output == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else if !report.models.isEmpty {
            print()
            print("| model | threads | bits/weight, block linears | bits/weight, all weights | file | decode reads/token | time to first token (pp\(prompt)) | peak RSS | decode bound | tg / bound |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            func mib(_ b: Int?) -> String { b.map { String(format: "%.1f MiB", Double($0) / 1048576) } ?? "—" }
            for s in report.models {
                print(String(format: "| %@ | %d | %.2f | %.2f | %@ | %@ | %@ | %@ | %@ | %@ |", s.model, s.threads, s.bitsPerWeightBlockLinears,
                             s.bitsPerWeightAll, mib(s.fileBytes), mib(s.decodeBytesPerToken),
                             s.timeToFirstTokenSeconds.map { String(format: "%.0f ms", $0 * 1000) } ?? "—", mib(s.peakResidentBytes),
                             s.decodeBoundTokensPerSecond.map { String(format: "%.0f t/s", $0) } ?? "—",
                             s.generationShareOfBound.map { String(format: "%.0f %%", $0 * 100) } ?? "—"))
            }
            for s in report.models where s.poolSoloRegions > 0 {
                print()
                print(String(format: "%@, %d threads: %d of %d parallel regions ran on the caller alone (workers missing runs or stalling it: %d stalls > 0.2 ms)",
                             s.model, s.threads, s.poolSoloRegions, s.poolRegions, s.poolStalls))
            }
            for s in report.models where s.decodeProfile != nil || s.prefillProfile != nil {
                print()
                print("Profile of \(s.model), \(s.threads) thread\(s.threads == 1 ? "" : "s"): one more run of each test, timed step by step")
                print()
                print("| step | tg\(generate): ms per token | share | pp\(prompt): ms per prompt | share |")
                print("| --- | ---: | ---: | ---: | ---: |")
                let tgTotal = s.decodeProfile?.values.reduce(0, +) ?? 0, ppTotal = s.prefillProfile?.values.reduce(0, +) ?? 0
                for step in StepProfile.Step.allCases {
                    let tg = s.decodeProfile?[step.rawValue], pp = s.prefillProfile?[step.rawValue]
                    if tg == nil && pp == nil { continue }
                    let tgMs: String = tg.map { String(format: "%.3f", $0 * 1000) } ?? "—"
                    let tgShare: String = tg.map { String(format: "%.1f %%", 100 * $0 / tgTotal) } ?? "—"
                    let ppMs: String = pp.map { String(format: "%.1f", $0 * 1000) } ?? "—"
                    let ppShare: String = pp.map { String(format: "%.1f %%", 100 * $0 / ppTotal) } ?? "—"
                    print("| \(step.rawValue) | \(tgMs) | \(tgShare) | \(ppMs) | \(ppShare) |")
                }
                print(String(format: "| total | %.3f | | %.1f | |", tgTotal * 1000, ppTotal * 1000))
            }
        }
    }

    /// Tokens per second of one batch of `prompt` tokens into an empty cache.
    func measurePrompt(_ model: LlamaModel, profile: StepProfile? = nil) throws -> Double {
        let session = InferenceSession(model: model, contextLength: prompt, maxBatch: prompt, kvCache: kvCache)
        session.profile = profile
        let tokens = randomTokens(prompt, vocab: model.config.vocab)
        let start = ContinuousClock.now
        try session.forward(tokens, logitRows: 1) { _, _ in }
        return Double(prompt) / (ContinuousClock.now - start).seconds
    }

    /// Tokens per second of `generate` single-token steps from an empty cache.
    func measureGeneration(_ model: LlamaModel, profile: StepProfile? = nil) throws -> Double {
        let session = InferenceSession(model: model, contextLength: generate, maxBatch: 1, kvCache: kvCache)
        session.profile = profile
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
extension KVCacheType: ExpressibleByArgument {}
