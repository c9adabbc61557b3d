import Foundation
import Engine

// Averaging tunes of one calibrated file (`tessera average`).
//
// `tune` trains only the per-group scales and offsets (and, with --norms, the RMSNorm
// weights); the integer codes stay as `calibrate` wrote them. Two tunes of the same calibrated
// file therefore differ only in those fp values, and their weighted mean is again a packed
// model on the same codes: w = q · Σᵢ λᵢ sᵢ + Σᵢ λᵢ mᵢ, which is the mean of the tunes' weights,
// group by group. (In `tune`'s parameters, scale = s·(1 + α) and offset = m + s·β are linear in
// α and β, so this is also the mean of the trained α and β, up to fp16 rounding.) It costs no
// bits and no training; whether it helps is an empirical question (bench/RESULTS.md).
//
// Files whose codes differ anywhere are refused: averaging the scales of different grids has
// no meaning.

public enum ModelAverage {
    /// Writes the λ-weighted mean of `inputs` to `path` (atomically). `weights` default to equal;
    /// they are normalised to sum to 1.
    public static func write(_ inputs: [PackedModelSource], weights: [Double]? = nil, to path: String) throws {
        guard inputs.count >= 2 else { throw CalibrationError("give at least two packed models to average") }
        let lambdas = try normalised(weights ?? Array(repeating: 1, count: inputs.count), count: inputs.count)
        let first = inputs[0]
        let names = { (s: PackedModelSource) in URL(fileURLWithPath: s.path).lastPathComponent }
        for other in inputs.dropFirst() {
            guard other.rotation == first.rotation else {
                throw CalibrationError("\(names(other)) and \(names(first)) differ in rotation (\(other.rotation?.summary ?? "none") vs \(first.rotation?.summary ?? "none")); only tunes of one calibrated file can be averaged")
            }
            guard other.bits == first.bits, other.group == first.group, other.activation == first.activation,
                  other.config.requiredTensorShapes.map({ $0.0 }) == first.config.requiredTensorShapes.map({ $0.0 }),
                  other.config.requiredTensorShapes.map({ $0.1 }) == first.config.requiredTensorShapes.map({ $0.1 }) else {
                throw CalibrationError("\(names(other)) is not the same kind of model as \(names(first)) (W\(other.bits)g\(other.group) \(other.activation.name) vs W\(first.bits)g\(first.group) \(first.activation.name), or other tensors)")
            }
        }
        var contents: [String: PackedFormat.TensorContent] = [:]
        for (name, shape) in first.config.requiredTensorShapes {
            if first.isPacked(name) {
                contents[name] = .quantized(try averagePacked(name, inputs, lambdas, names))
            } else {
                let values = try inputs.map { s -> FloatBuffer in
                    guard !s.isPacked(name) else { throw CalibrationError("\(name) is packed in \(names(s)) but not in \(names(first)); only tunes of one calibrated file can be averaged") }
                    return try s.floatTensor(name)
                }
                if values.dropFirst().allSatisfy({ $0.array == values[0].array }) { continue }   // identical: written as usual
                guard shape.count == 1 else {
                    throw CalibrationError("\(name) differs between \(names(first)) and another input; only tunes of one calibrated file can be averaged")
                }
                // RMSNorm weights (tune --norms): their mean, in fp32.
                let mean = FloatBuffer(count: values[0].count)
                for i in 0..<mean.count { mean[i] = Float(zip(lambdas, values).reduce(0.0) { $0 + $1.0 * Double($1.1[i]) }) }
                contents[name] = .f32(mean)
            }
        }
        let metadata = [("tessera.average.inputs", inputs.map(names).joined(separator: ",")),
                        ("tessera.average.weights", lambdas.map { String(format: "%.6g", $0) }.joined(separator: ",")),
                        ("tessera.version", TesseraVersion.string)]
        try PackedRewrite.write(copying: first, metadata: metadata, to: path) { contents[$0] }
    }

    static func normalised(_ weights: [Double], count: Int) throws -> [Double] {
        guard weights.count == count else { throw CalibrationError("\(weights.count) weights for \(count) models; give one per model") }
        guard weights.allSatisfy({ $0 >= 0 && $0.isFinite }), weights.contains(where: { $0 > 0 }) else {
            throw CalibrationError("weights must be non-negative and not all zero, got \(weights.map { String($0) }.joined(separator: ","))")
        }
        let total = weights.reduce(0, +)
        return weights.map { $0 / total }
    }

    /// The first input's codes with every group's scale and offset the λ-weighted mean of the inputs' (fp16).
    static func averagePacked(_ name: String, _ inputs: [PackedModelSource], _ lambdas: [Double],
                              _ names: (PackedModelSource) -> String) throws -> QuantizedTensor {
        let all = try inputs.map { s -> QuantizedTensor in
            guard s.isPacked(name) else { throw CalibrationError("\(name) is packed in \(names(inputs[0])) but not in \(names(s)); only tunes of one calibrated file can be averaged") }
            return try s.quantizedTensor(name)
        }
        var p = all[0]
        let n = p.rows * p.groupsPerRow
        for (q, s) in zip(all, inputs).dropFirst() {
            guard q.bits == p.bits, q.group == p.group, q.codes == p.codes else {
                throw CalibrationError("\(name) has other integer codes in \(names(s)) than in \(names(inputs[0])); only tunes of one calibrated file can be averaged")
            }
        }
        for k in 0..<n {
            var scale = 0.0, offset = 0.0
            for (q, lambda) in zip(all, lambdas) {
                scale += lambda * Double(Half.toFloat(q.scales[k]))
                offset += lambda * Double(Half.toFloat(q.offsets[k]))
            }
            p.scales[k] = Float16(Float(scale)).bitPattern
            p.offsets[k] = Float16(Float(offset)).bitPattern
        }
        return p
    }
}
