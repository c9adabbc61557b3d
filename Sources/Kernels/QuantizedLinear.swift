import Core
import KernelsC

/// A linear layer over group-quantized weights. Decode (T = 1) runs the GEMV, prefill (T > 1)
/// the GEMM; weight rows are split across the pool. Scratch lives in the pool's workspace, so
/// layers sharing a pool must not run `forward` concurrently (a model runs them in turn).
public final class QuantizedLinear: LinearWeights {
    /// The A16 prefill method: the fused 4-token kernel, or dequantize a panel of rows to fp32
    /// and multiply with OpenBLAS sgemm.
    public enum A16Prefill: Sendable { case fused, dequantizeAndSgemm }

    public let weights: PackedWeights
    public var activation: ActivationMode
    /// Per-token modes: the scale is activationClip·max|x|/levels (values past it clamp).
    public var activationClip: Float = 1
    public var a16Prefill: A16Prefill = .dequantizeAndSgemm
    /// Rows per dequantized panel for `.dequantizeAndSgemm`; 0 picks ~512 KB panels (16…256 rows).
    public var panelRows = 0

    public var inFeatures: Int { weights.cols }
    public var outFeatures: Int { weights.rows }
    public var byteCount: Int { weights.byteCount }

    public init(weights: PackedWeights, activation: ActivationMode = .a16, activationClip: Float = 1) {
        self.weights = weights
        self.activation = activation
        self.activationClip = activationClip
    }

    /// Scratch for T tokens in the pool's workspace: quantized activations xq [T, cols],
    /// block sums bsums and scales dx [T, cols / 32], group sums fsums [T, groups] (Σx for A16,
    /// Σ dx·Σxq for A8/A4).
    private func scratch(tokens T: Int, pool: ThreadPool)
        -> (xq: UnsafeMutablePointer<Int8>, bsums: UnsafeMutablePointer<Int32>, dx: UnsafeMutablePointer<Float>, fsums: UnsafeMutablePointer<Float>) {
        let cols = weights.cols, blocks = cols / 32, groups = weights.groupsPerRow
        func rounded(_ n: Int) -> Int { (n + 63) / 64 * 64 }
        let xqBytes = rounded(T * cols), blockBytes = rounded(T * blocks * 4), groupBytes = rounded(T * groups * 4)
        let base = pool.workspace.buffer(.activations, bytes: xqBytes + 2 * blockBytes + groupBytes)
        return (base.bindMemory(to: Int8.self, capacity: T * cols),
                (base + xqBytes).bindMemory(to: Int32.self, capacity: T * blocks),
                (base + xqBytes + blockBytes).bindMemory(to: Float.self, capacity: T * blocks),
                (base + xqBytes + 2 * blockBytes).bindMemory(to: Float.self, capacity: T * groups))
    }

    public func forward(_ x: UnsafePointer<Float>, tokens T: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard T > 0 else { return }
        guard runsByRows(tokens: T) else {
            weights.withView { prefillBySgemm($0, x, T: T, y, pool: pool) }
            return
        }
        let input = prepare(x, tokens: T, pool: pool)
        pool.parallelFor(weights.rows, multiple: Self.rowMultiple) { r in run(input, rows: r, into: y) }
    }

    /// Weight rows are split across the pool at multiples of this.
    static let rowMultiple = 16

    /// Whether `forward` for T tokens is `prepare` once, then `run` on ranges of rows: every
    /// case but the A16 prefill by sgemm.
    func runsByRows(tokens T: Int) -> Bool {
        !(activation == .a16 && T > 1 && a16Prefill == .dequantizeAndSgemm)
    }

    /// Whether `other` reads an input prepared exactly as this layer prepares it (same
    /// activation mode, row width and group), so that one `prepare` serves both.
    func preparesInputLike(_ other: QuantizedLinear) -> Bool {
        activation == other.activation && activationClip == other.activationClip
            && weights.cols == other.weights.cols && weights.group == other.weights.group
    }

    /// x [T, cols] ready for the kernels: A16 its group sums, A8/A4 its quantized codes,
    /// block scales and sums. Lives in the pool's workspace until the next `prepare` on it.
    struct PreparedInput {
        let x: UnsafePointer<Float>
        let tokens: Int
        let xq: UnsafeMutablePointer<Int8>
        let dx: UnsafeMutablePointer<Float>
        let fsums: UnsafeMutablePointer<Float>
    }

    /// Prepares x for `run` (on the calling thread).
    func prepare(_ x: UnsafePointer<Float>, tokens T: Int, pool: ThreadPool) -> PreparedInput {
        let cols = weights.cols, groups = weights.groupsPerRow, G = weights.group, blocks = cols / 32
        let (xq, bsums, dx, fsums) = scratch(tokens: T, pool: pool)
        switch activation {
        case .a16:
            for t in 0..<T { tsr_group_sums_f32(x + t * cols, Int32(cols), Int32(G), fsums + t * groups) }
        case .a8, .a4, .a8Token, .a4Token:
            // Per-token modes write their one scale into every block's dx: the A8/A4 kernels run unchanged.
            let levels = activation.levels, n = Int32(cols), group = Int32(G)
            for t in 0..<T {
                let (xt, xqt, dxt, bt, st) = (x + t * cols, xq + t * cols, dx + t * blocks, bsums + t * blocks, fsums + t * groups)
                if activation.perToken {
                    tsr_quantize_act_token(xt, n, group, levels, activationClip, xqt, dxt, bt, st)
                } else {
                    tsr_quantize_act(xt, n, group, levels, xqt, dxt, bt, st)
                }
            }
        }
        return PreparedInput(x: x, tokens: T, xq: xq, dx: dx, fsums: fsums)
    }

    /// y[t, r] for the rows r in `rows`, from an input prepared by this layer or one that
    /// `preparesInputLike` it. Writes only those columns of y.
    func run(_ input: PreparedInput, rows r: Range<Int>, into y: UnsafeMutablePointer<Float>) {
        let T = input.tokens, rows = Int32(weights.rows), lo = Int32(r.lowerBound), hi = Int32(r.upperBound)
        weights.withView { w in
            switch activation {
            case .a16:
                if T == 1 {
                    tsr_qgemv_f32(w, input.x, input.fsums, y, lo, hi)
                } else {
                    tsr_qgemm_f32(w, Int32(T), input.x, input.fsums, y, rows, lo, hi)
                }
            case .a8, .a4, .a8Token, .a4Token:
                if T == 1 {
                    tsr_qgemv_i8(w, input.xq, input.dx, input.fsums, y, lo, hi)
                } else {
                    tsr_qgemm_i8(w, Int32(T), input.xq, input.dx, input.fsums, y, rows, lo, hi)
                }
            }
        }
    }

    /// Each worker dequantizes panels of its rows into its own fp32 buffer and multiplies
    /// them with sgemm: Y[:, panel] = X · panelᵀ.
    private func prefillBySgemm(_ w: UnsafePointer<tsr_qweights>, _ x: UnsafePointer<Float>, T: Int,
                                _ y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        PanelGemm.multiply(x, tokens: T, rows: weights.rows, cols: weights.cols, into: y, panelRows: panelRows, pool: pool) { r0, n, panel in
            tsr_q_dequantize(w, panel, Int32(r0), Int32(r0 + n))
        }
    }
}
