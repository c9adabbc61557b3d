import Core
import Foundation

// Parser for the Jinja subset: statements if/elif/else, for (with `if` filter, else, tuple
// targets), set (names, namespace attributes, block set), break/continue, generation (HF);
// expressions with jinja2's precedence: conditional < or < and < not < comparisons/in
// < + - < ~ < * / // % < ** < unary - + < postfix ([], ., call), filters `|` and tests `is`.

indirect enum JinjaExpr {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)], line: Int)
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool, line: Int)
    case not(JinjaExpr)
    case negate(JinjaExpr)
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case concat([JinjaExpr])
    case compare(JinjaExpr, [(String, JinjaExpr)])
    case conditional(JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
}

enum JinjaSetTarget {
    case names([String])
    case attribute(String, String)
}

indirect enum JinjaNode {
    case text(String)
    case output(JinjaExpr, line: Int)
    case ifChain([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], line: Int)
    case set(JinjaSetTarget, JinjaExpr, line: Int)
    case setBlock(String, [JinjaNode])
    case breakLoop
    case continueLoop
}

struct JinjaParser {
    private let toks: [JinjaToken]
    private var i = 0

    init(tokens: [JinjaToken]) { toks = tokens }

    static func parse(_ source: String) throws -> [JinjaNode] {
        var lexer = JinjaLexer(source)
        var parser = JinjaParser(tokens: try lexer.tokenize())
        return try parser.parseTemplate()
    }

    // MARK: token helpers

    private var cur: JinjaToken { toks[i] }
    private var next: JinjaToken { toks[min(i + 1, toks.count - 1)] }

    private func describe(_ k: JinjaToken.Kind) -> String {
        switch k {
        case .text: return "template text"
        case .varBegin: return "'{{'"
        case .varEnd: return "'}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "'%}'"
        case .name(let s): return "'\(s)'"
        case .string(let s): return "string '\(s)'"
        case .int(let v): return "'\(v)'"
        case .float(let v): return "'\(v)'"
        case .op(let s): return "'\(s)'"
        case .eof: return "end of template"
        }
    }

    private func fail(_ msg: String) -> JinjaError { .syntax(msg, line: cur.line) }

    private func isName(_ s: String) -> Bool { cur.kind == .name(s) }
    private func isOp(_ s: String) -> Bool { cur.kind == .op(s) }

    private mutating func skipName(_ s: String) -> Bool { if isName(s) { i += 1; return true }; return false }
    private mutating func skipOp(_ s: String) -> Bool { if isOp(s) { i += 1; return true }; return false }

    private mutating func expectOp(_ s: String) throws {
        guard skipOp(s) else { throw fail("expected '\(s)', found \(describe(cur.kind))") }
    }
    private mutating func expectName() throws -> String {
        guard case .name(let s) = cur.kind else { throw fail("expected a name, found \(describe(cur.kind))") }
        i += 1
        return s
    }
    private mutating func expectBlockEnd(_ tag: String) throws {
        guard cur.kind == .blockEnd else { throw fail("expected '%}' to end '\(tag)', found \(describe(cur.kind))") }
        i += 1
    }

    // MARK: statements

    mutating func parseTemplate() throws -> [JinjaNode] {
        let (nodes, _) = try parseBody(until: [], opener: nil)
        return nodes
    }

    /// Parses nodes up to a `{% name %}` with name in `enders` (consumes `{%` and the name).
    private mutating func parseBody(until enders: Set<String>, opener: (String, Int)?) throws -> ([JinjaNode], String) {
        var nodes: [JinjaNode] = []
        while true {
            switch cur.kind {
            case .eof:
                if let (tag, line) = opener {
                    let want = enders.sorted().map { "'\($0)'" }.joined(separator: " or ")
                    throw JinjaError.syntax("unexpected end of template: '\(tag)' opened on line \(line) is never closed (expected \(want))", line: cur.line)
                }
                return (nodes, "")
            case .text(let s):
                nodes.append(.text(s)); i += 1
            case .varBegin:
                let line = cur.line
                i += 1
                let e = try parseExpression()
                guard cur.kind == .varEnd else { throw fail("expected '}}', found \(describe(cur.kind))") }
                i += 1
                nodes.append(.output(e, line: line))
            case .blockBegin:
                if case .name(let s) = next.kind, enders.contains(s) {
                    i += 2
                    return (nodes, s)
                }
                i += 1
                if let node = try parseStatement() { nodes.append(node) }
            default:
                throw fail("unexpected \(describe(cur.kind))")
            }
        }
    }

