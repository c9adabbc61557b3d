import Foundation
import Engine

/// The one writer of a packed file made from another model with some tensors replaced:
/// `calibrate` (the fp model, its block norms and linears replaced by the calibrated ones),
/// `tune` (the calibrated file, its scales, offsets and, with --norms, norms replaced) and
/// `average` (the first input, with the inputs' mean).
///
/// A tensor not replaced is copied: stored packed in the base, its stored codes, scales and
/// offsets as they are; otherwise what RTN stores for it on the requested scheme (the norms as
/// they are, the embedding as `scheme.embedding` says).
///
/// The scheme's labels follow from what is written, not from the base's keys or the caller:
/// `tessera.zero_point` is `integer` only when every block linear written is on an integer
/// zero point (`QuantizedTensor.zeroPoint`), and `tessera.embedding` says how the embedding
/// table was written. So a calibration's output says `integer` (its offsets are −z·s), and after
/// `tune` the file says `float`: tuning trains every group's offset m + s·β freely, off the
/// integer grid (and so does averaging tunes); a tune that was not kept writes its input's
/// offsets and label back. Bits and group are checked against the tensors, not derived: the
/// caller's scheme states them.
public enum PackedRewrite {
    /// Writes `base` with the tensors `replacement` returns (nil: copy) to `path`, atomically.
    /// Returns the scheme the file's keys state.
    @discardableResult
    public static func write(base: ModelSource, tokenizer: Tokenizer?, scheme: PackedFormat.Scheme, method: String,
                             metadata: [(String, String)], to path: String,
                             replacement: (String) throws -> PackedFormat.TensorContent?) throws -> PackedFormat.Scheme {
        var labels = Labels(scheme: scheme)
        try PackedFormat.write(source: base, tokenizer: tokenizer, scheme: scheme, method: method, metadata: metadata, to: path,
                               settledScheme: { labels.scheme }) { name, shape in
            let content: PackedFormat.TensorContent
            if let replaced = try replacement(name) {
                content = replaced
            } else if case .quantized(let q) = try base.storedMatrix(name) {
                content = .quantized(q)
            } else {
                content = try RoundToNearest.content(base, scheme: scheme, name: name, shape: shape)
            }
            try labels.record(name, content)
            return content
        }
        return labels.scheme
    }

    /// `base` (a packed file) rewritten with `replacement`: its scheme (labels settled by the
    /// tensors written), method, tokenizer and `tessera.calibration.*` keys, then `metadata`.
    @discardableResult
    public static func write(copying base: PackedModelSource, metadata: [(String, String)], to path: String,
                             replacement: (String) throws -> PackedFormat.TensorContent?) throws -> PackedFormat.Scheme {
        let g = base.gguf
        let carried: [(String, String)] = g.metadataKeys.filter { $0.hasPrefix("tessera.calibration.") }.compactMap { key in
            g.string(key).map { (key, $0) }
        }
        // (A file without a tokenizer, as the tests' synthetic models, stays without one.)
        let tokenizer = g.string("tokenizer.ggml.model") == nil ? nil : try base.makeTokenizer()
        return try write(base: base, tokenizer: tokenizer, scheme: base.scheme, method: g.string("tessera.method") ?? "tesseraq",
                         metadata: carried + metadata, to: path, replacement: replacement)
    }

    /// The labels of the tensors written so far.
    struct Labels {
        var scheme: PackedFormat.Scheme

        init(scheme: PackedFormat.Scheme) {
            self.scheme = scheme
            self.scheme.zeroPoint = .integer   // until a block linear says otherwise
        }

        mutating func record(_ name: String, _ content: PackedFormat.TensorContent) throws {
            if name == TensorName.tokenEmbedding {
                if case .f16 = content {
                    scheme.embedding = .f16
                } else if case .quantized(let q) = content, let form = PackedFormat.Embedding.quantized(bits: q.bits, group: q.group) {
                    scheme.embedding = form
                } else {
                    throw CalibrationError("\(name) would be written in no form a packed file's embedding takes (f16, q8, q6 or q4 in groups of 32)")
                }
            }
            guard PackedFormat.isBlockLinear(name) else { return }
            guard case .quantized(let q) = content else {
                throw CalibrationError("\(name) would be written unquantized; every block linear of a packed file is packed")
            }
            let group = scheme.group == 0 ? q.cols : scheme.group
            guard q.bits == scheme.bits, q.group == group else {
                throw CalibrationError("\(name) is W\(q.bits)g\(q.group), not the file's W\(scheme.bits)g\(group); every block linear of a packed file has its bits and group")
            }
            if scheme.zeroPoint == .integer && q.zeroPoint == .float { scheme.zeroPoint = .float }
        }
    }
}
