import Core
/// A [rows, width] table the model reads one row at a time: the token embeddings. Being a
/// LinearWeights over the same rows (y = x·tableᵀ), one object is also a tied output head, so
/// the table is held once, in its stored form (fp32, fp16 or packed low-bit codes), and rows
/// are decoded to fp32 only when looked up.
public protocol EmbeddingTable: LinearWeights {
    /// Writes row `row` (0 ≤ row < outFeatures) as inFeatures fp32 values.
    func lookup(_ row: Int, into out: UnsafeMutablePointer<Float>)
}

extension FP32Linear: EmbeddingTable {
    public func lookup(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < outFeatures, "row \(row) outside 0..<\(outFeatures)")
        out.update(from: weight.pointer + row * inFeatures, count: inFeatures)
    }
}

extension F16Linear: EmbeddingTable {
    public func lookup(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < outFeatures, "row \(row) outside 0..<\(outFeatures)")
        decodeRows(row, count: 1, into: out)
    }
}

extension QuantizedLinear: EmbeddingTable {
    public func lookup(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        weights.dequantizeRow(row, into: out)
    }
}
