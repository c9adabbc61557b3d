import Core
import Foundation
import Kernels

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case contextFull(position: Int, adding: Int, capacity: Int)
    case badToken(id: Int32, vocab: Int)
    case packedBatchTooLarge(tokens: Int, maxBatch: Int)
    case badParent(sequence: Int, parent: Int)

    public var description: String {
        switch self {
        case let .contextFull(position, adding, capacity):
            return "context is full: \(position) tokens in the cache + \(adding) new exceed the context of \(capacity) (use a larger --ctx-size, or /reset)"
        case let .badToken(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
        case let .packedBatchTooLarge(tokens, maxBatch):
            return "a packed batch of \(tokens) tokens exceeds the batch size of \(maxBatch)"
        case let .badParent(sequence, parent):
            return "packed sequence \(sequence) names sequence \(parent) as its parent; a parent must come earlier in the batch"
        }
    }
}

/// One conversation's state: KV cache, position, and scratch buffers. Feed it tokens with
/// `forward`; it returns the logits of the tokens asked for.
public final class InferenceSession {
    public let model: LlamaModel
    public let cache: KVCache
    /// Tokens currently in the cache.
    public private(set) var position = 0
    /// Largest number of tokens pushed through the blocks at once (longer inputs are split).
    public let maxBatch: Int
    /// Tokens the MLP takes at once. Its gate/up buffers are this × F values; by default 2¹⁹
    /// values (2 MiB) each: 64 tokens on the LLaMA-3.2-1B/3B shapes (F = 8192; 32 MiB for
    /// both at 512 tokens otherwise), 341 on the demo model. The MLP weights are streamed once
    /// per chunk: on 1B W4g128, 7 × 428 MB more per 512 tokens (~0.1 s of a ~3 s prefill if
    /// none of it overlapped the arithmetic).
    public let mlpChunk: Int
    public static func defaultMLPChunk(ffn: Int) -> Int { max(16, (1 << 19) / max(ffn, 1)) }
    /// When set, every forward pass charges its time to the steps of this profile.
    public var profile: StepProfile?

    // Scratch, sized for maxBatch tokens: x [T,C], normed [T,max(C,H·D)] (also the attention
    // output), q [T,max(C,H·D)] (also the output projection), k/v [T,KVH·D],
    // gate/up [min(T, mlpChunk),F], scores [threads, capacity], logits [T,V].
    private let x, normed, q, k, v, gateBuffer, upBuffer, scores: FloatBuffer
    private var logitsBuffer: FloatBuffer
    /// Attention scores of a prefill batch, [workers × tile rows, cached positions], grown on demand.
    private var batchScores = FloatBuffer(count: 0)
    /// A prefill batch's keys and values as fp32 when the cache keeps them in 8 bits, grown on demand.
    private var batchRows = FloatBuffer(count: 0)

    /// `kvCache` is how the cache keeps keys and values (KVCacheType.unsupportedReason says
    /// which models cannot use q8).
    public init(model: LlamaModel, contextLength: Int, maxBatch: Int = 512, mlpChunk: Int? = nil, kvCache: KVCacheType = .f32) {
        let c = model.config
        self.model = model
        self.maxBatch = max(1, maxBatch)
        self.mlpChunk = max(1, mlpChunk ?? Self.defaultMLPChunk(ffn: c.ffn))
        cache = KVCache(blockCount: c.blockCount, capacity: contextLength, width: c.kvHeads * c.headDim, headDim: c.headDim, type: kvCache)
        let T = self.maxBatch
        x = FloatBuffer(count: T * c.hidden)
        normed = FloatBuffer(count: T * max(c.hidden, c.heads * c.headDim))
        q = FloatBuffer(count: T * max(c.hidden, c.heads * c.headDim))
        k = FloatBuffer(count: T * c.kvHeads * c.headDim)
        v = FloatBuffer(count: T * c.kvHeads * c.headDim)
        gateBuffer = FloatBuffer(count: min(T, self.mlpChunk) * c.ffn)
        upBuffer = FloatBuffer(count: min(T, self.mlpChunk) * c.ffn)
        scores = FloatBuffer(count: model.pool.threads * contextLength)
        logitsBuffer = FloatBuffer(count: c.vocab)
    }

