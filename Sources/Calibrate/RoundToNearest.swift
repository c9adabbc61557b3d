import Engine
import Tokenizer
import Architecture
import Core
import Formats
import Quant

/// Round-to-nearest quantization of a whole model into a packed file (`tessera quantize`),
/// and the RTN content of the tensors a calibration does not calibrate (norms, embeddings).
public enum RoundToNearest {
    /// What RTN stores for `name`: norms F32 as the source has them, block linears on the
    /// scheme's grid, the embedding table and an untied head as `scheme.embedding` says
    /// (f16, or 8/6/4-bit group-32 codes with a float zero point).
    public static func content(_ source: ModelSource, scheme: PackedFormat.Scheme, name: String,
                               shape: [Int]) throws -> PackedFormat.TensorContent {
        let values = try source.floatTensor(name)
        if shape.count == 1 { return .f32(values) }
        func rtn(bits: Int, group: Int, zeroPoint: ZeroPoint) throws -> PackedFormat.TensorContent {
            .quantized(try GroupQuantizer.rtn(weights: values.pointer, rows: shape[0], cols: shape[1], bits: bits, group: group,
                                              zeroPoint: zeroPoint, name: name))
        }
        if PackedFormat.isBlockLinear(name) { return try rtn(bits: scheme.bits, group: scheme.group, zeroPoint: scheme.zeroPoint) }
        // token_embd, output
        guard let bits = scheme.embedding.bits else { return .f16(values) }
        return try rtn(bits: bits, group: PackedFormat.Embedding.group, zeroPoint: .float)
    }

    /// Quantizes `source` with round-to-nearest and writes a packed file atomically.
    /// `progress` is called with (tensor name, index, count).
    public static func write(source: ModelSource, tokenizer: Tokenizer?, scheme: PackedFormat.Scheme, to path: String,
                             progress: (String, Int, Int) -> Void = { _, _, _ in }) throws {
        try PackedFormat.write(source: source, tokenizer: tokenizer, scheme: scheme, method: "rtn", to: path, progress: progress) {
            try content(source, scheme: scheme, name: $0, shape: $1)
        }
    }
}
