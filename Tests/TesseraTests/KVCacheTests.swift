import XCTest
import KernelsC
@testable import Kernels
@testable import Engine

/// The 8-bit KV cache: its three row kernels against float64 on ragged shapes (the dequantized
/// values the reference's bits), and a session on it against the float64 forward pass.
final class KVCacheTests: XCTestCase {
    /// n rows of `width` random values (a few rows all zero, one block of a row tiny) stored in 8 bits.
    func randomRows(_ n: Int, width: Int, _ rng: inout SplitMix64) -> Int8Rows {
        let rows = Int8Rows(rows: n, width: width)
        let x = FloatBuffer(count: width)
        for p in 0..<n {
            let scale = rng.uniform(0.01, 8)
            for i in 0..<width { x[i] = p % 7 == 3 ? 0 : rng.uniform(-scale, scale) }
            if p % 5 == 1 { for i in 0..<32 { x[i] *= 1e-6 } }
            rows.store(p, from: x.pointer)
        }
        return rows
    }

    /// Row p's values [offset, offset + D) as the cache holds them, in float64.
    func dequantized(_ rows: Int8Rows, _ p: Int, offset: Int, D: Int) -> [Double] {
        (0..<D).map { i in Double(rows.scales[(p * rows.width + offset + i) / 32]) * Double(rows.codes[p * rows.width + offset + i]) }
    }

    func testRowKernelsMatchFloat64OnRaggedShapes() throws {
        _ = try requireSIMDPath(TSR_KERNEL_QUANT)
        var rng = SplitMix64(seed: 41)
        for (n, heads, D) in [(1, 1, 32), (7, 3, 64), (33, 2, 128), (100, 8, 64), (5, 1, 96)] {
            let width = heads * D
            let rows = randomRows(n, width: width, &rng)
            for head in [0, heads - 1] {
                let offset = head * D
                let q = FloatBuffer(count: D), w = FloatBuffer(count: n)
                for i in 0..<D { q[i] = rng.uniform(-2, 2) }
                for p in 0..<n { w[p] = rng.uniform(0, 1) }
                let exact = (0..<n).map { dequantized(rows, $0, offset: offset, D: D) }

                // scores = alpha·K·q: fp32 accumulation bound against the float64 value.
                let scores = FloatBuffer(count: n), scoresRef = FloatBuffer(count: n)
                rows.scores(count: n, offset: offset, D: D, query: q.pointer, alpha: 0.125, into: scores.pointer)
                tsr_kv8_scores_ref(rows.codes + offset, width, rows.scales.pointer + offset / 32, width / 32, Int32(n), Int32(D), q.pointer, 0.125, scoresRef.pointer)
                for p in 0..<n {
                    let terms = (0..<D).map { exact[p][$0] * Double(q[$0]) }
                    let value = 0.125 * terms.reduce(0, +), mass = 0.125 * terms.map(abs).reduce(0, +)
                    let bound = Double(D + 2) * 1.2e-7 * mass + 1e-30
                    XCTAssertLessThanOrEqual(abs(Double(scores[p]) - value), bound, "scores n \(n) D \(D) head \(head) row \(p)")
                    XCTAssertLessThanOrEqual(abs(Double(scoresRef[p]) - value), bound, "scores_ref n \(n) D \(D) row \(p)")
                }

                // out = Σ_p w[p]·V[p].
                let out = FloatBuffer(count: D), outRef = FloatBuffer(count: D)
                rows.mix(count: n, offset: offset, D: D, weights: w.pointer, into: out.pointer)
                tsr_kv8_mix_ref(rows.codes + offset, width, rows.scales.pointer + offset / 32, width / 32, Int32(n), Int32(D), w.pointer, outRef.pointer)
                for i in 0..<D {
                    let terms = (0..<n).map { Double(w[$0]) * exact[$0][i] }
                    let value = terms.reduce(0, +), bound = Double(n + 2) * 1.2e-7 * terms.map(abs).reduce(0, +) + 1e-30
                    XCTAssertLessThanOrEqual(abs(Double(out[i]) - value), bound, "mix n \(n) D \(D) head \(head) column \(i)")
                    XCTAssertLessThanOrEqual(abs(Double(outRef[i]) - value), bound, "mix_ref n \(n) D \(D) column \(i)")
                }

                // Dequantized rows: exactly scale·code, the reference's bits.
                let deq = FloatBuffer(count: n * D), deqRef = FloatBuffer(count: n * D)
                rows.dequantize(count: n, offset: offset, D: D, into: deq.pointer)
                tsr_kv8_dequantize_ref(rows.codes + offset, width, rows.scales.pointer + offset / 32, width / 32, Int32(n), Int32(D), deqRef.pointer)
                XCTAssertEqual(deq.array.map(\.bitPattern), deqRef.array.map(\.bitPattern), "dequantize n \(n) D \(D)")
                for p in 0..<n { for i in 0..<D { XCTAssertEqual(Double(deq[p * D + i]), exact[p][i], accuracy: 6e-8 * abs(exact[p][i])) } }
            }
        }
    }