    public var capacity: Int { cache.capacity }

    /// Forgets everything (a new conversation).
    public func reset() { position = 0 }

    /// Drops cached positions from `newPosition` on (e.g. to re-generate a reply).
    public func rewind(to newPosition: Int) { position = max(0, min(position, newPosition)) }

    /// Runs `tokens` at the current position and advances it. Returns the logits of the last
    /// `logitRows` tokens as rows of V values (row r is for token tokens.count − logitRows + r).
    @discardableResult
    public func forward(_ tokens: [Int32], logitRows: Int = 1) throws -> [[Float]] {
        var rows: [[Float]] = []
        try forward(tokens, logitRows: logitRows) { _, row in rows.append(Array(row)) }
        return rows
    }

    /// Runs `tokens` and hands the logits of each of the last `logitRows` tokens to `body`
    /// (index into `tokens`, V values valid only during the call) without keeping them.
    public func forward(_ tokens: [Int32], logitRows: Int, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        guard position + tokens.count <= capacity else {
            throw InferenceError.contextFull(position: position, adding: tokens.count, capacity: capacity)
        }
        try checkTokens(tokens)
        let firstWanted = tokens.count - min(max(logitRows, 0), tokens.count)
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + maxBatch)
            let wanted = Array(max(start, firstWanted)..<max(max(start, firstWanted), end)).map { $0 - start }
            try runBatch(Array(tokens[start..<end]), layout: .causal, logitRows: wanted) { index, row in
                try body(start + index, row)
            }
            start = end
        }
    }

    /// Throws `badToken` for an id outside the vocabulary.
    public func checkTokens(_ tokens: [Int32]) throws {
        let V = model.config.vocab
        for t in tokens where t < 0 || Int(t) >= V { throw InferenceError.badToken(id: t, vocab: V) }
    }

    /// The forward pass for T ≤ maxBatch tokens at cache slots position..<position+T. Hands the
    /// logits of the batch rows `logitRows` (ascending) to `body`, in chunks to bound memory.
    public func runBatch(_ tokens: [Int32], layout: BatchLayout, logitRows: [Int],
                          _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        let m = model, c = m.config, pool = m.pool
        let T = tokens.count, C = c.hidden, F = c.ffn, D = c.headDim, H = c.heads, KVH = c.kvHeads, V = c.vocab
        let qWidth = H * D, kvWidth = KVH * D
        let x = self.x.pointer, normed = self.normed.pointer, q = self.q.pointer, k = self.k.pointer, v = self.v.pointer
        let gate = gateBuffer.pointer, up = upBuffer.pointer
        let p0 = position
        func ropePosition(_ t: Int) -> Int { layout.positions?[t] ?? p0 + t }

        let profile = self.profile
        profile?.start()
        // Token embeddings: x[t] = E[token t].
        for t in 0..<T { m.tokenEmbedding.lookup(Int(tokens[t]), into: x + t * C) }
        profile?.lap(.embedding)

        for (b, block) in m.blocks.enumerated() {
            // Attention: normed = RMSNorm(x); q, k, v = normed·Wq,k,vᵀ.
            rmsNormRows(x, block.attentionNorm.pointer, normed, T: T)
            profile?.lap(.attentionNorm)
            block.qkv.forward(normed, tokens: T, into: [q, k, v], pool: pool)
            profile?.lap(.qkv)
            // Rotate q and k by their positions; append k and v to the cache.
            for t in 0..<T {
                m.rope.apply(q + t * qWidth, heads: H, position: ropePosition(t))
                m.rope.apply(k + t * kvWidth, heads: KVH, position: ropePosition(t))
                cache.store(b, p0 + t, key: k + t * kvWidth, value: v + t * kvWidth)
            }
            profile?.lap(.rope)
            // Grouped-query attention for every (token, head) over the slots it may see, into
            // normed (free once q, k, v are made).
            attend(block: b, q: q, out: normed, T: T, p0: p0, layout: layout)
            profile?.lap(.attention)
            // x += attention·Woᵀ (q is free once attended: it takes the projection).
            block.attentionOutput.forward(normed, tokens: T, into: q, pool: pool)
            addRows(x, q, count: T * C)
            profile?.lap(.attentionOutput)
            // MLP: x += (silu(normed·Wgᵀ) ⊙ normed·Wuᵀ)·Wdᵀ with normed = RMSNorm(x).
            rmsNormRows(x, block.mlpNorm.pointer, normed, T: T)
            profile?.lap(.mlpNorm)
            // Tokens are independent here: mlpChunk at a time bounds gate/up to mlpChunk × F values.
            for t0 in stride(from: 0, to: T, by: mlpChunk) {
                let n = min(mlpChunk, T - t0), xs = x + t0 * C, ns = normed + t0 * C
                block.gateUp.forward(ns, tokens: n, into: [gate, up], pool: pool)
                profile?.lap(.gateUp)
                elementwise(n * F) { r in Ops.swiglu(gate + r.lowerBound, up + r.lowerBound, r.count) }
                profile?.lap(.swiglu)
                // A rotated model: gate := H_F·gate/√F per token (down_proj holds the inverse).
                if let h = m.downInputHadamard { h.apply(gate, rows: n, pool: pool); profile?.lap(.downHadamard) }
                // These tokens' normed rows are read: their slots take the projection.
                block.down.forward(gate, tokens: n, into: ns, pool: pool)
                addRows(xs, ns, count: n * C)
                profile?.lap(.down)
            }
        }
        position += T

        // Final norm and output head for the rows asked for, a chunk of rows at a time.
        var done = 0
        while done < logitRows.count {
            let rows = Array(logitRows[done..<min(logitRows.count, done + Self.headChunk)])
            if logitsBuffer.count < rows.count * V { logitsBuffer = FloatBuffer(count: rows.count * V) }
            for (i, t) in rows.enumerated() { (normed + i * C).update(from: x + t * C, count: C) }
            // A rotated model that kept its tied head: a weightless norm, its weight in the Hadamard domain.
            rmsNormRows(normed, (m.outputNormHadamard == nil ? m.outputNorm : m.unitNorm).pointer, normed, T: rows.count)
            m.outputNormHadamard?.scaleInDomain(normed, rows: rows.count, by: m.outputNorm.pointer, pool: pool)
            m.output.forward(normed, tokens: rows.count, into: logitsBuffer.pointer, pool: pool)
            profile?.lap(.head)
            for (i, t) in rows.enumerated() {
                try body(t, UnsafeBufferPointer(start: logitsBuffer.pointer + i * V, count: V))
            }
            profile?.lap(.caller)
            done += rows.count
        }
    }

    /// Rows of logits computed at once by the head (bounds the logits buffer to chunk × V).
    static let headChunk = 128

    private func rmsNormRows(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, T: Int) {
        let C = model.config.hidden, eps = model.config.rmsEps
        if T == 1 { Ops.rmsNorm(x, weight, out, C: C, eps: eps); return }
        model.pool.parallelFor(T) { r in
            for t in r { Ops.rmsNorm(x + t * C, weight, out + t * C, C: C, eps: eps) }
        }
    }

    private func addRows(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
        elementwise(count) { r in Ops.axpy(1, y + r.lowerBound, x + r.lowerBound, r.count) }
    }

    /// An element-wise step over `count` values: split across the pool in chunks of multiples of
    /// 256, or run on the caller when there are fewer than `inlineElements`: a decoded token's
    /// residual add (576–3072 values) or SwiGLU (1536–8192) takes from a tenth of a microsecond
    /// to a few, no more than waking the workers and meeting them at the barrier, and there are
    /// three such steps per block. Each value's result is the same either way.
    private func elementwise(_ count: Int, _ body: (Range<Int>) -> Void) {
        if count < Self.inlineElements { body(0..<count); return }
        model.pool.parallelFor(count, multiple: 256, body)
    }

    static let inlineElements = 16_384

    /// out[t, h] = softmax(q[t,h]·K[visible slots]ᵀ/√D)·V, KV head = h / (H/KVH).
    private func attend(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, T: Int, p0: Int,
                        layout: BatchLayout) {
        if T == 1 && layout.visible == nil {
            attendOneToken(block: b, q: q, out: out, p0: p0)
        } else {
            attendBatch(block: b, q: q, out: out, T: T, p0: p0, layout: layout)
        }
    }

    /// Decode: one query row, heads split across workers.
    private func attendOneToken(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, p0: Int) {
        let c = model.config, D = c.headDim, H = c.heads, group = c.heads / c.kvHeads
        let scale = 1 / Float(D).squareRoot(), capacity = self.capacity, length = p0 + 1
        let scoresBase = scores.pointer, cache = self.cache
        model.pool.run { worker, workers in
            let scores = scoresBase + worker * capacity
            for h in ThreadPool.chunk(H, index: worker, count: workers) {
                let kvHead = h / group
                // scores = K·q/√D over the cached slots, softmax, out = Vᵀ·scores (K, V read in place)
                cache.keyScores(b, kvHead: kvHead, count: length, query: q + h * D, alpha: scale, into: scores)
                Ops.softmax(scores, length)
                cache.mixValues(b, kvHead: kvHead, count: length, weights: scores, into: out + h * D)
            }
        }
    }

    /// Prefill: per head and tile of query rows, S = Q·Kᵀ/√D over the cached positions the tile
    /// may see (sgemm; a causal tile stops at its last row's position, so the masked upper
    /// triangle is mostly not computed), mask (causal, or the packed layout's visible slots) and
    /// softmax per row, then out = S·V (sgemm). K and V are read in place from an fp32 cache (an
    /// 8-bit one dequantizes them once per block and batch); the (head, tile) items are
    /// split across workers, each with its own score matrix.
    private func attendBatch(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, T: Int, p0: Int,
                             layout: BatchLayout) {
        let c = model.config, D = c.headDim, H = c.heads, group = c.heads / c.kvHeads
        let L = p0 + T, workers = model.pool.threads, cache = self.cache
        let tiles = layout.visible == nil ? min(8, max(1, T / 32)) : 1, tileRows = (T + tiles - 1) / tiles
        if batchScores.count < workers * tileRows * L { batchScores = FloatBuffer(count: workers * tileRows * L) }
        if batchRows.count < cache.scratchCount(positions: L) { batchRows = FloatBuffer(count: cache.scratchCount(positions: L)) }
        let scoresBase = batchScores.pointer, rows = batchRows.pointer
        cache.prepareRows(b, count: L, scratch: rows, pool: model.pool)
        model.pool.run { worker, count in
            let S = scoresBase + worker * tileRows * L
            for item in ThreadPool.chunk(H * tiles, index: worker, count: count) {
                let h = item / tiles, tile = item % tiles, kvHead = h / group
                let t0 = T * tile / tiles, t1 = T * (tile + 1) / tiles
                let width = layout.visible == nil ? p0 + t1 : L   // slots any row of the tile sees
                let K = cache.keyRows(b, kvHead: kvHead, count: L, scratch: rows)
                Matmul.sgemm(transA: false, transB: true, M: t1 - t0, N: width, K: D, alpha: 1 / Float(D).squareRoot(),
                             A: q + t0 * H * D + h * D, lda: H * D, B: K.rows, ldb: K.ld, C: S, ldc: width)
                for t in t0..<t1 {
                    let row = S + (t - t0) * width
                    if let visible = layout.visible?[t] {
                        Ops.softmax(row, width, over: visible)
                    } else {
                        let visible = p0 + t + 1   // causal: every slot up to its own
                        Ops.softmax(row, visible)
                        (row + visible).update(repeating: 0, count: width - visible)
                    }
                }
                let V = cache.valueRows(b, kvHead: kvHead, count: L, scratch: rows)
                Matmul.sgemm(transA: false, transB: false, M: t1 - t0, N: D, K: width, A: S, lda: width,
                             B: V.rows, ldb: V.ld, C: out + t0 * H * D + h * D, ldc: H * D)
            }
        }
    }
}

/// Where each token of a batch sits: its RoPE position and the cache slots its query sees.
/// nil means the plain causal layout (token t at position p0 + t sees slots 0...p0 + t).
public struct BatchLayout {
    public var positions: [Int]?
    /// Ascending, disjoint slot ranges per token.
    public var visible: [[Range<Int>]]?

    public static let causal = BatchLayout(positions: nil, visible: nil)
    public static func packed(positions: [Int], visible: [[Range<Int>]]) -> BatchLayout {
        BatchLayout(positions: positions, visible: visible)
    }
}
