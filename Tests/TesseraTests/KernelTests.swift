import XCTest
import KernelsC
@testable import Kernels
@testable import Engine

/// Every SIMD path against its scalar reference and a float64 computation, on random data
/// with ragged sizes. Each comparison first asserts which path the dispatcher runs
/// (tsr_kernel_path): the one this CPU should run (AVX2 on x86-64 with AVX2 + FMA), never the
/// reference itself; a CPU without a SIMD path skips it locally and fails it in CI.
final class KernelTests: XCTestCase {
    func randomBuffer(_ n: Int, _ rng: inout SplitMix64) -> FloatBuffer {
        let b = FloatBuffer(count: n)
        for i in 0..<n { b[i] = rng.uniform(-1, 1) }
        return b
    }

    /// fp32 accumulation error bound for a dot product of length n: ~ n·ε·Σ|w·x|.
    func bound(_ n: Int, _ absSum: Double) -> Double { Double(n) * 1.2e-7 * absSum + 1e-30 }

    // MARK: dispatch

    /// The selection table against the CPU's features as the operating system reports them, and
    /// the two switches that change it (tsr_force_portable, tsr_cpu_disable).
    func testKernelPathSelection() throws {
        XCTAssertEqual(KernelPaths.families.count, TSR_KERNEL_COUNT)
        XCTAssertEqual(Set(KernelPaths.families.map(\.id)), Set(0..<TSR_KERNEL_COUNT))
        XCTAssertEqual((0..<6).map { KernelPaths.name($0) }, ["ref", "avx2", "f16c", "neon", "neondot", "avx2vnni"])
        XCTAssertEqual([TSR_PATH_REF, TSR_PATH_AVX2, TSR_PATH_F16C, TSR_PATH_NEON, TSR_PATH_NEON_DOT, TSR_PATH_AVX2_VNNI], [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(KernelPaths.name(-1), "invalid")
        XCTAssertEqual(KernelPaths.name(6), "invalid")
        XCTAssertEqual(KernelPaths.current(-1), -1)
        XCTAssertEqual(KernelPaths.current(TSR_KERNEL_COUNT), -1)
        for (id, _) in KernelPaths.families { try assertDispatch(id) }
        KernelPaths.portable {
            XCTAssertEqual(tsr_cpu_features(), 0)
            assertPortablePaths()
        }
        for (id, _) in KernelPaths.families { try assertDispatch(id) } // restored
        #if arch(x86_64)
        // Without AVX-512 VNNI the A8/A4 family takes the AVX2 kernels; nothing else changes.
        tsr_cpu_disable(Int32(TSR_CPU_AVX512_VNNI))
        defer { tsr_cpu_disable(0) }
        for (id, name) in KernelPaths.families {
            let want = try XCTUnwrap(KernelPaths.expected(id, disabled: TSR_CPU_AVX512_VNNI))
            XCTAssertEqual(KernelPaths.name(KernelPaths.current(id)), KernelPaths.name(want), "\(name) with VNNI disabled")
        }
        XCTAssertEqual(KernelPaths.name(KernelPaths.current(TSR_KERNEL_QUANT_I8)), "avx2")
        // Without AVX2 + FMA, only the fp16 conversion keeps its SIMD path (F16C), VNNI or not.
        tsr_cpu_disable(Int32(TSR_CPU_AVX2_FMA))
        for (id, name) in KernelPaths.families {
            let want = try id == TSR_KERNEL_F16_CONVERT ? XCTUnwrap(KernelPaths.expected(id)) : TSR_PATH_REF
            XCTAssertEqual(KernelPaths.name(KernelPaths.current(id)), KernelPaths.name(want), "\(name) with AVX2 disabled")
        }
        tsr_cpu_disable(Int32(TSR_CPU_F16C))
        XCTAssertEqual(KernelPaths.name(KernelPaths.current(TSR_KERNEL_F16_GEMV)), "ref", "the fp16 GEMV needs F16C too")
        XCTAssertEqual(KernelPaths.name(KernelPaths.current(TSR_KERNEL_F16_CONVERT)), "ref")
        XCTAssertEqual(KernelPaths.name(KernelPaths.current(TSR_KERNEL_F32)), KernelPaths.name(try XCTUnwrap(KernelPaths.expected(TSR_KERNEL_F32))),
                       "tsr_cpu_disable replaces the disabled set: AVX2 is back")
        #elseif arch(arm64)
        // Without dotprod the A8/A4 family takes the plain-NEON kernels; nothing else changes.
        tsr_cpu_disable(Int32(TSR_CPU_NEON_DOT))
        defer { tsr_cpu_disable(0) }
        for (id, name) in KernelPaths.families {
            let want = try id == TSR_KERNEL_QUANT_I8 ? TSR_PATH_NEON : XCTUnwrap(KernelPaths.expected(id))
            XCTAssertEqual(KernelPaths.name(KernelPaths.current(id)), KernelPaths.name(want), "\(name) with dotprod disabled")
        }
        #endif
    }

    // MARK: the default thread count

    /// tsr_default_threads_sysfs on made-up sysfs trees: SMT twins count once, efficiency cores
    /// (by cpu_capacity, else by maximum clock) are left out, offline CPUs are skipped.
    func testDefaultThreadsLeaveOutEfficiencyCoresAndSMTTwins() throws {
        struct CPU { var siblings: String; var capacity: Int? = nil; var maxFreq: Int? = nil; var online: Bool? = nil }
        func count(_ cpus: [CPU]) throws -> Int {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sysfs-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: dir) }
            for (i, c) in cpus.enumerated() {
                let cpu = dir.appendingPathComponent("cpu\(i)")
                try FileManager.default.createDirectory(at: cpu.appendingPathComponent("topology"), withIntermediateDirectories: true)
                try FileManager.default.createDirectory(at: cpu.appendingPathComponent("cpufreq"), withIntermediateDirectories: true)
                try (c.siblings + "\n").write(to: cpu.appendingPathComponent("topology/thread_siblings_list"), atomically: true, encoding: .utf8)
                if let v = c.capacity { try "\(v)\n".write(to: cpu.appendingPathComponent("cpu_capacity"), atomically: true, encoding: .utf8) }
                if let v = c.maxFreq { try "\(v)\n".write(to: cpu.appendingPathComponent("cpufreq/cpuinfo_max_freq"), atomically: true, encoding: .utf8) }
                if let v = c.online { try (v ? "1\n" : "0\n").write(to: cpu.appendingPathComponent("online"), atomically: true, encoding: .utf8) }
            }
            return Int(tsr_default_threads_sysfs(dir.path))
        }
        // RK3588: cpu0-3 Cortex-A55 (capacity 414, 1.8 GHz), cpu4-7 Cortex-A76 (1024, 2.4 GHz).
        let rk3588 = (0..<8).map { CPU(siblings: "\($0)", capacity: $0 < 4 ? 414 : 1024, maxFreq: $0 < 4 ? 1_800_000 : 2_400_000) }
        XCTAssertEqual(try count(rk3588), 4)
        // The same board on a kernel without cpu_capacity: the clocks decide.
        XCTAssertEqual(try count(rk3588.map { CPU(siblings: $0.siblings, maxFreq: $0.maxFreq) }), 4)
        // A phone: 3 × A510 (capacity 280), 4 × A715 (870), 1 × X3 (1024) → the 5 fast ones.
        XCTAssertEqual(try count((0..<8).map { CPU(siblings: "\($0)", capacity: $0 < 3 ? 280 : $0 < 7 ? 870 : 1024) }), 5)
        // x86 with SMT: cpu i and i + 4 share a core → 4 cores; one of them offline → 3.
        var smt = (0..<8).map { CPU(siblings: "\($0 % 4),\($0 % 4 + 4)", capacity: 1024) }
        XCTAssertEqual(try count(smt), 4)
        smt[2].online = false
        XCTAssertEqual(try count(smt), 3)
        // A uniform CPU with no capacity or clock files: every core; an empty tree: 0 (the caller falls back).
        XCTAssertEqual(try count((0..<6).map { CPU(siblings: "\($0)") }), 6)
        XCTAssertEqual(try count([]), 0)
        XCTAssertGreaterThan(ThreadPool.defaultThreads, 0)
    }

