import Foundation

/// The weights of one decoder block.
public final class LlamaBlock {
    public let attentionNorm: FloatBuffer   // [C]
    public let query: LinearWeights         // [H·D, C]
    public let key: LinearWeights           // [KVH·D, C]
    public let value: LinearWeights         // [KVH·D, C]
    public let attentionOutput: LinearWeights // [C, H·D]
    public let mlpNorm: FloatBuffer         // [C]
    public let gate: LinearWeights          // [F, C]
    public let up: LinearWeights            // [F, C]
    public let down: LinearWeights          // [C, F]

    public init(attentionNorm: FloatBuffer, query: LinearWeights, key: LinearWeights, value: LinearWeights,
                attentionOutput: LinearWeights, mlpNorm: FloatBuffer, gate: LinearWeights, up: LinearWeights,
                down: LinearWeights) {
        self.attentionNorm = attentionNorm
        self.query = query
        self.key = key
        self.value = value
        self.attentionOutput = attentionOutput
        self.mlpNorm = mlpNorm
        self.gate = gate
        self.up = up
        self.down = down
    }

    public var linears: [LinearWeights] { [query, key, value, attentionOutput, gate, up, down] }
}

/// Builds the linear layer for a named weight [out, in], or returns nil for the default
/// (decoded to fp32). Packed models supply their low-bit implementations this way.
public typealias LinearLoader = (_ name: String, _ out: Int, _ in: Int) throws -> LinearWeights?

/// A Llama-architecture decoder: embeddings, blocks, final norm, output head.
public final class LlamaModel {
    public let config: LlamaConfig
    public let tokenEmbedding: EmbeddingTable  // [V, C], in its stored form
    public let blocks: [LlamaBlock]
    public let outputNorm: FloatBuffer      // [C]
    public let output: LinearWeights        // [V, C]; the very tokenEmbedding object when tied
    public let rope: RotaryEmbedding
    public let pool: ThreadPool

