import Foundation
import Engine

// The fp32 forward and backward pass of ONE Llama decoder block, for block-wise calibration
// (TesseraQ). Written in llm.c's manner: every op has its forward and its backward side by
// side, and `forward` / `backward` read top to bottom as the block's math.
//
// Shapes (row-major, one row per token):
//   B sequences of T tokens each; N = B·T rows; row n = b·T + t holds token t of sequence b,
//   at position t (every sequence starts at position 0).
//   C hidden, H query heads, KVH kv heads (query head h reads kv head h / (H/KVH)), D head dim,
//   F ffn; Q = H·D (width of q and o), KV = KVH·D (width of k and v).
//
// The block, with the same arithmetic as InferenceSession.runBatch:
//   a  = RMSNorm(x; attnNorm)
//   q  = rope(a·Wqᵀ)   k = rope(a·Wkᵀ)   v = a·Wvᵀ        (GGUF interleaved pairs)
//   o  = softmax(q·kᵀ/√D, causal)·v                       per sequence and head
//   h1 = x + o·Woᵀ
//   m  = RMSNorm(h1; mlpNorm)
//   g  = m·Wgᵀ   u = m·Wuᵀ   s = silu(g)⊙u
//   y  = h1 + s·Wdᵀ
//
// A rotated model with the online transform (`BlockShape.onlineDownHadamard`, the file's
// `tessera.rotation.online_down`) runs y = h1 + s'·Wdᵀ with s' = s·H_Fᵀ/√F, i.e. each token's
// row u := H_F·u/√F (`Hadamard.apply(u, F)`, InferenceSession's `downInputHadamard`); its
// backward is the adjoint ds = ds'·H_F/√F, each row d := H_Fᵀ·d/√F (`transpose: true`: the
// Paley-built H_F are not symmetric).
//
// A student that runs with integer activations (`ActivationFakeQuantizer`) fake-quantizes the
// input of every linear as the runtime does: a (q, k, v), o (Wo), m (gate, up), s' (Wd), after
// the online transform. The tape keeps the quantized inputs (dW = dyᵀ·x̂); the backward passes
// the gradient straight through (see ActivationFakeQuant.swift). The fp teacher never quantizes.
//
// The backward yields dL/dW of the seven linears. The norms are frozen. Block-wise
// calibration does not want dL/dx, so by default the chain stops at dq, dk, dv; end-to-end
// tuning (EndToEnd.swift) asks for it and gets da = dq·Wq + dk·Wk + dv·Wv through the
// attention norm, plus the residual.

/// The dimensions of one block, from the model config.
public struct BlockShape {
    public let C, H, KVH, D, F: Int
    public let eps: Float
    public let rope: RotaryEmbedding
    /// The rotated model's online transform on down_proj's input (see the notes at the top).
    public let onlineDownHadamard: Bool

    /// `rotation`: the model's (a rotated file's record, or RotatedModelSource's); its
    /// `onlineDownHadamard` switches the transform on.
    public init(config: LlamaConfig, rotation: RotationRecord? = nil) {
        onlineDownHadamard = rotation?.onlineDownHadamard ?? false
        precondition(!onlineDownHadamard || Hadamard.isSupported(config.ffn), "FFN width \(config.ffn) has no Hadamard form")
        linearShapes = BlockLinear.allCases.map { let s = $0.shape(config); return (s.out, s.in) }
        C = config.hidden
        H = config.heads
        KVH = config.kvHeads
        D = config.headDim
        F = config.ffn
        eps = config.rmsEps
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeBase, frequencyFactors: config.ropeFrequencyFactors)
    }

    /// The sizes buffers are made from (C, H, KVH, D, F), to check a buffer set against a shape.
    var dimensions: [Int] { [C, H, KVH, D, F] }

    /// Width of q and o (H·D), and of k and v (KVH·D).
    public var qWidth: Int { H * D }
    public var kvWidth: Int { KVH * D }

    /// [out, in] of the seven linears, in `BlockParameters.linears` order (`BlockLinear`'s).
    public let linearShapes: [(out: Int, inFeatures: Int)]
}

/// Effective fp32 weights of one block (the caller fills them with fake-quantized weights each step).
public final class BlockParameters {
    public let attentionNorm, mlpNorm: FloatBuffer  // [C]
    public let query, key, value, attentionOutput, gate, up, down: FloatBuffer  // [out, in] row-major

    /// GGUF names of the seven linears, in `linears` order (`BlockLinear`'s forward order).
    public static let linearNames = BlockLinear.allCases.map(\.rawValue)

    /// Zero-filled.
    public init(shape: BlockShape) {
        let s = shape.linearShapes.map { FloatBuffer(count: $0.out * $0.inFeatures) }
        attentionNorm = FloatBuffer(count: shape.C)
        mlpNorm = FloatBuffer(count: shape.C)
        (query, key, value, attentionOutput, gate, up, down) = (s[0], s[1], s[2], s[3], s[4], s[5], s[6])
    }

