import Foundation

extension LlamaConfig {
    /// Every tensor a Llama model of this configuration needs, with its row-major shape
    /// ([out, in] for weights, [C] for norms), in forward order. `output.weight` is listed
    /// only when the embeddings are not tied.
    public var requiredTensorShapes: [(name: String, shape: [Int])] {
        var list: [(name: String, shape: [Int])] = [(TensorName.tokenEmbedding, [vocab, hidden])]
        for i in 0..<blockCount {
            list.append((TensorName.block(i, "attn_norm"), [hidden]))
            list.append((TensorName.block(i, "attn_q"), [heads * headDim, hidden]))
            list.append((TensorName.block(i, "attn_k"), [kvHeads * headDim, hidden]))
            list.append((TensorName.block(i, "attn_v"), [kvHeads * headDim, hidden]))
            list.append((TensorName.block(i, "attn_output"), [hidden, heads * headDim]))
            list.append((TensorName.block(i, "ffn_norm"), [hidden]))
            list.append((TensorName.block(i, "ffn_gate"), [ffn, hidden]))
            list.append((TensorName.block(i, "ffn_up"), [ffn, hidden]))
            list.append((TensorName.block(i, "ffn_down"), [hidden, ffn]))
        }
        list.append((TensorName.outputNorm, [hidden]))
        if !tiedEmbeddings { list.append((TensorName.output, [vocab, hidden])) }
        return list
    }

    /// Throws `missingTensor` / `shapeMismatch` for the first required tensor `shapeOf` lacks or
    /// disagrees on.
    func checkTensors(path: String, shapeOf: (String) -> [Int]?) throws {
        for (name, expected) in requiredTensorShapes {
            guard let found = shapeOf(name) else { throw FormatError.missingTensor(path: path, tensor: name) }
            guard found == expected else { throw FormatError.shapeMismatch(tensor: name, expected: expected, found: found) }
        }
    }
}
