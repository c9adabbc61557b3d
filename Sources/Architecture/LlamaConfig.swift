import Core
import Foundation

/// Llama-3 style RoPE frequency scaling (`rope_scaling.rope_type = "llama3"`).
public struct Llama3RopeScaling: Equatable, Sendable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalContext: Int

    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalContext: Int) {
        self.factor = factor
        self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor
        self.originalContext = originalContext
    }

    /// Per-pair divisors of the rotary frequencies (what llama.cpp stores as `rope_freqs`).
    public func frequencyFactors(headDim: Int, base: Double) -> [Float] {
        let lowWavelength = Double(originalContext) / lowFreqFactor
        let highWavelength = Double(originalContext) / highFreqFactor
        return (0..<headDim / 2).map { i in
            let freq = 1 / pow(base, Double(2 * i) / Double(headDim))
            let wavelength = 2 * Double.pi / freq
            if wavelength < highWavelength { return 1 }
            if wavelength > lowWavelength { return Float(factor) }
            let smooth = (Double(originalContext) / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
            return Float(1 / ((1 - smooth) / factor + smooth))
        }
    }
}

/// Hyper-parameters of a Llama-architecture decoder. Shapes used everywhere:
/// C = hidden, F = ffn, H = heads, KVH = kvHeads, D = headDim, V = vocab.
public struct LlamaConfig: Equatable, Sendable {
    public var blockCount: Int
    public var hidden: Int
    public var ffn: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var vocab: Int
    public var contextLength: Int
    public var ropeBase: Double
    /// Divisors of each rotary frequency pair (length headDim/2), or nil for plain RoPE.
    public var ropeFrequencyFactors: [Float]?
    public var rmsEps: Float
    public var tiedEmbeddings: Bool

    public init(blockCount: Int, hidden: Int, ffn: Int, heads: Int, kvHeads: Int, headDim: Int? = nil, vocab: Int,
                contextLength: Int, ropeBase: Double, ropeFrequencyFactors: [Float]? = nil, rmsEps: Float,
                tiedEmbeddings: Bool) {
        self.blockCount = blockCount
        self.hidden = hidden
        self.ffn = ffn
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim ?? (heads > 0 ? hidden / heads : 0)
        self.vocab = vocab
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.ropeFrequencyFactors = ropeFrequencyFactors
        self.rmsEps = rmsEps
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// Rejects hyper-parameters no Llama model can have, naming the offending value.
    public func validate(path: String) throws {
        func bad(_ what: String) -> FormatError { .invalid(path: path, reason: "impossible hyper-parameter: \(what)") }
        guard blockCount >= 1, blockCount <= 1024 else { throw bad("block count \(blockCount)") }
        guard hidden >= 1, hidden <= 1 << 16 else { throw bad("hidden size \(hidden)") }
        guard ffn >= 1, ffn <= 1 << 18 else { throw bad("ffn size \(ffn)") }
        guard heads >= 1, heads <= 1 << 14, kvHeads >= 1, heads % kvHeads == 0 else { throw bad("heads \(heads) / kv heads \(kvHeads)") }
        guard headDim >= 2, headDim % 2 == 0, headDim <= 1024 else { throw bad("head dim \(headDim)") }
        guard vocab >= 1, vocab <= 1 << 22 else { throw bad("vocabulary size \(vocab)") }
        guard contextLength >= 1 else { throw bad("context length \(contextLength)") }
        guard ropeBase > 0, rmsEps > 0 else { throw bad("rope base \(ropeBase) / rms eps \(rmsEps)") }
        if let f = ropeFrequencyFactors, f.count != headDim / 2 { throw bad("\(f.count) rope frequency factors for head dim \(headDim)") }
    }
}
