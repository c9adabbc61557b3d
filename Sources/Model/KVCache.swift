import Architecture
import Core
import Kernels
/// Keys and values of every block for positions 0..<capacity.
/// Layout per block: [capacity, KVH·D] row-major, so one position's heads are contiguous.
public final class KVCache {
    public let blockCount: Int
    public let capacity: Int
    /// Width of one cached row: KVH·D.
    public let width: Int
    private let keys: [FloatBuffer]
    private let values: [FloatBuffer]

    public init(blockCount: Int, capacity: Int, width: Int) {
        self.blockCount = blockCount
        self.capacity = capacity
        self.width = width
        keys = (0..<blockCount).map { _ in FloatBuffer(count: capacity * width) }
        values = (0..<blockCount).map { _ in FloatBuffer(count: capacity * width) }
    }

    /// Pointer to the key row of `block` at `position`.
    @inline(__always) public func key(_ block: Int, _ position: Int) -> UnsafeMutablePointer<Float> {
        keys[block].pointer + position * width
    }
    @inline(__always) public func value(_ block: Int, _ position: Int) -> UnsafeMutablePointer<Float> {
        values[block].pointer + position * width
    }

    public var byteCount: Int { 2 * blockCount * capacity * width * 4 }
}