    /// Norms of its own and the seven linears of `shared` (the same buffers): for a model whose
    /// blocks take turns in one set of materialized weights.
    public init(attentionNorm: FloatBuffer, mlpNorm: FloatBuffer, linearsOf shared: BlockParameters) {
        self.attentionNorm = attentionNorm
        self.mlpNorm = mlpNorm
        (query, key, value, attentionOutput, gate, up, down) =
            (shared.query, shared.key, shared.value, shared.attentionOutput, shared.gate, shared.up, shared.down)
    }

    public var linears: [FloatBuffer] { [query, key, value, attentionOutput, gate, up, down] }
}

/// Gradients of the seven linear weights (same shapes and order as `BlockParameters.linears`),
/// and of the two norm weights (written only by a backward that also computes dL/dx).
public final class BlockGradients {
    public let query, key, value, attentionOutput, gate, up, down: FloatBuffer
    public let linears: [FloatBuffer]
    public let attentionNorm, mlpNorm: FloatBuffer  // [C]

    public init(shape: BlockShape) {
        linears = shape.linearShapes.map { FloatBuffer(count: $0.out * $0.inFeatures) }
        attentionNorm = FloatBuffer(count: shape.C)
        mlpNorm = FloatBuffer(count: shape.C)
        (query, key, value, attentionOutput, gate, up, down) =
            (linears[0], linears[1], linears[2], linears[3], linears[4], linears[5], linears[6])
    }
}

/// The activations one forward saves for its backward, plus the backward's own buffers.
/// Sized for B sequences of T tokens; a later call may use any B', T' with B'·T' ≤ B·T and
/// B'·T'² ≤ B·T². Reusable across steps; one tape serves one forward/backward at a time.
/// Holds 4·N·(5C + 6·H·D + 4·KVH·D + 5F + 2) + 4·B·H·T² bytes (SmolLM2-135M, B 4, T 512: 159 MB).
public final class BlockTape {
    public let tokenCapacity: Int
    /// C, H, KVH, D, F of the shape the tape was made for.
    private let dimensions: [Int]
    /// B and T of the last forward (the backward must use the same).
    public private(set) var B = 0, T = 0

    // Saved by the forward.
    // (The inputs of the linears, a, o, m and s, as the linears saw them: fake-quantized when
    // the forward quantized activations, s after the online transform.)
    let a: FloatBuffer               // [N, C]   RMSNorm(x; attnNorm)
    let q, k, v: FloatBuffer         // [N, Q], [N, KV], [N, KV]; q and k rotated
    let probs: FloatBuffer           // [B, H, T, T] causal softmax (row t valid in 0...t)
    let o: FloatBuffer               // [N, Q]   attention output (input of Wo)
    let h1: FloatBuffer              // [N, C]   x + o·Woᵀ
    let attentionRstd: FloatBuffer   // [N]      1/rms of x's rows
    let mlpRstd: FloatBuffer         // [N]      1/rms of h1's rows
    let m: FloatBuffer               // [N, C]   RMSNorm(h1; mlpNorm)
    let g, u, s: FloatBuffer         // [N, F]   gate, up, silu(g)⊙u

    // The backward's buffers.
    let dGate, dUp: FloatBuffer      // [N, F]   ds, then dg in place; du
    let dm, dh1: FloatBuffer         // [N, C]
    let dO, dq: FloatBuffer          // [N, Q]
    let dkHeads, dvHeads: FloatBuffer // [N, Q]  dk, dv per query head (summed over each group after)
    let dk, dv: FloatBuffer          // [N, KV]
    /// Per worker, one attention tile of dP rows [tile, T]; grown on first use.
    private var tileScratch = FloatBuffer(count: 0)

    public init(shape: BlockShape, batch B: Int, tokens T: Int) {
        precondition(B >= 1 && T >= 1, "a tape needs at least one token")
        let N = B * T, C = shape.C, Q = shape.qWidth, KV = shape.kvWidth, F = shape.F
        tokenCapacity = N
        dimensions = shape.dimensions
        a = FloatBuffer(count: N * C)
        q = FloatBuffer(count: N * Q)
        k = FloatBuffer(count: N * KV)
        v = FloatBuffer(count: N * KV)
        probs = FloatBuffer(count: B * shape.H * T * T)
        o = FloatBuffer(count: N * Q)
        h1 = FloatBuffer(count: N * C)
        attentionRstd = FloatBuffer(count: N)
        mlpRstd = FloatBuffer(count: N)
        m = FloatBuffer(count: N * C)
        g = FloatBuffer(count: N * F)
        u = FloatBuffer(count: N * F)
        s = FloatBuffer(count: N * F)
        dGate = FloatBuffer(count: N * F)
        dUp = FloatBuffer(count: N * F)
        dm = FloatBuffer(count: N * C)
        dh1 = FloatBuffer(count: N * C)
        dO = FloatBuffer(count: N * Q)
        dq = FloatBuffer(count: N * Q)
        dkHeads = FloatBuffer(count: N * Q)
        dvHeads = FloatBuffer(count: N * Q)
        dk = FloatBuffer(count: N * KV)
        dv = FloatBuffer(count: N * KV)
    }

