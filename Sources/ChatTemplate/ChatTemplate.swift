import Core
import Foundation

// Chat templates: turn a conversation into the prompt text a model was trained on.
//
// A model's `tokenizer.chat_template` (GGUF metadata / tokenizer_config.json) is a Jinja
// template. ChatTemplate runs it with a small Jinja-subset interpreter (Jinja*.swift) that
// reproduces HF transformers' `apply_chat_template` (jinja2 sandbox with trim_blocks and
// lstrip_blocks; variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
// `tools` = none, optional `date_string`; globals `raise_exception`, `strftime_now`).
// Checked against jinja2's output for SmolLM2 (ChatML with a default system message),
// Llama 3.0, Llama 3.1/3.3, Llama 3.2, Qwen2.5 and Qwen3 templates (ChatTemplateTests).
//
// Family fallback (as llama.cpp does): a model template that fails to parse, or fails on a
// probe conversation, is replaced by a built-in rendering chosen from its text:
// `<|start_header_id|>` -> "llama3", `<|im_start|>` -> "chatml"; otherwise a clear error.
//
// BOS: templates such as Llama 3's write `bos_token` themselves. When the rendered text
// starts with the BOS text, encode it without adding another BOS.
//
// Multi-turn with a KV cache: for SmolLM2, Llama 3.x and Qwen2.5 (tested), rendering
// messages[0..<n] (add_generation_prompt false) is a prefix of rendering messages[0..<n+2],
// and rendering messages[0..<n+1] with add_generation_prompt true is a prefix too: the new
// user turn and the assistant header are `renderIncrement(previous:new:)`. After generating,
// the cache holds prompt + reply; the rest of the assistant turn (e.g. "<|im_end|>\n") is
// `ChatTemplate.suffix(of: render(history + [reply], false), after: prompt + replyText)`
// (nil means the template normalised the reply, e.g. Llama's trim: re-evaluate from the
// longest common prefix instead). Templates that rewrite earlier turns (e.g. Qwen3 drops
// the <think> part of old replies) break the property; `renderIncrement` then throws
// `.notIncremental` and the caller re-renders the whole conversation.

public struct ChatMessage: Equatable, Sendable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

public enum ChatTemplateError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The template text is not valid (in the supported Jinja subset).
    case syntax(String)
    /// The template uses a filter the interpreter does not know.
    case unknownFilter(String, line: Int)
    /// The template uses a test (`is name`) the interpreter does not know.
    case unknownTest(String, line: Int)
    /// Rendering failed (type error, undefined value...).
    case render(String)
    /// The template itself called raise_exception(message).
    case raised(String)
    /// No usable template (none in the model, unknown override name...).
    case noTemplate(String)
    /// The rendering of the shorter conversation is not a prefix of the longer one.
    case notIncremental(String)

    public var description: String {
        switch self {
        case .syntax(let m): return "chat template syntax error: \(m)"
        case .unknownFilter(let n, let line): return "chat template error: line \(line): unknown filter '\(n)'"
        case .unknownTest(let n, let line): return "chat template error: line \(line): unknown test '\(n)'"
        case .render(let m): return "chat template render error: \(m)"
        case .raised(let m): return "chat template raised an exception: \(m)"
        case .noTemplate(let m): return "no chat template: \(m)"
        case .notIncremental(let m): return "chat template is not incremental: \(m)"
        }
    }
    public var errorDescription: String? { description }
}

public struct ChatTemplate {
    /// Built-in renderings used by name or as fallback.
    public enum Family: String, CaseIterable, Sendable {
        /// `<|im_start|>role\ncontent<|im_end|>\n` ... `<|im_start|>assistant\n`
        case chatml
        /// bos + `<|start_header_id|>role<|end_header_id|>\n\n` + trim(content) + `<|eot_id|>` ...
        /// (the Llama 3.0 Instruct template)
        case llama3
    }

    private enum Kind {
        case jinja([JinjaNode])
        case builtin(Family)
    }

    private let kind: Kind
    /// The Jinja source, for Jinja templates.
    public let source: String?
    /// The built-in family when this template renders without Jinja.
    public var builtinFamily: Family? { if case .builtin(let f) = kind { return f }; return nil }
    /// Why a model template was replaced by a built-in family (nil when not a fallback).
    public private(set) var fallbackReason: String?

    /// Parses a Jinja chat template. Throws `ChatTemplateError` with a one-line message
    /// (syntax errors name the line; unknown filters/tests are reported here, as jinja2 does).
    public init(jinja: String) throws {
        do {
            let nodes = try JinjaParser.parse(jinja)
            try ChatTemplate.checkNames(nodes)
            kind = .jinja(nodes)
            source = jinja
        } catch let e as JinjaError {
            throw ChatTemplate.convert(e)
        }
    }