    // MARK: fp32

    func testGemvMatchesFloat64ReferenceOnRaggedShapes() throws {
        try requireSIMDPath(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 11)
        var differs = false
        for (rows, cols) in [(1, 1), (3, 7), (4, 8), (5, 33), (17, 64), (31, 576), (64, 1536), (9, 1000)] {
            let W = randomBuffer(rows * cols, &rng), x = randomBuffer(cols, &rng)
            let fast = FloatBuffer(count: rows), ref = FloatBuffer(count: rows)
            tsr_gemv_f32(W.pointer, x.pointer, fast.pointer, Int32(cols), 0, Int32(rows))
            tsr_gemv_f32_ref(W.pointer, x.pointer, ref.pointer, Int32(cols), 0, Int32(rows))
            for r in 0..<rows {
                var exact = 0.0, absSum = 0.0
                for k in 0..<cols {
                    exact += Double(W[r * cols + k]) * Double(x[k])
                    absSum += abs(Double(W[r * cols + k]) * Double(x[k]))
                }
                XCTAssertLessThanOrEqual(abs(Double(fast[r]) - exact), bound(cols, absSum), "simd rows \(rows) cols \(cols) row \(r)")
                XCTAssertLessThanOrEqual(abs(Double(ref[r]) - exact), bound(cols, absSum), "ref rows \(rows) cols \(cols) row \(r)")
                if fast[r].bitPattern != ref[r].bitPattern { differs = true }
            }
        }
        // The SIMD path sums in another order: somewhere its result is not the reference's bits.
        XCTAssertTrue(differs, "tsr_gemv_f32 gave the reference's bits on every row: did the SIMD path run?")
    }

