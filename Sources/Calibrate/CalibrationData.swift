import Foundation
import Kernels
import Runtime

public struct CalibrationDataError: Error, CustomStringConvertible {
    public let description: String
}

/// Calibration windows: the text of a .txt/.raw file (or the "text" fields of a .jsonl, joined
/// with blank lines) tokenized once, then `count` windows of `length` tokens starting at
/// seeded random offsets, as the reference's wikitext2 loader draws them.
public enum CalibrationData {
    public static func text(path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CalibrationDataError(description: "cannot read calibration data \(path)")
        }
        let raw = String(decoding: data, as: UTF8.self)
        guard path.hasSuffix(".jsonl") else { return raw }
        var texts: [String] = []
        for (number, line) in raw.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let text = object["text"] as? String else {
                throw CalibrationDataError(description: "\(path):\(number + 1): expected a JSON object with a \"text\" string")
            }
            texts.append(text)
        }
        return texts.joined(separator: "\n\n")
    }

    /// `count` windows of `length` tokens from `tokens`.
    public static func windows(tokens: [Int32], count: Int, length: Int, seed: UInt64) throws -> [[Int32]] {
        guard tokens.count > length else {
            throw CalibrationDataError(description: "the calibration text has \(tokens.count) tokens, too few for --seq-len \(length)")
        }
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let start = Int.random(in: 0..<(tokens.count - length), using: &rng)
            return Array(tokens[start..<start + length])
        }
    }
}

/// Activations of every calibration window at one block boundary, [samples, T, C], held in
/// fp16 (the reference keeps them in bf16) and converted to fp32 a batch at a time.
public final class Trajectory {
    public let samples: Int, T: Int, C: Int
    public private(set) var values: [Float16]

    public init(samples: Int, T: Int, C: Int) {
        self.samples = samples
        self.T = T
        self.C = C
        values = [Float16](repeating: 0, count: samples * T * C)
    }

    public init(samples: Int, T: Int, C: Int, contentsOf path: String) throws {
        self.samples = samples
        self.T = T
        self.C = C
        let count = samples * T * C
        guard let data = FileManager.default.contents(atPath: path), data.count == count * 2 else {
            throw CalibrationDataError(description: "checkpoint file \(path) is missing or has the wrong size; delete the checkpoint folder to start over")
        }
        values = [Float16](repeating: 0, count: count)
        values.withUnsafeMutableBytes { _ = data.copyBytes(to: $0) }
    }

    /// Copies sequences `indices` into x [indices.count·T, C] as fp32.
    public func gather(_ indices: [Int], into x: UnsafeMutablePointer<Float>) {
        let n = T * C
        values.withUnsafeBufferPointer { v in
            for (j, i) in indices.enumerated() {
                for k in 0..<n { x[j * n + k] = Float(v[i * n + k]) }
            }
        }
    }

    /// Stores x [count·T, C] as sequences first..<first+count.
    public func store(_ x: UnsafePointer<Float>, first: Int, count: Int) {
        let n = T * C
        values.withUnsafeMutableBufferPointer { v in
            for k in 0..<count * n { v[first * n + k] = Float16(x[k]) }
        }
    }

    /// Writes the raw fp16 values atomically.
    public func write(to path: String) throws {
        try values.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: path), options: .atomic) }
    }
}