    // The inputs each linear saw in the last forward, rows of the N tokens.
    /// a [N, C]: input of Wq, Wk, Wv.
    public var attentionInput: UnsafeMutablePointer<Float> { a.pointer }
    /// o [N, H·D]: input of Wo.
    public var attentionOutputInput: UnsafeMutablePointer<Float> { o.pointer }
    /// m [N, C]: input of Wg, Wu.
    public var mlpInput: UnsafeMutablePointer<Float> { m.pointer }
    /// s [N, F]: input of Wd (after the online transform, when the model has it).
    public var downInput: UnsafeMutablePointer<Float> { s.pointer }

    /// Checks that B sequences of T tokens fit and remembers them for the backward.
    fileprivate func record(B: Int, T: Int, shape: BlockShape) {
        precondition(dimensions == shape.dimensions, "the tape was made for another block shape")
        precondition(B >= 1 && T >= 1 && B * T <= tokenCapacity && B * shape.H * T * T <= probs.count,
                     "\(B) sequences of \(T) tokens do not fit a tape of \(tokenCapacity) tokens")
        self.B = B
        self.T = T
    }

    fileprivate func scratch(workers: Int, tile: Int, T: Int) -> UnsafeMutablePointer<Float> {
        if tileScratch.count < workers * tile * T { tileScratch = FloatBuffer(count: workers * tile * T) }
        return tileScratch.pointer
    }
}

public enum BlockForwardBackward {
    /// y[N,C] = block(x[N,C]) for B sequences of T tokens; fills the tape. y may be x.
    /// `activations`: fake-quantize every linear's input (a student with integer activations).
    public static func forward(_ p: BlockParameters, shape: BlockShape, x: UnsafePointer<Float>, B: Int, T: Int,
                               tape: BlockTape, into y: UnsafeMutablePointer<Float>,
                               activations: ActivationFakeQuantizer? = nil, pool: ThreadPool) {
        tape.record(B: B, T: T, shape: shape)
        let N = B * T, C = shape.C
        // a = RMSNorm(x; attnNorm) (then â)
        rmsNormForward(x, p.attentionNorm.pointer, out: tape.a.pointer, rstd: tape.attentionRstd.pointer, N: N, C: C, eps: shape.eps, pool: pool)
        activations?.apply(tape.a.pointer, rows: N, width: C, pool: pool)
        // h1 = x + attention(a)·Woᵀ
        attentionForward(p, shape, a: tape.a.pointer, B: B, T: T, q: tape.q.pointer, k: tape.k.pointer,
                         v: tape.v.pointer, probs: tape.probs.pointer, o: tape.o.pointer, into: tape.h1.pointer,
                         activations: activations, pool: pool)
        add(x, into: tape.h1.pointer, count: N * C, pool: pool)
        // m = RMSNorm(h1; mlpNorm) (then m̂)
        rmsNormForward(tape.h1.pointer, p.mlpNorm.pointer, out: tape.m.pointer, rstd: tape.mlpRstd.pointer,
                       N: N, C: C, eps: shape.eps, pool: pool)
        activations?.apply(tape.m.pointer, rows: N, width: C, pool: pool)
        // y = h1 + (silu(m·Wgᵀ)⊙(m·Wuᵀ))·Wdᵀ
        mlpForward(p, shape, m: tape.m.pointer, N: N, g: tape.g.pointer, u: tape.u.pointer, s: tape.s.pointer,
                   into: y, activations: activations, pool: pool)
        add(tape.h1.pointer, into: y, count: N * C, pool: pool)
    }

