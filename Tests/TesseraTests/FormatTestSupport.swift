import Foundation
import XCTest
@testable import Engine

/// The seeded generator of format tests and fuzzers.
typealias FormatTestRNG = SplitMix64

extension SplitMix64 {
    /// Uniform in [-scale, scale).
    mutating func floats(_ n: Int, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in Float.random(in: -scale..<scale, using: &self) }
    }
}

/// A unique scratch directory under the system temporary directory, removed by `remove()`.
final class FormatTempDir {
    let path: String
    init(_ label: String) throws {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("tessera-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    func write(_ name: String, _ text: String) throws { try text.write(toFile: file(name), atomically: false, encoding: .utf8) }
    func write(_ name: String, bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: file(name))) }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
    var contents: [String] { (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] }
}

/// Asserts that `body` throws a FormatError and returns it (nil, with a failure, otherwise).
@discardableResult
func assertFormatError<T>(_ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line) -> FormatError? {
    do {
        _ = try body()
        XCTFail("expected a FormatError", file: file, line: line)
    } catch let e as FormatError {
        return e
    } catch {
        XCTFail("expected a FormatError, got \(error)", file: file, line: line)
    }
    return nil
}