    private init(family: Family, fallbackReason: String? = nil) {
        kind = .builtin(family)
        source = nil
        self.fallbackReason = fallbackReason
    }

    /// Built-in templates: "chatml", "llama3" (case-insensitive).
    public static func named(_ name: String) -> ChatTemplate? {
        Family(rawValue: name.lowercased()).map { ChatTemplate(family: $0) }
    }

    /// The family a template's text belongs to, recognised by its special tokens.
    public static func detectFamily(_ template: String) -> Family? {
        if template.contains("<|start_header_id|>") { return .llama3 }
        if template.contains("<|im_start|>") { return .chatml }
        return nil
    }

    /// A model's own template: parsed and tried on a probe conversation; if either fails, the
    /// built-in family recognised from its text (see `fallbackReason`), else the error.
    public static func fromModel(_ template: String) throws -> ChatTemplate {
        let failure: ChatTemplateError
        do {
            let t = try ChatTemplate(jinja: template)
            let probe = [ChatMessage(role: "user", content: "Hello"), ChatMessage(role: "assistant", content: "Hi"),
                         ChatMessage(role: "user", content: "Bye")]
            do {
                _ = try t.render(messages: probe, addGenerationPrompt: true, bosToken: "", eosToken: "",
                                 now: Date(timeIntervalSince1970: 1_721_952_000))
                return t
            } catch ChatTemplateError.raised {
                return t  // the template validates its input: it works
            }
        } catch let e as ChatTemplateError {
            failure = e
        }
        if let family = detectFamily(template) {
            return ChatTemplate(family: family, fallbackReason: failure.description)
        }
        throw ChatTemplateError.noTemplate("the model's chat template cannot be used (\(failure.description)) and is not a recognised family; pass --chat-template chatml|llama3|FILE|JINJA")
    }

