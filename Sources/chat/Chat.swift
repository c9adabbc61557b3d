import ArgumentParser
import Foundation
import CLISupport
import Engine

@main
struct Chat: ParsableCommand {
    static func main() { mainWithOneLineErrors() }

    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model in the terminal (streaming, KV cache kept across turns).",
        discussion: """
            Interactive commands: /help /reset /stats /exit. Ctrl-C stops a reply; Ctrl-C at the \
            prompt or Ctrl-D exits. With --prompt (or piped stdin) the reply goes to stdout and \
            everything else to stderr.
            Sampling order (as llama.cpp): repeat penalty → top-k → top-p → min-p → temperature.
            """)

    static let demoModel = "models/SmolLM2-135M-Instruct.Q4_1.gguf"

    @Argument(help: "GGUF file or Hugging Face folder (default: the demo model, \(Chat.demoModel)).")
    var model: String = Chat.demoModel

    // Values are taken as given, so `-n -1`, `--temperature -1` (refused by validate) and
    // prompts that begin with "-" reach the checks below instead of ArgumentParser's "missing value".
    @Option(name: [.customShort("p"), .long], parsing: .unconditional, help: "Run this one prompt non-interactively and exit.")
    var prompt: String?

    @Flag(help: "Feed the prompt as-is, without the chat template.")
    var raw = false

    @Option(name: [.long, .customLong("temp")], parsing: .unconditional, help: "Temperature (0 = greedy).")
    var temperature: Float = 0.8

    @Option(parsing: .unconditional, help: "Top-k (0 = off).")
    var topK: Int = 40

    @Option(parsing: .unconditional, help: "Top-p (1 = off).")
    var topP: Float = 0.95

    @Option(parsing: .unconditional, help: "Min-p (0 = off).")
    var minP: Float = 0.05

    @Option(parsing: .unconditional, help: "Repeat penalty (1 = off).")
    var repeatPenalty: Float = 1.0

    @Option(parsing: .unconditional, help: "Tokens the repeat penalty looks back over.")
    var repeatLastN: Int = 64

    @Option(name: [.customShort("s"), .long], parsing: .unconditional, help: "Random seed (default: random).")
    var seed: UInt64?

    @Option(name: [.customShort("n"), .long], parsing: .unconditional, help: "Maximum tokens per reply (-1 = until end of turn or full context).")
    var maxTokens: Int = -1

    @Option(name: [.long, .customLong("system-prompt")], parsing: .unconditional, help: "System prompt.")
    var system: String?

    @Option(name: [.customShort("c"), .long], parsing: .unconditional, help: "Context size in tokens (0 = the model's, capped at 4096).")
    var ctxSize: Int = 0

    @Option(help: "Packed models: run with activations \(ActivationMode.flagHelp) instead of the file's mode.")
    var act: String?

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Worker threads (0 = one per fast physical core).")
    var threads: Int = 0

    @Option(help: "KV cache: f32, or q8 (int8 with one scale per 32 values, as llama.cpp's -ctk q8_0 -ctv q8_0: 1.125 bytes a value instead of 4).")
    var kvCache: KVCacheType = .f32

    @Option(help: "Chat template: chatml, llama3, a Jinja file, or Jinja text (default: the model's).")
    var chatTemplate: String?

    @Flag(help: "Pin threads to CPUs and use node-local memory (multi-socket machines).")
    var numa = false

    func validate() throws {
        if let act, case .failure(let e) = ActivationMode.parse(flag: act) { throw ValidationError(e.description) }
        guard temperature >= 0 else { throw ValidationError("--temperature must be ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0, got \(topK)") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        guard minP >= 0 && minP < 1 else { throw ValidationError("--min-p must be in [0, 1), got \(minP)") }
        guard repeatPenalty > 0 else { throw ValidationError("--repeat-penalty must be > 0, got \(repeatPenalty)") }
        guard repeatLastN >= 0 else { throw ValidationError("--repeat-last-n must be ≥ 0") }
        guard maxTokens >= -1 else { throw ValidationError("--max-tokens must be -1 or ≥ 0, got \(maxTokens)") }
        guard ctxSize >= 0 else { throw ValidationError("--ctx-size must be ≥ 0, got \(ctxSize)") }
        guard threads >= 0 else { throw ValidationError("--threads must be ≥ 0, got \(threads)") }
    }

    var sampling: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.repeatPenalty = repeatPenalty
        p.repeatWindow = repeatLastN
        p.seed = seed
        return p
    }

    func run() throws {
        if model == Chat.demoModel && !FileManager.default.fileExists(atPath: model) {
            throw ValidationError("the demo model is not at \(model); run scripts/setup.sh from the repository root to fetch it")
        }
        // Non-interactive when a prompt is given or stdin is not a terminal.
        var oneShot = prompt
        if oneShot == nil && isatty(STDIN_FILENO) == 0 {
            oneShot = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        let loaded = try LoadedModel.load(path: model, threads: threads, numa: numa, activation: act.flatMap { ActivationMode(flag: $0) })
        let config = loaded.model.config
        let context = ctxSize > 0 ? ctxSize : min(config.contextLength, 4096)
        let template = raw ? nil : try ChatTemplate.resolve(override: chatTemplate, modelTemplate: loaded.chatTemplate)
        if let reason = kvCache.unsupportedReason(headDim: config.headDim) { throw ValidationError(reason) }
        let session = InferenceSession(model: loaded.model, contextLength: context, kvCache: kvCache)
        let generator = Generator(session: session, sampling: sampling, stopTokens: loaded.tokenizer.endOfGenerationIDs)
        let conversation = Conversation(tokenizer: loaded.tokenizer, template: template, generator: generator, systemPrompt: system)
        printError(String(format: "chat: %@ — %d blocks, %.0f M parameters, %.0f MB of weights, loaded in %.2f s; context %d, %d threads",
                          model, config.blockCount, Double(config.parameterCount) / 1e6, Double(loaded.model.weightBytes) / 1e6,
                          loaded.loadSeconds, context, loaded.model.pool.threads))
        if context > config.contextLength {
            printError("chat: warning: the context \(context) is longer than the \(config.contextLength) tokens the model was trained on; past those, replies may degrade")
        }

        if let oneShot {
            let stats = try conversation.send(oneShot, maxTokens: maxTokens) { text in
                FileHandle.standardOutput.write(text.data(using: .utf8)!)
                return true
            }.stats
            FileHandle.standardOutput.write("\n".data(using: .utf8)!)
            printError(stats.speedLine)
            return
        }
        try interactive(conversation)
    }

    func interactive(_ conversation: Conversation) throws {
        let interrupts = Interrupts()
        printError("Type a message, /help for commands. Ctrl-C stops a reply; Ctrl-D exits.")
        while true {
            FileHandle.standardError.write("\n> ".data(using: .utf8)!)
            guard let line = readLine(strippingNewline: true) else { printError(""); return }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            switch input {
            case "/exit", "/quit", "/bye": return
            case "/help", "/?":
                printError("/reset  forget the conversation\n/stats  speed of the last reply and context use\n/exit   leave (or Ctrl-D)")
                continue
            case "/reset", "/clear":
                conversation.reset()
                printError("(conversation reset)")
                continue
            case "/stats":
                let s = conversation.session
                printError("context: \(s.position) of \(s.capacity) tokens used; \(conversation.messages.count) messages")
                if let stats = conversation.lastStats { printError(stats.speedLine) }
                continue
            default:
                if input.hasPrefix("/") { printError("unknown command \(input); /help lists the commands"); continue }
            }
            interrupts.beginReply()
            do {
                let stats = try conversation.send(line, maxTokens: maxTokens) { text in
                    FileHandle.standardOutput.write(text.data(using: .utf8)!)
                    return !interrupts.shouldStop
                }.stats
                interrupts.endReply()
                FileHandle.standardOutput.write("\n".data(using: .utf8)!)
                printError(stats.speedLine)
            } catch let error as InferenceError {
                interrupts.endReply()
                printError("\nchat: \(error) — type /reset to start a new conversation")
            }
        }
    }
}
extension KVCacheType: ExpressibleByArgument {}
