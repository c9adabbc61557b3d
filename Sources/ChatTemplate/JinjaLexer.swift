import Core
import Foundation

// Template lexer with the whitespace rules of the environment HF transformers renders chat
// templates in: jinja2 with trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False.
//  - `{%-`/`{{-`/`{#-` strip all whitespace before the tag; `-%}`/`-}}`/`-#}` all after it.
//  - trim_blocks: one newline directly after `%}`/`#}` is dropped (`+%}` keeps it).
//  - lstrip_blocks: spaces/tabs between a line start and `{%`/`{#` are dropped (`{%+` keeps them).
//  - A single trailing newline of the template source is dropped; \r\n and \r become \n.

struct JinjaToken {
    enum Kind: Equatable {
        case text(String)
        case varBegin, varEnd, blockBegin, blockEnd
        case name(String)
        case string(String)
        case int(Int)
        case float(Double)
        case op(String)
        case eof
    }
    var kind: Kind
    var line: Int
}

struct JinjaLexer {
    private let b: [UInt8]
    private var pos = 0
    private var lineCursor = 0
    private var lineAtCursor = 1
    private var tokens: [JinjaToken] = []
    var trimBlocks = true
    var lstripBlocks = true

    init(_ source: String) {
        var s = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if s.hasSuffix("\n") { s.removeLast() }
        b = Array(s.utf8)
    }

    private static func isWS(_ c: UInt8) -> Bool { c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D || c == 0x0B || c == 0x0C }
    private static func isNameStart(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || c == 0x5F }
    private static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    /// Line number of a byte offset; offsets are asked for in increasing order.
    private mutating func line(at p: Int) -> Int {
        if p < lineCursor { lineCursor = 0; lineAtCursor = 1 }
        while lineCursor < min(p, b.count) {
            if b[lineCursor] == 0x0A { lineAtCursor += 1 }
            lineCursor += 1
        }
        return lineAtCursor
    }

    private func matches(_ s: String, at p: Int) -> Bool {
        let u = Array(s.utf8)
        guard p + u.count <= b.count else { return false }
        for i in 0..<u.count where b[p + i] != u[i] { return false }
        return true
    }

    private func string(_ r: Range<Int>) -> String { String(decoding: b[r], as: UTF8.self) }

    private mutating func emit(_ k: JinjaToken.Kind, at p: Int) { tokens.append(JinjaToken(kind: k, line: line(at: p))) }

    private mutating func fail(_ msg: String, at p: Int) -> JinjaError { .syntax(msg, line: line(at: p)) }

    mutating func tokenize() throws -> [JinjaToken] {
        let n = b.count
        var lineStarting = true
        while pos < n {
            // Next tag opener.
            var start = pos
            var opener: UInt8 = 0
            while start + 1 < n {
                if b[start] == UInt8(ascii: "{") {
                    let c = b[start + 1]
                    if c == UInt8(ascii: "{") || c == UInt8(ascii: "%") || c == UInt8(ascii: "#") { opener = c; break }
                }
                start += 1
            }
            if opener == 0 {
                emit(.text(string(pos..<n)), at: pos)
                pos = n
                break
            }
            var p = start + 2
            var sign: UInt8 = 0
            if p < n && (b[p] == UInt8(ascii: "-") || b[p] == UInt8(ascii: "+")) { sign = b[p]; p += 1 }
            var textEnd = start
            if sign == UInt8(ascii: "-") {
                while textEnd > pos && JinjaLexer.isWS(b[textEnd - 1]) { textEnd -= 1 }
            } else if sign != UInt8(ascii: "+") && opener != UInt8(ascii: "{") && lstripBlocks {
                var lpos = textEnd
                while lpos > pos && b[lpos - 1] != 0x0A { lpos -= 1 }
                if (lpos > pos || lineStarting) && lpos < textEnd && b[lpos..<textEnd].allSatisfy(JinjaLexer.isWS) {
                    textEnd = lpos
                }
            }
            if textEnd > pos { emit(.text(string(pos..<textEnd)), at: pos) }

            if opener == UInt8(ascii: "#") {
                var e = p
                while e + 1 < n && !(b[e] == UInt8(ascii: "#") && b[e + 1] == UInt8(ascii: "}")) { e += 1 }
                guard e + 1 < n else { throw fail("missing end of comment tag '#}'", at: start) }
                var end = e + 2
                if e > p && b[e - 1] == UInt8(ascii: "-") {
                    while end < n && JinjaLexer.isWS(b[end]) { end += 1 }
                } else if e > p && b[e - 1] == UInt8(ascii: "+") {
                } else if trimBlocks && end < n && b[end] == 0x0A {
                    end += 1
                }
                lineStarting = b[end - 1] == 0x0A
                pos = end
                continue
            }

            if opener == UInt8(ascii: "%"), let rawEnd = rawBlockBody(from: p) {
                // {% raw %}...{% endraw %}: the body is literal text.
                pos = rawEnd.bodyStart
                var bodyEnd = rawEnd.bodyEnd
                if rawEnd.endSign == UInt8(ascii: "-") {
                    while bodyEnd > pos && JinjaLexer.isWS(b[bodyEnd - 1]) { bodyEnd -= 1 }
                }
                if bodyEnd > pos { emit(.text(string(pos..<bodyEnd)), at: pos) }
                pos = rawEnd.after
                lineStarting = b[pos - 1] == 0x0A
                continue
            }

            let isBlock = opener == UInt8(ascii: "%")
            emit(isBlock ? .blockBegin : .varBegin, at: start)
            pos = p
            lineStarting = try lexTagBody(isBlock: isBlock, openedAt: start)
        }
        emit(.eof, at: n)
        return tokens
    }

