import Core
import Foundation

// Filters (`value | name(args)`) and tests (`value is name`) of the Jinja subset.

extension JinjaInterpreter {
    static let knownFilters: Set<String> = [
        "trim", "upper", "lower", "title", "capitalize", "string", "safe", "e", "escape", "length", "count",
        "default", "d", "first", "last", "list", "reverse", "join", "tojson", "items", "dictsort", "sort",
        "unique", "min", "max", "sum", "abs", "int", "float", "round", "replace", "indent", "wordcount", "map",
        "select", "reject", "selectattr", "rejectattr", "attr",
    ]
    static let knownTests: Set<String> = [
        "defined", "undefined", "none", "true", "false", "boolean", "string", "number", "integer", "float",
        "mapping", "iterable", "sequence", "callable", "even", "odd", "divisibleby", "eq", "equalto", "==",
        "ne", "!=", "sameas", "lt", "lessthan", "<", "gt", "greaterthan", ">", "le", "<=", "ge", ">=", "in",
        "lower", "upper",
    ]

    private func kwarg(_ kwargs: [(String, JinjaValue)], _ name: String) -> JinjaValue? {
        kwargs.first { $0.0 == name }?.1
    }

    /// Argument `index` positionally, else by keyword.
    private func arg(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ index: Int, _ name: String) -> JinjaValue? {
        index < args.count ? args[index] : kwarg(kwargs, name)
    }

    private func requireString(_ v: JinjaValue, _ filter: String) throws -> String {
        switch v {
        case .string(let s): return s
        case .undefined: throw JinjaError.render("filter '\(filter)' applied to an undefined value")
        default: return v.pyStr
        }
    }

    private func attributeOf(_ v: JinjaValue, _ path: String) -> JinjaValue {
        var cur = v
        for part in path.split(separator: ".") {
            switch cur {
            case .dict(let d): cur = d[String(part)] ?? .undefined(path)
            case .namespace(let ns): cur = ns.attributes[String(part)] ?? .undefined(path)
            case .array(let a):
                if let i = Int(part), i >= 0, i < a.count { cur = a[i] } else { cur = .undefined(path) }
            default: cur = .undefined(path)
            }
        }
        return cur
    }

    private func sortKey(_ a: JinjaValue, _ b: JinjaValue, caseSensitive: Bool) -> Bool {
        switch (a, b) {
        case (.string(let x), .string(let y)):
            let (p, q) = caseSensitive ? (x, y) : (x.lowercased(), y.lowercased())
            return Array(p.unicodeScalars).map { $0.value }.lexicographicallyPrecedes(Array(q.unicodeScalars).map { $0.value })
        default:
            if let x = a.number, let y = b.number { return x < y }
            return false
        }
    }

