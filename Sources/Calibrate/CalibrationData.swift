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
///
/// Storage is a file mapped into memory (MAP_SHARED) in the checkpoint folder, so the kernel
/// keeps what fits in RAM and pages the rest to disk: the paper preset on a 1B model holds
/// 4 × 4.3 GB of trajectories, more than many machines have. A new trajectory is written
/// under a temporary name and renamed into place by `commit()` (the checkpoint is atomic).
public final class Trajectory {
    public let samples: Int, T: Int, C: Int
    public let path: String
    private let values: UnsafeMutablePointer<Float16>
    private let byteCount: Int
    private var temporaryPath: String?

    public var count: Int { samples * T * C }

    /// A new zero-filled trajectory backed by `path` (created as a temporary file until `commit()`).
    public init(samples: Int, T: Int, C: Int, path: String) throws {
        self.samples = samples
        self.T = T
        self.C = C
        self.path = path
        byteCount = max(samples * T * C * 2, 2)
        let temp = path + ".tmp"
        let fd = open(temp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CalibrationDataError(description: "cannot create \(temp): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            throw CalibrationDataError(description: "cannot size \(temp) to \(byteCount) bytes: \(String(cString: strerror(errno)))")
        }
        values = try Self.map(fd, byteCount, temp)
        temporaryPath = temp
    }

    /// An existing trajectory file (a checkpoint).
    public init(samples: Int, T: Int, C: Int, contentsOf path: String) throws {
        self.samples = samples
        self.T = T
        self.C = C
        self.path = path
        byteCount = max(samples * T * C * 2, 2)
        let fd = open(path, O_RDWR | O_CLOEXEC)
        var info = stat()
        guard fd >= 0, fstat(fd, &info) == 0, Int(info.st_size) == samples * T * C * 2 else {
            if fd >= 0 { close(fd) }
            throw CalibrationDataError(description: "checkpoint file \(path) is missing or has the wrong size; delete the checkpoint folder to start over")
        }
        defer { close(fd) }
        values = try Self.map(fd, byteCount, path)
    }

    deinit {
        munmap(values, byteCount)
        if let temporaryPath { unlink(temporaryPath) }
    }

    private static func map(_ fd: Int32, _ bytes: Int, _ path: String) throws -> UnsafeMutablePointer<Float16> {
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw CalibrationDataError(description: "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        return p.bindMemory(to: Float16.self, capacity: bytes / 2)
    }

    /// Flushes a new trajectory to disk and renames it into place.
    public func commit() throws {
        guard let temp = temporaryPath else { return }
        guard msync(values, byteCount, MS_SYNC) == 0, rename(temp, path) == 0 else {
            throw CalibrationDataError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        temporaryPath = nil
    }

    /// Copies sequences `indices` into x [indices.count·T, C] as fp32.
    public func gather(_ indices: [Int], into x: UnsafeMutablePointer<Float>) {
        let n = T * C
        for (j, i) in indices.enumerated() {
            for k in 0..<n { x[j * n + k] = Float(values[i * n + k]) }
        }
    }

    /// Stores x [count·T, C] as sequences first..<first+count.
    public func store(_ x: UnsafePointer<Float>, first: Int, count: Int) {
        let n = T * C
        for k in 0..<count * n { values[first * n + k] = Float16(x[k]) }
    }

    /// Copies another trajectory's values.
    public func store(from other: Trajectory) {
        precondition(other.count == count)
        values.update(from: other.values, count: count)
    }
}