    /// Given dL/dy [N,C] for the tape's last forward, OVERWRITES grads.linears with dL/dW.
    /// With `inputGradient` (the forward's x and a [N,C] buffer), also writes dL/dx there and
    /// the norm weights' gradients into grads.attentionNorm and grads.mlpNorm.
    public static func backward(_ p: BlockParameters, shape: BlockShape, B: Int, T: Int, tape: BlockTape,
                                dy: UnsafePointer<Float>, grads: BlockGradients,
                                inputGradient: (x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>)? = nil,
                                pool: ThreadPool) {
        precondition(tape.B == B && tape.T == T, "backward(B: \(B), T: \(T)) on a tape recorded with B \(tape.B), T \(tape.T)")
        let N = B * T, C = shape.C, F = shape.F, Q = shape.qWidth, KV = shape.kvWidth
        // y = h1 + s·Wdᵀ: dWd = dyᵀ·s, ds = dy·Wd (dy also flows to h1 unchanged, added below).
        linearBackward(dy, x: tape.s.pointer, weight: p.down.pointer, dW: grads.down.pointer, dx: tape.dGate.pointer,
                       N: N, out: C, in: F, pool: pool)
        // s' = s·H_Fᵀ/√F (online transform): ds = ds'·H_F/√F, each row d := H_Fᵀ·d/√F.
        if shape.onlineDownHadamard { Hadamard.applyRows(tape.dGate.pointer, rows: N, width: F, transpose: true, pool: pool) }
        // s = silu(g)⊙u: dg (over ds, in place) and du.
        swigluBackward(tape.dGate.pointer, du: tape.dUp.pointer, g: tape.g.pointer, u: tape.u.pointer, count: N * F, pool: pool)
        // g = m·Wgᵀ, u = m·Wuᵀ: dWg = dgᵀ·m, dWu = duᵀ·m, dm = dg·Wg + du·Wu.
        linearBackward(tape.dGate.pointer, x: tape.m.pointer, weight: p.gate.pointer, dW: grads.gate.pointer,
                       dx: tape.dm.pointer, N: N, out: F, in: C, pool: pool)
        linearBackward(tape.dUp.pointer, x: tape.m.pointer, weight: p.up.pointer, dW: grads.up.pointer,
                       dx: tape.dm.pointer, accumulate: true, N: N, out: F, in: C, pool: pool)
        // m = RMSNorm(h1): dh1 = dy (residual) + RMSNorm'(dm); dmlpNorm = Σ_n dm⊙h1·r.
        if inputGradient != nil {
            rmsNormWeightGradient(tape.dm.pointer, x: tape.h1.pointer, rstd: tape.mlpRstd.pointer, into: grads.mlpNorm.pointer, N: N, C: C, pool: pool)
        }
        rmsNormBackward(tape.dm.pointer, x: tape.h1.pointer, weight: p.mlpNorm.pointer, rstd: tape.mlpRstd.pointer,
                        residual: dy, into: tape.dh1.pointer, N: N, C: C, pool: pool)
        // h1 = x + o·Woᵀ: dWo = dh1ᵀ·o, do = dh1·Wo.
        linearBackward(tape.dh1.pointer, x: tape.o.pointer, weight: p.attentionOutput.pointer,
                       dW: grads.attentionOutput.pointer, dx: tape.dO.pointer, N: N, out: C, in: Q, pool: pool)
        // o = softmax(q·kᵀ/√D)·v: dq per head, dk and dv per query head, then summed over each group.
        let tile = attentionTile
        attentionBackward(shape, dO: tape.dO.pointer, q: tape.q.pointer, k: tape.k.pointer, v: tape.v.pointer,
                          probs: tape.probs.pointer, B: B, T: T, dq: tape.dq.pointer, dkHeads: tape.dkHeads.pointer,
                          dvHeads: tape.dvHeads.pointer, scratch: tape.scratch(workers: pool.threads, tile: tile, T: T),
                          pool: pool)
        sumGroups(tape.dkHeads.pointer, into: tape.dk.pointer, N: N, shape: shape, pool: pool)
        sumGroups(tape.dvHeads.pointer, into: tape.dv.pointer, N: N, shape: shape, pool: pool)
        // q, k were rotated: rotate their gradients back.
        ropeBackward(tape.dq.pointer, heads: shape.H, N: N, T: T, rope: shape.rope, pool: pool)
        ropeBackward(tape.dk.pointer, heads: shape.KVH, N: N, T: T, rope: shape.rope, pool: pool)
        // q, k, v = a·Wᵀ: dW = dᵀ·a; da = dq·Wq + dk·Wk + dv·Wv (into dm, free by now) only when dx is wanted.
        let da: UnsafeMutablePointer<Float>? = inputGradient == nil ? nil : tape.dm.pointer
        linearBackward(tape.dq.pointer, x: tape.a.pointer, weight: p.query.pointer, dW: grads.query.pointer, dx: da,
                       N: N, out: Q, in: C, pool: pool)
        linearBackward(tape.dk.pointer, x: tape.a.pointer, weight: p.key.pointer, dW: grads.key.pointer, dx: da,
                       accumulate: true, N: N, out: KV, in: C, pool: pool)
        linearBackward(tape.dv.pointer, x: tape.a.pointer, weight: p.value.pointer, dW: grads.value.pointer, dx: da,
                       accumulate: true, N: N, out: KV, in: C, pool: pool)
        // a = RMSNorm(x): dx = dh1 (residual) + RMSNorm'(da); dattnNorm = Σ_n da⊙x·r.
        if let (x, dx) = inputGradient {
            rmsNormWeightGradient(tape.dm.pointer, x: x, rstd: tape.attentionRstd.pointer, into: grads.attentionNorm.pointer, N: N, C: C, pool: pool)
            rmsNormBackward(tape.dm.pointer, x: x, weight: p.attentionNorm.pointer, rstd: tape.attentionRstd.pointer,
                            residual: tape.dh1.pointer, into: dx, N: N, C: C, pool: pool)
        }
    }

