import Foundation

// PLACEHOLDER API (implementation in progress on the tokenizer branch).
/// Byte-level BPE tokenizer (GPT-2 / SmolLM / StarCoder / Refact / Llama-3 pre-tokenizers).
public final class Tokenizer {
    public var vocabularySize: Int { 0 }
    public var bosID: Int32? { nil }
    public var eosID: Int32? { nil }
    /// Whether encode adds BOS by default (GGUF `tokenizer.ggml.add_bos_token`).
    public var addsBOS: Bool { false }
    /// Token ids that end a generation (EOS, `<|im_end|>`, `<|eot_id|>`, `<|eom_id|>` ...).
    public var endOfGenerationIDs: Set<Int32> { [] }

    /// Encodes text; special tokens written in the text are matched when `parseSpecial`.
    public func encode(_ text: String, addBOS: Bool? = nil, parseSpecial: Bool = true) -> [Int32] { fatalError("tokenizer not implemented") }
    /// The raw bytes of one token (special tokens: their text).
    public func tokenBytes(_ id: Int32) -> [UInt8] { [] }
    /// Decodes ids to text (invalid UTF-8 replaced).
    public func decode(_ ids: [Int32]) -> String { String(decoding: ids.flatMap { tokenBytes($0) }, as: UTF8.self) }
    public func tokenID(_ text: String) -> Int32? { nil }

    public static func fromGGUF(_ gguf: GGUFFile) throws -> Tokenizer { fatalError("tokenizer not implemented") }
}

/// Turns a stream of token ids into text, holding back bytes until they form complete UTF-8.
public struct StreamingDecoder {
    let tokenizer: Tokenizer
    var pending: [UInt8] = []
    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }
    /// The text completed by this token (possibly empty).
    public mutating func append(_ id: Int32) -> String { "" }
    /// Whatever is left (invalid bytes replaced).
    public mutating func flush() -> String { "" }
}
