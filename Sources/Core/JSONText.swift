import Foundation

/// Writing JSON text by hand (safetensors headers, Jinja's `tojson`).
public enum JSONText {
    /// `s` as a JSON string literal: quotes, backslashes and control characters escaped,
    /// everything else (non-ASCII included) kept as is.
    public static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
