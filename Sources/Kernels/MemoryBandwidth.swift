import Core
import KernelsC

/// Main-memory read bandwidth, measured by streaming a buffer far larger than the caches:
/// each worker of the pool reads its own slice (first touched by that worker), and a pass
/// ends when the slowest worker is done. Decode reads every weight once per token, so
/// bytes per token / this bandwidth bounds decode speed.
public enum MemoryBandwidth {
    public struct Measurement: Sendable {
        public var threads: Int
        public var bytes: Int
        /// Bytes per second of each pass.
        public var passes: [Double]
        /// What was read, folded (returned so the reads cannot be optimised away).
        public var checksum: UInt64
        /// The fastest pass (STREAM's convention).
        public var best: Double { passes.max() ?? 0 }
        public var median: Double {
            let s = passes.sorted()
            return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
    }

    public static func measure(pool: ThreadPool, bytes: Int = 1 << 30, passes: Int = 7) -> Measurement {
        let slice = (bytes / pool.threads) & ~4095
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: slice * pool.threads, alignment: 4096)
        defer { buffer.deallocate() }
        pool.run { worker, _ in
            (buffer + worker * slice).initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: worker &+ 1), count: slice)
        }
        var checksums = [UInt64](repeating: 0, count: pool.threads)
        var results: [Double] = []
        for _ in 0..<passes {
            let start = ContinuousClock.now
            checksums.withUnsafeMutableBufferPointer { sums in
                pool.run { worker, _ in sums[worker] &+= tsr_read_bytes(buffer + worker * slice, slice) }
            }
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            results.append(Double(slice * pool.threads) / seconds)
        }
        return Measurement(threads: pool.threads, bytes: slice * pool.threads, passes: results, checksum: checksums.reduce(0, &+))
    }
}
