import Engine
import Foundation

/// The inputs each linear of a block saw, captured from the fp block on calibration tokens.
/// Shapes: N = B·T tokens; attention [N, C] (q, k, v), attentionOutput [N, H·D] (o),
/// mlp [N, C] (gate, up), down [N, F].
public struct BlockInputs {
    public var attention: FloatBuffer
    public var attentionOutput: FloatBuffer
    public var mlp: FloatBuffer
    public var down: FloatBuffer
    public let B: Int, T: Int
    public var N: Int { B * T }
}

/// AWQ initialisation (TESSERAQ_SPEC §3.1–3.2): activation-aware per-channel scales folded
/// into the preceding norm or linear, then an asymmetric clip search that clamps weights.
///
/// Differences from the reference, on purpose:
/// - The search runs online on each block's quantized-trajectory inputs, in the same pass as
///   the calibration (the reference runs AWQ once on the fp trajectory and saves the scales).
///   These are the inputs the quantized block will actually see, and it saves a second run.
/// - o_proj ← v_proj is searched only when every query head has its own value head (MHA);
///   under GQA (SmolLM2, LLaMA-3.2) it is skipped, as in the reference and in llm-awq.
/// - The search and the clip search see fp activations; the reference quantizes x there too
///   in weight-activation mode (BlockCalibrator quantizes the clip search's inputs).
///
/// On a rotated model (HadamardRotation.swift) each fold must still be an identity of the
/// stored weights:
/// - norm → q, k, v and norm → gate, up: the norm's output feeds those linears directly (the
///   rotation sits in the weights, the norm weights are 1 after folding), so dividing the norm
///   weight by s and multiplying the columns by s is exact, as on any model.
/// - v → o: the per-head Hadamard is folded into v's rows and o's columns; v's output channel
///   i still reaches o's input channel i one to one (attention mixes positions, not
///   channels), so scaling v's rows and o's columns stays exact.
/// - up → down is WRONG with the online transform: down's input is H_F·(silu(g)⊙u)/√F, which
///   mixes all F channels, so down·diag(s)·H_F·diag(1/s) ≠ down·H_F. It is skipped (α nil)
///   when `shape.onlineDownHadamard`; down's input is nearly outlier-free after the transform,
///   which is what the scales were for. (Without the online transform it stays valid.)
public enum AWQ {
    /// α = n/20, n = 0..<20 (α = 0 is the identity).
    static let grid = (0..<20).map { Float($0) / 20 }
    /// Clip shrink ratios 1.0, 0.95, …, 0.55.
    static let clipRatios = (0..<10).map { 1 - Float($0) * 0.05 }

    public struct Report: Sendable {
        /// Chosen α per subset (qkv, o, gate/up, down); nil when skipped.
        public var alphas: [Float?] = []
    }

    /// Searches and folds the scales into `p` (norm weights and linears), dividing the
    /// captured inputs by the same scales.
    public static func searchScales(_ p: BlockParameters, shape: BlockShape, inputs: inout BlockInputs,
                                    bits: Int, group: Int, pool: ThreadPool) -> Report {
        let C = shape.C, F = shape.F, HD = shape.H * shape.D, N = inputs.N, B = inputs.B, T = inputs.T
        var report = Report()
        let scratch = BlockForwardBackward.SublayerScratch(shape: shape, B: B, T: T)

        // 1. q, k, v ← attention norm; loss on the attention sub-layer output.
        do {
            let reference = FloatBuffer(count: N * C)
            BlockForwardBackward.attentionSublayer(p, shape: shape, normed: inputs.attention.pointer, B: B, T: T, into: reference.pointer, scratch: scratch, pool: pool)
            let q = BlockParameters(copying: p, shape: shape)
            let best = search(x: inputs.attention, width: C, layers: [p.query, p.key, p.value], rowsOf: [shape.H * shape.D, shape.KVH * shape.D, shape.KVH * shape.D],
                              bits: bits, group: group, reference: reference, pool: pool) { trial, scaledX, out in
                q.query.pointer.update(from: trial[0].pointer, count: trial[0].count)
                q.key.pointer.update(from: trial[1].pointer, count: trial[1].count)
                q.value.pointer.update(from: trial[2].pointer, count: trial[2].count)
                BlockForwardBackward.attentionSublayer(q, shape: shape, normed: scaledX.pointer, B: B, T: T, into: out.pointer, scratch: scratch, pool: pool)
            }
            report.alphas.append(best.alpha)
            divide(p.attentionNorm.pointer, by: best.scales, count: C)
            for w in [p.query, p.key, p.value] { scaleColumns(w, rows: w.count / C, cols: C, by: best.scales) }
            divideColumns(inputs.attention, rows: N, cols: C, by: best.scales)
        }

        // 2. o ← v, only without GQA (v's outputs are o's inputs one to one).
        report.alphas.append(shape.H == shape.KVH
            ? foldPair(p.value, p.attentionOutput, rows: C, cols: HD, fc1Cols: C, inputs: inputs.attentionOutput, bits: bits, group: group, pool: pool)
            : nil)

        // 3. gate, up ← MLP norm; loss on the MLP sub-layer output.
        do {
            let reference = FloatBuffer(count: N * C)
            BlockForwardBackward.mlpSublayer(p, shape: shape, normed: inputs.mlp.pointer, B: B, T: T, into: reference.pointer, scratch: scratch, pool: pool)
            let q = BlockParameters(copying: p, shape: shape)
            let best = search(x: inputs.mlp, width: C, layers: [p.gate, p.up], rowsOf: [F, F], bits: bits, group: group,
                              reference: reference, pool: pool) { trial, scaledX, out in
                q.gate.pointer.update(from: trial[0].pointer, count: trial[0].count)
                q.up.pointer.update(from: trial[1].pointer, count: trial[1].count)
                BlockForwardBackward.mlpSublayer(q, shape: shape, normed: scaledX.pointer, B: B, T: T, into: out.pointer, scratch: scratch, pool: pool)
            }
            report.alphas.append(best.alpha)
            divide(p.mlpNorm.pointer, by: best.scales, count: C)
            for w in [p.gate, p.up] { scaleColumns(w, rows: F, cols: C, by: best.scales) }
            divideColumns(inputs.mlp, rows: N, cols: C, by: best.scales)
        }

        // 4. down ← up; loss on down's output. Not across the online Hadamard (see above).
        report.alphas.append(shape.onlineDownHadamard
            ? nil
            : foldPair(p.up, p.down, rows: C, cols: F, fc1Cols: C, inputs: inputs.down, bits: bits, group: group, pool: pool))
        return report
    }

