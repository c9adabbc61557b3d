import Foundation
import Engine

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

    /// The embedding rows of a window's tokens, [tokens, C], into `out` (a block's input).
    static func embed(_ window: [Int32], table: FloatBuffer, C: Int, into out: UnsafeMutablePointer<Float>) {
        for (t, token) in window.enumerated() { (out + t * C).update(from: table.pointer + Int(token) * C, count: C) }
    }

    /// `count` windows of `length` tokens from `tokens`.
    public static func windows(tokens: [Int32], count: Int, length: Int, seed: UInt64) throws -> [[Int32]] {
        try starts(tokens: tokens.count, count: count, length: length, seed: seed).map { Array(tokens[$0..<$0 + length]) }
    }

    private static func checkLength(tokens: Int, length: Int) throws {
        guard tokens > length else {
            throw CalibrationDataError(description: "the calibration text has \(tokens) tokens, too few for --seq-len \(length)")
        }
    }

    /// Where `windows` starts its windows.
    static func starts(tokens: Int, count: Int, length: Int, seed: UInt64) throws -> [Int] {
        try checkLength(tokens: tokens, length: length)
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in Int.random(in: 0..<(tokens - length), using: &rng) }
    }

    /// `count` windows of `length` tokens that share no token with the windows starting at
    /// `others` (held-out text for a check the training never saw): seeded draws, overlapping
    /// ones skipped.
    static func windows(tokens: [Int32], count: Int, length: Int, seed: UInt64, disjointFrom others: [Int]) throws -> [[Int32]] {
        try checkLength(tokens: tokens.count, length: length)
        let sorted = others.sorted()
        var rng = SplitMix64(seed: seed)
        var found: [[Int32]] = []
        for _ in 0..<1000 * count where found.count < count {
            let start = Int.random(in: 0..<(tokens.count - length), using: &rng)
            // Overlaps a window starting at o iff start − length < o < start + length.
            var low = 0, high = sorted.count
            while low < high { let mid = (low + high) / 2; if sorted[mid] <= start - length { low = mid + 1 } else { high = mid } }
            if low < sorted.count && sorted[low] < start + length { continue }
            found.append(Array(tokens[start..<start + length]))
        }
        guard found.count == count else {
            throw CalibrationDataError(description: "found only \(found.count) of \(count) held-out windows of \(length) tokens outside the \(others.count) training windows of a \(tokens.count)-token text: use fewer samples or a longer text")
        }
        return found
    }
}

/// Activations of every calibration window at one block boundary, [samples, T, C], held in
/// fp16 (the reference keeps them in bf16) and converted to fp32 a batch at a time.
///
/// Storage is a file mapped into memory (MAP_SHARED) in the checkpoint folder: the paper
/// preset on a 1B model holds 4 × 4.3 GB of trajectories, more than many machines have.
/// The first `residentSamples` sequences stay in RAM; every later one is spilled after each
/// use (written back, dropped from the process and from the page cache) and read from disk
/// when next needed, so a `--max-memory` budget bounds what the trajectories occupy.
/// A new trajectory is written under a temporary name and renamed into place by `commit()`
/// (the checkpoint is atomic).
public final class Trajectory {
    public let samples: Int, T: Int, C: Int
    public let path: String
    private let values: UnsafeMutablePointer<Float16>
    private let byteCount: Int
    private let fd: Int32
    private var temporaryPath: String?
    /// Sequences kept in RAM; the rest are spilled to the file after every access.
    public var residentSamples: Int

    /// Bytes one sequence occupies.
    public static func sequenceBytes(T: Int, C: Int) -> Int { T * C * 2 }

    public var count: Int { samples * T * C }

