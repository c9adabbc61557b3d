import Engine

/// Fake quantization of a block linear's input, exactly as the runtime quantizes it
/// (KernelsC's `tsr_quantize_act_token` / `tsr_quantize_act`, whose codes times scales it
/// returns, bit for bit), for calibrating and tuning a model that runs with integer activations.
///
///   per token (a8t, a4t):  d = clip·max|x_row| / L over the whole row
///   per block (a8, a4):    d = max|x_block| / L over each 32 values (no clip)
///   x̂ = clamp(rint(x·(1/d)), −L, L)·d   (rint: ties to even; x̂ = 0 where d = 0), L = 127 or 7
///
/// Backward: the straight-through estimator, dL/dx = dL/dx̂ for EVERY value, the clamped ones
/// too (clip < 1 clamps the largest values of a token). This is the TesseraQ reference's W4A4
/// (`ste_all: True`: x̂ = (q(x) − x).detach() + x); it lets the gradient reach the weights
/// before the quantized input (q, k, v through o; gate, up through down). A backward therefore
/// needs nothing from the quantizer: only the weight gradients change, dW = dyᵀ·x̂.
public struct ActivationFakeQuantizer: Sendable, Equatable {
    public let mode: ActivationMode
    public let clip: Float

    /// nil for fp32 activations (`.a16`): nothing to quantize.
    public init?(mode: ActivationMode, clip: Float = 1) {
        guard mode != .a16 else { return nil }
        precondition(clip > 0 && clip <= 1, "activation clip \(clip) outside (0, 1]")
        self.mode = mode
        self.clip = mode.perToken ? clip : 1
    }

    /// Every row of x [rows, width] replaced by x̂, in place.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, pool: ThreadPool) {
        precondition(mode.perToken || width % 32 == 0, "per-block activation quantization needs rows of a multiple of 32, got \(width)")
        pool.parallelFor(rows, multiple: 1) { r in
            for row in r { apply(row: x + row * width, width: width) }
        }
    }

    /// One row (one token's activations) in place.
    public func apply(row x: UnsafeMutablePointer<Float>, width n: Int) {
        let levels = Float(mode.levels)
        if mode.perToken {
            var amax: Float = 0
            for i in 0..<n { amax = max(amax, abs(x[i])) }
            let d = clip * amax / levels
            // A zero row: d = 0 and every code 0 (the kernel's per-block fallback gives the same).
            Self.quantize(x, n, d: d, levels: levels)
        } else {
            for b in stride(from: 0, to: n, by: 32) {
                var amax: Float = 0
                for i in b..<b + 32 { amax = max(amax, abs(x[i])) }
                Self.quantize(x + b, 32, d: amax / levels, levels: levels)
            }
        }
    }

    /// x[0..<n] := clamp(rint(x·(1/d)), −L, L)·d, as quant_ref.c's quantize_blocks_ref.
    private static func quantize(_ x: UnsafeMutablePointer<Float>, _ n: Int, d: Float, levels: Float) {
        let inverse: Float = d != 0 ? 1 / d : 0
        for i in 0..<n {
            // Through an integer, as the kernel's int8 code: a code of −0 gives +0, not −0.
            let code = Int32(min(max((x[i] * inverse).rounded(.toNearestOrEven), -levels), levels))
            x[i] = Float(code) * d
        }
    }
}