    /// A linear fc2 [rows, cols] fed by fc1 (whose rows are fc2's input channels): searches the
    /// scales on fc2's own output, divides fc1's rows and the inputs x [N, cols] by them and
    /// multiplies fc2's columns. Returns the chosen α.
    static func foldPair(_ fc1: FloatBuffer, _ fc2: FloatBuffer, rows: Int, cols: Int, fc1Cols: Int, inputs x: FloatBuffer,
                         bits: Int, group: Int, pool: ThreadPool) -> Float {
        let N = x.count / cols
        let reference = FloatBuffer(count: N * rows)
        Matmul.gemm(x.pointer, fc2.pointer, reference.pointer, T: N, rows: rows, cols: cols, pool: pool)
        let best = search(x: x, width: cols, layers: [fc2], rowsOf: [rows], bits: bits, group: group,
                          reference: reference, pool: pool) { trial, scaledX, out in
            Matmul.gemm(scaledX.pointer, trial[0].pointer, out.pointer, T: N, rows: rows, cols: cols, pool: pool)
        }
        divideRows(fc1, cols: fc1Cols, by: best.scales)
        scaleColumns(fc2, rows: rows, cols: cols, by: best.scales)
        divideColumns(x, rows: N, cols: cols, by: best.scales)
        return best.alpha
    }

    /// The grid search for one subset: for each α, s = mean|x|^α (≥ 1e-4) normalised by
    /// √(max·min); layers' columns × s, fake-quantized; x / s through `run`; keep the α with
    /// the lowest mean squared error against `reference`.
    static func search(x: FloatBuffer, width: Int, layers: [FloatBuffer], rowsOf: [Int], bits: Int, group: Int,
                       reference: FloatBuffer, pool: ThreadPool,
                       run: (_ trial: [FloatBuffer], _ scaledX: FloatBuffer, _ out: FloatBuffer) -> Void) -> (alpha: Float, scales: [Float]) {
        let N = x.count / width
        var meanAbs = [Double](repeating: 0, count: width)
        for t in 0..<N { for c in 0..<width { meanAbs[c] += Double(abs(x[t * width + c])) } }
        let xMean = meanAbs.map { Float($0 / Double(N)) }
        let trial = layers.map { FloatBuffer(count: $0.count) }
        let scaledX = FloatBuffer(count: x.count), out = FloatBuffer(count: reference.count)
        var best: (loss: Double, alpha: Float, scales: [Float]) = (.infinity, 0, [Float](repeating: 1, count: width))
        for alpha in grid {
            var s = xMean.map { max(powf($0, alpha), 1e-4) }
            let norm = (s.max()! * s.min()!).squareRoot()
            s = s.map { $0 / norm }
            for (i, w) in layers.enumerated() {
                trial[i].pointer.update(from: w.pointer, count: w.count)
                scaleColumns(trial[i], rows: rowsOf[i], cols: width, by: s)
                QuantGrid.fakeQuantizeRTN(trial[i].pointer, rows: rowsOf[i], cols: width, bits: bits, group: group)
            }
            scaledX.pointer.update(from: x.pointer, count: x.count)
            divideColumns(scaledX, rows: N, cols: width, by: s)
            run(trial, scaledX, out)
            var loss = 0.0
            for i in 0..<out.count { let d = Double(out[i] - reference[i]); loss += d * d }
            loss /= Double(out.count)
            if loss < best.loss { best = (loss, alpha, s) }
        }
        return (best.alpha, best.scales)
    }

