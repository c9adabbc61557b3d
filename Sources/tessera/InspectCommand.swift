import Eval
import ArgumentParser
import Foundation
import Engine

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's architecture, hyper-parameters, tokenizer and tensors.")

    @Argument(help: "GGUF file or Hugging Face folder.")
    var model: String

    @Flag(help: "Print every metadata key (long arrays summarised).")
    var metadata = false

    @Flag(help: "Packed Tessera files: list the container's raw tensors (codes/scales/offsets) instead of one line per weight.")
    var raw = false

    func run() throws {
        let source = try ModelLoader.open(model)
        let c = source.config
        print("model: \(model)")
        print("architecture: llama — \(c.blockCount) blocks, hidden \(c.hidden), ffn \(c.ffn), heads \(c.heads)/\(c.kvHeads) (head dim \(c.headDim)), vocab \(c.vocab)")
        print("context \(c.contextLength), rope base \(c.ropeBase)\(c.ropeFrequencyFactors == nil ? "" : " with llama3 frequency factors"), rms eps \(c.rmsEps), \(c.tiedEmbeddings ? "tied" : "separate") output head")
        print(String(format: "parameters: %.1f M (block linears, embeddings, head)", Double(c.parameterCount) / 1e6))
        do {
            let t = try source.makeTokenizer()
            let bos = t.bosID.map { "\($0)" } ?? "none", eos = t.eosID.map { "\($0)" } ?? "none"
            print("tokenizer: \(t.vocabularySize) tokens, BOS \(bos) (\(t.addsBOS ? "added" : "not added")), EOS \(eos), end-of-generation \(t.endOfGenerationIDs.sorted())")
        } catch {
            print("tokenizer: unavailable (\(error))")
        }
        if let template = source.chatTemplate {
            print("chat template: \(template.count) characters\(template.contains("<|im_start|>") ? " (ChatML)" : template.contains("<|start_header_id|>") ? " (Llama-3)" : "")")
        } else {
            print("chat template: none")
        }
        if let packed = source as? PackedModelSource, !raw {
            try printPacked(packed)
        } else if let gguf = (source as? GGUFTensorListing)?.gguf {
            printGGUF(gguf)
        } else {
            print("\ntensors (expected by the Llama architecture):")
            var names = [TensorName.tokenEmbedding, TensorName.outputNorm, TensorName.output]
            for i in 0..<c.blockCount { names += TensorName.blockParts.map { TensorName.block(i, $0) } }
            for name in names { if let s = source.tensorShape(name) { print("  \(name)  \(s)") } }
        }
    }

    func printGGUF(_ gguf: GGUFFile) {
        print("\nGGUF v\(gguf.version), \(gguf.metadata.count) metadata keys, \(gguf.tensors.count) tensors, alignment \(gguf.alignment)")
        if metadata {
            for key in gguf.metadataKeys { print("  \(key) = \(gguf.metadata[key]!.summary)") }
        }
        let nameWidth = max(24, gguf.tensors.map(\.name.count).max() ?? 0)
        print("\n" + "name".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  type   shape              bytes")
        var byType: [String: (count: Int, bytes: Int)] = [:]
        for t in gguf.tensors {
            let shape = "[" + t.shape.map(String.init).joined(separator: ", ") + "]"
            print(t.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                  + "\(t.type)".padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                  + shape.padding(toLength: 18, withPad: " ", startingAt: 0) + " \(t.byteCount)")
            byType["\(t.type)", default: (0, 0)].count += 1
            byType["\(t.type)", default: (0, 0)].bytes += t.byteCount
        }
        let total = gguf.tensors.reduce(0) { $0 + $1.byteCount }
        let elements = gguf.tensors.reduce(0) { $0 + $1.elementCount }
        print("\nby type: " + byType.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.count) tensors \($0.value.bytes) bytes" }.joined(separator: "; "))
        print(String(format: "total: %d bytes of tensor data, %.3f bits per weight", total, Double(total * 8) / Double(elements)))
    }

    /// One line per weight of a packed Tessera file: its scheme, shape and bytes.
    func printPacked(_ p: PackedModelSource) throws {
        let g = p.gguf
        func key(_ k: String) -> String? { g.metadata[k].map { "\($0.summary)" } }
        print("\npacked Tessera file v\(key("tessera.format_version") ?? "?"): method \(key("tessera.method") ?? "?"), W\(p.bits) g\(p.group == 0 ? "row" : "\(p.group)"), activations \(p.activation.name) (\(p.activation.summary)\(p.activationClip != 1 ? ", clip \(p.activationClip)" : "")), zero point \(key("tessera.zero_point") ?? "?"), embedding \(key("tessera.embedding") ?? "?")")
        print("rotation: \(p.rotation?.summary ?? "none")")
        let calibration = g.metadataKeys.filter { $0.hasPrefix("tessera.calibration.") && !$0.hasSuffix("_losses") }
        if !calibration.isEmpty {
            print("calibration: " + calibration.map { "\($0.dropFirst("tessera.calibration.".count))=\(g.metadata[$0]!.summary)" }.joined(separator: " "))
        }
        if metadata { for k in g.metadataKeys { print("  \(k) = \(g.metadata[k]!.summary)") } }
        let shapes = p.config.requiredTensorShapes
        let width = max(24, shapes.map(\.name.count).max() ?? 0)
        print("\n" + "name".padding(toLength: width, withPad: " ", startingAt: 0) + "  scheme        shape          bytes      bits/weight")
        var linearBytes = 0, linearWeights = 0, total = 0
        for (name, shape) in shapes {
            let count = shape.reduce(1, *)
            let scheme: String, bytes: Int
            if p.isPacked(name) {
                let w = try p.quantizedTensor(name)
                scheme = "W\(w.bits) g\(w.group == w.cols ? "row" : "\(w.group)")"
                bytes = w.byteCount
                if name.hasPrefix("blk.") { linearBytes += bytes; linearWeights += count }
            } else if let t = g.tensor(name) {
                scheme = "\(t.type)"
                bytes = t.byteCount
            } else { continue }
            total += bytes
            let shapeText = "[" + shape.map(String.init).joined(separator: ", ") + "]"
            print(name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + scheme.padding(toLength: 12, withPad: " ", startingAt: 0) + "  "
                  + shapeText.padding(toLength: 13, withPad: " ", startingAt: 0) + "  " + "\(bytes)".padding(toLength: 9, withPad: " ", startingAt: 0)
                  + String(format: "  %.3f", Double(bytes * 8) / Double(count)))
        }
        print(String(format: "\nblock linears: %.3f bits/weight; whole file: %d bytes, %.3f bits/parameter",
                     Double(linearBytes * 8) / Double(max(linearWeights, 1)), g.file.size, Double(g.file.size * 8) / Double(p.config.parameterCount)))
    }
}
