import Foundation
import Engine

// QuaRot-style rotation of an fp Llama model (issue 35, part 1): a weight transformation that
// leaves the model's function unchanged, so that quantizing the rotated weights (and, later,
// the activations) meets no outlier channels. `tessera quantize --rotate hadamard` quantizes
// the rotated view this file makes; the model code knows nothing of it, except the online
// transforms the file's `tessera.rotation.online_down` and `.output_norm_hadamard` keys ask the
// forward pass for.
//
// Notation. Weights are stored [out, in] and act on column vectors, y = W·x. C = hidden size,
// F = FFN width, D = head dim. H_n is the ±1 matrix KernelsC's `tsr_hadamard_f32` multiplies by
// (H_n·H_nᵀ = n·I; `Hadamard.apply(x, n)` is x := H_n·x/√n, with `transpose` x := H_nᵀ·x/√n).
//
// 0. Fold the RMSNorm weights. RMSNorm(x)⊙g followed by W is W·diag(g)·(x/rms(x)), so
//    W' = W·diag(g) (W[:, j] *= g[j]) and g' = 1 for attn_norm → q, k, v; ffn_norm → gate,
//    up; output_norm → the head.
//
// 1. The residual rotation Q = diag(s)·H_C/√C, s ∈ {±1}^C drawn from the seed (SplitMix64).
//    Q is orthogonal (QᵀQ = H_Cᵀ·diag(s)²·H_C/C = I). The residual stream becomes x' = Qᵀ·x:
//      embedding          E' = E·Q         (row e of token t becomes e·Q, i.e. x₀' = Qᵀ·x₀)
//      readers            W' = W·Q         q, k, v, gate, up, head: W'·x' = W·Q·Qᵀ·x = W·x
//      writers            W' = Qᵀ·W        o_proj, down_proj: they add Qᵀ·(W·z) to x'
//    and between them the norms, now weightless: RMSNorm(x') = Qᵀ·x/rms(Qᵀ·x) = Qᵀ·RMSNorm(x),
//    because ‖Qᵀ·x‖ = ‖x‖ (the mean of squares, eps included, is unchanged). That is why the
//    norm weights must be folded first: diag(g) does not commute with Q.
//    Per row (W·Q)[r, :] = (Qᵀ·W[r, :]ᵀ)ᵀ = H_Cᵀ·(s ⊙ W[r, :])/√C; per column
//    (Qᵀ·W)[:, j] = H_Cᵀ·(s ⊙ W[:, j])/√C: one transposed transform of each row or column.
//    The head. Untied, it is a reader: W·diag(g_out)·Q, and the final norm becomes weightless.
//    Tied, folding g_out would make head' = E·diag(g_out)·Q, another table than E' = E·Q unless
//    g_out = 1 (untying it would cost V·C more weights; SmolLM2-135M: 28.3 M, 31.9 MB at q8).
//    So a tied head keeps the one table E' and the final norm keeps g_out, applied in the
//    Hadamard domain: with n' = x'/rms(x') = Qᵀ·n the head must see u with E'·u = E·(g ⊙ n),
//    i.e. Q·u = g ⊙ Q·n', u = Qᵀ·(g ⊙ Q·n') = Aᵀ·(g ⊙ A·n') with A = H_C/√C (the signs cancel,
//    s ⊙ s = 1). The file says so (`tessera.rotation.output_norm_hadamard`) and the forward pass
//    applies it (`OnlineHadamard.scaleInDomain`): two C-wide transforms per token.
//
// 2. Per attention head, between value and output, Hd = H_D/√D: v_proj's rows of KV head h,
//    Wv[h·D ..< (h+1)·D, :], become Hd·Wv_h (each column of the block transformed); o_proj's
//    columns of query head j, Wo[:, j·D ..< (j+1)·D], become Wo_j·Hdᵀ (each row segment w := Hd·w).
//    Attention mixes values over positions with weights that do not depend on them, so query
//    head j's output is z_j' = Hd·z_j and Wo_j·Hdᵀ·Hd·z_j = Wo_j·z_j. With GQA the query heads
//    that share KV head h read its rotated values; every head uses the same Hd, so this holds.
//
// 3. The online transform on down_proj's input, HF = H_F/√F: at run time the forward pass
//    applies u' = HF·u (`OnlineHadamard`, `Hadamard.apply(u, F)`) to the SwiGLU output, and
//    down_proj' = down_proj·HFᵀ (each row w := HF·w), so down_proj'·u' = down_proj·HFᵀ·HF·u.
//    (It makes down_proj's input free of outliers for activation quantization; the weights
//    alone do not need it, so it can be left out: `onlineDown: false`.)
//
// Combined, per block: q, k = (W·diag(g_attn))·Q; v = Hd-blocks·(Wv·diag(g_attn))·Q;
// o = Qᵀ·Wo·Hdᵀ-blocks; gate, up = (W·diag(g_ffn))·Q; down = Qᵀ·Wd·HFᵀ; norms = 1.
// Each tensor depends only on its own stored tensor and one norm, so the rotated model is a
// view computed tensor by tensor (`RotatedModelSource`), as `quantize` streams it.