    public init(config: LlamaConfig, tokenEmbedding: EmbeddingTable, blocks: [LlamaBlock], outputNorm: FloatBuffer,
                output: LinearWeights, pool: ThreadPool) {
        self.config = config
        self.tokenEmbedding = tokenEmbedding
        self.blocks = blocks
        self.outputNorm = outputNorm
        self.output = output
        self.pool = pool
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeBase, frequencyFactors: config.ropeFrequencyFactors)
    }

    /// Loads every tensor of `source`, checking each shape against the config.
    public convenience init(source: ModelSource, pool: ThreadPool, linear: LinearLoader? = nil) throws {
        let c = source.config
        try c.validate(path: source.path)
        func tensor(_ name: String, _ shape: [Int]) throws -> FloatBuffer {
            guard let found = source.tensorShape(name) else { throw FormatError.missingTensor(path: source.path, tensor: name) }
            guard found == shape else { throw FormatError.shapeMismatch(tensor: name, expected: shape, found: found) }
            return try source.floatTensor(name)
        }
        func makeLinear(_ name: String, _ out: Int, _ inFeatures: Int) throws -> LinearWeights {
            if let custom = try linear?(name, out, inFeatures) { return custom }
            return FP32Linear(weight: try tensor(name, [out, inFeatures]), outFeatures: out, inFeatures: inFeatures)
        }
        /// A [V, C] table in its stored form (fp16, packed codes), decoded only row by row.
        func table(_ name: String) throws -> EmbeddingTable {
            guard let found = source.tensorShape(name) else { throw FormatError.missingTensor(path: source.path, tensor: name) }
            guard found == [c.vocab, c.hidden] else { throw FormatError.shapeMismatch(tensor: name, expected: [c.vocab, c.hidden], found: found) }
            return try source.embeddingTable(name)
        }
        let C = c.hidden, F = c.ffn, qWidth = c.heads * c.headDim, kvWidth = c.kvHeads * c.headDim
        // The loader may supply the table (packed files: with their activation mode).
        let customEmbedding = try linear?(TensorName.tokenEmbedding, c.vocab, C)
        let embedding = try (customEmbedding as? EmbeddingTable) ?? table(TensorName.tokenEmbedding)
        var blocks: [LlamaBlock] = []
        for i in 0..<c.blockCount {
            let n = { (part: String) in TensorName.block(i, part) }
            blocks.append(LlamaBlock(
                attentionNorm: try tensor(n("attn_norm"), [C]),
                query: try makeLinear(n("attn_q"), qWidth, C),
                key: try makeLinear(n("attn_k"), kvWidth, C),
                value: try makeLinear(n("attn_v"), kvWidth, C),
                attentionOutput: try makeLinear(n("attn_output"), C, qWidth),
                mlpNorm: try tensor(n("ffn_norm"), [C]),
                gate: try makeLinear(n("ffn_gate"), F, C),
                up: try makeLinear(n("ffn_up"), F, C),
                down: try makeLinear(n("ffn_down"), C, F)))
        }
        let output: LinearWeights
        if source.hasTensor(TensorName.output) {
            output = try linear?(TensorName.output, c.vocab, C) ?? table(TensorName.output)
        } else {
            // Tied: the embedding table is the head, the same object (no second copy).
            output = customEmbedding ?? embedding
        }
        self.init(config: c, tokenEmbedding: embedding, blocks: blocks,
                  outputNorm: try tensor(TensorName.outputNorm, [C]), output: output, pool: pool)
    }

    /// Bytes held by the weights (a tied head is counted once, with the embedding table).
    public var weightBytes: Int {
        let blockBytes = blocks.reduce(0) { sum, block in
            sum + block.linears.reduce(0) { $0 + $1.byteCount } + (block.attentionNorm.count + block.mlpNorm.count) * 4
        }
        let headBytes = output === tokenEmbedding ? 0 : output.byteCount
        return blockBytes + tokenEmbedding.byteCount + headBytes + outputNorm.count * 4
    }
}

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case contextFull(position: Int, adding: Int, capacity: Int)
    case badToken(id: Int32, vocab: Int)

    public var description: String {
        switch self {
        case let .contextFull(position, adding, capacity):
            return "context is full: \(position) tokens in the cache + \(adding) new exceed the context of \(capacity) (use a larger --ctx-size, or /reset)"
        case let .badToken(id, vocab): return "token id \(id) is outside the vocabulary (0..<\(vocab))"
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

    // Scratch, sized for maxBatch tokens: x [T,C], normed [T,C], q [T,H·D], k/v [T,KVH·D],
    // attention out [T,H·D], gate/up [T,F], scores [threads, capacity], logits [T,V].
    private let x, normed, q, k, v, attention, gateBuffer, upBuffer, scores: FloatBuffer
    private var logitsBuffer: FloatBuffer
    /// Attention scores of a prefill batch, [T, cached positions], grown on demand.
    private var batchScores = FloatBuffer(count: 0)

    public init(model: LlamaModel, contextLength: Int, maxBatch: Int = 512) {
        let c = model.config
        self.model = model
        self.maxBatch = max(1, maxBatch)
        cache = KVCache(blockCount: c.blockCount, capacity: contextLength, width: c.kvHeads * c.headDim)
        let T = self.maxBatch
        x = FloatBuffer(count: T * c.hidden)
        normed = FloatBuffer(count: T * max(c.hidden, c.heads * c.headDim))
        q = FloatBuffer(count: T * c.heads * c.headDim)
        k = FloatBuffer(count: T * c.kvHeads * c.headDim)
        v = FloatBuffer(count: T * c.kvHeads * c.headDim)
        attention = FloatBuffer(count: T * c.heads * c.headDim)
        gateBuffer = FloatBuffer(count: T * c.ffn)
        upBuffer = FloatBuffer(count: T * c.ffn)
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
        let V = model.config.vocab
        guard position + tokens.count <= capacity else {
            throw InferenceError.contextFull(position: position, adding: tokens.count, capacity: capacity)
        }
        for t in tokens where t < 0 || Int(t) >= V { throw InferenceError.badToken(id: t, vocab: V) }
        let firstWanted = tokens.count - min(max(logitRows, 0), tokens.count)
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + maxBatch)
            let from = max(start, firstWanted)
            let logits = runBatch(Array(tokens[start..<end]), logitRowsFrom: min(from, end) - start)
            for index in from..<max(from, end) {
                try body(index, UnsafeBufferPointer(start: logits + (index - from) * V, count: V))
            }
            start = end
        }
    }

    /// The forward pass for T ≤ maxBatch tokens. Returns a pointer to the logits of tokens
    /// firstLogitRow..<T (valid until the next call).
    private func runBatch(_ tokens: [Int32], logitRowsFrom firstLogitRow: Int) -> UnsafeMutablePointer<Float> {
        let m = model, c = m.config, pool = m.pool
        let T = tokens.count, C = c.hidden, F = c.ffn, D = c.headDim, H = c.heads, KVH = c.kvHeads
        let qWidth = H * D, kvWidth = KVH * D
        let x = self.x.pointer, normed = self.normed.pointer, q = self.q.pointer, k = self.k.pointer, v = self.v.pointer
        let attention = self.attention.pointer, gate = gateBuffer.pointer, up = upBuffer.pointer
        let p0 = position

        // Token embeddings: x[t] = E[token t].
        for t in 0..<T { m.tokenEmbedding.lookup(Int(tokens[t]), into: x + t * C) }

        for (b, block) in m.blocks.enumerated() {
            // Attention: normed = RMSNorm(x); q, k, v = normed·Wq,k,vᵀ.
            rmsNormRows(x, block.attentionNorm.pointer, normed, T: T)
            block.query.forward(normed, tokens: T, into: q, pool: pool)
            block.key.forward(normed, tokens: T, into: k, pool: pool)
            block.value.forward(normed, tokens: T, into: v, pool: pool)
            // Rotate q and k by their positions; append k and v to the cache.
            for t in 0..<T {
                m.rope.apply(q + t * qWidth, heads: H, position: p0 + t)
                m.rope.apply(k + t * kvWidth, heads: KVH, position: p0 + t)
                cache.key(b, p0 + t).update(from: k + t * kvWidth, count: kvWidth)
                cache.value(b, p0 + t).update(from: v + t * kvWidth, count: kvWidth)
            }
            // Causal grouped-query attention for every (token, head).
            attend(block: b, q: q, out: attention, T: T, p0: p0)
            // x += attention·Woᵀ (normed is free again: use it for the projection).
            block.attentionOutput.forward(attention, tokens: T, into: normed, pool: pool)
            addRows(x, normed, count: T * C)
            // MLP: x += (silu(normed·Wgᵀ) ⊙ normed·Wuᵀ)·Wdᵀ with normed = RMSNorm(x).
            rmsNormRows(x, block.mlpNorm.pointer, normed, T: T)
            block.gate.forward(normed, tokens: T, into: gate, pool: pool)
            block.up.forward(normed, tokens: T, into: up, pool: pool)
            pool.parallelFor(T * F, multiple: 256) { r in
                Ops.swiglu(gate + r.lowerBound, up + r.lowerBound, r.count)
            }
            block.down.forward(gate, tokens: T, into: normed, pool: pool)
            addRows(x, normed, count: T * C)
        }
        position += T

        // Final norm and output head for the rows asked for.
        let rows = T - firstLogitRow
        guard rows > 0 else { return logitsBuffer.pointer }
        if logitsBuffer.count < rows * c.vocab { logitsBuffer = FloatBuffer(count: rows * c.vocab) }
        rmsNormRows(x + firstLogitRow * C, m.outputNorm.pointer, normed, T: rows)
        m.output.forward(normed, tokens: rows, into: logitsBuffer.pointer, pool: pool)
        return logitsBuffer.pointer
    }

    private func rmsNormRows(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, T: Int) {
        let C = model.config.hidden, eps = model.config.rmsEps
        if T == 1 { Ops.rmsNorm(x, weight, out, C: C, eps: eps); return }
        model.pool.parallelFor(T) { r in
            for t in r { Ops.rmsNorm(x + t * C, weight, out + t * C, C: C, eps: eps) }
        }
    }

    private func addRows(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count: Int) {
        model.pool.parallelFor(count, multiple: 256) { r in
            Ops.axpy(1, y + r.lowerBound, x + r.lowerBound, r.count)
        }
    }

    /// out[t, h] = softmax(q[t,h]·K[0...p0+t]ᵀ/√D)·V, KV head = h / (H/KVH).
    private func attend(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, T: Int, p0: Int) {
        if T == 1 { attendOneToken(block: b, q: q, out: out, p0: p0) } else { attendBatch(block: b, q: q, out: out, T: T, p0: p0) }
    }

    /// Decode: one query row, heads split across workers.
    private func attendOneToken(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, p0: Int) {
        let c = model.config, D = c.headDim, H = c.heads, group = c.heads / c.kvHeads
        let scale = 1 / Float(D).squareRoot(), capacity = self.capacity, length = p0 + 1
        let scoresBase = scores.pointer
        model.pool.run { worker, workers in
            let scores = scoresBase + worker * capacity
            for h in ThreadPool.chunk(H, index: worker, count: workers) {
                let kvHead = h / group, query = q + h * D
                for j in 0..<length { scores[j] = Ops.dot(query, cache.key(b, j) + kvHead * D, D) * scale }
                Ops.softmax(scores, length)
                let o = out + h * D
                o.update(repeating: 0, count: D)
                for j in 0..<length { Ops.axpy(scores[j], cache.value(b, j) + kvHead * D, o, D) }
            }
        }
    }

    /// Prefill: per head, S = Q·Kᵀ/√D over the cached positions (sgemm), causal mask and
    /// softmax per row, then out = S·V (sgemm). K and V are read in place from the cache;
    /// heads are split across workers, each with its own score matrix.
    private func attendBatch(block b: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, T: Int, p0: Int) {
        let c = model.config, D = c.headDim, H = c.heads, group = c.heads / c.kvHeads
        let kvWidth = c.kvHeads * D, L = p0 + T, workers = model.pool.threads
        if batchScores.count < workers * T * L { batchScores = FloatBuffer(count: workers * T * L) }
        let scoresBase = batchScores.pointer
        model.pool.run { worker, count in
            let S = scoresBase + worker * T * L
            for h in ThreadPool.chunk(H, index: worker, count: count) {
                let kvHead = h / group
                Matmul.sgemm(transA: false, transB: true, M: T, N: L, K: D, alpha: 1 / Float(D).squareRoot(),
                             A: q + h * D, lda: H * D, B: cache.key(b, 0) + kvHead * D, ldb: kvWidth, C: S, ldc: L)
                for t in 0..<T {
                    let row = S + t * L, visible = p0 + t + 1
                    Ops.softmax(row, visible)
                    (row + visible).update(repeating: 0, count: L - visible)
                }
                Matmul.sgemm(transA: false, transB: false, M: T, N: D, K: L, A: S, lda: L,
                             B: cache.value(b, 0) + kvHead * D, ldb: kvWidth, C: out + h * D, ldc: H * D)
            }
        }
    }
}