    func testRowRangeIsRespected() throws {
        try assertDispatch(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 3)
        let rows = 13, cols = 20
        let W = randomBuffer(rows * cols, &rng), x = randomBuffer(cols, &rng)
        let y = FloatBuffer(count: rows)
        for i in 0..<rows { y[i] = 99 }
        tsr_gemv_f32(W.pointer, x.pointer, y.pointer, Int32(cols), 5, 11)
        for r in 0..<rows where r < 5 || r >= 11 { XCTAssertEqual(y[r], 99) }
        for r in 5..<11 { XCTAssertNotEqual(y[r], 99) }
    }

    func testDotAndAxpyMatchFloat64() throws {
        try assertDispatch(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 5)
        for n in [1, 7, 8, 31, 32, 33, 64, 100] {
            let a = randomBuffer(n, &rng), b = randomBuffer(n, &rng)
            var exact = 0.0, absSum = 0.0
            for i in 0..<n { exact += Double(a[i]) * Double(b[i]); absSum += abs(Double(a[i]) * Double(b[i])) }
            XCTAssertLessThanOrEqual(abs(Double(Ops.dot(a.pointer, b.pointer, n)) - exact), bound(n, absSum))
            let y = randomBuffer(n, &rng), before = y.array
            Ops.axpy(0.37, a.pointer, y.pointer, n)
            for i in 0..<n { XCTAssertEqual(Double(y[i]), Double(before[i]) + 0.37 * Double(a[i]), accuracy: 1e-6) }
        }
    }

    func testPortablePathMatchesSIMDPath() throws {
        let path = try requireSIMDPath(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 9)
        let rows = 37, cols = 333
        let W = randomBuffer(rows * cols, &rng), x = randomBuffer(cols, &rng)
        let simd = FloatBuffer(count: rows), portable = FloatBuffer(count: rows), ref = FloatBuffer(count: rows)
        tsr_gemv_f32(W.pointer, x.pointer, simd.pointer, Int32(cols), 0, Int32(rows))
        KernelPaths.portable {
            assertPortablePaths()
            tsr_gemv_f32(W.pointer, x.pointer, portable.pointer, Int32(cols), 0, Int32(rows))
        }
        XCTAssertEqual(KernelPaths.current(TSR_KERNEL_F32), path, "dispatch restored after tsr_force_portable(0)")
        tsr_gemv_f32_ref(W.pointer, x.pointer, ref.pointer, Int32(cols), 0, Int32(rows))
        for r in 0..<rows { XCTAssertEqual(simd[r], portable[r], accuracy: 1e-4) }
        // Forced portable, the dispatcher ran the reference (its bits); unforced, something else.
        XCTAssertEqual(portable.array.map(\.bitPattern), ref.array.map(\.bitPattern))
        XCTAssertTrue(simd.array.map(\.bitPattern) != ref.array.map(\.bitPattern), "the \(KernelPaths.name(path)) path gave the reference's bits on every row")
    }