    /// The buffers of `attentionSublayer` and `mlpSublayer`, kept between calls of one shape.
    /// A search that runs a sub-layer many times (AWQ: 20 grid points) passes one, so the
    /// [B, H, T, T] probabilities (1.2 GB for 8 windows of 2048 tokens) are not allocated and
    /// faulted in afresh on every call.
    public final class SublayerScratch {
        private let dimensions: [Int], B: Int, T: Int
        let q, k, v, o, probs: FloatBuffer   // attention: [N, Q], [N, KV], [N, KV], [N, Q], [B, H, T, T]
        let g, u, s: FloatBuffer             // MLP: [N, F] each

        public init(shape: BlockShape, B: Int, T: Int) {
            let N = B * T
            dimensions = shape.dimensions; self.B = B; self.T = T
            q = FloatBuffer(count: N * shape.qWidth); k = FloatBuffer(count: N * shape.kvWidth)
            v = FloatBuffer(count: N * shape.kvWidth); o = FloatBuffer(count: N * shape.qWidth)
            probs = FloatBuffer(count: B * shape.H * T * T)
            g = FloatBuffer(count: N * shape.F); u = FloatBuffer(count: N * shape.F); s = FloatBuffer(count: N * shape.F)
        }

        /// This scratch, checked to fit B sequences of T tokens of a block of `shape`.
        fileprivate func checked(for shape: BlockShape, B: Int, T: Int) -> SublayerScratch {
            precondition(dimensions == shape.dimensions, "the sub-layer scratch was made for another block shape")
            precondition(self.B == B && self.T == T, "sub-layer scratch is for \(self.B) × \(self.T) tokens, not \(B) × \(T)")
            return self
        }
    }

    /// out[N,C] = attention(a)·Woᵀ for the normed input a (no residual), in `scratch` (allocated
    /// here when nil).
    public static func attentionSublayer(_ p: BlockParameters, shape: BlockShape, normed a: UnsafePointer<Float>,
                                         B: Int, T: Int, into out: UnsafeMutablePointer<Float>,
                                         scratch: SublayerScratch? = nil, pool: ThreadPool) {
        let w = (scratch ?? SublayerScratch(shape: shape, B: B, T: T)).checked(for: shape, B: B, T: T)
        attentionForward(p, shape, a: a, B: B, T: T, q: w.q.pointer, k: w.k.pointer, v: w.v.pointer, probs: w.probs.pointer,
                         o: w.o.pointer, into: out, pool: pool)
    }

    /// out[N,C] = (silu(a·Wgᵀ)⊙(a·Wuᵀ))·Wdᵀ for the normed input a (no residual), in `scratch`
    /// (allocated here when nil).
    public static func mlpSublayer(_ p: BlockParameters, shape: BlockShape, normed a: UnsafePointer<Float>,
                                   B: Int, T: Int, into out: UnsafeMutablePointer<Float>,
                                   scratch: SublayerScratch? = nil, pool: ThreadPool) {
        let w = (scratch ?? SublayerScratch(shape: shape, B: B, T: T)).checked(for: shape, B: B, T: T)
        mlpForward(p, shape, m: a, N: B * T, g: w.g.pointer, u: w.u.pointer, s: w.s.pointer, into: out, pool: pool)
    }

    // MARK: - Sublayers

    /// out = o·Woᵀ with o = attention(q, k, v) and q, k, v = a·Wq,k,vᵀ (q, k rotated); with
    /// `activations`, o is fake-quantized in place before Wo (a is the caller's to quantize).
    private static func attentionForward(_ p: BlockParameters, _ shape: BlockShape, a: UnsafePointer<Float>, B: Int, T: Int,
                                         q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>,
                                         v: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                                         o: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>,
                                         activations: ActivationFakeQuantizer? = nil, pool: ThreadPool) {
        let N = B * T, C = shape.C, Q = shape.qWidth, KV = shape.kvWidth
        linearForward(a, weight: p.query.pointer, into: q, N: N, out: Q, in: C, pool: pool)
        linearForward(a, weight: p.key.pointer, into: k, N: N, out: KV, in: C, pool: pool)
        linearForward(a, weight: p.value.pointer, into: v, N: N, out: KV, in: C, pool: pool)
        ropeForward(q, heads: shape.H, N: N, T: T, rope: shape.rope, pool: pool)
        ropeForward(k, heads: shape.KVH, N: N, T: T, rope: shape.rope, pool: pool)
        attentionForward(shape, q: q, k: k, v: v, B: B, T: T, probs: probs, o: o, pool: pool)
        activations?.apply(o, rows: N, width: Q, pool: pool)
        linearForward(o, weight: p.attentionOutput.pointer, into: out, N: N, out: C, in: Q, pool: pool)
    }

