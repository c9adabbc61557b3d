import Core
import KernelsC

/// Orthonormal Hadamard transforms (KernelsC's hadamard.c): x := H_n·x/√n, or Hᵀ_n·x/√n
/// (the inverse), in place, for n = m·2^k with m ∈ {1, 12, 20, 28, 36}.
///
/// Calibrate's `HadamardRotation` uses them to rotate stored weights; the forward pass uses
/// `OnlineHadamard` on the input of down_proj of a rotated model.
public enum Hadamard {
    /// Whether n has a supported form (m·2^k, m ∈ {1, 12, 20, 28, 36}).
    public static func isSupported(_ n: Int) -> Bool {
        n > 0 && n <= Int(Int32.max) && tsr_hadamard_factor(Int32(n), nil) >= 0
    }

    /// x[0..<n] := H·x/√n (`transpose`: Hᵀ·x/√n). n must be supported.
    public static func apply(_ x: UnsafeMutablePointer<Float>, _ n: Int, transpose: Bool = false) {
        let status = tsr_hadamard_f32(x, Int32(n), transpose ? 1 : 0)
        precondition(status == 0, "Hadamard transform of unsupported width \(n)")
    }

    /// Each of `rows` contiguous rows of width n, split across `pool`'s workers.
    public static func applyRows(_ x: UnsafeMutablePointer<Float>, rows: Int, width n: Int, transpose: Bool = false,
                                 pool: ThreadPool) {
        pool.parallelFor(rows) { r in
            for row in r { apply(x + row * n, n, transpose: transpose) }
        }
    }

    /// The ±1 matrix H_n (row-major n×n, H·Hᵀ = n·I) that `apply` multiplies by (before its
    /// 1/√n), built by transforming the unit vectors; nil for an unsupported n. For tests and
    /// small n.
    public static func matrix(_ n: Int) -> [Float]? {
        guard isSupported(n) else { return nil }
        var h = [Float](repeating: 0, count: n * n)
        var e = [Float](repeating: 0, count: n)
        let root = Float(n).squareRoot()
        for j in 0..<n {
            e.withUnsafeMutableBufferPointer { p in
                p.update(repeating: 0)
                p[j] = 1
                apply(p.baseAddress!, n)
            }
            for i in 0..<n { h[i * n + j] = (e[i] * root).rounded() }   // column j = H·e_j
        }
        return h
    }
}

/// The online transforms a rotated model applies at run time. With n = the FFN width, each row u
/// of the SwiGLU output becomes H_n·u/√n before down_proj (`apply`; the rotation folded Hᵀ/√n
/// into down_proj's weights, so the product is unchanged). With n = the hidden size, the final
/// norm's weight g acts in the Hadamard domain (`scaleInDomain`), which keeps a tied head one table.
public struct OnlineHadamard: Sendable {
    public let width: Int

    /// nil when `width` has no supported Hadamard form.
    public init?(width: Int) {
        guard Hadamard.isSupported(width) else { return nil }
        self.width = width
    }

    /// rows × width values, row-major, transformed in place (`transpose`: by Hᵀ/√n, the inverse).
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, transpose: Bool = false, pool: ThreadPool) {
        Hadamard.applyRows(x, rows: rows, width: width, transpose: transpose, pool: pool)
    }

    /// Each row x := Aᵀ·(g ⊙ A·x), A = H_n/√n, in place: a per-channel scale g applied in the
    /// Hadamard domain.
    public func scaleInDomain(_ x: UnsafeMutablePointer<Float>, rows: Int, by g: UnsafePointer<Float>, pool: ThreadPool) {
        let n = width
        pool.parallelFor(rows) { r in
            for row in r {
                let v = x + row * n
                Hadamard.apply(v, n)
                for i in 0..<n { v[i] *= g[i] }
                Hadamard.apply(v, n, transpose: true)
            }
        }
    }
}