    /// The stored codes are tsr_quantize_act's at 127 levels: |x − scale·code| ≤ scale/2 per
    /// block, scale = max|x|/127, and 1.125 bytes a value.
    func testStoredRowsRoundToTheBlockGrid() {
        var rng = SplitMix64(seed: 3)
        let width = 192, rows = Int8Rows(rows: 2, width: width)
        let x = FloatBuffer(count: width)
        for i in 0..<width { x[i] = rng.uniform(-3, 3) }
        rows.store(1, from: x.pointer)
        for b in 0..<width / 32 {
            let block = (32 * b..<32 * b + 32).map { x[$0] }
            let scale = rows.scales[width / 32 + b]
            XCTAssertEqual(scale, block.map(abs).max()! / 127)
            for i in 32 * b..<32 * b + 32 {
                XCTAssertLessThanOrEqual(abs(x[i] - scale * Float(rows.codes[width + i])), scale / 2 * 1.0001)
            }
        }
        XCTAssertEqual(rows.byteCount, 2 * width + 2 * width / 32 * 4)
    }

    /// A tiny model with 32-wide heads (q8 needs D % 32 == 0).
    func headDim32Source(tied: Bool) -> InMemorySource {
        let config = LlamaConfig(blockCount: 2, hidden: 64, ffn: 96, heads: 4, kvHeads: 2, headDim: 32, vocab: 97,
                                 contextLength: 128, ropeBase: 10000, rmsEps: 1e-5, tiedEmbeddings: tied)
        return InMemorySource(config: config, seed: 19, tied: tied)
    }

    /// Logits with the q8 cache stay within a few per mille of the float64 forward pass (the f32
    /// cache within 1e-4), prefill and decode agree with each other on it, and the cache takes
    /// 9/32 of the f32 one's bytes.
    func testQ8CacheSessionAgainstFloat64AndItsOwnDecode() throws {
        for tied in [true, false] {
            let source = headDim32Source(tied: tied)
            let model = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 2))
            let tokens = [3, 17, 96, 0, 42, 42, 5, 77, 8, 61, 12, 30, 30, 1]
            let expected = ReferenceLlama(source: source).logits(tokens)
            func error(_ a: [Float], _ b: [Double]) -> Double { zip(a, b).map { abs(Double($0) - $1) }.max()! / b.map(abs).max()! }

            let f32 = InferenceSession(model: model, contextLength: 32, maxBatch: 512)
            let q8 = InferenceSession(model: model, contextLength: 32, maxBatch: 512, kvCache: .q8)
            let f32All = try f32.forward(tokens.map(Int32.init), logitRows: tokens.count)
            let q8All = try q8.forward(tokens.map(Int32.init), logitRows: tokens.count)
            var worst = 0.0
            for t in tokens.indices {
                XCTAssertLessThan(error(f32All[t], expected[t]), 1e-4, "f32 cache, token \(t)")
                worst = max(worst, error(q8All[t], expected[t]))
            }
            XCTAssertLessThan(worst, 2e-2, "q8 cache against float64 (tied \(tied))")
            XCTAssertGreaterThan(worst, 1e-6, "the q8 cache changed nothing: is it in use?")

            // Prefill 5 tokens, then decode one at a time: the same logits as the one-batch run
            // (the same 8-bit rows, read by the decode kernels instead of dequantize + sgemm).
            q8.reset()
            _ = try q8.forward(tokens[..<5].map(Int32.init))
            for t in 5..<tokens.count {
                let row = try q8.forward([Int32(tokens[t])])[0]
                XCTAssertLessThan(error(row, q8All[t].map(Double.init)), 1e-4, "q8 decode step \(t)")
            }
            XCTAssertEqual(q8.cache.byteCount * 32, f32.cache.byteCount * 9)
        }
    }

    func testQ8IsRefusedForHeadsNotAMultipleOf32() {
        XCTAssertNil(KVCacheType.q8.unsupportedReason(headDim: 64))
        XCTAssertNil(KVCacheType.f32.unsupportedReason(headDim: 12))
        let reason = KVCacheType.q8.unsupportedReason(headDim: 12)
        XCTAssertNotNil(reason)
        XCTAssertTrue(reason?.contains("--kv-cache f32") ?? false, reason ?? "")
    }
}