    /// The asymmetric clip search for one layer W [rows, cols] with inputs x [n, cols]: per
    /// (row, group), the ratio p of 1.0…0.55 minimising mean_t (Σ_{j∈g} x_j·(w_j − Q(clamp(w, p·min, p·max))_j))²;
    /// then W is clamped in place. Returns the mean chosen ratio.
    @discardableResult
    public static func clip(_ W: FloatBuffer, rows: Int, cols: Int, inputs x: UnsafePointer<Float>, tokens n: Int,
                            bits: Int, group: Int, pool: ThreadPool) -> Float {
        let G = group == 0 ? cols : group, groups = cols / G, qmax = Float((1 << bits) - 1)
        var bestError = [Float](repeating: .infinity, count: rows * groups)
        var bestRatio = [Float](repeating: 1, count: rows * groups)
        let delta = FloatBuffer(count: rows * cols)
        let errorScratch = (0..<pool.threads).map { _ in FloatBuffer(count: n * rows) }
        for ratio in clipRatios {
            // Δ = W − Q(clamp(W)) at this ratio.
            pool.parallelFor(rows) { range in
                for r in range {
                    for g in 0..<groups {
                        let w = W.pointer + r * cols + g * G, d = delta.pointer + r * cols + g * G
                        var lo = w[0], hi = w[0]
                        for i in 1..<G { lo = min(lo, w[i]); hi = max(hi, w[i]) }
                        lo *= ratio; hi *= ratio
                        let s = max(hi - lo, 1e-5) / qmax
                        let z = min(max((-lo / s).rounded(.toNearestOrEven), 0), qmax)
                        for i in 0..<G {
                            let c = min(max(w[i], lo), hi)
                            let q = min(max((c / s).rounded(.toNearestOrEven) + z, 0), qmax)
                            d[i] = w[i] - (q - z) * s
                        }
                    }
                }
            }
            // Per group: E = X_g · Δ_gᵀ [n, rows]; error = mean over tokens of E².
            bestError.withUnsafeMutableBufferPointer { bestError in
                bestRatio.withUnsafeMutableBufferPointer { bestRatio in
                    pool.run { worker, workers in
                        let E = errorScratch[worker].pointer
                        for g in ThreadPool.chunk(groups, index: worker, count: workers) {
                            Matmul.sgemm(transA: false, transB: true, M: n, N: rows, K: G, A: x + g * G, lda: cols,
                                         B: delta.pointer + g * G, ldb: cols, C: E, ldc: rows)
                            for r in 0..<rows {
                                var sum: Float = 0
                                for t in 0..<n { let e = E[t * rows + r]; sum += e * e }
                                let err = sum / Float(n)
                                if err < bestError[r * groups + g] { bestError[r * groups + g] = err; bestRatio[r * groups + g] = ratio }
                            }
                        }
                    }
                }
            }
        }
        // Clamp in place to the chosen range.
        for r in 0..<rows {
            for g in 0..<groups {
                let w = W.pointer + r * cols + g * G, ratio = bestRatio[r * groups + g]
                var lo = w[0], hi = w[0]
                for i in 1..<G { lo = min(lo, w[i]); hi = max(hi, w[i]) }
                lo *= ratio; hi *= ratio
                for i in 0..<G { w[i] = min(max(w[i], lo), hi) }
            }
        }
        return bestRatio.reduce(0, +) / Float(bestRatio.count)
    }

    // MARK: - Folding helpers

    static func divide(_ p: UnsafeMutablePointer<Float>, by s: [Float], count: Int) {
        for i in 0..<count { p[i] /= s[i] }
    }

    /// W[r, c] *= s[c].
    static func scaleColumns(_ W: FloatBuffer, rows: Int, cols: Int, by s: [Float]) {
        for r in 0..<rows { for c in 0..<cols { W.pointer[r * cols + c] *= s[c] } }
    }

    /// X[t, c] /= s[c].
    static func divideColumns(_ X: FloatBuffer, rows: Int, cols: Int, by s: [Float]) {
        let inv = s.map { 1 / $0 }
        for r in 0..<rows { for c in 0..<cols { X.pointer[r * cols + c] *= inv[c] } }
    }

    /// W[r, :] /= s[r] (a linear whose outputs feed the scaled inputs).
    static func divideRows(_ W: FloatBuffer, cols: Int, by s: [Float]) {
        for r in 0..<s.count { for c in 0..<cols { W.pointer[r * cols + c] /= s[r] } }
    }
}
