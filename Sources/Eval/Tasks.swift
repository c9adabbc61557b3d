import Engine
import Foundation

/// One (context, continuation) pair to score, as lm-eval builds it for a `multiple_choice`
/// task: the continuation carries the target delimiter (a leading space).
public struct ChoiceRequest: Sendable, Equatable {
    public var context: String
    public var continuation: String

    public init(context: String, continuation: String) {
        self.context = context
        self.continuation = continuation
    }
}

/// A multiple-choice item: one request per choice and the index of the right one.
public struct TaskItem: Sendable, Equatable {
    /// The item's id in the data file (or its line number when it has none).
    public var id: String
    public var requests: [ChoiceRequest]
    /// lm-eval's `doc_to_choice` strings, whose lengths normalise `acc_norm` (without the
    /// target delimiter; for WinoGrande these are the two contexts).
    public var choices: [String]
    public var gold: Int

    public init(id: String, requests: [ChoiceRequest], choices: [String], gold: Int) {
        self.id = id
        self.requests = requests
        self.choices = choices
        self.gold = gold
    }
}

/// Why a task or its data could not be loaded.
public enum TaskError: Error, CustomStringConvertible, Equatable {
    case unknownTask(String)
    case cannotRead(path: String, reason: String)
    case badItem(path: String, line: Int, reason: String)
    case empty(path: String)

    public var description: String {
        switch self {
        case .unknownTask(let name):
            return "unknown task '\(name)' (known: \(ZeroShotTask.allCases.map(\.rawValue).joined(separator: ", ")))"
        case let .cannotRead(path, reason): return "cannot read \(path): \(reason)"
        case let .badItem(path, line, reason): return "\(path):\(line): \(reason)"
        case .empty(let path): return "\(path) has no items"
        }
    }
}

/// The zero-shot tasks, built exactly as lm-eval's task configs build them (lm-eval 0.4:
/// lm_eval/tasks/{piqa/piqa.yaml, arc/arc_easy.yaml, hellaswag/{hellaswag.yaml,utils.py},
/// winogrande/{default.yaml,preprocess_winogrande.py}}), with the default target delimiter " ".
public enum ZeroShotTask: String, CaseIterable, Sendable {
    case piqa
    case arc_easy
    case arc_challenge
    case hellaswag
    case winogrande

    public init(name: String) throws {
        guard let task = ZeroShotTask(rawValue: name) else { throw TaskError.unknownTask(name) }
        self = task
    }

    /// The data file under the shared data directory (see its README).
    public var defaultFile: String {
        switch self {
        case .piqa: return "piqa/validation.jsonl"
        case .arc_easy: return "arc/arc_easy_test.jsonl"
        case .arc_challenge: return "arc/arc_challenge_test.jsonl"
        case .hellaswag: return "hellaswag/validation.jsonl"
        case .winogrande: return "winogrande/dev.jsonl"
        }
    }

    /// Whether lm-eval's config lists `acc_norm` (WinoGrande lists only `acc`).
    public var hasAccNorm: Bool { self != .winogrande }

    /// The metric the 5-task average uses: `acc_norm` where the task defines it, else `acc`
    /// (lm-eval's `acc_norm,none` falling back to `acc,none`).
    public var headlineMetric: String { hasAccNorm ? "acc_norm" : "acc" }

    /// lm-eval's target delimiter.
    public static let delimiter = " "

    // MARK: prompt construction

    /// PIQA: "Question: {goal}\nAnswer:" → " {sol}".
    public static func piqa(id: String, goal: String, solutions: [String], label: Int) -> TaskItem {
        multipleChoice(id: id, context: "Question: \(goal)\nAnswer:", choices: solutions, gold: label)
    }

    /// ARC: "Question: {question}\nAnswer:" → " {choice}"; gold = choices.label.index(answerKey),
    /// which covers the keys "1".."4" as the labels are then "1".."4" too.
    public static func arc(id: String, question: String, choices: [String], labels: [String], answerKey: String) -> TaskItem? {
        guard let gold = labels.firstIndex(of: answerKey) else { return nil }
        return multipleChoice(id: id, context: "Question: \(question)\nAnswer:", choices: choices, gold: gold)
    }

    /// HellaSwag: lm-eval's `preprocess` applied to ctx → " {preprocess(ending)}". The data
    /// here is already preprocessed; `preprocess` is applied again because it still changes a
    /// few items (bracketed text the copy kept, a double space).
    public static func hellaswag(id: String, context: String, endings: [String], label: Int) -> TaskItem {
        multipleChoice(id: id, context: hellaswagPreprocess(context), choices: endings.map(hellaswagPreprocess), gold: label)
    }

    /// WinoGrande, partial scoring: context i = sentence[..<_] + option i, continuation =
    /// " " + sentence[_+1...].strip(); the same continuation is scored under each context.
    /// Returns nil when the sentence has no `_`.
    public static func winogrande(id: String, sentence: String, options: [String], answer: Int) -> TaskItem? {
        let scalars = Array(sentence.unicodeScalars)
        guard let blank = scalars.firstIndex(of: "_") else { return nil }
        let before = String(String.UnicodeScalarView(scalars[..<blank]))
        let target = pythonStrip(String(String.UnicodeScalarView(scalars[(blank + 1)...])))
        let contexts = options.map { before + $0 }
        return TaskItem(id: id, requests: contexts.map { ChoiceRequest(context: $0, continuation: delimiter + target) },
                        choices: contexts, gold: answer)
    }

    static func multipleChoice(id: String, context: String, choices: [String], gold: Int) -> TaskItem {
        TaskItem(id: id, requests: choices.map { ChoiceRequest(context: context, continuation: delimiter + $0) },
                 choices: choices, gold: gold)
    }

