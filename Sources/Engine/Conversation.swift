import Foundation

/// A multi-turn chat over one inference session. The KV cache is kept between turns: each
/// turn renders the whole conversation with the chat template and feeds only the text that
/// follows what the cache already holds (re-prefilling from scratch only when the template
/// rewrites earlier text).
public final class Conversation {
    public let tokenizer: Tokenizer
    /// nil: raw mode, the user's text is fed as-is.
    public let template: ChatTemplate?
    public var generator: Generator
    public var systemPrompt: String?
    public private(set) var messages: [ChatMessage] = []
    /// Stats of the last reply.
    public private(set) var lastStats: GenerationStats?
    /// The text whose tokens the cache holds.
    private var textInCache = ""

    public init(tokenizer: Tokenizer, template: ChatTemplate?, generator: Generator, systemPrompt: String? = nil) {
        self.tokenizer = tokenizer
        self.template = template
        self.generator = generator
        self.systemPrompt = systemPrompt
    }

    public var session: InferenceSession { generator.session }

    /// Forgets the conversation and empties the cache.
    public func reset() {
        messages = []
        textInCache = ""
        generator.reset()
    }

    private var bosText: String { tokenizer.bosID.map { String(decoding: tokenizer.tokenBytes($0), as: UTF8.self) } ?? "" }

    /// The full prompt text for the conversation plus `user`, ready for the assistant's reply.
    public func renderPrompt(adding user: String) throws -> String {
        guard let template else { return textInCache + user }
        var all: [ChatMessage] = []
        if let systemPrompt { all.append(ChatMessage(role: "system", content: systemPrompt)) }
        all += messages
        all.append(ChatMessage(role: "user", content: user))
        let eos = tokenizer.eosID.map { String(decoding: tokenizer.tokenBytes($0), as: UTF8.self) } ?? ""
        return try template.render(messages: all, addGenerationPrompt: true, bosToken: bosText, eosToken: eos)
    }

    /// Sends a user message and streams the reply's text to `onText` (return false to stop).
    /// Returns the reply and its stats.
    @discardableResult
    public func send(_ user: String, maxTokens: Int, onText: (String) -> Bool) throws -> (reply: String, stats: GenerationStats) {
        let full = try renderPrompt(adding: user)
        var newText = full
        if session.position > 0 && full.hasPrefix(textInCache) {
            newText = String(full.dropFirst(textInCache.count))
        } else if session.position > 0 {
            generator.reset() // the template changed earlier text: start over
        }
        // BOS once, at the start of the cache, unless the template already wrote it.
        let addBOS = session.position == 0 && tokenizer.addsBOS && !(!bosText.isEmpty && full.hasPrefix(bosText))
        let prompt = tokenizer.encode(newText, addBOS: addBOS, parseSpecial: template != nil)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var reply: [Int32] = []
        var stats = try generator.generate(prompt: prompt, maxTokens: maxTokens) { token in
            reply.append(token)
            let piece = decoder.append(token)
            return piece.isEmpty ? true : onText(piece)
        }
        let tail = decoder.flush()
        if !tail.isEmpty { _ = onText(tail) }
        if !stats.lastTokenInCache { reply.removeLast() }
        let replyText = tokenizer.decode(reply)
        textInCache = full + replyText
        messages.append(ChatMessage(role: "user", content: user))
        messages.append(ChatMessage(role: "assistant", content: replyText))
        stats.promptTokens = prompt.count
        lastStats = stats
        return (replyText, stats)
    }
}