    // MARK: fp16 weights

    /// Random fp16 weights (finite, magnitudes up to 2) and their exact fp32 values.
    func randomHalves(_ n: Int, _ rng: inout SplitMix64) -> ([UInt16], [Float]) {
        let bits = (0..<n).map { _ in Float16(rng.uniform(-2, 2)).bitPattern }
        return (bits, bits.map { Float(Float16(bitPattern: $0)) })
    }

    func testF16GemvMatchesReferenceAndFloat64OnRaggedShapes() throws {
        try requireSIMDPath(TSR_KERNEL_F16_GEMV)
        var rng = SplitMix64(seed: 12)
        var differs = false
        for (rows, cols) in [(1, 1), (3, 7), (4, 8), (5, 15), (6, 16), (7, 33), (17, 64), (31, 576), (9, 1000)] {
            let (W, Wf) = randomHalves(rows * cols, &rng)
            let x = randomBuffer(cols, &rng)
            for (lo, hi) in [(0, rows), (rows / 3, rows - rows / 4)] {
                var fast = [Float](repeating: 99, count: rows), ref = fast
                tsr_gemv_f16(W, x.pointer, &fast, Int32(cols), Int32(lo), Int32(hi))
                tsr_gemv_f16_ref(W, x.pointer, &ref, Int32(cols), Int32(lo), Int32(hi))
                for r in 0..<rows {
                    if r < lo || r >= hi { XCTAssertEqual(fast[r], 99); XCTAssertEqual(ref[r], 99); continue }
                    var exact = 0.0, absSum = 0.0
                    for k in 0..<cols {
                        exact += Double(Wf[r * cols + k]) * Double(x[k])
                        absSum += abs(Double(Wf[r * cols + k]) * Double(x[k]))
                    }
                    XCTAssertLessThanOrEqual(abs(Double(fast[r]) - exact), bound(cols, absSum), "simd \(rows)×\(cols) row \(r)")
                    XCTAssertLessThanOrEqual(abs(Double(ref[r]) - exact), bound(cols, absSum), "ref \(rows)×\(cols) row \(r)")
                    if fast[r].bitPattern != ref[r].bitPattern { differs = true }
                }
            }
        }
        XCTAssertTrue(differs, "tsr_gemv_f16 gave the reference's bits on every row: did the SIMD path run?")
        // The portable path is the reference.
        let (W, _) = randomHalves(5 * 40, &rng)
        let x = randomBuffer(40, &rng)
        var a = [Float](repeating: 0, count: 5), b = a
        KernelPaths.portable {
            assertPortablePaths()
            tsr_gemv_f16(W, x.pointer, &a, 40, 0, 5)
        }
        tsr_gemv_f16_ref(W, x.pointer, &b, 40, 0, 5)
        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern))
    }

    func testF16LinearMatchesFP32LinearOnTheSameWeights() {
        var rng = SplitMix64(seed: 13)
        let pool = ThreadPool(threads: 2)
        let rows = 45, cols = 72
        let (W, Wf) = randomHalves(rows * cols, &rng)
        let f16 = W.withUnsafeBytes { F16Linear(copying: $0.baseAddress!, outFeatures: rows, inFeatures: cols) }
        let f32 = FP32Linear(weight: FloatBuffer(Wf), outFeatures: rows, inFeatures: cols)
        f16.panelRows = 16
        XCTAssertEqual(f16.byteCount, rows * cols * 2)
        let rounded = Wf.withUnsafeBufferPointer { F16Linear(rounding: $0.baseAddress!, outFeatures: rows, inFeatures: cols) }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: rounded.weight, count: rows * cols)), W)
        for T in [1, 5, 2] {
            let X = randomBuffer(T * cols, &rng)
            let a = FloatBuffer(count: T * rows), b = FloatBuffer(count: T * rows)
            f16.forward(X.pointer, tokens: T, into: a.pointer, pool: pool)
            f32.forward(X.pointer, tokens: T, into: b.pointer, pool: pool)
            for i in 0..<T * rows { XCTAssertEqual(a[i], b[i], accuracy: 1e-4 * max(1, abs(b[i])), "T\(T) at \(i)") }
        }
        let row = FloatBuffer(count: 2 * cols)
        f16.decodeRows(7, count: 2, into: row.pointer)
        XCTAssertEqual(row.array, Array(Wf[7 * cols..<9 * cols]))
    }

    func testHalfConversionIsExactForEveryHalf() throws {
        let halves = [UInt16](0...UInt16.max)
        for h in halves {
            let expected = Float(Float16(bitPattern: h)), scalar = tsr_f16_to_f32(h)
            if expected.isNaN { XCTAssertTrue(scalar.isNaN); continue }
            XCTAssertEqual(scalar.bitPattern, expected.bitPattern, "half \(h)")
        }
        // The array conversion: the SIMD path (F16C, NEON), then the portable loop.
        let path = try requireSIMDPath(TSR_KERNEL_F16_CONVERT)
        var converted = [Float](repeating: 0, count: halves.count), portable = converted
        tsr_f16_to_f32_array(halves, &converted, halves.count)
        KernelPaths.portable {
            assertPortablePaths()
            tsr_f16_to_f32_array(halves, &portable, halves.count)
        }
        for h in halves {
            let expected = Float(Float16(bitPattern: h))
            for (name, array) in [(KernelPaths.name(path), converted[Int(h)]), ("portable", portable[Int(h)])] {
                if expected.isNaN { XCTAssertTrue(array.isNaN, "half \(h) (\(name))"); continue }
                XCTAssertEqual(array.bitPattern, expected.bitPattern, "half \(h) (\(name))")
            }
        }
    }

    func testFloatToHalfRoundsToNearestEven() {
        var rng = SplitMix64(seed: 2)
        var values: [Float] = [0, -0, 1, 65504, 65520, 1e-8, 6e-8, -3.1e-5, 5.96e-8, 2.98e-8, .infinity]
        for _ in 0..<20000 { values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x47ff_ffff)) }
        for v in values {
            XCTAssertEqual(tsr_f32_to_f16(v), Float16(v).bitPattern, "\(v)")
        }
    }

    func testThreadPoolRunsEveryWorkerAndChunksCoverRange() {
        let pool = ThreadPool(threads: 2)
        let hits = FloatBuffer(count: 1000)
        for _ in 0..<200 {
            pool.parallelFor(1000, multiple: 16) { r in for i in r { hits[i] += 1 } }
        }
        for i in 0..<1000 { XCTAssertEqual(hits[i], 200) }
        for n in [0, 1, 15, 16, 17, 1000] {
            for count in 1...5 {
                var covered: [Int] = []
                for i in 0..<count { covered += Array(ThreadPool.chunk(n, index: i, count: count, multiple: 16)) }
                XCTAssertEqual(covered, Array(0..<n), "n \(n) count \(count)")
            }
        }
    }

    /// Every chunk of every run runs exactly once, whichever thread claims it (3 threads on 2
    /// cores: workers are often descheduled, so the caller runs their chunks).
    func testThreadPoolRunsEachChunkExactlyOncePerRun() {
        for threads in [2, 3] {
            let pool = ThreadPool(threads: threads)
            var perChunk = [Int](repeating: 0, count: threads)
            let runs = 20_000
            perChunk.withUnsafeMutableBufferPointer { counts in
                let p = counts.baseAddress!
                for _ in 0..<runs {
                    pool.run { chunk, count in
                        precondition(count == threads)
                        p[chunk] += 1  // one thread per chunk and run: no race
                    }
                }
            }
            XCTAssertEqual(perChunk, [Int](repeating: runs, count: threads), "\(threads) threads")
        }
    }

    /// Workers that take no chunk in most runs of a window (here: asleep whenever a run starts,
    /// as a worker whose core another process holds) make the pool run on the caller alone.
    func testThreadPoolGoesSoloWhenWorkersMissRuns() {
        let pool = ThreadPool(threads: 2)
        var perChunk = [0, 0], runs = 0
        perChunk.withUnsafeMutableBufferPointer { counts in
            let p = counts.baseAddress!
            while runs < 1000 && pool.regionStats.solo == 0 {
                usleep(3000)   // long enough for the worker to stop spinning and sleep
                pool.run { chunk, _ in
                    p[chunk] += 1
                    // ~8 µs per chunk: long enough to count (tiny regions say nothing about the workers)
                    let start = DispatchTime.now().uptimeNanoseconds
                    while DispatchTime.now().uptimeNanoseconds - start < 8_000 {}
                }
                runs += 1
            }
            pool.run { chunk, _ in p[chunk] += 1 }
            runs += 1
        }
        XCTAssertEqual(perChunk, [runs, runs])
        XCTAssertGreaterThan(pool.regionStats.solo, 0, "\(pool.regionStats) after \(runs) runs")
    }

    /// A worker that holds a claimed chunk for 2 ms (as if another process had taken its core)
    /// stalls the caller; after two stalls within the pool's window the pool runs regions on the
    /// caller alone for a while, still running every chunk exactly once with the same
    /// (index, count). The caller's chunk waits (up to 3 ms) until the other chunk has started,
    /// so a worker takes part in (nearly) every run and the stalls come back to back, on an idle
    /// machine and under emulation alike, instead of whenever a worker happens to claim a chunk.
    func testThreadPoolGoesSoloAfterStallsAndKeepsChunks() {
        let pool = ThreadPool(threads: 2)
        var perChunk = [0, 0], startedIn = [-1, -1]
        var sleptOnWorker = 0, runs = 0, soloBefore = 0
        let caller = pthread_self()
        func waitNs(_ ns: UInt64, until done: () -> Bool) {
            let start = DispatchTime.now().uptimeNanoseconds
            while !done() && DispatchTime.now().uptimeNanoseconds - start < ns {}
        }
        perChunk.withUnsafeMutableBufferPointer { counts in
            startedIn.withUnsafeMutableBufferPointer { started in
                let p = counts.baseAddress!, s = started.baseAddress!
                // Until the caller has seen two stalls, then 100 more runs.
                var stallsSeenAt: Int?
                while runs < 5000 && (stallsSeenAt.map { runs - $0 < 100 } ?? true) {
                    let run = runs
                    pool.run { chunk, count in
                        precondition(count == 2)
                        p[chunk] += 1
                        s[chunk] = run
                        if pthread_equal(pthread_self(), caller) == 0 {
                            sleptOnWorker += 1
                            usleep(2000)
                        } else {
                            // The other chunk's start is written by another thread; the clock
                            // call between reads keeps the compiler from hoisting the load.
                            waitNs(3_000_000) { s[1 - chunk] == run }
                        }
                    }
                    runs += 1
                    if stallsSeenAt == nil && pool.regionStats.stalls >= 2 { stallsSeenAt = runs; soloBefore = pool.regionStats.solo }
                }
            }
        }
        XCTAssertEqual(perChunk, [runs, runs])
        let stats = pool.regionStats
        XCTAssertEqual(stats.runs, runs)
        XCTAssertGreaterThanOrEqual(stats.stalls, 2, "a chunk slept on a worker \(sleptOnWorker) times in \(runs) runs")
        XCTAssertGreaterThan(stats.solo, soloBefore, "\(stats): no solo runs after the stalls")
    }

    /// exp (Cephes' algorithm): within 2 ulp of float64 exp over the whole finite range, the
    /// SIMD path giving the reference's bits; 0 below −87.34 and +inf above 88.72 like expf.
    func testExpMatchesFloat64AndReferenceBits() throws {
        try assertDispatch(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 41)
        var x = (0..<4099).map { _ in Float(Double(rng.next() % 1_000_000) / 1_000_000 * 176 - 87.3) }
        x += [0, -0.0, 1, -1, 0.34657359, -0.34657359, 88.7, -87.33, -87.34, 88.73, -200, 200, .infinity, -.infinity]
        var y = [Float](repeating: 0, count: x.count), yRef = y
        tsr_exp_f32(x, &y, Int32(x.count))
        tsr_exp_f32_ref(x, &yRef, Int32(x.count))
        for i in x.indices {
            XCTAssertEqual(y[i].bitPattern, yRef[i].bitPattern, "exp(\(x[i])): SIMD \(y[i]) vs reference \(yRef[i])")
            let exact = Foundation.exp(Double(x[i]))
            if x[i] < -87.33654 { XCTAssertEqual(y[i], 0, "exp(\(x[i]))"); continue }
            if x[i] > 88.72284 { XCTAssertEqual(y[i], .infinity, "exp(\(x[i]))"); continue }
            XCTAssertLessThanOrEqual(abs(Double(y[i]) - exact), 2 * Double(Float(exact).ulp), "exp(\(x[i])) = \(y[i]), exact \(exact)")
        }
    }

    func testSoftmaxAndSwiGLUMatchFloat64() throws {
        try assertDispatch(TSR_KERNEL_F32)
        var rng = SplitMix64(seed: 43)
        for n in [1, 3, 8, 9, 31, 64, 513] {
            let x = randomBuffer(n, &rng)
            for i in 0..<n { x[i] *= 12 }
            let m = (0..<n).map { Double(x[$0]) }.max()!
            let e = (0..<n).map { Foundation.exp(Double(x[$0]) - m) }, total = e.reduce(0, +)
            let simd = x.array, ref = x.array
            var a = simd, b = ref
            tsr_softmax_f32(&a, Int32(n))
            tsr_softmax_f32_ref(&b, Int32(n))
            for i in 0..<n {
                XCTAssertEqual(Double(a[i]), e[i] / total, accuracy: 4e-7 * max(1, e[i] / total), "n \(n) i \(i)")
                XCTAssertEqual(Double(b[i]), e[i] / total, accuracy: 4e-7 * max(1, e[i] / total), "n \(n) i \(i)")
            }
            let gate = randomBuffer(n, &rng), up = randomBuffer(n, &rng)
            for i in 0..<n { gate[i] *= 20 }
            var out = [Float](repeating: 0, count: n), outRef = out
            tsr_swiglu_f32(gate.pointer, up.pointer, &out, Int32(n))
            tsr_swiglu_f32_ref(gate.pointer, up.pointer, &outRef, Int32(n))
            for i in 0..<n {
                let g = Double(gate[i]), exact = g / (1 + Foundation.exp(-g)) * Double(up[i])
                XCTAssertEqual(out[i].bitPattern, outRef[i].bitPattern, "swiglu n \(n) i \(i)")
                XCTAssertEqual(Double(out[i]), exact, accuracy: 1e-6 * max(1, abs(exact)), "swiglu n \(n) i \(i)")
            }
        }
    }

    /// The Hadamard transforms: H_m·H_mᵀ = m·I exactly for the four Paley matrices; the factor
    /// rule; forward and transposed transforms against a float64 dense (H_m ⊗ Sylvester H_p)/√n,
    /// the SIMD path giving the reference's bits; transpose(forward(x)) = x.
    func testHadamardMatchesFloat64AndReferenceBits() throws {
        try assertDispatch(TSR_KERNEL_F32)
        for m in [12, 20, 28, 36] {
            let h = try XCTUnwrap(tsr_hadamard_matrix(Int32(m)), "H_\(m)")
            for i in 0..<m {
                for j in 0..<m {
                    XCTAssertEqual(abs(Int(h[i * m + j])), 1, "H_\(m)[\(i)][\(j)]")
                    let dot = (0..<m).reduce(0) { $0 + Int(h[i * m + $1]) * Int(h[j * m + $1]) }
                    XCTAssertEqual(dot, i == j ? m : 0, "H_\(m) rows \(i), \(j)")
                }
            }
        }
        XCTAssertNil(tsr_hadamard_matrix(16))
        var m: Int32 = 0
        for (n, wantM, wantK) in [(1, 1, 0), (2048, 1, 11), (576, 36, 4), (1536, 12, 7), (3072, 12, 8), (8192, 1, 13), (80, 20, 2), (28, 28, 0)] {
            XCTAssertEqual(tsr_hadamard_factor(Int32(n), &m), Int32(wantK), "n \(n)")
            XCTAssertEqual(Int(m), wantM, "n \(n)")
        }
        for n in [0, -4, 3, 6, 9, 18, 44, 11 * 64, 25 * 4] { XCTAssertEqual(tsr_hadamard_factor(Int32(n), nil), -1, "n \(n)") }
        var bad: [Float] = [1, 2, 3]
        XCTAssertEqual(tsr_hadamard_f32(&bad, 3, 0), -1)
        XCTAssertEqual(bad, [1, 2, 3])

        var rng = SplitMix64(seed: 47)
        for n in [1, 2, 8, 16, 12, 24, 40, 56, 72, 144, 576, 1536, 2048, 3072] {
            let k = Int(tsr_hadamard_factor(Int32(n), &m)), p = 1 << k, mm = Int(m)
            let small = mm > 1 ? tsr_hadamard_matrix(m) : nil
            func entry(_ i: Int, _ j: Int) -> Double { // (H_m ⊗ H_p)[i][j]
                let hm = small.map { Double($0[(i / p) * mm + j / p]) } ?? 1
                return (((i % p) & (j % p)).nonzeroBitCount % 2 == 0 ? 1 : -1) * hm
            }
            let x = randomBuffer(n, &rng).array
            for transpose in [0, 1] {
                var y = x, yRef = x
                XCTAssertEqual(tsr_hadamard_f32(&y, Int32(n), Int32(transpose)), 0)
                XCTAssertEqual(tsr_hadamard_f32_ref(&yRef, Int32(n), Int32(transpose)), 0)
                let norm = x.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
                for i in 0..<n {
                    var exact = 0.0
                    for j in 0..<n { exact += (transpose == 1 ? entry(j, i) : entry(i, j)) * Double(x[j]) }
                    exact /= Double(n).squareRoot()
                    XCTAssertEqual(y[i].bitPattern, yRef[i].bitPattern, "n \(n) transpose \(transpose) i \(i)")
                    XCTAssertEqual(Double(y[i]), exact, accuracy: 1e-6 * norm * Double(k + mm), "n \(n) transpose \(transpose) i \(i)")
                }
                var back = y
                XCTAssertEqual(tsr_hadamard_f32(&back, Int32(n), Int32(1 - transpose)), 0)
                for i in 0..<n { XCTAssertEqual(Double(back[i]), Double(x[i]), accuracy: 1e-6 * norm * Double(k + mm), "round trip n \(n) i \(i)") }
            }
        }
    }

    func testBandwidthProbeChecksumMatchesReference() throws {
        // No SIMD path on AArch64 (there the scalar loop is the probe); the checksum is computed
        // here either way.
        try assertDispatch(TSR_KERNEL_READ_BYTES)
        var rng = SplitMix64(seed: 31)
        // Ragged sizes: under one word, under one 128-byte step, many steps plus a tail; odd offsets.
        for (bytes, offset) in [(5, 0), (100, 3), (128, 0), (4099, 1), (1 << 16 + 77, 5)] {
            var data = [UInt8](repeating: 0, count: bytes + offset)
            for i in data.indices { data[i] = UInt8(truncatingIfNeeded: rng.next()) }
            data.withUnsafeBytes { raw in
                let p = raw.baseAddress! + offset
                var expected: UInt64 = 0
                var i = 0
                while i + 8 <= bytes {
                    var word: UInt64 = 0
                    for k in 0..<8 { word |= UInt64(raw[offset + i + k]) << (8 * k) }
                    expected &+= word
                    i += 8
                }
                while i < bytes { expected &+= UInt64(raw[offset + i]); i += 1 }
                XCTAssertEqual(tsr_read_bytes_ref(p, bytes), expected, "\(bytes)")
                XCTAssertEqual(tsr_read_bytes(p, bytes), expected, "\(bytes)")
            }
        }
        let m = MemoryBandwidth.measure(pool: ThreadPool(threads: 2), bytes: 1 << 22, passes: 2)
        XCTAssertEqual(m.passes.count, 2)
        XCTAssertTrue(m.passes.allSatisfy { $0 > 0 && $0.isFinite })
        XCTAssertEqual(m.bytes % 4096, 0)
    }
}