    /// out = s·Wdᵀ with s = silu(g)⊙u, g = m·Wgᵀ, u = m·Wuᵀ; a rotated model's s rows
    /// transformed s := H_F·s/√F first, then (`activations`) fake-quantized, in place.
    private static func mlpForward(_ p: BlockParameters, _ shape: BlockShape, m: UnsafePointer<Float>, N: Int,
                                   g: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>,
                                   s: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>,
                                   activations: ActivationFakeQuantizer? = nil, pool: ThreadPool) {
        let C = shape.C, F = shape.F
        linearForward(m, weight: p.gate.pointer, into: g, N: N, out: F, in: C, pool: pool)
        linearForward(m, weight: p.up.pointer, into: u, N: N, out: F, in: C, pool: pool)
        swigluForward(g, u, into: s, count: N * F, pool: pool)
        if shape.onlineDownHadamard { Hadamard.applyRows(s, rows: N, width: F, pool: pool) }
        activations?.apply(s, rows: N, width: F, pool: pool)
        linearForward(s, weight: p.down.pointer, into: out, N: N, out: C, in: F, pool: pool)
    }

    // MARK: - Linear: y[N,out] = x[N,in]·Wᵀ

    /// Token rows split across the workers (each worker one sgemm over its rows, W whole).
    private static func linearForward(_ x: UnsafePointer<Float>, weight W: UnsafePointer<Float>,
                                      into y: UnsafeMutablePointer<Float>, N: Int, out: Int, in width: Int, pool: ThreadPool) {
        pool.parallelFor(N, multiple: 8) { r in
            Matmul.sgemm(transA: false, transB: true, M: r.count, N: out, K: width, A: x + r.lowerBound * width, lda: width,
                         B: W, ldb: width, C: y + r.lowerBound * out, ldc: out)
        }
    }

    /// dW[out,in] = dyᵀ·x (overwritten; rows of dW split across the workers) and, when dx is
    /// given, dx[N,in] = dy·W (overwritten, or added to with `accumulate`; token rows split).
    private static func linearBackward(_ dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight W: UnsafePointer<Float>?,
                                       dW: UnsafeMutablePointer<Float>, dx: UnsafeMutablePointer<Float>?,
                                       accumulate: Bool = false, N: Int, out: Int, in width: Int, pool: ThreadPool) {
        pool.run { worker, workers in
            let rows = ThreadPool.chunk(out, index: worker, count: workers, multiple: 16)
            if !rows.isEmpty {
                Matmul.sgemm(transA: true, transB: false, M: rows.count, N: width, K: N, A: dy + rows.lowerBound, lda: out,
                             B: x, ldb: width, C: dW + rows.lowerBound * width, ldc: width)
            }
            if let dx, let W {
                let tokens = ThreadPool.chunk(N, index: worker, count: workers, multiple: 8)
                if !tokens.isEmpty {
                    Matmul.sgemm(transA: false, transB: false, M: tokens.count, N: width, K: out,
                                 A: dy + tokens.lowerBound * out, lda: out, B: W, ldb: width,
                                 beta: accumulate ? 1 : 0, C: dx + tokens.lowerBound * width, ldc: width)
                }
            }
        }
    }

    // MARK: - RMSNorm: out = x·r⊙w, r = 1/√(mean(x²) + eps), per row of width C