    /// If the block tag starting at `p` (after `{%` and its sign) is `raw`, locates its body.
    private func rawBlockBody(from p: Int) -> (bodyStart: Int, bodyEnd: Int, endSign: UInt8, after: Int)? {
        let n = b.count
        var q = p
        while q < n && JinjaLexer.isWS(b[q]) { q += 1 }
        guard matches("raw", at: q) else { return nil }
        q += 3
        while q < n && JinjaLexer.isWS(b[q]) { q += 1 }
        var bodyStart: Int
        if matches("-%}", at: q) {
            bodyStart = q + 3
            while bodyStart < n && JinjaLexer.isWS(b[bodyStart]) { bodyStart += 1 }
        } else if matches("%}", at: q) {
            bodyStart = q + 2
        } else { return nil }
        var s = bodyStart
        while s + 1 < n {
            if b[s] == UInt8(ascii: "{") && b[s + 1] == UInt8(ascii: "%") {
                var t = s + 2
                var sign: UInt8 = 0
                if t < n && (b[t] == UInt8(ascii: "-") || b[t] == UInt8(ascii: "+")) { sign = b[t]; t += 1 }
                while t < n && JinjaLexer.isWS(b[t]) { t += 1 }
                if matches("endraw", at: t) {
                    t += 6
                    while t < n && JinjaLexer.isWS(b[t]) { t += 1 }
                    var after: Int
                    if matches("-%}", at: t) {
                        after = t + 3
                        while after < n && JinjaLexer.isWS(b[after]) { after += 1 }
                    } else if matches("+%}", at: t) {
                        after = t + 3
                    } else if matches("%}", at: t) {
                        after = t + 2
                        if trimBlocks && after < n && b[after] == 0x0A { after += 1 }
                    } else { s += 1; continue }
                    return (bodyStart, s, sign, after)
                }
            }
            s += 1
        }
        return nil
    }

    /// Lexes the expression tokens of a `{{ }}` or `{% %}` tag through its end marker.
    /// Returns whether the consumed end (with trimmed whitespace) ended a line.
    private mutating func lexTagBody(isBlock: Bool, openedAt: Int) throws -> Bool {
        let n = b.count
        var depth = 0
        while true {
            while pos < n && JinjaLexer.isWS(b[pos]) { pos += 1 }
            guard pos < n else {
                throw fail(isBlock ? "unexpected end of template: missing '%}' for the tag opened here"
                                   : "unexpected end of template: missing '}}' for the tag opened here", at: openedAt)
            }
            if depth == 0 {
                if isBlock {
                    if matches("-%}", at: pos) {
                        emit(.blockEnd, at: pos); pos += 3
                        while pos < n && JinjaLexer.isWS(b[pos]) { pos += 1 }
                        return b[pos - 1] == 0x0A
                    }
                    if matches("+%}", at: pos) { emit(.blockEnd, at: pos); pos += 3; return false }
                    if matches("%}", at: pos) {
                        emit(.blockEnd, at: pos); pos += 2
                        if trimBlocks && pos < n && b[pos] == 0x0A { pos += 1; return true }
                        return false
                    }
                } else {
                    if matches("-}}", at: pos) {
                        emit(.varEnd, at: pos); pos += 3
                        while pos < n && JinjaLexer.isWS(b[pos]) { pos += 1 }
                        return b[pos - 1] == 0x0A
                    }
                    if matches("}}", at: pos) { emit(.varEnd, at: pos); pos += 2; return false }
                }
            }
            let c = b[pos]
            let start = pos
            if JinjaLexer.isNameStart(c) {
                while pos < n && (JinjaLexer.isNameStart(b[pos]) || JinjaLexer.isDigit(b[pos])) { pos += 1 }
                emit(.name(string(start..<pos)), at: start)
            } else if JinjaLexer.isDigit(c) {
                try lexNumber()
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                try lexString(quote: c)
            } else {
                let two = pos + 1 < n ? string(pos..<pos + 2) : ""
                if ["//", "**", "==", "!=", ">=", "<="].contains(two) {
                    emit(.op(two), at: pos); pos += 2
                } else if "+-*/%~<>=()[]{}.,:|".utf8.contains(c) {
                    if c == UInt8(ascii: "(") || c == UInt8(ascii: "[") || c == UInt8(ascii: "{") { depth += 1 }
                    if c == UInt8(ascii: ")") || c == UInt8(ascii: "]") || c == UInt8(ascii: "}") {
                        if depth == 0 { throw fail("unexpected '\(Character(Unicode.Scalar(c)))'", at: pos) }
                        depth -= 1
                    }
                    emit(.op(String(Character(Unicode.Scalar(c)))), at: pos); pos += 1
                } else {
                    let ch = String(decoding: b[pos..<min(n, pos + 1)], as: UTF8.self)
                    throw fail("unexpected character '\(ch)' in tag", at: pos)
                }
            }
        }
    }

