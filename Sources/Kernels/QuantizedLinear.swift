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
    public var a16Prefill: A16Prefill = .dequantizeAndSgemm
    /// Rows per dequantized panel for `.dequantizeAndSgemm`; 0 picks ~512 KB panels (16…256 rows).
    public var panelRows = 0

    public var inFeatures: Int { weights.cols }
    public var outFeatures: Int { weights.rows }
    public var byteCount: Int { weights.byteCount }

    public init(weights: PackedWeights, activation: ActivationMode = .a16) {
        self.weights = weights
        self.activation = activation
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
        let cols = weights.cols, rows = weights.rows, groups = weights.groupsPerRow, G = weights.group, blocks = cols / 32
        let (xq, bsums, dx, fsums) = scratch(tokens: T, pool: pool)
        weights.withView { w in
            switch activation {
            case .a16:
                if T > 1 && a16Prefill == .dequantizeAndSgemm {
                    prefillBySgemm(w, x, T: T, y, pool: pool)
                    return
                }
                for t in 0..<T { tsr_group_sums_f32(x + t * cols, Int32(cols), Int32(G), fsums + t * groups) }
                pool.parallelFor(rows, multiple: 16) { r in
                    if T == 1 {
                        tsr_qgemv_f32(w, x, fsums, y, Int32(r.lowerBound), Int32(r.upperBound))
                    } else {
                        tsr_qgemm_f32(w, Int32(T), x, fsums, y, Int32(rows), Int32(r.lowerBound), Int32(r.upperBound))
                    }
                }
            case .a8, .a4:
                let levels = activation.levels
                for t in 0..<T {
                    tsr_quantize_act(x + t * cols, Int32(cols), Int32(G), levels, xq + t * cols, dx + t * blocks,
                                     bsums + t * blocks, fsums + t * groups)
                }
                pool.parallelFor(rows, multiple: 16) { r in
                    if T == 1 {
                        tsr_qgemv_i8(w, xq, dx, fsums, y, Int32(r.lowerBound), Int32(r.upperBound))
                    } else {
                        tsr_qgemm_i8(w, Int32(T), xq, dx, fsums, y, Int32(rows), Int32(r.lowerBound), Int32(r.upperBound))
                    }
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
