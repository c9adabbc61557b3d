import Foundation
@testable import Engine

typealias SeededRandom = SplitMix64

/// An in-memory model source with random weights of a given config.
final class InMemorySource: ModelSource {
    let path = "<synthetic>"
    let config: LlamaConfig
    var tensors: [String: (shape: [Int], values: [Float])] = [:]
    var chatTemplate: String? { nil }

    init(config: LlamaConfig, seed: UInt64, tied: Bool = true) {
        var config = config
        config.tiedEmbeddings = tied
        self.config = config
        var rng = SeededRandom(seed: seed)
        func add(_ name: String, _ shape: [Int], scale: Float, offset: Float = 0) {
            let n = shape.reduce(1, *)
            tensors[name] = (shape, (0..<n).map { _ in offset + rng.uniform(-scale, scale) })
        }
        let c = config, C = c.hidden
        add(TensorName.tokenEmbedding, [c.vocab, C], scale: 1)
        for i in 0..<c.blockCount {
            let s = 1 / Float(C).squareRoot()
            add(TensorName.block(i, "attn_norm"), [C], scale: 0.2, offset: 1)
            add(TensorName.block(i, "attn_q"), [c.heads * c.headDim, C], scale: 2 * s)
            add(TensorName.block(i, "attn_k"), [c.kvHeads * c.headDim, C], scale: 2 * s)
            add(TensorName.block(i, "attn_v"), [c.kvHeads * c.headDim, C], scale: s)
            add(TensorName.block(i, "attn_output"), [C, c.heads * c.headDim], scale: s)
            add(TensorName.block(i, "ffn_norm"), [C], scale: 0.2, offset: 1)
            add(TensorName.block(i, "ffn_gate"), [c.ffn, C], scale: s)
            add(TensorName.block(i, "ffn_up"), [c.ffn, C], scale: s)
            add(TensorName.block(i, "ffn_down"), [C, c.ffn], scale: 1 / Float(c.ffn).squareRoot())
        }
        add(TensorName.outputNorm, [C], scale: 0.2, offset: 1)
        if !tied { add(TensorName.output, [c.vocab, C], scale: 1 / Float(C).squareRoot()) }
    }

    /// A source over given tensors (GGUF names).
    init(config: LlamaConfig, tensors: [String: (shape: [Int], values: [Float])]) {
        self.config = config
        self.tensors = tensors
    }

    func makeTokenizer() throws -> Tokenizer { throw FormatError.invalid(path: path, reason: "no tokenizer") }
    func hasTensor(_ name: String) -> Bool { tensors[name] != nil }
    func tensorShape(_ name: String) -> [Int]? { tensors[name]?.shape }
    func floatTensor(_ name: String) throws -> FloatBuffer {
        guard let t = tensors[name] else { throw FormatError.missingTensor(path: path, tensor: name) }
        return FloatBuffer(t.values)
    }

    static func tinyConfig(llama3Rope: Bool = true) -> LlamaConfig {
        let factors = llama3Rope
            ? Llama3RopeScaling(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 64).frequencyFactors(headDim: 12, base: 10000)
            : nil
        return LlamaConfig(blockCount: 2, hidden: 48, ffn: 80, heads: 4, kvHeads: 2, headDim: 12, vocab: 97,
                           contextLength: 128, ropeBase: 10000, ropeFrequencyFactors: factors, rmsEps: 1e-5,
                           tiedEmbeddings: true)
    }
}

/// A float64 Llama forward pass written independently of the runtime, for reference.
struct ReferenceLlama {
    let source: InMemorySource
    /// Hugging Face's rotate-half RoPE (pairs i, i+D/2) instead of GGUF's interleaved pairs.
    var rotateHalf = false
    var c: LlamaConfig { source.config }

    func w(_ name: String) -> [Double] { source.tensors[name]!.values.map(Double.init) }

    /// Logits [T][V] for the whole sequence, computed from scratch (no cache).
    func logits(_ tokens: [Int]) -> [[Double]] {
        let C = c.hidden, D = c.headDim, H = c.heads, KVH = c.kvHeads, F = c.ffn, T = tokens.count
        let emb = w(TensorName.tokenEmbedding)
        var x = tokens.map { Array(emb[$0 * C..<($0 + 1) * C]) }
        func norm(_ v: [Double], _ g: [Double]) -> [Double] {
            let ms = v.reduce(0) { $0 + $1 * $1 } / Double(v.count)
            let r = 1 / (ms + Double(c.rmsEps)).squareRoot()
            return zip(v, g).map { $0 * r * $1 }
        }
        func matvec(_ W: [Double], _ v: [Double], rows: Int) -> [Double] {
            (0..<rows).map { r in (0..<v.count).reduce(0.0) { $0 + W[r * v.count + $1] * v[$1] } }
        }
        func rope(_ v: [Double], heads: Int, pos: Int) -> [Double] {
            var out = v
            for h in 0..<heads {
                for i in 0..<D / 2 {
                    var theta = pow(c.ropeBase, -2.0 * Double(i) / Double(D))
                    if let f = c.ropeFrequencyFactors { theta /= Double(f[i]) }
                    let a = Double(pos) * theta
                    let i0 = h * D + (rotateHalf ? i : 2 * i), i1 = rotateHalf ? i0 + D / 2 : i0 + 1
                    let x0 = v[i0], x1 = v[i1]
                    out[i0] = x0 * cos(a) - x1 * sin(a)
                    out[i1] = x0 * sin(a) + x1 * cos(a)
                }
            }
            return out
        }
        for b in 0..<c.blockCount {
            let n = { (part: String) in TensorName.block(b, part) }
            let xn = x.map { norm($0, w(n("attn_norm"))) }
            let qs = (0..<T).map { rope(matvec(w(n("attn_q")), xn[$0], rows: H * D), heads: H, pos: $0) }
            let ks = (0..<T).map { rope(matvec(w(n("attn_k")), xn[$0], rows: KVH * D), heads: KVH, pos: $0) }
            let vs = (0..<T).map { matvec(w(n("attn_v")), xn[$0], rows: KVH * D) }
            for t in 0..<T {
                var att = [Double](repeating: 0, count: H * D)
                for h in 0..<H {
                    let kh = h / (H / KVH)
                    var s = [Double]()
                    for j in 0...t {
                        var dot = 0.0
                        for d in 0..<D { dot += qs[t][h * D + d] * ks[j][kh * D + d] }
                        s.append(dot / Double(D).squareRoot())
                    }
                    let m = s.max()!
                    s = s.map { exp($0 - m) }
                    let z = s.reduce(0, +)
                    for j in 0...t { for d in 0..<D { att[h * D + d] += s[j] / z * vs[j][kh * D + d] } }
                }
                let o = matvec(w(n("attn_output")), att, rows: C)
                for i in 0..<C { x[t][i] += o[i] }
            }
            for t in 0..<T {
                let h = norm(x[t], w(n("ffn_norm")))
                let g = matvec(w(n("ffn_gate")), h, rows: F), u = matvec(w(n("ffn_up")), h, rows: F)
                let a = (0..<F).map { g[$0] / (1 + exp(-g[$0])) * u[$0] }
                let d = matvec(w(n("ffn_down")), a, rows: C)
                for i in 0..<C { x[t][i] += d[i] }
            }
        }
        let head = source.tensors[TensorName.output] != nil ? w(TensorName.output) : emb
        return x.map { matvec(head, norm($0, w(TensorName.outputNorm)), rows: c.vocab) }
    }
}
