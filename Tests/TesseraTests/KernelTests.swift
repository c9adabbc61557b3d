import XCTest
import KernelsC
@testable import Core
@testable import Kernels
@testable import Quant
@testable import ChatTemplate
@testable import Tokenizer
@testable import Architecture
@testable import Formats
@testable import Model
@testable import Engine
@testable import Eval
@testable import Calibrate

/// Every SIMD path against its scalar reference and a float64 computation, on random data
/// with ragged sizes.
final class KernelTests: XCTestCase {
    func randomBuffer(_ n: Int, _ rng: inout SplitMix64) -> FloatBuffer {
        let b = FloatBuffer(count: n)
        for i in 0..<n { b[i] = rng.uniform(-1, 1) }
        return b
    }

    /// fp32 accumulation error bound for a dot product of length n: ~ n·ε·Σ|w·x|.
    func bound(_ n: Int, _ absSum: Double) -> Double { Double(n) * 1.2e-7 * absSum + 1e-30 }

    func testGemvMatchesFloat64ReferenceOnRaggedShapes() {
        var rng = SplitMix64(seed: 11)
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
            }
        }
    }

    func testRowRangeIsRespected() {
        var rng = SplitMix64(seed: 3)
        let rows = 13, cols = 20
        let W = randomBuffer(rows * cols, &rng), x = randomBuffer(cols, &rng)
        let y = FloatBuffer(count: rows)
        for i in 0..<rows { y[i] = 99 }
        tsr_gemv_f32(W.pointer, x.pointer, y.pointer, Int32(cols), 5, 11)
        for r in 0..<rows where r < 5 || r >= 11 { XCTAssertEqual(y[r], 99) }
        for r in 5..<11 { XCTAssertNotEqual(y[r], 99) }
    }

    func testDotAndAxpyMatchFloat64() {
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

    func testPortablePathMatchesSIMDPath() {
        var rng = SplitMix64(seed: 9)
        let rows = 37, cols = 333
        let W = randomBuffer(rows * cols, &rng), x = randomBuffer(cols, &rng)
        let simd = FloatBuffer(count: rows), portable = FloatBuffer(count: rows)
        tsr_gemv_f32(W.pointer, x.pointer, simd.pointer, Int32(cols), 0, Int32(rows))
        tsr_force_portable(1)
        tsr_gemv_f32(W.pointer, x.pointer, portable.pointer, Int32(cols), 0, Int32(rows))
        tsr_force_portable(0)
        for r in 0..<rows { XCTAssertEqual(simd[r], portable[r], accuracy: 1e-4) }
    }

    // MARK: fp16 weights

    /// Random fp16 weights (finite, magnitudes up to 2) and their exact fp32 values.
    func randomHalves(_ n: Int, _ rng: inout SplitMix64) -> ([UInt16], [Float]) {
        let bits = (0..<n).map { _ in Float16(rng.uniform(-2, 2)).bitPattern }
        return (bits, bits.map { Float(Float16(bitPattern: $0)) })
    }

    func testF16GemvMatchesReferenceAndFloat64OnRaggedShapes() {
        var rng = SplitMix64(seed: 12)
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
                }
            }
        }
        // The portable path is the reference.
        let (W, _) = randomHalves(5 * 40, &rng)
        let x = randomBuffer(40, &rng)
        var a = [Float](repeating: 0, count: 5), b = a
        tsr_force_portable(1)
        tsr_gemv_f16(W, x.pointer, &a, 40, 0, 5)
        tsr_force_portable(0)
        tsr_gemv_f16_ref(W, x.pointer, &b, 40, 0, 5)
        XCTAssertEqual(a, b)
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

    func testHalfConversionIsExactForEveryHalf() {
        var halves = [UInt16](0...UInt16.max)
        var converted = [Float](repeating: 0, count: halves.count)
        tsr_f16_to_f32_array(&halves, &converted, halves.count)
        for h in halves {
            let expected = Float(Float16(bitPattern: h))
            let scalar = tsr_f16_to_f32(h), array = converted[Int(h)]
            if expected.isNaN { XCTAssertTrue(scalar.isNaN && array.isNaN); continue }
            XCTAssertEqual(scalar.bitPattern, expected.bitPattern, "half \(h)")
            XCTAssertEqual(array.bitPattern, expected.bitPattern, "half \(h) (array)")
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

    func testBandwidthProbeChecksumMatchesReference() {
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