    /// A new zero-filled trajectory backed by `path` (created as a temporary file until `commit()`).
    public init(samples: Int, T: Int, C: Int, path: String) throws {
        self.samples = samples
        self.T = T
        self.C = C
        self.path = path
        byteCount = max(samples * Self.sequenceBytes(T: T, C: C), 2)
        let temp = path + ".tmp"
        residentSamples = samples
        let fd = open(temp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CalibrationDataError(description: "cannot create \(temp): \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(byteCount)) == 0 else {
            close(fd)
            throw CalibrationDataError(description: "cannot size \(temp) to \(byteCount) bytes: \(String(cString: strerror(errno)))")
        }
        do { values = try Self.map(fd, byteCount, temp) } catch { close(fd); throw error }
        self.fd = fd
        temporaryPath = temp
    }

    /// An existing trajectory file (a checkpoint).
    public init(samples: Int, T: Int, C: Int, contentsOf path: String) throws {
        self.samples = samples
        self.T = T
        self.C = C
        self.path = path
        byteCount = max(samples * Self.sequenceBytes(T: T, C: C), 2)
        residentSamples = samples
        let fd = open(path, O_RDWR | O_CLOEXEC)
        var info = stat()
        guard fd >= 0, fstat(fd, &info) == 0, Int(info.st_size) == samples * Self.sequenceBytes(T: T, C: C) else {
            if fd >= 0 { close(fd) }
            throw CalibrationDataError(description: "checkpoint file \(path) is missing or has the wrong size; delete the checkpoint folder to start over")
        }
        do { values = try Self.map(fd, byteCount, path) } catch { close(fd); throw error }
        self.fd = fd
    }

    deinit {
        munmap(values, byteCount)
        close(fd)
        if let temporaryPath { unlink(temporaryPath) }
    }

    /// Spills sequences first..<first+count that lie past `residentSamples`: written back to the
    /// file if `written`, then dropped from this process and from the page cache.
    private func spill(first: Int, count: Int, written: Bool) {
        let from = max(first, residentSamples), to = first + count
        guard from < to else { return }
        let (start, length) = pages(first: from, count: to - from)
        let base = UnsafeMutableRawPointer(values) + start
        if written { msync(base, length, MS_SYNC) }
        madvise(base, length, MADV_DONTNEED)
        posix_fadvise(fd, off_t(start), off_t(length), POSIX_FADV_DONTNEED)
    }

    /// The whole pages (byte offset, length) that hold sequences first..<first+count.
    private func pages(first: Int, count: Int) -> (start: Int, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE))), bytes = Self.sequenceBytes(T: T, C: C)
        let start = first * bytes / page * page
        let end = ((first + count) * bytes + page - 1) / page * page
        return (start, end - start)
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

    /// The fraction of sequences first..<first+count's pages that are in RAM (mincore): tests.
    func residentFraction(first: Int, count: Int) -> Double {
        let (start, length) = pages(first: first, count: count)
        var flags = [UInt8](repeating: 0, count: length / Int(sysconf(Int32(_SC_PAGESIZE))))
        guard mincore(UnsafeMutableRawPointer(values) + start, length, &flags) == 0 else { return .nan }
        return Double(flags.filter { $0 & 1 != 0 }.count) / Double(flags.count)
    }

    /// Copies sequences `indices` into x [indices.count·T, C] as fp32.
    public func gather(_ indices: [Int], into x: UnsafeMutablePointer<Float>) {
        let n = T * C
        for (j, i) in indices.enumerated() {
            for k in 0..<n { x[j * n + k] = Float(values[i * n + k]) }
            spill(first: i, count: 1, written: false)
        }
    }

    /// Stores x [count·T, C] as sequences first..<first+count.
    public func store(_ x: UnsafePointer<Float>, first: Int, count: Int) {
        let n = T * C
        for k in 0..<count * n { values[first * n + k] = Float16(x[k]) }
        spill(first: first, count: count, written: true)
    }

    /// Copies another trajectory's values.
    public func store(from other: Trajectory) {
        precondition(other.count == count)
        let n = T * C
        for i in 0..<samples {
            (values + i * n).update(from: other.values + i * n, count: n)
            other.spill(first: i, count: 1, written: false)
            spill(first: i, count: 1, written: true)
        }
    }
}
