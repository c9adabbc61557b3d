import Core
import COpenBLAS
import KernelsC

/// A linear layer y = x·Wᵀ as the model sees it: x is [T, inFeatures] row-major, y is
/// [T, outFeatures]. Model code calls only this; each weight scheme (fp32, repacked GGUF
/// blocks, Tessera low-bit packs) is one implementation.
public protocol LinearWeights: AnyObject {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Bytes the weights occupy in memory (for size and bandwidth reports).
    var byteCount: Int { get }
    func forward(_ x: UnsafePointer<Float>, tokens T: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool)
}

/// fp32 weights [out, in]. Decode (T = 1) is a threaded SIMD GEMV; prefill (T > 1) is an
/// OpenBLAS sgemm.
public final class FP32Linear: LinearWeights {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: FloatBuffer

    public init(weight: FloatBuffer, outFeatures: Int, inFeatures: Int) {
        precondition(weight.count == outFeatures * inFeatures, "weight has \(weight.count) values, expected \(outFeatures)×\(inFeatures)")
        self.weight = weight
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
    }

    public var byteCount: Int { weight.count * 4 }

    public func forward(_ x: UnsafePointer<Float>, tokens T: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        if T == 1 {
            Matmul.gemv(weight.pointer, x, y, rows: outFeatures, cols: inFeatures, pool: pool)
        } else {
            Matmul.gemm(x, weight.pointer, y, T: T, rows: outFeatures, cols: inFeatures, pool: pool)
        }
    }
}

/// Prefill for weights held in another form than fp32: each worker decodes panels of its rows
/// into its own fp32 buffer (from the pool's workspace) and multiplies them with sgemm,
/// Y[:, panel] = X · panelᵀ.
public enum PanelGemm {
    /// Y[T, rows] = X[T, cols] · Wᵀ where `decode(r0, n, panel)` writes W's rows r0..<r0+n as
    /// fp32 into `panel` ([n, cols]). `panelRows` 0 picks ~512 KB panels (16…256 rows).
    public static func multiply(_ x: UnsafePointer<Float>, tokens T: Int, rows: Int, cols: Int, into y: UnsafeMutablePointer<Float>,
                                panelRows: Int = 0, pool: ThreadPool, decode: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let P = panelRows > 0 ? panelRows : min(256, max(16, (131_072 / cols) / 16 * 16))
        let panels = pool.workspace.buffer(.panels, bytes: pool.threads * P * cols * 4).bindMemory(to: Float.self, capacity: pool.threads * P * cols)
        pool.run { index, count in
            let range = ThreadPool.chunk(rows, index: index, count: count, multiple: 16)
            let panel = panels + index * P * cols
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let n = min(P, range.upperBound - r0)
                decode(r0, n, panel)
                Matmul.sgemm(transA: false, transB: true, M: T, N: n, K: cols, A: x, lda: cols,
                             B: panel, ldb: cols, C: y + r0, ldc: rows)
                r0 += n
            }
        }
    }
}

/// fp16 weights [out, in] (IEEE binary16), converted to fp32 on the fly: half the bytes of
/// FP32Linear. Decode (T = 1) is a threaded F16C GEMV; prefill (T > 1) decodes panels of rows
/// to fp32 and runs sgemm (PanelGemm), so `forward` must not run concurrently on one instance.
public final class F16Linear: LinearWeights {
    public let inFeatures: Int
    public let outFeatures: Int
    /// The weights as fp16 bit patterns, row-major, 64-byte aligned.
    public let weight: UnsafeMutablePointer<UInt16>
    public var panelRows = 0

    /// Copies out × in fp16 values from `source` (any alignment).
    public init(copying source: UnsafeRawPointer, outFeatures: Int, inFeatures: Int) {
        precondition(outFeatures >= 0 && inFeatures >= 0)
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        let n = max(outFeatures * inFeatures, 1)
        weight = UnsafeMutableRawPointer.allocate(byteCount: n * 2, alignment: 64).bindMemory(to: UInt16.self, capacity: n)
        weight.initialize(repeating: 0, count: n)
        UnsafeMutableRawPointer(weight).copyMemory(from: source, byteCount: outFeatures * inFeatures * 2)
    }