    /// lm-eval's hellaswag `preprocess`: strip, " [title]" → ". ", drop `\[.*?\]`, then one
    /// left-to-right pass of "  " → " ". Works on Unicode scalars, as Python on code points.
    public static func hellaswagPreprocess(_ text: String) -> String {
        var s = Array(pythonStrip(text).unicodeScalars)
        s = replace(s, Array(" [title]".unicodeScalars), Array(". ".unicodeScalars))
        // re.sub(r"\[.*?\]", "", s): from each "[", the nearest "]" on the same line ('.' does
        // not match a newline); an unmatched "[" stays.
        var out: [Unicode.Scalar] = []
        var i = 0
        outer: while i < s.count {
            if s[i] == "[" {
                var j = i + 1
                while j < s.count && s[j] != "\n" {
                    if s[j] == "]" { i = j + 1; continue outer }
                    j += 1
                }
            }
            out.append(s[i])
            i += 1
        }
        out = replace(out, Array("  ".unicodeScalars), Array(" ".unicodeScalars))
        return String(String.UnicodeScalarView(out))
    }

    /// Non-overlapping left-to-right replacement (Python's str.replace).
    static func replace(_ s: [Unicode.Scalar], _ pattern: [Unicode.Scalar], _ with: [Unicode.Scalar]) -> [Unicode.Scalar] {
        guard !pattern.isEmpty, s.count >= pattern.count else { return s }
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            if i + pattern.count <= s.count && s[i..<i + pattern.count].elementsEqual(pattern) {
                out += with
                i += pattern.count
            } else {
                out.append(s[i])
                i += 1
            }
        }
        return out
    }

    /// Python's whitespace (str.isspace): Unicode White_Space plus U+001C...U+001F.
    static func isPythonSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// Python's str.strip().
    public static func pythonStrip(_ text: String) -> String {
        let s = Array(text.unicodeScalars)
        guard let first = s.firstIndex(where: { !isPythonSpace($0) }) else { return "" }
        let last = s.lastIndex(where: { !isPythonSpace($0) })!
        return String(String.UnicodeScalarView(s[first...last]))
    }

    // MARK: loading

    /// Reads a jsonl file in this task's schema (README of the shared data).
    public func load(path: String) throws -> [TaskItem] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file"
            throw TaskError.cannotRead(path: path, reason: reason)
        }
        var items: [TaskItem] = []
        var lineNumber = 0
        for line in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let n = lineNumber
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            let fail = { (reason: String) in TaskError.badItem(path: path, line: n, reason: reason) }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else {
                throw fail("not a JSON object")
            }
            items.append(try item(object, line: n, fail: fail))
        }
        guard !items.isEmpty else { throw TaskError.empty(path: path) }
        return items
    }

    /// Parses one JSON object of this task's schema.
    func item(_ o: [String: Any], line: Int, fail: (String) -> TaskError) throws -> TaskItem {
        func string(_ key: String) throws -> String {
            guard let s = o[key] as? String else { throw fail("'\(key)' is missing or not a string (\(rawValue) schema)") }
            return s
        }
        func strings(_ value: Any?, _ key: String) throws -> [String] {
            guard let a = value as? [Any], let s = a as? [String] else { throw fail("'\(key)' is missing or not a list of strings") }
            return s
        }
        /// An integer label given as a number or a numeric string.
        func index(_ key: String, count: Int) throws -> Int {
            var value: Int?
            if let s = o[key] as? String { value = Int(s) } else if let n = o[key] as? NSNumber, let i = Int(exactly: n.doubleValue) { value = i }
            guard let v = value else { throw fail("'\(key)' is missing or not an integer") }
            guard (0..<count).contains(v) else { throw fail("'\(key)' \(v) is not in 0..<\(count)") }
            return v
        }
        let id = (o["id"] as? String) ?? (o["qID"] as? String) ?? (o["ind"].map { "\($0)" }) ?? String(line)
        switch self {
        case .piqa:
            let solutions = [try string("sol1"), try string("sol2")]
            return ZeroShotTask.piqa(id: id, goal: try string("goal"), solutions: solutions, label: try index("label", count: 2))
        case .arc_easy, .arc_challenge:
            guard let choices = o["choices"] as? [String: Any] else { throw fail("'choices' is missing or not an object") }
            let texts = try strings(choices["text"], "choices.text"), labels = try strings(choices["label"], "choices.label")
            guard texts.count == labels.count, texts.count >= 2 else { throw fail("'choices' needs as many labels as texts (at least 2)") }
            let key = try string("answerKey")
            guard let item = ZeroShotTask.arc(id: id, question: try string("question"), choices: texts, labels: labels, answerKey: key) else {
                throw fail("answerKey '\(key)' is not one of the labels \(labels)")
            }
            return item
        case .hellaswag:
            let endings = try strings(o["endings"], "endings")
            guard endings.count >= 2 else { throw fail("'endings' needs at least 2 entries") }
            return ZeroShotTask.hellaswag(id: id, context: try string("ctx"), endings: endings, label: try index("label", count: endings.count))
        case .winogrande:
            let options = [try string("option1"), try string("option2")]
            guard let answer = Int(try string("answer")), answer == 1 || answer == 2 else { throw fail("'answer' must be \"1\" or \"2\"") }
            guard let item = ZeroShotTask.winogrande(id: id, sentence: try string("sentence"), options: options, answer: answer - 1) else {
                throw fail("'sentence' has no '_' blank")
            }
            return item
        }
    }
}