    /// The model's Ops.rmsNorm per row; also saves r per row when asked.
    static func rmsNormForward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                                       rstd: UnsafeMutablePointer<Float>?, N: Int, C: Int, eps: Float, pool: ThreadPool) {
        pool.parallelFor(N, multiple: 8) { r in
            for n in r {
                let scale = Ops.rmsNorm(x + n * C, w, out + n * C, C: C, eps: eps)
                rstd?[n] = scale
            }
        }
    }

    /// dx = residual + r·(dout⊙w − x·(r²/C)·Σᵢ doutᵢ·wᵢ·xᵢ)   (w fixed; no residual: 0)
    static func rmsNormBackward(_ dout: UnsafePointer<Float>, x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                        rstd: UnsafePointer<Float>, residual: UnsafePointer<Float>?,
                                        into dx: UnsafeMutablePointer<Float>, N: Int, C: Int, pool: ThreadPool) {
        pool.parallelFor(N, multiple: 8) { r in
            for n in r {
                let xn = x + n * C, dn = dout + n * C, rn = residual.map { $0 + n * C }, dxn = dx + n * C
                var dot: Float = 0
                for i in 0..<C { dot += dn[i] * w[i] * xn[i] }
                let scale = rstd[n], c = scale * scale * dot / Float(C)
                for i in 0..<C { dxn[i] = (rn?[i] ?? 0) + scale * (dn[i] * w[i] - xn[i] * c) }
            }
        }
    }

    /// dw[i] = Σ_n dout[n,i]·x[n,i]·r[n]   (the gradient of the norm's weight; columns split across the pool)
    static func rmsNormWeightGradient(_ dout: UnsafePointer<Float>, x: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                                      into dw: UnsafeMutablePointer<Float>, N: Int, C: Int, pool: ThreadPool) {
        pool.parallelFor(C, multiple: 16) { columns in
            for i in columns { dw[i] = 0 }
            for n in 0..<N {
                let d = dout + n * C, xn = x + n * C, r = rstd[n]
                for i in columns { dw[i] += d[i] * xn[i] * r }
            }
        }
    }

    // MARK: - RoPE: rotate each pair of every head of token n by angle t·θᵢ, t = n mod T

    private static func ropeForward(_ x: UnsafeMutablePointer<Float>, heads: Int, N: Int, T: Int, rope: RotaryEmbedding,
                                    pool: ThreadPool) {
        let width = heads * rope.headDim
        pool.parallelFor(N, multiple: 8) { r in
            for n in r { rope.apply(x + n * width, heads: heads, position: n % T) }
        }
    }

    /// A rotation's transpose is its inverse: the rotation by −t.
    private static func ropeBackward(_ dx: UnsafeMutablePointer<Float>, heads: Int, N: Int, T: Int, rope: RotaryEmbedding,
                                     pool: ThreadPool) {
        let width = heads * rope.headDim
        pool.parallelFor(N, multiple: 8) { r in
            for n in r { rope.apply(dx + n * width, heads: heads, position: -(n % T)) }
        }
    }

    // MARK: - Causal GQA attention, per (sequence b, head h), kv head h / (H/KVH)
    //
    // Rows are taken in tiles of `attentionTile` queries: tile [r0, r1) sees keys 0..<r1 only,
    // so the products skip (most of) the masked upper triangle.

    private static let attentionTile = 64

    /// P = softmax(q·kᵀ/√D, causal) into probs [B, H, T, T]; o = P·v.
    private static func attentionForward(_ shape: BlockShape, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                         v: UnsafePointer<Float>, B: Int, T: Int, probs: UnsafeMutablePointer<Float>,
                                         o: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let H = shape.H, D = shape.D, Q = shape.qWidth, KV = shape.kvWidth, group = shape.H / shape.KVH
        let scale = 1 / Float(D).squareRoot(), tile = attentionTile
        pool.run { worker, workers in
            for unit in ThreadPool.chunk(B * H, index: worker, count: workers) {
                let b = unit / H, h = unit % H, kvh = h / group
                let qh = q + b * T * Q + h * D, kh = k + b * T * KV + kvh * D, vh = v + b * T * KV + kvh * D
                let oh = o + b * T * Q + h * D, P = probs + unit * T * T
                for r0 in stride(from: 0, to: T, by: tile) {
                    let r1 = min(T, r0 + tile), rows = r1 - r0
                    // S = q·kᵀ/√D for the tile's queries against keys 0..<r1.
                    Matmul.sgemm(transA: false, transB: true, M: rows, N: r1, K: D, alpha: scale, A: qh + r0 * Q, lda: Q,
                                 B: kh, ldb: KV, C: P + r0 * T, ldc: T)
                    // P = softmax of row t over keys 0...t; the masked rest of the tile row is 0.
                    for t in r0..<r1 {
                        let row = P + t * T
                        Ops.softmax(row, t + 1)
                        (row + t + 1).update(repeating: 0, count: r1 - t - 1)
                    }
                    // o = P·v
                    Matmul.sgemm(transA: false, transB: false, M: rows, N: D, K: r1, A: P + r0 * T, lda: T,
                                 B: vh, ldb: KV, C: oh + r0 * Q, ldc: Q)
                }
            }
        }
    }

    /// From do: dq [N, Q] (rotated frame), and dk, dv per query head in dkHeads, dvHeads [N, Q].
    /// `scratch` holds one [tile, T] dP block per worker.
    private static func attentionBackward(_ shape: BlockShape, dO: UnsafePointer<Float>, q: UnsafePointer<Float>,
                                          k: UnsafePointer<Float>, v: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                                          B: Int, T: Int, dq: UnsafeMutablePointer<Float>,
                                          dkHeads: UnsafeMutablePointer<Float>, dvHeads: UnsafeMutablePointer<Float>,
                                          scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let H = shape.H, D = shape.D, Q = shape.qWidth, KV = shape.kvWidth, group = shape.H / shape.KVH
        let scale = 1 / Float(D).squareRoot(), tile = attentionTile
        pool.run { worker, workers in
            let dP = scratch + worker * tile * T
            for unit in ThreadPool.chunk(B * H, index: worker, count: workers) {
                let b = unit / H, h = unit % H, kvh = h / group, rowsOffset = b * T * Q + h * D
                let qh = q + rowsOffset, kh = k + b * T * KV + kvh * D, vh = v + b * T * KV + kvh * D
                let doh = dO + rowsOffset, dqh = dq + rowsOffset, dkh = dkHeads + rowsOffset, dvh = dvHeads + rowsOffset
                // Tiles last to first: the last tile reaches every key, so it overwrites dk, dv
                // (beta 0) and the earlier ones add to their first r1 rows.
                for r0 in stride(from: (T - 1) / tile * tile, through: 0, by: -tile) {
                    let r1 = min(T, r0 + tile), rows = r1 - r0, beta: Float = r1 == T ? 0 : 1
                    let P = probs + unit * T * T + r0 * T
                    // o = P·v: dv += Pᵀ·do, dP = do·vᵀ
                    Matmul.sgemm(transA: true, transB: false, M: r1, N: D, K: rows, A: P, lda: T, B: doh + r0 * Q, ldb: Q,
                                 beta: beta, C: dvh, ldc: Q)
                    Matmul.sgemm(transA: false, transB: true, M: rows, N: r1, K: D, A: doh + r0 * Q, lda: Q, B: vh, ldb: KV,
                                 C: dP, ldc: T)
                    // P = softmax(S) per row: dS = P⊙(dP − Σⱼ Pⱼ·dPⱼ), 0 past the diagonal (in dP's place).
                    for i in 0..<rows {
                        let t = r0 + i, pRow = P + i * T, dRow = dP + i * T
                        let dot = Ops.dot(pRow, dRow, t + 1)
                        for j in 0...t { dRow[j] = pRow[j] * (dRow[j] - dot) }
                        (dRow + t + 1).update(repeating: 0, count: r1 - t - 1)
                    }
                    // S = q·kᵀ/√D: dq = dS·k/√D, dk += dSᵀ·q/√D
                    Matmul.sgemm(transA: false, transB: false, M: rows, N: D, K: r1, alpha: scale, A: dP, lda: T,
                                 B: kh, ldb: KV, C: dqh + r0 * Q, ldc: Q)
                    Matmul.sgemm(transA: true, transB: false, M: r1, N: D, K: rows, alpha: scale, A: dP, lda: T,
                                 B: qh + r0 * Q, ldb: Q, beta: beta, C: dkh, ldc: Q)
                }
            }
        }
    }

    /// out[n, kvh] = Σ over the query heads of group kvh of heads[n, h]   ([N, Q] → [N, KV])
    private static func sumGroups(_ heads: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, N: Int,
                                  shape: BlockShape, pool: ThreadPool) {
        let D = shape.D, Q = shape.qWidth, KV = shape.kvWidth, group = shape.H / shape.KVH
        pool.parallelFor(N, multiple: 8) { r in
            for n in r {
                for kvh in 0..<shape.KVH {
                    let dst = out + n * KV + kvh * D, src = heads + n * Q + kvh * group * D
                    dst.update(from: src, count: D)
                    for member in 1..<group { Ops.axpy(1, src + member * D, dst, D) }
                }
            }
        }
    }

    // MARK: - SwiGLU: s = silu(g)⊙u, silu(g) = g·σ(g)

    /// The model's Ops.swiglu, out of place (the backward needs g).
    private static func swigluForward(_ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, into s: UnsafeMutablePointer<Float>,
                                      count: Int, pool: ThreadPool) {
        pool.parallelFor(count, multiple: 256) { r in
            Ops.swiglu(g + r.lowerBound, u + r.lowerBound, into: s + r.lowerBound, r.count)
        }
    }

    /// du = ds·silu(g), dg = ds·u·σ(g)·(1 + g·(1 − σ(g))); dg overwrites ds.
    private static func swigluBackward(_ dsThenDg: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>,
                                       g: UnsafePointer<Float>, u: UnsafePointer<Float>, count: Int, pool: ThreadPool) {
        pool.parallelFor(count, multiple: 256) { r in
            for i in r {
                let gi = g[i], sigmoid = 1 / (1 + expf(-gi)), ds = dsThenDg[i]
                du[i] = ds * gi * sigmoid
                dsThenDg[i] = ds * u[i] * sigmoid * (1 + gi * (1 - sigmoid))
            }
        }
    }

    // MARK: - Residual

    /// y += x over `count` values.
    private static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int, pool: ThreadPool) {
        pool.parallelFor(count, multiple: 256) { r in
            Ops.axpy(1, x + r.lowerBound, y + r.lowerBound, r.count)
        }
    }
}
