import Core
import Foundation

/// How text is split into words before BPE (each word is merged on its own).
///
/// The splitters are hand-written scanners over code points that behave like the regexes below
/// (the same approach llama.cpp takes in unicode.cpp), with the character classes of
/// `CharClass`. A fragment's ends act as the text's ends: `(?!\S)` succeeds there.
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Every `\p{N}` split off on its own first, then the GPT-2 regex on what is between
    /// (StarCoder, Refact, SmolLM; Hugging Face `Digits(individual_digits)` + `ByteLevel`).
    case gpt2SplitDigits
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// The Llama-3 regex with `\p{N}` (single digits) instead of `\p{N}{1,3}` (Qwen2).
    case qwen2

    /// GGUF `tokenizer.ggml.pre` names (as llama.cpp's converter writes them) and what they mean here.
    static let ggufNames: [String: PreTokenizer] = [
        "gpt2": .gpt2, "gpt-2": .gpt2, "default": .gpt2, "phi-2": .gpt2, "mpt": .gpt2, "olmo": .gpt2,
        "jais": .gpt2, "roberta-bpe": .gpt2, "jina-v1-en": .gpt2, "jina-v2-code": .gpt2,
        "jina-v2-es": .gpt2, "jina-v2-de": .gpt2, "jina-es": .gpt2, "jina-de": .gpt2,
        "starcoder": .gpt2SplitDigits, "refact": .gpt2SplitDigits, "smollm": .gpt2SplitDigits,
        "command-r": .gpt2SplitDigits, "codeshell": .gpt2SplitDigits, "exaone": .gpt2SplitDigits,
        "minerva-7b": .gpt2SplitDigits,
        "llama3": .llama3, "llama-v3": .llama3, "llama-bpe": .llama3, "falcon3": .llama3,
        "dbrx": .llama3, "smaug-bpe": .llama3,
        "qwen2": .qwen2, "stablelm2": .qwen2,
    ]

    /// GGUF pre-tokenizer names for which llama.cpp looks a whole word up in the vocabulary
    /// before merging (`ignore_merges`, as the Hugging Face Llama-3 tokenizer does).
    static let ggufIgnoreMerges: Set<String> = ["llama3", "llama-v3", "llama-bpe", "falcon3"]

    public static var supportedGGUFNames: [String] { ggufNames.keys.sorted() }

    /// The regex strings Hugging Face `tokenizer.json` files use, for recognising a `Split`.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Which known pattern a regex string is (nil when none).
    static func fromPattern(_ pattern: String) -> PreTokenizer? {
        switch pattern {
        case gpt2Pattern, String(gpt2Pattern.dropLast(4)): return .gpt2 // also without the final `|\s+`
        case llama3Pattern,
             #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#:
            return .llama3
        case qwen2Pattern: return .qwen2
        default: return nil
        }
    }

    /// Splits code points `lo..<hi` into words, appending each word's end index to `ends`.
    func split(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, into ends: inout [Int]) {
        switch self {
        case .gpt2:
            Self.splitGPT2(cps, lo, hi, &ends)
        case .gpt2SplitDigits:
            var runStart = lo
            var i = lo
            while i < hi {
                if CharClass.of(cps[i]).contains(.number) {
                    if runStart < i { Self.splitGPT2(cps, runStart, i, &ends) }
                    ends.append(i + 1)
                    runStart = i + 1
                }
                i += 1
            }
            if runStart < hi { Self.splitGPT2(cps, runStart, hi, &ends) }
        case .llama3:
            Self.splitLlama3(cps, lo, hi, maxDigits: 3, &ends)
        case .qwen2:
            Self.splitLlama3(cps, lo, hi, maxDigits: 1, &ends)
        }
    }

    private static let apostrophe: UInt32 = 0x27, space: UInt32 = 0x20, cr: UInt32 = 0x0D, lf: UInt32 = 0x0A

    /// The length of a contraction (`'s`, `'t`, `'m`, `'d`, `'re`, `'ve`, `'ll`) at `pos`, or 0.
    @inline(__always)
    private static func contraction(_ cps: UnsafeBufferPointer<UInt32>, _ pos: Int, _ hi: Int, caseInsensitive: Bool) -> Int {
        guard cps[pos] == apostrophe, pos + 1 < hi else { return 0 }
        func lower(_ c: UInt32) -> UInt32 { caseInsensitive && c >= 0x41 && c <= 0x5A ? c + 0x20 : c }
        let a = lower(cps[pos + 1])
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return 2 // s t m d
        default: break
        }
        guard pos + 2 < hi else { return 0 }
        let b = lower(cps[pos + 2])
        if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 } // re ve ll
        return 0
    }

    private static let wordClasses: CharClass = [.letter, .number, .whitespace]

    static func splitGPT2(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ ends: inout [Int]) {
        var pos = lo
        while pos < hi {
            let c = cps[pos]
            let n = contraction(cps, pos, hi, caseInsensitive: false)
            if n > 0 { pos += n; ends.append(pos); continue }

            // ` ?` then a run of letters, of numbers, or of "other" characters
            let first = c == space ? pos + 1 : pos
            if first < hi {
                let k = CharClass.of(cps[first])
                var p = first + 1
                if k.contains(.letter) {
                    while p < hi && CharClass.of(cps[p]).contains(.letter) { p += 1 }
                    pos = p; ends.append(pos); continue
                }
                if k.contains(.number) {
                    while p < hi && CharClass.of(cps[p]).contains(.number) { p += 1 }
                    pos = p; ends.append(pos); continue
                }
                if k.isDisjoint(with: wordClasses) {
                    while p < hi && CharClass.of(cps[p]).isDisjoint(with: wordClasses) { p += 1 }
                    pos = p; ends.append(pos); continue
                }
            }
            pos = whitespaceRunEnd(cps, pos, hi, newlines: false)
            ends.append(pos)
        }
    }

    static func splitLlama3(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, maxDigits: Int, _ ends: inout [Int]) {
        var pos = lo
        while pos < hi {
            let c = cps[pos]
            let k = CharClass.of(c)
            let n = contraction(cps, pos, hi, caseInsensitive: true)
            if n > 0 { pos += n; ends.append(pos); continue }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if c != cr && c != lf && !k.contains(.number) {
                if k.contains(.letter) || (pos + 1 < hi && CharClass.of(cps[pos + 1]).contains(.letter)) {
                    var p = pos + 1
                    while p < hi && CharClass.of(cps[p]).contains(.letter) { p += 1 }
                    pos = p; ends.append(pos); continue
                }
            }
            // \p{N}{1,maxDigits}
            if k.contains(.number) {
                var p = pos + 1
                while p < hi && p - pos < maxDigits && CharClass.of(cps[p]).contains(.number) { p += 1 }
                pos = p; ends.append(pos); continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
            let first = c == space ? pos + 1 : pos
            if first < hi && CharClass.of(cps[first]).isDisjoint(with: wordClasses) {
                var p = first + 1
                while p < hi && CharClass.of(cps[p]).isDisjoint(with: wordClasses) { p += 1 }
                while p < hi && (cps[p] == cr || cps[p] == lf) { p += 1 }
                pos = p; ends.append(pos); continue
            }
            pos = whitespaceRunEnd(cps, pos, hi, newlines: true)
            ends.append(pos)
        }
    }

    /// `\s*[\r\n]+` (when `newlines`), then `\s+(?!\S)`, then `\s+`; a lone other character when
    /// there is no whitespace at `pos`.
    @inline(__always)
    private static func whitespaceRunEnd(_ cps: UnsafeBufferPointer<UInt32>, _ pos: Int, _ hi: Int, newlines: Bool) -> Int {
        var p = pos
        var afterLastNewline = -1
        while p < hi && CharClass.of(cps[p]).contains(.whitespace) {
            if newlines && (cps[p] == cr || cps[p] == lf) { afterLastNewline = p + 1 }
            p += 1
        }
        let count = p - pos
        if afterLastNewline > 0 { return afterLastNewline }
        if count > 1 && p < hi { return p - 1 } // leave the last one to join the next word
        if count > 0 { return p }
        return pos + 1
    }
}