    private mutating func lexNumber() throws {
        let n = b.count
        let start = pos
        func digits() { while pos < n && (JinjaLexer.isDigit(b[pos]) || (b[pos] == UInt8(ascii: "_") && pos + 1 < n && JinjaLexer.isDigit(b[pos + 1]))) { pos += 1 } }
        digits()
        var isFloat = false
        if pos + 1 < n && b[pos] == UInt8(ascii: ".") && JinjaLexer.isDigit(b[pos + 1]) {
            isFloat = true; pos += 1; digits()
        }
        if pos < n && (b[pos] == UInt8(ascii: "e") || b[pos] == UInt8(ascii: "E")) {
            var q = pos + 1
            if q < n && (b[q] == UInt8(ascii: "+") || b[q] == UInt8(ascii: "-")) { q += 1 }
            if q < n && JinjaLexer.isDigit(b[q]) { isFloat = true; pos = q; digits() }
        }
        let text = string(start..<pos).replacingOccurrences(of: "_", with: "")
        if isFloat {
            guard let d = Double(text) else { throw fail("invalid number '\(text)'", at: start) }
            emit(.float(d), at: start)
        } else {
            guard let i = Int(text) else { throw fail("invalid integer '\(text)'", at: start) }
            emit(.int(i), at: start)
        }
    }

    /// String literal with Python escapes (\n \t \r \\ \' \" \xHH \uHHHH \UHHHHHHHH, octal);
    /// unknown escapes keep their backslash, as in Python.
    private mutating func lexString(quote: UInt8) throws {
        let n = b.count
        let start = pos
        pos += 1
        var bytes: [UInt8] = []
        func appendScalar(_ v: UInt32) { if let u = Unicode.Scalar(v) { bytes.append(contentsOf: Array(String(Character(u)).utf8)) } }
        while true {
            guard pos < n else { throw fail("unterminated string literal", at: start) }
            let c = b[pos]
            if c == quote { pos += 1; break }
            if c == UInt8(ascii: "\\") && pos + 1 < n {
                let e = b[pos + 1]
                pos += 2
                switch e {
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "a"): bytes.append(0x07)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "v"): bytes.append(0x0B)
                case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): bytes.append(e)
                case 0x0A: break  // line continuation
                case UInt8(ascii: "x"), UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let len = e == UInt8(ascii: "x") ? 2 : (e == UInt8(ascii: "u") ? 4 : 8)
                    guard pos + len <= n, let v = UInt32(string(pos..<pos + len), radix: 16) else {
                        throw fail("invalid \\\(Character(Unicode.Scalar(e))) escape in string literal", at: pos)
                    }
                    appendScalar(v); pos += len
                case UInt8(ascii: "0")...UInt8(ascii: "7"):
                    var v = UInt32(e - 0x30)
                    var k = 0
                    while k < 2 && pos < n && b[pos] >= 0x30 && b[pos] <= 0x37 { v = v * 8 + UInt32(b[pos] - 0x30); pos += 1; k += 1 }
                    appendScalar(v)
                default: bytes.append(UInt8(ascii: "\\")); bytes.append(e)
                }
                continue
            }
            bytes.append(c); pos += 1
        }
        emit(.string(String(decoding: bytes, as: UTF8.self)), at: start)
    }
}