    private mutating func parseStatement() throws -> JinjaNode? {
        let line = cur.line
        guard case .name(let tag) = cur.kind else { throw fail("expected a tag name after '{%', found \(describe(cur.kind))") }
        i += 1
        switch tag {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var cond = try parseExpression()
            var otherwise: [JinjaNode] = []
            while true {
                try expectBlockEnd(tag)
                let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: ("if", line))
                branches.append((cond, body))
                if end == "elif" { cond = try parseExpression(); continue }
                if end == "else" {
                    try expectBlockEnd("else")
                    (otherwise, _) = try parseBody(until: ["endif"], opener: ("if", line))
                }
                try expectBlockEnd("endif")
                return .ifChain(branches, otherwise: otherwise)
            }
        case "for":
            var targets: [String] = []
            let paren = skipOp("(")
            repeat { targets.append(try expectName()) } while skipOp(",")
            if paren { try expectOp(")") }
            guard skipName("in") else { throw fail("expected 'in' in 'for' tag, found \(describe(cur.kind))") }
            let iterable = try parseTupleOrExpression(withCondition: false)
            var filter: JinjaExpr? = nil
            if skipName("if") { filter = try parseExpression() }
            if isName("recursive") { throw fail("recursive for loops are not supported") }
            try expectBlockEnd("for")
            let (body, end) = try parseBody(until: ["else", "endfor"], opener: ("for", line))
            var otherwise: [JinjaNode] = []
            if end == "else" {
                try expectBlockEnd("else")
                (otherwise, _) = try parseBody(until: ["endfor"], opener: ("for", line))
            }
            try expectBlockEnd("endfor")
            return .forLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, line: line)
        case "set":
            let first = try expectName()
            var target = JinjaSetTarget.names([first])
            if skipOp(".") {
                target = .attribute(first, try expectName())
            } else if isOp(",") {
                var names = [first]
                while skipOp(",") { names.append(try expectName()) }
                target = .names(names)
            }
            if skipOp("=") {
                let value = try parseTupleOrExpression(withCondition: true)
                try expectBlockEnd("set")
                return .set(target, value, line: line)
            }
            guard case .names(let names) = target, names.count == 1, cur.kind == .blockEnd else {
                throw fail("expected '=' in 'set' tag, found \(describe(cur.kind))")
            }
            i += 1
            let (body, _) = try parseBody(until: ["endset"], opener: ("set", line))
            try expectBlockEnd("endset")
            return .setBlock(first, body)
        case "break", "continue":
            try expectBlockEnd(tag)
            return tag == "break" ? .breakLoop : .continueLoop
        case "generation":
            // HF transformers' AssistantTracker extension: renders its body unchanged.
            try expectBlockEnd(tag)
            let (body, _) = try parseBody(until: ["endgeneration"], opener: ("generation", line))
            try expectBlockEnd("endgeneration")
            return .ifChain([(.literal(.bool(true)), body)], otherwise: [])
        case "endif", "endfor", "else", "elif", "endset", "endgeneration":
            throw JinjaError.syntax("unexpected '\(tag)' tag (no matching opening tag)", line: line)
        case "macro", "call", "filter", "include", "import", "from", "extends", "block", "with", "autoescape", "do":
            throw JinjaError.syntax("unsupported tag '\(tag)'", line: line)
        default:
            throw JinjaError.syntax("unknown tag '\(tag)'", line: line)
        }
    }

    // MARK: expressions

    /// `a, b` without parentheses builds a tuple (used by `for ... in a, b` and `set x = a, b`).
    private mutating func parseTupleOrExpression(withCondition: Bool) throws -> JinjaExpr {
        let first = withCondition ? try parseExpression() : try parseOr()
        guard isOp(",") else { return first }
        var items = [first]
        while skipOp(",") {
            if cur.kind == .blockEnd { break }
            items.append(withCondition ? try parseExpression() : try parseOr())
        }
        return .list(items)
    }

    mutating func parseExpression() throws -> JinjaExpr {
        var e = try parseOr()
        while skipName("if") {
            let cond = try parseOr()
            var otherwise: JinjaExpr? = nil
            if skipName("else") { otherwise = try parseExpression() }
            e = .conditional(cond, then: e, otherwise: otherwise)
        }
        return e
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var e = try parseAnd()
        while skipName("or") { e = .or(e, try parseAnd()) }
        return e
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var e = try parseNot()
        while skipName("and") { e = .and(e, try parseNot()) }
        return e
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if skipName("not") { return .not(try parseNot()) }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        let left = try parseMath1()
        var ops: [(String, JinjaExpr)] = []
        while true {
            if case .op(let o) = cur.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                i += 1; ops.append((o, try parseMath1()))
            } else if isName("in") {
                i += 1; ops.append(("in", try parseMath1()))
            } else if isName("not"), next.kind == .name("in") {
                i += 2; ops.append(("notin", try parseMath1()))
            } else { break }
        }
        return ops.isEmpty ? left : .compare(left, ops)
    }

    private mutating func parseMath1() throws -> JinjaExpr {
        var e = try parseConcat()
        while case .op(let o) = cur.kind, o == "+" || o == "-" {
            i += 1; e = .binary(o, e, try parseConcat())
        }
        return e
    }

    private mutating func parseConcat() throws -> JinjaExpr {
        var items = [try parseMath2()]
        while skipOp("~") { items.append(try parseMath2()) }
        return items.count == 1 ? items[0] : .concat(items)
    }

    private mutating func parseMath2() throws -> JinjaExpr {
        var e = try parsePow()
        while case .op(let o) = cur.kind, ["*", "/", "//", "%"].contains(o) {
            i += 1; e = .binary(o, e, try parsePow())
        }
        return e
    }

    private mutating func parsePow() throws -> JinjaExpr {
        var e = try parseUnary(withFilter: true)
        while skipOp("**") { e = .binary("**", e, try parseUnary(withFilter: true)) }
        return e
    }

    private mutating func parseUnary(withFilter: Bool) throws -> JinjaExpr {
        var e: JinjaExpr
        if skipOp("-") {
            e = .negate(try parseUnary(withFilter: false))
        } else if skipOp("+") {
            e = try parseUnary(withFilter: false)
        } else {
            e = try parsePrimary()
        }
        e = try parsePostfix(e)
        if withFilter { e = try parseFilterExpr(e) }
        return e
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let t = cur
        switch t.kind {
        case .name(let s):
            i += 1
            switch s {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(s)
            }
        case .string(var s):
            i += 1
            while case .string(let more) = cur.kind { s += more; i += 1 }
            return .literal(.string(s))
        case .int(let v): i += 1; return .literal(.int(v))
        case .float(let v): i += 1; return .literal(.double(v))
        case .op("("):
            i += 1
            if skipOp(")") { return .list([]) }
            let e = try parseExpression()
            if isOp(",") {
                var items = [e]
                while skipOp(",") { if isOp(")") { break }; items.append(try parseExpression()) }
                try expectOp(")")
                return .list(items)
            }
            try expectOp(")")
            return e
        case .op("["):
            i += 1
            var items: [JinjaExpr] = []
            while !isOp("]") {
                items.append(try parseExpression())
                if !skipOp(",") { break }
            }
            try expectOp("]")
            return .list(items)
        case .op("{"):
            i += 1
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !isOp("}") {
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
                if !skipOp(",") { break }
            }
            try expectOp("}")
            return .dict(pairs)
        default:
            throw fail("unexpected \(describe(t.kind)) in expression")
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if skipOp(".") {
                switch cur.kind {
                case .name(let s): i += 1; e = .attribute(e, s)
                case .int(let v): i += 1; e = .item(e, .literal(.int(v)))
                default: throw fail("expected an attribute name after '.', found \(describe(cur.kind))")
                }
            } else if skipOp("[") {
                e = try parseSubscript(e)
            } else if isOp("(") {
                e = try parseCall(e)
            } else { return e }
        }
    }

    private mutating func parseSubscript(_ base: JinjaExpr) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var isSlice = false
        while !isOp("]") {
            if skipOp(":") {
                isSlice = true
                parts.append(nil)
                guard parts.count <= 3 else { throw fail("too many ':' in slice") }
                continue
            }
            guard parts[parts.count - 1] == nil else { throw fail("expected ']' or ':' in subscript, found \(describe(cur.kind))") }
            parts[parts.count - 1] = try parseExpression()
        }
        i += 1
        if !isSlice {
            guard let index = parts[0] else { throw fail("empty subscript '[]'") }
            return .item(base, index)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, parts[0], parts[1], parts[2])
    }

    private mutating func parseArgs() throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expectOp("(")
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while !isOp(")") {
            if case .name(let k) = cur.kind, next.kind == .op("=") {
                i += 2
                kwargs.append((k, try parseExpression()))
            } else {
                if !kwargs.isEmpty { throw fail("positional argument after keyword argument") }
                args.append(try parseExpression())
            }
            if !skipOp(",") { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    private mutating func parseCall(_ callee: JinjaExpr) throws -> JinjaExpr {
        let (args, kwargs) = try parseArgs()
        return .call(callee, args, kwargs)
    }

    private mutating func parseDottedName() throws -> String {
        var name = try expectName()
        while isOp("."), case .name(let more) = next.kind { i += 2; name += "." + more }
        return name
    }

    private mutating func parseFilterExpr(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if skipOp("|") {
                let line = cur.line
                let name = try parseDottedName()
                var args: [JinjaExpr] = []
                var kwargs: [(String, JinjaExpr)] = []
                if isOp("(") { (args, kwargs) = try parseArgs() }
                e = .filter(e, name, args, kwargs, line: line)
            } else if skipName("is") {
                let line = cur.line
                let negated = skipName("not")
                let name = try parseDottedName()
                var args: [JinjaExpr] = []
                if isOp("(") {
                    (args, _) = try parseArgs()
                } else {
                    var takesArg = false
                    switch cur.kind {
                    case .name(let s): takesArg = !["else", "or", "and", "if", "is", "not", "in"].contains(s)
                    case .string, .int, .float, .op("["), .op("{"): takesArg = true
                    default: break
                    }
                    if takesArg { args = [try parsePostfix(try parsePrimary())] }
                }
                e = .test(e, name, args, negated: negated, line: line)
            } else if isOp("(") {
                e = try parseCall(e)
            } else { return e }
        }
    }
}