/// The weight transformations of the rotation, on row-major fp32 matrices.
public enum HadamardRotation {
    /// The residual rotation's signs s ∈ {±1}^n, from `seed`.
    public static func signs(seed: UInt64, count: Int) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.next() & 1 == 0 ? 1 : -1 }
    }

    /// W := W·diag(g): column j scaled by g[j] (folding an RMSNorm weight into a reader).
    public static func foldNorm(_ w: FloatBuffer, rows: Int, cols: Int, _ g: FloatBuffer) {
        precondition(w.count == rows * cols && g.count == cols)
        let p = w.pointer, gp = g.pointer
        for r in 0..<rows { for j in 0..<cols { p[r * cols + j] *= gp[j] } }
    }

    /// W := W·Q (a reader of the residual, or the embedding table): every row
    /// w := H_nᵀ·(s ⊙ w)/√n, n = cols.
    public static func rotateReader(_ w: FloatBuffer, rows: Int, cols: Int, signs s: [Float]) {
        precondition(w.count == rows * cols && s.count == cols)
        let p = w.pointer
        forEachChunk(rows) { r in
            for row in r {
                let x = p + row * cols
                for j in 0..<cols { x[j] *= s[j] }
                Hadamard.apply(x, cols, transpose: true)
            }
        }
    }

    /// W := Qᵀ·W (a writer of the residual): every column c := H_nᵀ·(s ⊙ c)/√n, n = rows.
    public static func rotateWriter(_ w: FloatBuffer, rows: Int, cols: Int, signs s: [Float]) {
        precondition(w.count == rows * cols && s.count == rows)
        transformColumns(w, rows: rows, cols: cols) { c in
            for i in 0..<rows { c[i] *= s[i] }
            Hadamard.apply(c, rows, transpose: true)
        }
    }

    /// W := blockdiag(Hd, …)·W for the value projection [KVH·D, C]: within each head's D rows,
    /// every column c := H_D·c/√D.
    public static func rotateValueHeads(_ w: FloatBuffer, rows: Int, cols: Int, headDim D: Int) {
        precondition(w.count == rows * cols && rows % D == 0)
        let p = w.pointer
        forEachChunk(cols) { r in
            var c = [Float](repeating: 0, count: D)
            for j in r {
                for h in 0..<rows / D {
                    for i in 0..<D { c[i] = p[(h * D + i) * cols + j] }
                    c.withUnsafeMutableBufferPointer { Hadamard.apply($0.baseAddress!, D) }
                    for i in 0..<D { p[(h * D + i) * cols + j] = c[i] }
                }
            }
        }
    }

    /// W := W·blockdiag(Hdᵀ, …) for the output projection [C, H·D] (also down_proj·HFᵀ with
    /// D = F, one block): every row segment of D values w := H_D·w/√D.
    public static func rotateInputBlocks(_ w: FloatBuffer, rows: Int, cols: Int, width D: Int) {
        precondition(w.count == rows * cols && cols % D == 0)
        let p = w.pointer
        forEachChunk(rows) { r in
            for row in r {
                for b in 0..<cols / D { Hadamard.apply(p + row * cols + b * D, D) }
            }
        }
    }

    /// Applies `body` to each column of W [rows, cols] (gathered into a contiguous vector).
    static func transformColumns(_ w: FloatBuffer, rows: Int, cols: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        let p = w.pointer
        forEachChunk(cols) { r in
            var c = [Float](repeating: 0, count: rows)
            c.withUnsafeMutableBufferPointer { cb in
                let x = cb.baseAddress!
                for j in r {
                    for i in 0..<rows { x[i] = p[i * cols + j] }
                    body(x)
                    for i in 0..<rows { p[i * cols + j] = x[i] }
                }
            }
        }
    }

    /// 0..<n cut into a few contiguous ranges run concurrently (disjoint rows or columns).
    static func forEachChunk(_ n: Int, _ body: (Range<Int>) -> Void) {
        let chunks = max(1, min(n / 16, 4 * ProcessInfo.processInfo.activeProcessorCount))
        DispatchQueue.concurrentPerform(iterations: chunks) { i in
            body(n * i / chunks..<n * (i + 1) / chunks)
        }
    }
}

/// The rotated view of a model (see the notes at the top of this file): the same config (a tied
/// head stays tied), every tensor rotated as it is read, block norms all ones (the final norm
/// too, unless a tied head keeps it for the Hadamard domain), and `rotation` set so that a packed
/// file written from it records the rotation and the binder applies the online transforms.
public final class RotatedModelSource: ModelSource {
    public let base: ModelSource
    public let config: LlamaConfig
    public let rotation: RotationRecord?
    private let signs: [Float]
    private let shapes: [String: [Int]]

