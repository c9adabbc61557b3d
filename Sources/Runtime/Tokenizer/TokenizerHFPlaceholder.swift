import Foundation

// PLACEHOLDER (hf-loader branch): lets HFModelSource compile until the tokenizer branch lands.
// Delete this file when merging the tokenizer, which provides the real implementation.
extension Tokenizer {
    public static func fromHuggingFace(folder: String) throws -> Tokenizer { fatalError("Tokenizer.fromHuggingFace is not implemented yet") }
}
