import Core
import KernelsC

/// Rows of int8 codes with one fp32 scale per block of 32 values (value = scale·code, the scale
/// max|x|/127 of its block): how an 8-bit KV cache stores a position's keys and values, and the
/// three reads attention makes of them (KernelsC.h, "8-bit KV cache").
public final class Int8Rows: @unchecked Sendable {
    /// Rows and values per row (width % 32 == 0).
    public let rows, width: Int
    /// rows × width codes, row-major.
    public let codes: UnsafeMutablePointer<Int8>
    /// rows × width/32 scales, row-major.
    public let scales: FloatBuffer
    // The quantizer's block and group sums, which the rows do not keep.
    private let blockSums: UnsafeMutablePointer<Int32>
    private let groupSums: FloatBuffer

    public init(rows: Int, width: Int) {
        precondition(width > 0 && width % 32 == 0, "Int8Rows: width \(width) is not a multiple of 32")
        self.rows = rows
        self.width = width
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(rows * width, 1), alignment: 64)
        codes = raw.bindMemory(to: Int8.self, capacity: max(rows * width, 1))
        codes.initialize(repeating: 0, count: max(rows * width, 1))
        scales = FloatBuffer(count: rows * width / 32)
        blockSums = .allocate(capacity: width / 32)
        groupSums = FloatBuffer(count: width / 32)
    }

    deinit {
        UnsafeMutableRawPointer(codes).deallocate()
        blockSums.deallocate()
    }

    /// Bytes the codes and scales take.
    public var byteCount: Int { rows * width + rows * width / 32 * 4 }

    /// Quantizes `width` values into row `row` (not thread-safe: one writer at a time).
    public func store(_ row: Int, from x: UnsafePointer<Float>) {
        tsr_quantize_act(x, Int32(width), 32, 127, codes + row * width, scales.pointer + row * width / 32, blockSums, groupSums.pointer)
    }

    /// scores[p] = alpha · row(p)[offset..<offset+D] · q for p < count (D % 32 == 0, offset % 32 == 0).
    public func scores(count: Int, offset: Int, D: Int, query: UnsafePointer<Float>, alpha: Float, into scores: UnsafeMutablePointer<Float>) {
        tsr_kv8_scores(codes + offset, width, scales.pointer + offset / 32, width / 32, Int32(count), Int32(D), query, alpha, scores)
    }

    /// out[i] = Σ_{p<count} weights[p] · row(p)[offset + i], i < D.
    public func mix(count: Int, offset: Int, D: Int, weights: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        tsr_kv8_mix(codes + offset, width, scales.pointer + offset / 32, width / 32, Int32(count), Int32(D), weights, out)
    }

    /// out[p·D + i] = row(p)[offset + i] as fp32, p < count, i < D.
    public func dequantize(count: Int, offset: Int, D: Int, into out: UnsafeMutablePointer<Float>) {
        tsr_kv8_dequantize(codes + offset, width, scales.pointer + offset / 32, width / 32, Int32(count), Int32(D), out)
    }
}
