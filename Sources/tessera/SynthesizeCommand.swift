import Eval
import ArgumentParser
import Foundation
import Engine

struct Synthesize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a random-weight model of a real shape as an F32 GGUF (runs in Tessera and llama.cpp alike).")

    @Argument(help: "Shape: \(SyntheticShape.allCases.map(\.rawValue).joined(separator: ", ")).")
    var shape: SyntheticShape

    @Option(name: .shortAndLong, help: "Output GGUF file.")
    var output: String

    @Option(help: "Tokenizer to ship: tiktoken .model file, GGUF file, or Hugging Face folder (default for llama-3.2 shapes: data/tokenizer-vectors/llama3_tokenizer.model, relative to the repository root).")
    var tokenizer: String?

    @Option(help: "Seed of the random weights.")
    var seed: UInt64 = 1

    func run() throws {
        let tokenizerPath = tokenizer ?? (shape == .smollm2_135m ? nil : "data/tokenizer-vectors/llama3_tokenizer.model")
        let tok = try tokenizerPath.map(Synthesize.loadTokenizer)
        let source = try SyntheticModelSource(shape: shape, seed: seed, tokenizer: tok)
        let total = source.config.requiredTensorShapes.count
        var done = 0
        try source.writeGGUF(to: output) { name in
            done += 1
            FileHandle.standardError.write("\r[\(done)/\(total)] \(name)\u{1B}[K".data(using: .utf8)!)
        }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print(String(format: "wrote %@: %@, %.2f B parameters, %.2f GB", output, shape.rawValue,
                     Double(source.config.parameterCount) / 1e9, Double(size) / 1e9))
    }

    static func loadTokenizer(_ path: String) throws -> Tokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ValidationError("tokenizer not found: \(path); pass --tokenizer FILE")
        }
        if isDirectory.boolValue { return try Tokenizer.fromHuggingFace(folder: path) }
        if path.hasSuffix(".gguf") { return try Tokenizer.fromGGUF(GGUFFile(path: path)) }
        return try Tokenizer.fromTikToken(path: path)
    }
}

extension SyntheticShape: ExpressibleByArgument {}
