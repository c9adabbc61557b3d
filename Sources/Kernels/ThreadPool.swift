import Core
import KernelsC

/// A persistent pool of worker threads (spin briefly, then sleep). A parallel region is cut
/// into `threads` chunks; each runs once, on whichever thread claims it first, the caller
/// included, so a worker that is asleep or descheduled (another process on its core) does not
/// stall the region. A pool of 1 runs everything inline.
public final class ThreadPool: @unchecked Sendable {
    private let pool: OpaquePointer
    public let threads: Int
    /// Scratch shared by the layers that run on this pool (one at a time).
    public let workspace = Workspace()

    /// - Parameters:
    ///   - threads: total workers including the caller; 0 means `defaultThreads`: one per physical core of the fastest class (tsr_default_threads).
    ///   - numa: pin workers to CPUs and use node-local memory (llama.cpp's `--numa`).
    public init(threads: Int = 0, numa: Bool = false) {
        let n = threads > 0 ? threads : ThreadPool.defaultThreads
        pool = tsr_pool_create(Int32(n), numa ? 1 : 0)
        self.threads = Int(tsr_pool_threads(pool))
    }

    deinit { tsr_pool_destroy(pool) }

    /// Parallel regions run so far, how many the caller ran alone because a descheduled worker
    /// had stalled it (see tsr_pool_run), and those stalls.
    public var regionStats: (runs: Int, solo: Int, stalls: Int) {
        var runs = 0 as Int64, solo = 0 as Int64, stalls = 0 as Int64
        tsr_pool_stats(pool, &runs, &solo, &stalls)
        return (Int(runs), Int(solo), Int(stalls))
    }

    public static var defaultThreads: Int { Int(tsr_default_threads()) }

    /// Runs `body(chunk, chunkCount)` once for every chunk in 0..<threads and waits for all of
    /// them. The chunk index is what a per-worker partition or scratch buffer is keyed on; the
    /// same chunk always gets the same work, whichever thread runs it (so results do not depend
    /// on scheduling). A body must not wait for another chunk.
    public func run(_ body: (Int, Int) -> Void) {
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { context in
                tsr_pool_run(pool, { raw, index, count in
                    let f = raw!.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee
                    f(Int(index), Int(count))
                }, context)
            }
        }
    }

    /// Splits 0..<n into one contiguous range per worker (ranges aligned to `multiple`) and
    /// runs `body` on each non-empty range.
    public func parallelFor(_ n: Int, multiple: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        if threads == 1 || n <= multiple { body(0..<n); return }
        run { index, count in
            let r = ThreadPool.chunk(n, index: index, count: count, multiple: multiple)
            if !r.isEmpty { body(r) }
        }
    }

    /// Several `parallelFor` loops, over 0..<counts[j] for each j, in one parallel region:
    /// `body(j, range)` gets exactly the ranges that `parallelFor(counts[j], multiple:)` would
    /// give it (chunk i of the region runs the i-th range of every loop), so the work and its
    /// results are those of the separate calls, for one wake-up and one barrier.
    public func parallelFor(_ counts: [Int], multiple: Int = 1, _ body: (Int, Range<Int>) -> Void) {
        if threads == 1 || counts.allSatisfy({ $0 <= multiple }) {
            for (j, n) in counts.enumerated() where n > 0 { body(j, 0..<n) }
            return
        }
        run { index, count in
            for (j, n) in counts.enumerated() {
                let r = ThreadPool.chunk(n, index: index, count: count, multiple: multiple)
                if !r.isEmpty { body(j, r) }
            }
        }
    }

    /// The `index`-th of `count` contiguous chunks of 0..<n, chunk borders on multiples of `multiple`.
    public static func chunk(_ n: Int, index: Int, count: Int, multiple: Int = 1) -> Range<Int> {
        let units = (n + multiple - 1) / multiple
        let lo = units * index / count * multiple
        let hi = min(n, units * (index + 1) / count * multiple)
        return min(lo, n)..<hi
    }
}
