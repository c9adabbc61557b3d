import Foundation
import XCTest
@testable import Kernels
@testable import Engine

/// q/k/v and gate/up run as one `LinearGroup` each: one prepared input and one parallel
/// region per group, with logits bit-identical to running every linear on its own.
final class FusedLinearTests: XCTestCase {
    /// The multi-count parallelFor hands each loop exactly the ranges a parallelFor of its own would.
    func testMultiCountParallelForGivesEachLoopItsOwnRanges() {
        let counts = [0, 5, 16, 17, 32, 100, 2048]
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            let lock = NSLock()
            var together: [[Range<Int>]] = Array(repeating: [], count: counts.count)
            pool.parallelFor(counts, multiple: 16) { j, r in
                lock.lock(); together[j].append(r); lock.unlock()
            }
            for (j, n) in counts.enumerated() {
                var alone: [Range<Int>] = []
                pool.parallelFor(n, multiple: 16) { r in lock.lock(); alone.append(r); lock.unlock() }
                XCTAssertEqual(together[j].sorted { $0.lowerBound < $1.lowerBound }, alone.sorted { $0.lowerBound < $1.lowerBound },
                               "\(threads) threads, count \(n)")
            }
            // One region for all of them (none when it all runs inline).
            let before = pool.dispatches
            pool.parallelFor(counts, multiple: 16) { _, _ in }
            XCTAssertEqual(pool.dispatches - before, threads == 1 ? 0 : 1)
        }
    }
}
