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

    /// Floats of scratch that prepareRows needs for `count` positions (0 for f32).
    public func scratchCount(positions count: Int) -> Int { type == .f32 ? 0 : 2 * count * width }

    /// Prefill: makes the keys and values of positions 0..<count of every KV head of `block`
    /// readable as fp32 rows: nothing to do for f32; q8 dequantizes them once into `scratch`
    /// (scratchCount floats: each head's keys, then its values), split over the pool's workers,
    /// so that the batch's heads and tiles all read the same rows.
    public func prepareRows(_ block: Int, count: Int, scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard type == .q8 else { return }
        let D = headDim, heads = width / D, rows = count * D
        pool.parallelFor(2 * heads) { r in
            for j in r {
                let codes = j % 2 == 0 ? keyCodes[block] : valueCodes[block]
                codes.dequantize(count: count, offset: (j / 2) * D, D: D, into: scratch + j * rows)
            }
        }
    }

    /// Prefill: the keys of positions 0..<count of KV head `kvHead` as fp32 rows of D values with
    /// row stride `ld`: in place (f32), or in `scratch` as prepareRows(block, count, scratch) left them (q8).
    public func keyRows(_ block: Int, kvHead: Int, count: Int, scratch: UnsafeMutablePointer<Float>) -> (rows: UnsafePointer<Float>, ld: Int) {
        type == .f32 ? (UnsafePointer(keys[block].pointer + kvHead * headDim), width) : (UnsafePointer(scratch + 2 * kvHead * count * headDim), headDim)
    }

    /// Prefill: the values, as keyRows gives the keys.
    public func valueRows(_ block: Int, kvHead: Int, count: Int, scratch: UnsafeMutablePointer<Float>) -> (rows: UnsafePointer<Float>, ld: Int) {
        type == .f32 ? (UnsafePointer(values[block].pointer + kvHead * headDim), width) : (UnsafePointer(scratch + (2 * kvHead + 1) * count * headDim), headDim)
    }

    public var byteCount: Int {
        switch type {
        case .f32: return 2 * blockCount * capacity * width * 4
        case .q8: return keyCodes.reduce(0) { $0 + $1.byteCount } + valueCodes.reduce(0) { $0 + $1.byteCount }
        }
    }
}
