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

/// The fp32 matrix products used by the model and by calibration. OpenBLAS runs
/// single-threaded inside each worker of our pool: one set of threads, no two thread pools
/// spinning against each other on a small machine.
public enum Matmul {
    /// OpenBLAS's thread count is process-wide; it is set to 1 once, before the first call.
    private static let singleThreadedBLAS: Void = openblas_set_num_threads(1)

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
}
