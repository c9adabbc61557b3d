import Core
import Foundation

// Values of the Jinja-subset interpreter used for chat templates (see ChatTemplate.swift).
// Semantics follow Python/jinja2 where chat templates observe them: truthiness, `str()`
// formatting, `==` across int/float/bool, insertion-ordered dicts.

/// An insertion-ordered string-keyed dictionary (Python dicts keep insertion order).
struct JinjaDict {
    private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    init() {}
    init(_ pairs: [(String, JinjaValue)]) { for (k, v) in pairs { self[k] = v } }

    subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let v = newValue {
                if storage.updateValue(v, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
    var count: Int { keys.count }
    var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0]!) } }
}

/// `namespace(...)` objects: the one mutable value kind (`{% set ns.x = ... %}`).
final class JinjaNamespace {
    var attributes = JinjaDict()
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

/// A callable: global functions (`range`, `namespace`, `raise_exception`...) and bound methods.
struct JinjaFunction {
    let name: String
    let call: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue
}

indirect enum JinjaValue {
    /// A missing variable/attribute; the string names it for error messages.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    case dict(JinjaDict)
    case namespace(JinjaNamespace)
    case function(JinjaFunction)

    var isUndefined: Bool { if case .undefined = self { return true }; return false }
    var isNone: Bool { if case .none = self { return true }; return false }

    /// Python truthiness.
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .function: return true
        }
    }

    /// Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .array: return "list"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .function: return "function"
        }
    }

    /// Numeric view (bool counts as int, as in Python).
    var number: Double? {
        switch self {
        case .bool(let b): return b ? 1 : 0
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    var integer: Int? {
        switch self {
        case .bool(let b): return b ? 1 : 0
        case .int(let i): return i
        default: return nil
        }
    }

    /// Python `str(value)`; what `{{ value }}` prints (undefined prints nothing).
    var pyStr: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pyRepr
        }
    }

    /// Python `repr(value)` (used inside list/dict `str()`).
    var pyRepr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return JinjaValue.pyFloat(d)
        case .string(let s): return JinjaValue.pyStringRepr(s)
        case .array(let a): return "[" + a.map { $0.pyRepr }.joined(separator: ", ") + "]"
        case .dict(let d):
            return "{" + d.pairs.map { JinjaValue.pyStringRepr($0.0) + ": " + $0.1.pyRepr }.joined(separator: ", ") + "}"
        case .namespace(let ns):
            return "<Namespace " + ns.attributes.pairs.map { "\($0.0)=\($0.1.pyRepr)" }.joined(separator: ", ") + ">"
        case .function(let f): return "<function \(f.name)>"
        }
    }

    static func pyFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
        return "\(d)"
    }

    static func pyStringRepr(_ s: String) -> String {
        let quote: Character = (s.contains("'") && !s.contains("\"")) ? "\"" : "'"
        var out = String(quote)
        for u in s.unicodeScalars {
            switch u {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(u) == quote { out += "\\" + String(quote) }
                else if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value) }
                else { out.unicodeScalars.append(u) }
            }
        }
        out.append(quote)
        return out
    }

    /// Python `==`.
    static func equal(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            return x.count == y.count && x.pairs.allSatisfy { k, v in y[k].map { equal(v, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        default:
            if let x = a.number, let y = b.number { return x == y }
            return false
        }
    }

    // MARK: JSON (HF transformers' `tojson`: json.dumps(ensure_ascii=False, sort_keys=False))

    func toJSON(indent: Int?, level: Int = 0) throws -> String {
        switch self {
        case .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d):
            if d.isNaN { return "NaN" }
            if d.isInfinite { return d > 0 ? "Infinity" : "-Infinity" }
            return JinjaValue.pyFloat(d)
        case .string(let s): return JSONText.quoted(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            let items = try a.map { try $0.toJSON(indent: indent, level: level + 1) }
            return JinjaValue.jsonContainer("[", "]", items, indent: indent, level: level)
        case .dict(let d):
            if d.count == 0 { return "{}" }
            let items = try d.pairs.map { try JSONText.quoted($0.0) + ": " + $0.1.toJSON(indent: indent, level: level + 1) }
            return JinjaValue.jsonContainer("{", "}", items, indent: indent, level: level)
        case .undefined, .namespace, .function:
            throw JinjaError.render("Object of type \(typeName) is not JSON serializable")
        }
    }

    private static func jsonContainer(_ open: String, _ close: String, _ items: [String], indent: Int?, level: Int) -> String {
        guard let indent = indent else { return open + items.joined(separator: ", ") + close }
        let inner = "\n" + String(repeating: " ", count: indent * (level + 1))
        let outer = "\n" + String(repeating: " ", count: indent * level)
        return open + inner + items.joined(separator: "," + inner) + outer + close
    }
}

/// Internal errors of the interpreter; ChatTemplate turns them into ChatTemplateError.
enum JinjaError: Error {
    case syntax(String, line: Int)
    case render(String)
    case unknownFilter(String, line: Int)
    case unknownTest(String, line: Int)
    /// `raise_exception(...)` called by the template itself.
    case raised(String)
}
