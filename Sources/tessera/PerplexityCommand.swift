import Eval
import ArgumentParser
import Foundation
import Engine

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppl",
        abstract: "Perplexity of a text file. The last line of stdout is `ppl: <value> ± <stderr>`.")

    @Argument(help: "GGUF file or Hugging Face folder.")
    var model: String

    @Option(help: "Text file to score (e.g. data/wikitext2/wiki.test.raw).")
    var file: String

    @Option(help: "Context (window) length in tokens.")
    var ctx: Int = 512

    @Option(help: "gptq: non-overlapping windows, all tokens scored; llamacpp: BOS + window, second half scored.")
    var convention: PerplexityConvention = .llamacpp

    @Option(help: "Score only the first K windows (default: all).")
    var chunks: Int?

    @Option(help: "Tokens pushed through the model at once.")
    var batch: Int = 512

    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        guard ctx >= 2 else { throw ValidationError("--ctx must be at least 2, got \(ctx)") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be positive, got \(chunks)") }
        guard batch >= 1 else { throw ValidationError("--batch must be positive") }
    }

    func run() throws {
        let loaded = try LoadedModel.load(path: model, threads: runtime.threads, numa: runtime.numa, activation: runtime.activation, activationClip: runtime.actClip)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read text file \(file)")
        }
        let text = String(decoding: data, as: UTF8.self)
        let clock = ContinuousClock()
        let tokenizeStart = clock.now
        // Tokenize as llama-perplexity does: BOS only when the model adds one.
        let tokens = loaded.tokenizer.encode(text, addBOS: nil, parseSpecial: false)
        let tokenizeSeconds = (clock.now - tokenizeStart).seconds
        let session = try runtime.session(loaded, contextLength: ctx, maxBatch: batch)
        let bos = loaded.tokenizer.addsBOS ? loaded.tokenizer.bosID : nil
        let run = PerplexityRun(session: session, convention: convention, contextLength: ctx, bos: bos)
        let available = run.chunkCount(tokens.count)
        guard available >= 1 else {
            throw ValidationError("\(file) has \(tokens.count) tokens, fewer than one window of --ctx \(ctx)")
        }
        let count = min(chunks ?? available, available)
        print("model: \(model) (\(loaded.model.config.blockCount) blocks, loaded in \(String(format: "%.2f", loaded.loadSeconds)) s)")
        print("text: \(file): \(tokens.count) tokens (tokenized in \(String(format: "%.2f", tokenizeSeconds)) s)")
        print("convention: \(convention.rawValue), ctx \(ctx), \(count) of \(available) windows, \(loaded.model.pool.threads) threads")
        let start = clock.now
        let result = try run.run(tokens: tokens, chunks: count) { chunk, acc in
            let seconds = (clock.now - start).seconds
            let rate = Double((chunk + 1) * ctx) / seconds
            print(String(format: "[%d/%d] ppl %.4f ± %.4f  %.0f t/s", chunk + 1, count, acc.perplexity, acc.standardError, rate))
            fflush(stdout)
        }
        let seconds = (clock.now - start).seconds
        print(String(format: "scored %d tokens in %.1f s (%.1f t/s through the model)", result.count, seconds, Double(count * ctx) / seconds))
        print(String(format: "ppl: %.4f ± %.4f", result.perplexity, result.standardError))
    }
}

extension PerplexityConvention: ExpressibleByArgument {}
