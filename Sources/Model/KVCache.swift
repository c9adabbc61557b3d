import Architecture
import Core
import Kernels

/// How a KVCache keeps keys and values.
public enum KVCacheType: String, CaseIterable, Sendable {
    /// fp32, as computed (the default).
    case f32
    /// int8 codes with one fp32 scale per block of 32 values (llama.cpp's `-ctk q8_0 -ctv q8_0`):
    /// 1.125 bytes a value instead of 4. Needs a head size that is a multiple of 32.
    case q8

    /// Why a model with heads of `headDim` values cannot use this type, or nil when it can.
    public func unsupportedReason(headDim: Int) -> String? {
        self == .q8 && headDim % 32 != 0 ? "the q8 KV cache needs a head size that is a multiple of 32 (this model's is \(headDim)); use --kv-cache f32" : nil
    }
}

/// Keys and values of every block for positions 0..<capacity. Per block, one row a position of
/// KVH·D values (its heads side by side), fp32 or 8-bit (KVCacheType). Attention reads a head's
/// rows through keyScores / mixValues (decode) or keyRows / valueRows (prefill), so it never
/// sees the storage.
public final class KVCache {
    public let type: KVCacheType
    public let blockCount: Int
    public let capacity: Int
    /// Width of one cached row: KVH·D.
    public let width: Int
    /// Values per head (D).
    public let headDim: Int
    // f32: [capacity, width] per block.
    private let keys: [FloatBuffer]
    private let values: [FloatBuffer]
    // q8: the same rows as codes and scales.
    private let keyCodes: [Int8Rows]
    private let valueCodes: [Int8Rows]

    public init(blockCount: Int, capacity: Int, width: Int, headDim: Int, type: KVCacheType = .f32) {
        precondition(type.unsupportedReason(headDim: headDim) == nil && width % headDim == 0, "KVCache: \(type) with head size \(headDim)")
        self.type = type
        self.blockCount = blockCount
        self.capacity = capacity
        self.width = width
        self.headDim = headDim
        let f32 = type == .f32
        keys = f32 ? (0..<blockCount).map { _ in FloatBuffer(count: capacity * width) } : []
        values = f32 ? (0..<blockCount).map { _ in FloatBuffer(count: capacity * width) } : []
        keyCodes = f32 ? [] : (0..<blockCount).map { _ in Int8Rows(rows: capacity, width: width) }
        valueCodes = f32 ? [] : (0..<blockCount).map { _ in Int8Rows(rows: capacity, width: width) }
    }

    /// Stores the key and value rows (width values each) of `block` at `position`.
    public func store(_ block: Int, _ position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        switch type {
        case .f32:
            (keys[block].pointer + position * width).update(from: key, count: width)
            (values[block].pointer + position * width).update(from: value, count: width)
        case .q8:
            keyCodes[block].store(position, from: key)
            valueCodes[block].store(position, from: value)
        }
    }

    /// Decode: scores[p] = alpha·K[p]·query over positions p < count of KV head `kvHead`.
    public func keyScores(_ block: Int, kvHead: Int, count: Int, query: UnsafePointer<Float>, alpha: Float,
                          into scores: UnsafeMutablePointer<Float>) {
        let D = headDim
        switch type {
        case .f32:
            Matmul.sgemv(trans: false, M: count, N: D, alpha: alpha, A: keys[block].pointer + kvHead * D, lda: width, x: query, y: scores)
        case .q8:
            keyCodes[block].scores(count: count, offset: kvHead * D, D: D, query: query, alpha: alpha, into: scores)
        }
    }

    /// Decode: out = Σ_{p<count} weights[p]·V[p] of KV head `kvHead` (D values).
    public func mixValues(_ block: Int, kvHead: Int, count: Int, weights: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let D = headDim
        switch type {
        case .f32:
            Matmul.sgemv(trans: true, M: count, N: D, A: values[block].pointer + kvHead * D, lda: width, x: weights, y: out)
        case .q8:
            valueCodes[block].mix(count: count, offset: kvHead * D, D: D, weights: weights, into: out)
        }
    }

    /// Floats of scratch that keyRows / valueRows need for `count` positions (0 for f32).
    public func scratchCount(positions count: Int) -> Int { type == .f32 ? 0 : count * headDim }

    /// Prefill: the keys of positions 0..<count of KV head `kvHead` as fp32 rows of D values with
    /// row stride `ld`: read in place (f32), or dequantized into `scratch` (q8; scratchCount floats).
    public func keyRows(_ block: Int, kvHead: Int, count: Int, scratch: UnsafeMutablePointer<Float>) -> (rows: UnsafePointer<Float>, ld: Int) {
        rows(type == .f32 ? keys[block] : nil, type == .q8 ? keyCodes[block] : nil, kvHead: kvHead, count: count, scratch: scratch)
    }

    /// Prefill: the values, as keyRows gives the keys.
    public func valueRows(_ block: Int, kvHead: Int, count: Int, scratch: UnsafeMutablePointer<Float>) -> (rows: UnsafePointer<Float>, ld: Int) {
        rows(type == .f32 ? values[block] : nil, type == .q8 ? valueCodes[block] : nil, kvHead: kvHead, count: count, scratch: scratch)
    }

    /// One block's keys or values (the fp32 rows, or the 8-bit ones) as keyRows describes.
    private func rows(_ f32: FloatBuffer?, _ q8: Int8Rows?, kvHead: Int, count: Int, scratch: UnsafeMutablePointer<Float>) -> (rows: UnsafePointer<Float>, ld: Int) {
        if let f32 { return (UnsafePointer(f32.pointer + kvHead * headDim), width) }
        q8!.dequantize(count: count, offset: kvHead * headDim, D: headDim, into: scratch)
        return (UnsafePointer(scratch), headDim)
    }

    public var byteCount: Int {
        switch type {
        case .f32: return 2 * blockCount * capacity * width * 4
        case .q8: return keyCodes.reduce(0) { $0 + $1.byteCount } + valueCodes.reduce(0) { $0 + $1.byteCount }
        }
    }
}
