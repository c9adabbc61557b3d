import KernelsC

/// How activations meet the quantized weights.
public enum ActivationMode: Sendable, CaseIterable {
    /// fp32 activations.
    case a16
    /// Dynamic symmetric INT8, one scale per block of 32 activations (dx = max|x|/127 over
    /// the block, like ggml's q8_1), integer dot products per block.
    case a8
    /// Dynamic symmetric INT4, one scale per block of 32 (dx = max|x|/7), codes stored as int8.
    case a4

    /// Largest code magnitude (0 for fp32).
    public var levels: Int32 {
        switch self {
        case .a16: return 0
        case .a8: return 127
        case .a4: return 7
        }
    }
}

/// A linear layer over group-quantized weights. Decode (T = 1) runs the GEMV, prefill (T > 1)
/// the GEMM; weight rows are split across the pool. The quantized-activation scratch is kept
/// and grown to the largest T seen, so `forward` must not run concurrently on one instance.
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

    private var capacityT = 0
    private var xq: UnsafeMutablePointer<Int8>?
    private var bsums: UnsafeMutablePointer<Int32>?  // [T, cols / 32]
    private var dx: UnsafeMutablePointer<Float>?       // [T, cols / 32]
    private var fsums: UnsafeMutablePointer<Float>?    // [T, groups]: Σx (A16) or Σ dx·Σxq (A8/A4)
    private let panelPrefill = PanelGemm()

    public init(weights: PackedWeights, activation: ActivationMode = .a16) {
        self.weights = weights
        self.activation = activation
    }

    deinit { freeScratch() }

    private func freeScratch() {
        for p in [xq.map(UnsafeMutableRawPointer.init), bsums.map(UnsafeMutableRawPointer.init),
                  dx.map(UnsafeMutableRawPointer.init), fsums.map(UnsafeMutableRawPointer.init)] {
            p?.deallocate()
        }
    }

    private func reserve(tokens T: Int) {
        if T <= capacityT { return }
        freeScratch()
        let cols = weights.cols, groups = weights.groupsPerRow, blocks = cols / 32
        func alloc<E>(_ n: Int, _: E.Type) -> UnsafeMutablePointer<E> {
            UnsafeMutableRawPointer.allocate(byteCount: max(n, 1) * MemoryLayout<E>.stride, alignment: 64)
                .bindMemory(to: E.self, capacity: max(n, 1))
        }
        xq = alloc(T * cols, Int8.self)
        bsums = alloc(T * blocks, Int32.self)
        dx = alloc(T * blocks, Float.self)
        fsums = alloc(T * groups, Float.self)
        capacityT = T
    }

    public func forward(_ x: UnsafePointer<Float>, tokens T: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard T > 0 else { return }
        reserve(tokens: T)
        let cols = weights.cols, rows = weights.rows, groups = weights.groupsPerRow, G = weights.group, blocks = cols / 32
        let xq = self.xq!, bsums = self.bsums!, dx = self.dx!, fsums = self.fsums!
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
        panelPrefill.multiply(x, tokens: T, rows: weights.rows, cols: weights.cols, into: y, panelRows: panelRows, pool: pool) { r0, n, panel in
            tsr_q_dequantize(w, panel, Int32(r0), Int32(r0 + n))
        }
    }
}