    mutating func applyFilter(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch name {
        case "trim":
            let chars: String? = { if case .string(let c)? = arg(args, kwargs, 0, "chars") { return c }; return nil }()
            return .string(JinjaInterpreter.pyStrip(try requireString(value, name), chars, left: true, right: true))
        case "upper": return .string(try requireString(value, name).uppercased())
        case "lower": return .string(try requireString(value, name).lowercased())
        case "title": return .string(JinjaInterpreter.pyTitle(try requireString(value, name)))
        case "capitalize":
            let s = try requireString(value, name)
            return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "string": return .string(value.pyStr)
        case "safe": return value
        case "e", "escape":
            var out = ""
            for ch in value.pyStr {
                switch ch {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&#34;"
                case "'": out += "&#39;"
                default: out.append(ch)
                }
            }
            return .string(out)
        case "length", "count":
            switch value {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .array(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            case .undefined: return .int(0)
            default: throw JinjaError.render("object of type '\(value.typeName)' has no len()")
            }
        case "default", "d":
            let fallback = arg(args, kwargs, 0, "default_value") ?? .string("")
            let boolean = arg(args, kwargs, 1, "boolean")?.truthy ?? false
            if value.isUndefined || (boolean && !value.truthy) { return fallback }
            return value
        case "first":
            let items = try iterate(value)
            return items.first ?? .undefined("first item of an empty sequence")
        case "last":
            let items = try iterate(value)
            return items.last ?? .undefined("last item of an empty sequence")
        case "list": return .array(try iterate(value))
        case "reverse":
            if case .string(let s) = value { return .string(String(s.unicodeScalars.reversed().map(Character.init))) }
            return .array(try iterate(value).reversed())
        case "join":
            let sep: String = { if case .string(let s)? = arg(args, kwargs, 0, "d") { return s }; return "" }()
            var items = try iterate(value)
            if case .string(let attr)? = arg(args, kwargs, 1, "attribute") { items = items.map { attributeOf($0, attr) } }
            return .string(items.map { $0.pyStr }.joined(separator: sep))
        case "tojson":
            let indent = arg(args, kwargs, 0, "indent")?.integer
            return .string(try value.toJSON(indent: indent))
        case "items":
            switch value {
            case .dict(let d): return .array(d.pairs.map { .array([.string($0.0), $0.1]) })
            case .undefined: return .array([])
            default: throw JinjaError.render("filter 'items' needs a mapping, got \(value.typeName)")
            }
        case "dictsort":
            guard case .dict(let d) = value else { throw JinjaError.render("filter 'dictsort' needs a mapping") }
            let byValue: Bool = { if case .string("value")? = arg(args, kwargs, 1, "by") { return true }; return false }()
            let reverse = arg(args, kwargs, 2, "reverse")?.truthy ?? false
            let caseSensitive = arg(args, kwargs, 0, "case_sensitive")?.truthy ?? false
            var pairs = d.pairs
            pairs.sort { byValue ? sortKey($0.1, $1.1, caseSensitive: caseSensitive) : sortKey(.string($0.0), .string($1.0), caseSensitive: caseSensitive) }
            if reverse { pairs.reverse() }
            return .array(pairs.map { .array([.string($0.0), $0.1]) })
        case "sort":
            let reverse = arg(args, kwargs, 0, "reverse")?.truthy ?? false
            let caseSensitive = arg(args, kwargs, 1, "case_sensitive")?.truthy ?? false
            let attr: String? = { if case .string(let a)? = arg(args, kwargs, 2, "attribute") { return a }; return nil }()
            var items = try iterate(value)
            items.sort { x, y in
                let (p, q) = attr.map { (attributeOf(x, $0), attributeOf(y, $0)) } ?? (x, y)
                return sortKey(p, q, caseSensitive: caseSensitive)
            }
            if reverse { items.reverse() }
            return .array(items)
        case "unique":
            var out: [JinjaValue] = []
            for item in try iterate(value) where !out.contains(where: { JinjaValue.equal($0, item) }) { out.append(item) }
            return .array(out)
        case "min", "max":
            let items = try iterate(value)
            guard var best = items.first else { return .undefined("\(name) of an empty sequence") }
            for item in items.dropFirst() {
                let less = sortKey(item, best, caseSensitive: false)
                if (name == "min" && less) || (name == "max" && sortKey(best, item, caseSensitive: false)) { best = item }
            }
            return best
        case "sum":
            var total: JinjaValue = .int(0)
            for item in try iterate(value) {
                if let x = total.integer, let y = item.integer { total = .int(x + y) }
                else if let x = total.number, let y = item.number { total = .double(x + y) }
                else { throw JinjaError.render("filter 'sum' needs numbers") }
            }
            return total
        case "abs":
            switch value {
            case .int(let i): return .int(abs(i))
            case .double(let d): return .double(abs(d))
            default: throw JinjaError.render("bad operand type for abs(): '\(value.typeName)'")
            }
        case "int":
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .int(Int(d))
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? Double(s).map { Int($0) } ?? (arg(args, kwargs, 0, "default")?.integer ?? 0))
            default: return arg(args, kwargs, 0, "default") ?? .int(0)
            }
        case "float":
            switch value {
            case .string(let s): return .double(Double(s.trimmingCharacters(in: .whitespaces)) ?? (arg(args, kwargs, 0, "default")?.number ?? 0))
            default: return .double(value.number ?? arg(args, kwargs, 0, "default")?.number ?? 0)
            }
        case "round":
            guard let x = value.number else { throw JinjaError.render("filter 'round' needs a number") }
            let precision = arg(args, kwargs, 0, "precision")?.integer ?? 0
            let p = pow(10.0, Double(precision))
            return .double((x * p).rounded(.toNearestOrEven) / p)
        case "replace":
            let s = try requireString(value, name)
            guard case .string(let old)? = arg(args, kwargs, 0, "old"), case .string(let new)? = arg(args, kwargs, 1, "new") else {
                throw JinjaError.render("filter 'replace' needs two string arguments")
            }
            return .string(s.replacingOccurrences(of: old, with: new))
        case "indent":
            let s = try requireString(value, name)
            let width: String = {
                switch arg(args, kwargs, 0, "width") {
                case .string(let w)?: return w
                case let v?: return String(repeating: " ", count: v.integer ?? 4)
                default: return "    "
                }
            }()
            let first = arg(args, kwargs, 1, "first")?.truthy ?? false
            let blank = arg(args, kwargs, 2, "blank")?.truthy ?? false
            var lines = s.components(separatedBy: "\n")
            for i in lines.indices where (i > 0 || first) && (blank || !lines[i].allSatisfy(\.isWhitespace)) {
                lines[i] = width + lines[i]
            }
            return .string(lines.joined(separator: "\n"))
        case "wordcount":
            return .int(JinjaInterpreter.pySplit(try requireString(value, name), nil, -1).count)
        case "map":
            let items = try iterate(value)
            if case .string(let attr)? = kwarg(kwargs, "attribute") {
                let dflt = kwarg(kwargs, "default")
                return .array(items.map { let v = attributeOf($0, attr); return v.isUndefined ? (dflt ?? v) : v })
            }
            guard case .string(let filterName)? = args.first else { throw JinjaError.render("filter 'map' needs a filter name or attribute=") }
            return .array(try items.map { try applyFilter(filterName, $0, Array(args.dropFirst()), []) })
        case "select", "reject":
            let items = try iterate(value)
            var out: [JinjaValue] = []
            for item in items {
                let ok: Bool
                if case .string(let testName)? = args.first { ok = try applyTest(testName, item, Array(args.dropFirst())) }
                else { ok = item.truthy }
                if ok == (name == "select") { out.append(item) }
            }
            return .array(out)
        case "selectattr", "rejectattr":
            guard case .string(let attr)? = args.first else { throw JinjaError.render("filter '\(name)' needs an attribute name") }
            var out: [JinjaValue] = []
            for item in try iterate(value) {
                let v = attributeOf(item, attr)
                let ok: Bool
                if args.count > 1, case .string(let testName) = args[1] { ok = try applyTest(testName, v, Array(args.dropFirst(2))) }
                else { ok = v.truthy }
                if ok == (name == "selectattr") { out.append(item) }
            }
            return .array(out)
        case "attr":
            guard case .string(let a)? = args.first else { throw JinjaError.render("filter 'attr' needs a name") }
            return attributeOf(value, a)
        default:
            throw JinjaError.unknownFilter(name, line: 0)
        }
    }

    func applyTest(_ name: String, _ value: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        func other() throws -> JinjaValue {
            guard let a = args.first else { throw JinjaError.render("test '\(name)' needs an argument") }
            return a
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": return value.isNone
        case "true": if case .bool(true) = value { return true }; return false
        case "false": if case .bool(false) = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "string": if case .string = value { return true }; return false
        case "number":
            switch value { case .int, .double, .bool: return true; default: return false }
        case "integer": if case .int = value { return true }; return false
        case "float": if case .double = value { return true }; return false
        case "mapping": if case .dict = value { return true }; return false
        case "iterable":
            switch value { case .array, .dict, .string: return true; default: return false }
        case "sequence":
            switch value { case .array, .dict, .string: return true; default: return false }
        case "callable": if case .function = value { return true }; return false
        case "even", "odd":
            guard let i = value.integer else { throw JinjaError.render("test '\(name)' needs an integer") }
            return (i % 2 == 0) == (name == "even")
        case "divisibleby":
            guard let i = value.integer, let d = try other().integer, d != 0 else { throw JinjaError.render("test 'divisibleby' needs integers") }
            return i % d == 0
        case "eq", "equalto", "==": return JinjaValue.equal(value, try other())
        case "ne", "!=": return !JinjaValue.equal(value, try other())
        case "sameas":
            let o = try other()
            switch (value, o) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "lt", "lessthan", "<", "gt", "greaterthan", ">", "le", "<=", "ge", ">=":
            guard let a = value.number, let b = try other().number else { throw JinjaError.render("test '\(name)' needs numbers") }
            switch name {
            case "lt", "lessthan", "<": return a < b
            case "gt", "greaterthan", ">": return a > b
            case "le", "<=": return a <= b
            default: return a >= b
            }
        case "in":
            switch try other() {
            case .array(let a): return a.contains { JinjaValue.equal($0, value) }
            case .string(let s): if case .string(let x) = value { return x.isEmpty || s.contains(x) }; return false
            case .dict(let d): if case .string(let k) = value { return d[k] != nil }; return false
            default: return false
            }
        case "lower": if case .string(let s) = value { return s.lowercased() == s }; return false
        case "upper": if case .string(let s) = value { return s.uppercased() == s }; return false
        default: throw JinjaError.unknownTest(name, line: 0)
        }
    }
}
