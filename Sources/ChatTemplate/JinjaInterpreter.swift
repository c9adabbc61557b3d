import Core
import Foundation

// Evaluator for the Jinja subset (see JinjaParser.swift). Behaviour mirrors jinja2's
// ImmutableSandboxedEnvironment as HF transformers configures it for chat templates:
// default (lenient) Undefined, HF's `tojson` (no key sorting, non-ASCII kept), globals
// `raise_exception`, `strftime_now`, `range`, `namespace`, `dict`.

struct JinjaInterpreter {
    /// Innermost scope last. Each for-loop iteration gets its own scope, so `set` inside a
    /// loop body is invisible after the iteration (jinja2 scoping; use namespace() to escape).
    private var scopes: [[String: JinjaValue]]
    /// Date used by `strftime_now` (local time, C locale, as Python's datetime.now().strftime).
    var now: Date

    private enum Flow { case normal, breakLoop, continueLoop }

    init(context: [String: JinjaValue], now: Date = Date()) {
        self.now = now
        scopes = [JinjaInterpreter.globals(), context]
    }

    mutating func render(_ nodes: [JinjaNode]) throws -> String {
        var out = ""
        _ = try exec(nodes, &out)
        return out
    }

    // MARK: statements

    private mutating func exec(_ nodes: [JinjaNode], _ out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let s):
                out += s
            case .output(let e, _):
                out += try eval(e).pyStr
            case .ifChain(let branches, let otherwise):
                var taken = false
                for (cond, body) in branches where try eval(cond).truthy {
                    taken = true
                    let f = try exec(body, &out)
                    if f != .normal { return f }
                    break
                }
                if !taken {
                    let f = try exec(otherwise, &out)
                    if f != .normal { return f }
                }
            case .forLoop(let targets, let iterableExpr, let filter, let body, let otherwise, _):
                let f = try execFor(targets: targets, iterableExpr: iterableExpr, filter: filter, body: body, otherwise: otherwise, &out)
                if f != .normal { return f }
            case .set(let target, let expr, _):
                let value = try eval(expr)
                try assign(target, value)
            case .setBlock(let name, let body):
                var captured = ""
                _ = try exec(body, &captured)
                scopes[scopes.count - 1][name] = .string(captured)
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            }
        }
        return .normal
    }

    private mutating func assign(_ target: JinjaSetTarget, _ value: JinjaValue) throws {
        switch target {
        case .names(let names):
            if names.count == 1 {
                scopes[scopes.count - 1][names[0]] = value
            } else {
                let items = try iterate(value)
                guard items.count == names.count else {
                    throw JinjaError.render("cannot unpack \(items.count) values into \(names.count) names")
                }
                for (n, v) in zip(names, items) { scopes[scopes.count - 1][n] = v }
            }
        case .attribute(let object, let attr):
            guard case .namespace(let ns) = lookup(object) else {
                throw JinjaError.render("cannot assign attribute '\(attr)' on '\(object)': only namespace() objects can be modified")
            }
            ns.attributes[attr] = value
        }
    }

    private mutating func execFor(targets: [String], iterableExpr: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode],
                                  otherwise: [JinjaNode], _ out: inout String) throws -> Flow {
        var items = try iterate(try eval(iterableExpr))
        func bind(_ item: JinjaValue, into scope: inout [String: JinjaValue]) throws {
            if targets.count == 1 {
                scope[targets[0]] = item
            } else {
                let parts = try iterate(item)
                guard parts.count == targets.count else {
                    throw JinjaError.render("cannot unpack \(parts.count) values into \(targets.count) loop variables")
                }
                for (n, v) in zip(targets, parts) { scope[n] = v }
            }
        }
        if let filter = filter {
            var kept: [JinjaValue] = []
            for item in items {
                var scope: [String: JinjaValue] = [:]
                try bind(item, into: &scope)
                scopes.append(scope)
                defer { scopes.removeLast() }
                if try eval(filter).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            return try exec(otherwise, &out)
        }
        let n = items.count
        for (idx, item) in items.enumerated() {
            var scope: [String: JinjaValue] = [:]
            try bind(item, into: &scope)
            var loop = JinjaDict()
            loop["index"] = .int(idx + 1)
            loop["index0"] = .int(idx)
            loop["revindex"] = .int(n - idx)
            loop["revindex0"] = .int(n - idx - 1)
            loop["first"] = .bool(idx == 0)
            loop["last"] = .bool(idx == n - 1)
            loop["length"] = .int(n)
            loop["depth"] = .int(1)
            loop["depth0"] = .int(0)
            loop["previtem"] = idx > 0 ? items[idx - 1] : .undefined("loop.previtem")
            loop["nextitem"] = idx + 1 < n ? items[idx + 1] : .undefined("loop.nextitem")
            loop["cycle"] = .function(JinjaFunction(name: "loop.cycle") { args, _ in
                guard !args.isEmpty else { throw JinjaError.render("loop.cycle() needs at least one argument") }
                return args[idx % args.count]
            })
            scope["loop"] = .dict(loop)
            scopes.append(scope)
            let f = try exec(body, &out)
            scopes.removeLast()
            if f == .breakLoop { break }
        }
        return .normal
    }

    // MARK: expressions

    private func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return .undefined(name)
    }

    private func undefinedError(_ v: JinjaValue) -> JinjaError {
        if case .undefined(let name) = v { return .render("'\(name)' is undefined") }
        return .render("value is undefined")
    }

    func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        switch v {
        case .undefined: return []
        case .array(let a): return a
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        default: throw JinjaError.render("'\(v.typeName)' object is not iterable")
        }
    }

    private mutating func eval(_ e: JinjaExpr) throws -> JinjaValue {
        switch e {
        case .literal(let v): return v
        case .name(let n): return lookup(n)
        case .list(let items): return .array(try items.map { try eval($0) })
        case .dict(let pairs):
            var d = JinjaDict()
            for (k, v) in pairs {
                let key = try eval(k)
                guard case .string(let ks) = key else { throw JinjaError.render("dict keys must be strings, got \(key.typeName)") }
                d[ks] = try eval(v)
            }
            return .dict(d)
        case .attribute(let objExpr, let name):
            return try getAttribute(try eval(objExpr), name, describe: objExpr)
        case .item(let objExpr, let keyExpr):
            let obj = try eval(objExpr)
            let key = try eval(keyExpr)
            return try getItem(obj, key, describe: objExpr)
        case .slice(let objExpr, let a, let b, let c):
            let obj = try eval(objExpr)
            let start = try a.map { try eval($0) }, stop = try b.map { try eval($0) }, step = try c.map { try eval($0) }
            return try slice(obj, start, stop, step)
        case .call(let calleeExpr, let argExprs, let kwargExprs):
            let callee = try eval(calleeExpr)
            let args = try argExprs.map { try eval($0) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1)) }
            guard case .function(let f) = callee else {
                if case .undefined(let n) = callee { throw JinjaError.render("'\(n)' is undefined (called as a function)") }
                throw JinjaError.render("'\(callee.typeName)' object is not callable")
            }
            return try f.call(args, kwargs)
        case .filter(let base, let name, let argExprs, let kwargExprs, _):
            let value = try eval(base)
            let args = try argExprs.map { try eval($0) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1)) }
            return try applyFilter(name, value, args, kwargs)
        case .test(let base, let name, let argExprs, let negated, _):
            let value = try eval(base)
            let args = try argExprs.map { try eval($0) }
            let r = try applyTest(name, value, args)
            return .bool(negated ? !r : r)
        case .not(let x): return .bool(!(try eval(x).truthy))
        case .negate(let x):
            switch try eval(x) {
            case .int(let i): return .int(-i)
            case .double(let d): return .double(-d)
            case .bool(let b): return .int(b ? -1 : 0)
            case let v: throw JinjaError.render("bad operand type for unary -: '\(v.typeName)'")
            }
        case .and(let a, let b):
            let l = try eval(a)
            return l.truthy ? try eval(b) : l
        case .or(let a, let b):
            let l = try eval(a)
            return l.truthy ? l : try eval(b)
        case .binary(let op, let a, let b):
            return try binary(op, try eval(a), try eval(b))
        case .concat(let items):
            var s = ""
            for item in items { s += try eval(item).pyStr }
            return .string(s)
        case .compare(let first, let ops):
            var left = try eval(first)
            for (op, rightExpr) in ops {
                let right = try eval(rightExpr)
                if !(try compare(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let cond, let then, let otherwise):
            if try eval(cond).truthy { return try eval(then) }
            if let o = otherwise { return try eval(o) }
            return .undefined("conditional expression")
        }
    }

    private func exprName(_ e: JinjaExpr) -> String {
        switch e {
        case .name(let n): return n
        case .attribute(let b, let a): return exprName(b) + "." + a
        case .item(let b, .literal(let k)): return exprName(b) + "[" + k.pyRepr + "]"
        default: return "expression"
        }
    }

    private func getAttribute(_ obj: JinjaValue, _ name: String, describe: JinjaExpr) throws -> JinjaValue {
        switch obj {
        case .undefined:
            throw JinjaError.render("'\(exprName(describe))' is undefined (reading attribute '\(name)')")
        case .dict(let d):
            if let m = JinjaInterpreter.dictMethod(d, name) { return m }
            return d[name] ?? .undefined("\(exprName(describe)).\(name)")
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined("\(exprName(describe)).\(name)")
        case .string(let s):
            return JinjaInterpreter.stringMethod(s, name) ?? .undefined("\(exprName(describe)).\(name)")
        case .array(let a):
            return JinjaInterpreter.listMethod(a, name) ?? .undefined("\(exprName(describe)).\(name)")
        default:
            return .undefined("\(exprName(describe)).\(name)")
        }
    }

    private func getItem(_ obj: JinjaValue, _ key: JinjaValue, describe: JinjaExpr) throws -> JinjaValue {
        switch (obj, key) {
        case (.undefined, _):
            throw JinjaError.render("'\(exprName(describe))' is undefined (reading item \(key.pyRepr))")
        case (.array(let a), _):
            guard let k = key.integer else {
                if case .string(let s) = key { return try getAttribute(obj, s, describe: describe) }
                throw JinjaError.render("list indices must be integers, not \(key.typeName)")
            }
            let idx = k < 0 ? a.count + k : k
            return idx >= 0 && idx < a.count ? a[idx] : .undefined("\(exprName(describe))[\(k)]")
        case (.string(let s), _):
            guard let k = key.integer else {
                if case .string(let name) = key { return try getAttribute(obj, name, describe: describe) }
                throw JinjaError.render("string indices must be integers, not \(key.typeName)")
            }
            let u = Array(s.unicodeScalars)
            let idx = k < 0 ? u.count + k : k
            return idx >= 0 && idx < u.count ? .string(String(u[idx])) : .undefined("\(exprName(describe))[\(k)]")
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
            return try getAttribute(obj, k, describe: describe)
        case (.namespace, .string(let k)):
            return try getAttribute(obj, k, describe: describe)
        default:
            return .undefined("\(exprName(describe))[\(key.pyRepr)]")
        }
    }

    private func slice(_ obj: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        func bound(_ v: JinjaValue?) throws -> Int? {
            guard let v = v, !v.isNone else { return nil }
            guard let i = v.integer else { throw JinjaError.render("slice indices must be integers or none") }
            return i
        }
        let st = try bound(step) ?? 1
        guard st != 0 else { throw JinjaError.render("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            var a = try bound(start), b = try bound(stop)
            if st > 0 {
                var lo = a ?? 0, hi = b ?? count
                if lo < 0 { lo = max(0, lo + count) }; if hi < 0 { hi = max(0, hi + count) }
                lo = min(lo, count); hi = min(hi, count)
                return lo < hi ? Array(stride(from: lo, to: hi, by: st)) : []
            } else {
                if let x = a { a = x < 0 ? max(-1, x + count) : min(x, count - 1) }
                if let y = b { b = y < 0 ? max(-1, y + count) : min(y, count - 1) }
                let hi = a ?? count - 1, lo = b ?? -1
                return hi > lo ? Array(stride(from: hi, to: lo, by: st)) : []
            }
        }
        switch obj {
        case .array(let arr): return .array(try indices(arr.count).map { arr[$0] })
        case .string(let s):
            let u = Array(s.unicodeScalars)
            var r = String.UnicodeScalarView()
            for i in try indices(u.count) { r.append(u[i]) }
            return .string(String(r))
        case .undefined: throw undefinedError(obj)
        default: throw JinjaError.render("'\(obj.typeName)' object is not subscriptable")
        }
    }

    private func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        func typeError() -> JinjaError {
            if a.isUndefined { return undefinedError(a) }
            if b.isUndefined { return undefinedError(b) }
            return .render("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)): return .string(x + y)
        case ("+", .array(let x), .array(let y)): return .array(x + y)
        case ("*", .string(let x), _) where b.integer != nil: return .string(String(repeating: x, count: max(0, b.integer!)))
        case ("*", .array(let x), _) where b.integer != nil:
            return .array(Array([[JinjaValue]](repeating: x, count: max(0, b.integer!)).joined()))
        default: break
        }
        if let x = a.integer, let y = b.integer {
            switch op {
            case "+": return .int(x + y)
            case "-": return .int(x - y)
            case "*": return .int(x * y)
            case "/":
                guard y != 0 else { throw JinjaError.render("division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                guard y != 0 else { throw JinjaError.render("integer division or modulo by zero") }
                let q = x / y
                return .int((x % y != 0 && ((x < 0) != (y < 0))) ? q - 1 : q)
            case "%":
                guard y != 0 else { throw JinjaError.render("integer division or modulo by zero") }
                let r = x % y
                return .int(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
            case "**":
                if y >= 0 { var r = 1; for _ in 0..<y { r *= x }; return .int(r) }
                return .double(pow(Double(x), Double(y)))
            default: break
            }
        }
        if let x = a.number, let y = b.number {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw JinjaError.render("division by zero") }
                return .double(x / y)
            case "//":
                guard y != 0 else { throw JinjaError.render("float floor division by zero") }
                return .double((x / y).rounded(.down))
            case "%":
                guard y != 0 else { throw JinjaError.render("float modulo") }
                let r = x.truncatingRemainder(dividingBy: y)
                return .double(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw typeError()
    }

    private func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        switch op {
        case "==": return JinjaValue.equal(a, b)
        case "!=": return !JinjaValue.equal(a, b)
        case "in": return try contains(b, a)
        case "notin": return !(try contains(b, a))
        default:
            let c = try order(a, b, op)
            switch op {
            case "<": return c < 0
            case ">": return c > 0
            case "<=": return c <= 0
            default: return c >= 0
            }
        }
    }

    /// Python ordering for numbers, strings (by code point) and lists.
    private func order(_ a: JinjaValue, _ b: JinjaValue, _ op: String) throws -> Int {
        if let x = a.number, let y = b.number { return x < y ? -1 : (x > y ? 1 : 0) }
        switch (a, b) {
        case (.string(let x), .string(let y)):
            let ux = Array(x.unicodeScalars).map { $0.value }, uy = Array(y.unicodeScalars).map { $0.value }
            return ux.lexicographicallyPrecedes(uy) ? -1 : (ux == uy ? 0 : 1)
        case (.array(let x), .array(let y)):
            for (p, q) in zip(x, y) where !JinjaValue.equal(p, q) { return try order(p, q, op) }
            return x.count < y.count ? -1 : (x.count > y.count ? 1 : 0)
        default:
            if a.isUndefined { throw undefinedError(a) }
            if b.isUndefined { throw undefinedError(b) }
            throw JinjaError.render("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
        }
    }

    private func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else { throw JinjaError.render("'in <string>' requires string as left operand, not \(item.typeName)") }
            return sub.isEmpty || s.contains(sub)
        case .array(let a): return a.contains { JinjaValue.equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d[k] != nil }
            return false
        case .undefined: return false
        default: throw JinjaError.render("argument of type '\(container.typeName)' is not iterable")
        }
    }

    // MARK: globals

    private static func globals() -> [String: JinjaValue] {
        var g: [String: JinjaValue] = [:]
        g["raise_exception"] = .function(JinjaFunction(name: "raise_exception") { args, _ in
            throw JinjaError.raised(args.first?.pyStr ?? "raise_exception() called")
        })
        g["range"] = .function(JinjaFunction(name: "range") { args, _ in
            let ints = try args.map { (v: JinjaValue) -> Int in
                guard let i = v.integer else { throw JinjaError.render("range() arguments must be integers") }
                return i
            }
            let (start, stop, step): (Int, Int, Int)
            switch ints.count {
            case 1: (start, stop, step) = (0, ints[0], 1)
            case 2: (start, stop, step) = (ints[0], ints[1], 1)
            case 3: (start, stop, step) = (ints[0], ints[1], ints[2])
            default: throw JinjaError.render("range() takes 1 to 3 arguments")
            }
            guard step != 0 else { throw JinjaError.render("range() step must not be zero") }
            guard (stop - start) / step <= 100_000 else { throw JinjaError.render("range() too large") }
            return .array(stride(from: start, to: stop, by: step).map { .int($0) })
        })
        g["namespace"] = .function(JinjaFunction(name: "namespace") { args, kwargs in
            var d = JinjaDict()
            for a in args { if case .dict(let init0) = a { for (k, v) in init0.pairs { d[k] = v } } }
            for (k, v) in kwargs { d[k] = v }
            return .namespace(JinjaNamespace(d))
        })
        g["dict"] = .function(JinjaFunction(name: "dict") { args, kwargs in
            var d = JinjaDict()
            for a in args { if case .dict(let init0) = a { for (k, v) in init0.pairs { d[k] = v } } }
            for (k, v) in kwargs { d[k] = v }
            return .dict(d)
        })
        return g
    }

    /// Installs `strftime_now(format)` bound to `now`.
    static func strftimeFunction(now: Date) -> JinjaValue {
        .function(JinjaFunction(name: "strftime_now") { args, _ in
            guard case .string(let fmt)? = args.first else { throw JinjaError.render("strftime_now() needs a format string") }
            return .string(strftime(fmt, now))
        })
    }

    /// C strftime in the C locale and local time zone (what Python's datetime.strftime produces).
    static func strftime(_ format: String, _ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [Int8](repeating: 0, count: 512)
        let n = Foundation.strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension JinjaInterpreter {
    // MARK: methods

    private static func method(_ name: String, _ body: @escaping ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) -> JinjaValue {
        .function(JinjaFunction(name: name, call: body))
    }

    static func dictMethod(_ d: JinjaDict, _ name: String) -> JinjaValue? {
        switch name {
        case "items": return method(name) { _, _ in .array(d.pairs.map { .array([.string($0.0), $0.1]) }) }
        case "keys": return method(name) { _, _ in .array(d.keys.map { .string($0) }) }
        case "values": return method(name) { _, _ in .array(d.pairs.map { $0.1 }) }
        case "get": return method(name) { args, _ in
            guard case .string(let k)? = args.first else { return args.count > 1 ? args[1] : .none }
            return d[k] ?? (args.count > 1 ? args[1] : .none)
        }
        default: return nil
        }
    }

    static func listMethod(_ a: [JinjaValue], _ name: String) -> JinjaValue? {
        switch name {
        case "index": return method(name) { args, _ in
            guard let x = args.first, let i = a.firstIndex(where: { JinjaValue.equal($0, x) }) else {
                throw JinjaError.render("list.index(x): x not in list")
            }
            return .int(i)
        }
        case "count": return method(name) { args, _ in
            guard let x = args.first else { return .int(0) }
            return .int(a.filter { JinjaValue.equal($0, x) }.count)
        }
        default: return nil
        }
    }

    static func isPyWhitespace(_ u: Unicode.Scalar) -> Bool {
        u.properties.isWhitespace || (u.value >= 0x1C && u.value <= 0x1F)
    }

    static func pyStrip(_ s: String, _ chars: String?, left: Bool, right: Bool) -> String {
        let u = Array(s.unicodeScalars)
        let set = chars.map { Set($0.unicodeScalars) }
        func strip(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isPyWhitespace(c) }
        var lo = 0, hi = u.count
        if left { while lo < hi && strip(u[lo]) { lo += 1 } }
        if right { while hi > lo && strip(u[hi - 1]) { hi -= 1 } }
        var r = String.UnicodeScalarView()
        r.append(contentsOf: u[lo..<hi])
        return String(r)
    }

    static func pySplit(_ s: String, _ sep: String?, _ maxsplit: Int) -> [String] {
        if let sep = sep {
            var parts: [String] = []
            var rest = Substring(s)
            while maxsplit < 0 || parts.count < maxsplit, let r = rest.range(of: sep) {
                parts.append(String(rest[..<r.lowerBound]))
                rest = rest[r.upperBound...]
            }
            parts.append(String(rest))
            return parts
        }
        var parts: [String] = []
        var current = String.UnicodeScalarView()
        var inWord = false
        let u = Array(s.unicodeScalars)
        var i = 0
        while i < u.count {
            let c = u[i]
            if isPyWhitespace(c) {
                if inWord { parts.append(String(current)); current = String.UnicodeScalarView(); inWord = false }
                i += 1
                if maxsplit >= 0 && parts.count >= maxsplit {
                    while i < u.count && isPyWhitespace(u[i]) { i += 1 }
                    if i < u.count {
                        var r = String.UnicodeScalarView(); r.append(contentsOf: u[i...])
                        parts.append(pyStrip(String(r), nil, left: false, right: true))
                    }
                    return parts
                }
            } else {
                current.append(c); inWord = true; i += 1
            }
        }
        if inWord { parts.append(String(current)) }
        return parts
    }

    static func pyTitle(_ s: String) -> String {
        var out = ""
        var prevCased = false
        for ch in s {
            let cased = ch.isLetter
            out += cased ? (prevCased ? ch.lowercased() : ch.uppercased()) : String(ch)
            prevCased = cased
        }
        return out
    }

    static func stringMethod(_ s: String, _ name: String) -> JinjaValue? {
        func str(_ args: [JinjaValue], _ i: Int) throws -> String? {
            guard i < args.count else { return nil }
            if args[i].isNone { return nil }
            guard case .string(let v) = args[i] else { throw JinjaError.render("str.\(name)() argument must be a string, not \(args[i].typeName)") }
            return v
        }
        func prefixes(_ args: [JinjaValue]) throws -> [String] {
            switch args.first {
            case .string(let p)?: return [p]
            case .array(let a)?: return try a.map { guard case .string(let p) = $0 else { throw JinjaError.render("str.\(name)() tuple items must be strings") }; return p }
            default: throw JinjaError.render("str.\(name)() needs a string argument")
            }
        }
        switch name {
        case "strip": return method(name) { a, _ in .string(pyStrip(s, try str(a, 0), left: true, right: true)) }
        case "lstrip": return method(name) { a, _ in .string(pyStrip(s, try str(a, 0), left: true, right: false)) }
        case "rstrip": return method(name) { a, _ in .string(pyStrip(s, try str(a, 0), left: false, right: true)) }
        case "upper": return method(name) { _, _ in .string(s.uppercased()) }
        case "lower": return method(name) { _, _ in .string(s.lowercased()) }
        case "title": return method(name) { _, _ in .string(pyTitle(s)) }
        case "capitalize": return method(name) { _, _ in .string(s.prefix(1).uppercased() + s.dropFirst().lowercased()) }
        case "startswith": return method(name) { a, _ in .bool(try prefixes(a).contains { s.unicodeScalars.starts(with: $0.unicodeScalars) }) }
        case "endswith": return method(name) { a, _ in
            .bool(try prefixes(a).contains { Array(s.unicodeScalars).reversed().starts(with: Array($0.unicodeScalars).reversed()) })
        }
        case "split": return method(name) { a, kw in
            var sep = try str(a, 0)
            var maxsplit = a.count > 1 ? (a[1].integer ?? -1) : -1
            for (k, v) in kw {
                if k == "sep", case .string(let x) = v { sep = x }
                if k == "maxsplit", let m = v.integer { maxsplit = m }
            }
            if sep == "" { throw JinjaError.render("empty separator") }
            return .array(pySplit(s, sep, maxsplit).map { .string($0) })
        }
        case "replace": return method(name) { a, _ in
            guard let old = try str(a, 0), let new = try str(a, 1) else { throw JinjaError.render("str.replace() needs 2 arguments") }
            let count = a.count > 2 ? (a[2].integer ?? -1) : -1
            if count < 0 { return .string(s.replacingOccurrences(of: old, with: new)) }
            var parts = pySplit(s, old, count)
            if parts.isEmpty { parts = [s] }
            return .string(parts.joined(separator: new))
        }
        case "find": return method(name) { a, _ in
            guard let sub = try str(a, 0) else { throw JinjaError.render("str.find() needs an argument") }
            guard let r = s.range(of: sub) else { return .int(-1) }
            return .int(s.unicodeScalars.distance(from: s.startIndex, to: r.lowerBound))
        }
        case "count": return method(name) { a, _ in
            guard let sub = try str(a, 0), !sub.isEmpty else { return .int(s.unicodeScalars.count + 1) }
            return .int(pySplit(s, sub, -1).count - 1)
        }
        case "join": return method(name) { a, _ in
            guard case .array(let items)? = a.first else { throw JinjaError.render("str.join() needs a list") }
            return .string(try items.map { guard case .string(let x) = $0 else { throw JinjaError.render("str.join(): expected str instance, \($0.typeName) found") }; return x }.joined(separator: s))
        }
        case "isspace": return method(name) { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(isPyWhitespace)) }
        case "isdigit": return method(name) { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType != nil }) }
        case "isalpha": return method(name) { _, _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic }) }
        case "islower": return method(name) { _, _ in .bool(s.lowercased() == s && s.uppercased() != s) }
        case "isupper": return method(name) { _, _ in .bool(s.uppercased() == s && s.lowercased() != s) }
        default: return nil
        }
    }
}