    /// `--chat-template` override (built-in name, template file path, or literal Jinja) first,
    /// then the model's template (with family fallback), else an error.
    public static func resolve(override: String?, modelTemplate: String?) throws -> ChatTemplate {
        if let o = override, !o.isEmpty {
            if let t = named(o) { return t }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: o, isDirectory: &isDir), !isDir.boolValue {
                let text: String
                do { text = try String(contentsOfFile: o, encoding: .utf8) } catch {
                    throw ChatTemplateError.noTemplate("cannot read chat template file '\(o)': \(error.localizedDescription)")
                }
                do { return try ChatTemplate(jinja: text) } catch let e as ChatTemplateError {
                    throw ChatTemplate.prefix(e, "in file '\(o)': ")
                }
            }
            if o.contains("{{") || o.contains("{%") { return try ChatTemplate(jinja: o) }
            let names = Family.allCases.map { $0.rawValue }.joined(separator: ", ")
            throw ChatTemplateError.noTemplate("unknown chat template '\(o)': expected one of \(names), a Jinja template file, or a Jinja template string")
        }
        if let m = modelTemplate, !m.isEmpty { return try fromModel(m) }
        throw ChatTemplateError.noTemplate("the model has no chat template (tokenizer.chat_template); pass --chat-template chatml|llama3|FILE|JINJA")
    }

    /// Renders a conversation. `dateString` binds `date_string` (Llama 3.x); when nil, Llama 3.2's
    /// template calls `strftime_now("%d %b %Y")`, which formats `now` (local time).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String,
                       dateString: String? = nil, now: Date = Date()) throws -> String {
        switch kind {
        case .builtin(let family):
            return ChatTemplate.renderBuiltin(family, messages, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken)
        case .jinja(let nodes):
            var ctx: [String: JinjaValue] = [
                "messages": .array(messages.map { .dict(JinjaDict([("role", .string($0.role)), ("content", .string($0.content))])) }),
                "add_generation_prompt": .bool(addGenerationPrompt),
                "bos_token": .string(bosToken),
                "eos_token": .string(eosToken),
                "tools": .none,
                "documents": .none,
                "strftime_now": JinjaInterpreter.strftimeFunction(now: now),
            ]
            if let d = dateString { ctx["date_string"] = .string(d) }
            var interpreter = JinjaInterpreter(context: ctx, now: now)
            do {
                return try interpreter.render(nodes)
            } catch let e as JinjaError {
                throw ChatTemplate.convert(e)
            }
        }
    }

    /// The text to append after `previous` (rendered with add_generation_prompt false) to get
    /// `previous + new` rendered with `addGenerationPrompt`. Typical turn: previous ends with
    /// the assistant's reply, new = [user message], addGenerationPrompt = true.
    /// Throws `.notIncremental` when the template rewrites earlier text.
    public func renderIncrement(previous: [ChatMessage], new: [ChatMessage], addGenerationPrompt: Bool = true,
                                bosToken: String, eosToken: String, dateString: String? = nil, now: Date = Date()) throws -> String {
        let full = try render(messages: previous + new, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken,
                              eosToken: eosToken, dateString: dateString, now: now)
        if previous.isEmpty { return full }
        let head = try render(messages: previous, addGenerationPrompt: false, bosToken: bosToken, eosToken: eosToken,
                              dateString: dateString, now: now)
        guard let tail = ChatTemplate.suffix(of: full, after: head) else {
            throw ChatTemplateError.notIncremental("rendering \(previous.count) messages is not a prefix of rendering \(previous.count + new.count)")
        }
        return tail
    }

    /// `full` without its leading `prefix` (compared as UTF-8 bytes), or nil if it does not start with it.
    public static func suffix(of full: String, after prefix: String) -> String? {
        let f = Array(full.utf8), p = Array(prefix.utf8)
        guard f.count >= p.count, f[0..<p.count].elementsEqual(p) else { return nil }
        return String(decoding: f[p.count...], as: UTF8.self)
    }

    // MARK: built-in families

    private static func renderBuiltin(_ family: Family, _ messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String) -> String {
        var out = ""
        switch family {
        case .chatml:
            for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        case .llama3:
            out += bosToken
            for m in messages {
                let content = JinjaInterpreter.pyStrip(m.content, nil, left: true, right: true)
                out += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(content)<|eot_id|>"
            }
            if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        }
        return out
    }

    // MARK: errors and checks

    private static func convert(_ e: JinjaError) -> ChatTemplateError {
        switch e {
        case .syntax(let m, let line): return .syntax("line \(line): \(m)")
        case .render(let m): return .render(m)
        case .unknownFilter(let n, let line): return .unknownFilter(n, line: line)
        case .unknownTest(let n, let line): return .unknownTest(n, line: line)
        case .raised(let m): return .raised(m)
        }
    }

    private static func prefix(_ e: ChatTemplateError, _ p: String) -> ChatTemplateError {
        switch e {
        case .syntax(let m): return .syntax(p + m)
        case .render(let m): return .render(p + m)
        default: return e
        }
    }

    /// jinja2 rejects unknown filters and tests when compiling; so do we.
    private static func checkNames(_ nodes: [JinjaNode]) throws {
        func expr(_ e: JinjaExpr) throws {
            switch e {
            case .literal, .name: break
            case .list(let items), .concat(let items): try items.forEach(expr)
            case .dict(let pairs): for (k, v) in pairs { try expr(k); try expr(v) }
            case .attribute(let b, _): try expr(b)
            case .item(let a, let b): try expr(a); try expr(b)
            case .slice(let a, let b, let c, let d): try expr(a); for x in [b, c, d] { if let x = x { try expr(x) } }
            case .call(let c, let args, let kwargs): try expr(c); try args.forEach(expr); try kwargs.forEach { try expr($0.1) }
            case .filter(let b, let name, let args, let kwargs, let line):
                guard JinjaInterpreter.knownFilters.contains(name) else {
                    throw JinjaError.unknownFilter(name, line: line)
                }
                try expr(b); try args.forEach(expr); try kwargs.forEach { try expr($0.1) }
            case .test(let b, let name, let args, _, let line):
                guard JinjaInterpreter.knownTests.contains(name) else {
                    throw JinjaError.unknownTest(name, line: line)
                }
                try expr(b); try args.forEach(expr)
            case .not(let x), .negate(let x): try expr(x)
            case .and(let a, let b), .or(let a, let b), .binary(_, let a, let b): try expr(a); try expr(b)
            case .compare(let a, let ops): try expr(a); try ops.forEach { try expr($0.1) }
            case .conditional(let c, let t, let o): try expr(c); try expr(t); if let o = o { try expr(o) }
            }
        }
        func walk(_ nodes: [JinjaNode]) throws {
            for n in nodes {
                switch n {
                case .text, .breakLoop, .continueLoop: break
                case .output(let e, _): try expr(e)
                case .ifChain(let branches, let otherwise):
                    for (c, body) in branches { try expr(c); try walk(body) }
                    try walk(otherwise)
                case .forLoop(_, let it, let filter, let body, let otherwise, _):
                    try expr(it); if let f = filter { try expr(f) }; try walk(body); try walk(otherwise)
                case .set(_, let e, _): try expr(e)
                case .setBlock(_, let body): try walk(body)
                }
            }
        }
        try walk(nodes)
    }
}
