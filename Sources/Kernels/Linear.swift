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
            Matmul.gemm(x, weight.pointer, y, T: T, rows: outFeatures, cols: inFeatures, threads: pool.threads)
        }
    }
}

/// The fp32 matrix products used by the model and by calibration.
public enum Matmul {
    /// y[r] = W[r,:]·x for all rows, rows split across the pool's workers.
    public static func gemv(_ W: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            rows: Int, cols: Int, pool: ThreadPool) {
        pool.parallelFor(rows, multiple: 16) { r in
            tsr_gemv_f32(W, x, y, Int32(cols), Int32(r.lowerBound), Int32(r.upperBound))
        }
    }

    /// Y[T, rows] = X[T, cols] · W[rows, cols]ᵀ via OpenBLAS.
    public static func gemm(_ X: UnsafePointer<Float>, _ W: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>,
                            T: Int, rows: Int, cols: Int, threads: Int, accumulate: Bool = false) {
        setBLASThreads(threads)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(rows), Int32(cols),
                    1, X, Int32(cols), W, Int32(cols), accumulate ? 1 : 0, Y, Int32(rows))
    }

    /// General row-major sgemm: C[M,N] = alpha·op(A)·op(B) + beta·C.
    public static func sgemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float = 1,
                             A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int,
                             beta: Float = 0, C: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
        setBLASThreads(threads)
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(M), Int32(N), Int32(K), alpha, A, Int32(lda), B, Int32(ldb), beta, C, Int32(ldc))
    }

    /// OpenBLAS keeps its thread count process-wide; set it per call (cheap) so that
    /// callers with different pools never inherit each other's setting.
    private static func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
}