    /// fp32 weights rounded to fp16 (round to nearest even).
    public convenience init(rounding values: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int) {
        let bits = (0..<outFeatures * inFeatures).map { tsr_f32_to_f16(values[$0]) }
        self.init(copying: bits, outFeatures: outFeatures, inFeatures: inFeatures)
    }

    deinit { UnsafeMutableRawPointer(weight).deallocate() }

    public var byteCount: Int { outFeatures * inFeatures * 2 }

    /// Rows r0..<r0+n as fp32 into `out` ([n, in]).
    public func decodeRows(_ r0: Int, count n: Int, into out: UnsafeMutablePointer<Float>) {
        tsr_f16_to_f32_array(weight + r0 * inFeatures, out, n * inFeatures)
    }

    public func forward(_ x: UnsafePointer<Float>, tokens T: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        guard T > 0 else { return }
        let cols = inFeatures, w = weight
        if T == 1 {
            pool.parallelFor(outFeatures, multiple: 16) { r in
                tsr_gemv_f16(w, x, y, Int32(cols), Int32(r.lowerBound), Int32(r.upperBound))
            }
        } else {
            PanelGemm.multiply(x, tokens: T, rows: outFeatures, cols: cols, into: y, panelRows: panelRows, pool: pool) { r0, n, panel in
                tsr_f16_to_f32_array(w + r0 * cols, panel, n * cols)
            }
        }
    }
}

/// The fp32 matrix products used by the model and by calibration. OpenBLAS runs
/// single-threaded inside each worker of our pool: one set of threads, no two thread pools
/// spinning against each other on a small machine.
public enum Matmul {
    /// OpenBLAS's thread count is process-wide; it is set to 1 once, before the first call.
    private static let singleThreadedBLAS: Void = openblas_set_num_threads(1)

    /// The kernel family OpenBLAS picked for this CPU at load time (e.g. "Zen", "Haswell",
    /// "Cooperlake"); `OPENBLAS_CORETYPE` overrides it. Different families sum in different
    /// orders, so calibration runs repeat bit for bit only under the same one.
    public static var blasCore: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// y[r] = W[r,:]·x for all rows, rows split across the pool's workers.
    public static func gemv(_ W: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            rows: Int, cols: Int, pool: ThreadPool) {
        pool.parallelFor(rows, multiple: 16) { r in
            tsr_gemv_f32(W, x, y, Int32(cols), Int32(r.lowerBound), Int32(r.upperBound))
        }
    }

    /// Y[T, rows] = X[T, cols] · W[rows, cols]ᵀ, output columns (weight rows) split across the
    /// pool's workers.
    public static func gemm(_ X: UnsafePointer<Float>, _ W: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>,
                            T: Int, rows: Int, cols: Int, pool: ThreadPool) {
        pool.parallelFor(rows, multiple: 64) { r in
            sgemm(transA: false, transB: true, M: T, N: r.count, K: cols, A: X, lda: cols,
                  B: W + r.lowerBound * cols, ldb: cols, C: Y + r.lowerBound, ldc: rows)
        }
    }

    /// Single-threaded row-major sgemm on the calling thread: C[M,N] = alpha·op(A)·op(B) + beta·C.
    public static func sgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float = 1,
                             A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, C: UnsafeMutablePointer<Float>, ldc: Int) {
        _ = singleThreadedBLAS
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
    }

    /// Single-threaded row-major sgemv on the calling thread: y = alpha·op(A)·x (A is [M, N] with
    /// row stride lda; op(A) = Aᵀ when `trans`, so x has M values and y N).
    public static func sgemv(trans: Bool, M: Int, N: Int, alpha: Float = 1, A: UnsafePointer<Float>, lda: Int,
                             x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        _ = singleThreadedBLAS
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), alpha, A, Int32(lda), x, 1, 0, y, 1)
    }
}