    public var path: String { base.path }
    public var chatTemplate: String? { base.chatTemplate }
    public func makeTokenizer() throws -> Tokenizer { try base.makeTokenizer() }
    public func releaseResidentPages() { base.releaseResidentPages() }

    /// - Parameters:
    ///   - seed: the seed of the residual rotation's signs (recorded in the file).
    ///   - onlineDown: fold HFᵀ into down_proj and ask the runtime for the online transform.
    public init(base: ModelSource, seed: UInt64, onlineDown: Bool = true) throws {
        let c = base.config
        guard base.rotation == nil else { throw CalibrationError("\(base.path) is already rotated (\(base.rotation!.summary)); rotate the fp model instead") }
        for (what, n) in [("hidden size", c.hidden), ("head dim", c.headDim)] + (onlineDown ? [("FFN width", c.ffn)] : []) {
            guard Hadamard.isSupported(n) else {
                throw CalibrationError("cannot rotate \(base.path): its \(what) \(n) has no supported Hadamard form (m·2^k with m = 1, 12, 20, 28 or 36)")
            }
        }
        self.base = base
        signs = HadamardRotation.signs(seed: seed, count: c.hidden)
        config = c
        // A tied head keeps its one table; the final norm's weight then acts in the Hadamard domain.
        let finalNorm = try base.floatTensor(TensorName.outputNorm).array
        let normInDomain = c.tiedEmbeddings && !finalNorm.allSatisfy { $0 == 1 }
        rotation = RotationRecord(kind: .hadamard, seed: seed, onlineDownHadamard: onlineDown, outputNormHadamard: normInDomain)
        shapes = Dictionary(uniqueKeysWithValues: c.requiredTensorShapes.map { ($0.name, $0.shape) })
    }

    public func hasTensor(_ name: String) -> Bool { shapes[name] != nil }
    public func tensorShape(_ name: String) -> [Int]? { shapes[name] }

    public func floatTensor(_ name: String) throws -> FloatBuffer {
        guard let shape = shapes[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        let c = config
        if name == TensorName.outputNorm && rotation!.outputNormHadamard { return try copy(name) }   // applied in the Hadamard domain
        if shape.count == 1 { return FloatBuffer(Array(repeating: 1, count: shape[0])) }   // folded norms
        let rows = shape[0], cols = shape[1]
        if name == TensorName.tokenEmbedding {
            let e = try copy(name)
            HadamardRotation.rotateReader(e, rows: rows, cols: cols, signs: signs)
            return e
        }
        if name == TensorName.output {
            // An untied head: W·diag(g_out)·Q.
            let w = try copy(name)
            HadamardRotation.foldNorm(w, rows: rows, cols: cols, try base.floatTensor(TensorName.outputNorm))
            HadamardRotation.rotateReader(w, rows: rows, cols: cols, signs: signs)
            return w
        }
        guard let (block, linear) = Self.blockLinear(name, blockCount: c.blockCount) else { return try base.floatTensor(name) }
        let w = try copy(name)
        if let norm = linear.readsNorm {
            HadamardRotation.foldNorm(w, rows: rows, cols: cols, try base.floatTensor(TensorName.block(block, .norm(norm))))
        }
        switch linear {
        case .query, .key, .gate, .up:
            HadamardRotation.rotateReader(w, rows: rows, cols: cols, signs: signs)
        case .value:
            HadamardRotation.rotateReader(w, rows: rows, cols: cols, signs: signs)
            HadamardRotation.rotateValueHeads(w, rows: rows, cols: cols, headDim: c.headDim)
        case .attentionOutput:
            HadamardRotation.rotateInputBlocks(w, rows: rows, cols: cols, width: c.headDim)
            HadamardRotation.rotateWriter(w, rows: rows, cols: cols, signs: signs)
        case .down:
            if rotation!.onlineDownHadamard { HadamardRotation.rotateInputBlocks(w, rows: rows, cols: cols, width: c.ffn) }
            HadamardRotation.rotateWriter(w, rows: rows, cols: cols, signs: signs)
        }
        return w
    }

    /// The base's tensor as a fresh fp32 buffer (the base may hand out its own storage).
    private func copy(_ name: String) throws -> FloatBuffer { FloatBuffer(try base.floatTensor(name).array) }

    /// (block, role) of a block linear's name.
    static func blockLinear(_ name: String, blockCount: Int) -> (Int, BlockLinear)? {
        for b in 0..<blockCount {
            for l in BlockLinear.allCases where TensorName.block(b, .linear(l)) == name { return (b, l) }
        }
        return nil
    }
}
