import Foundation
import XCTest

/// Locations the tests read: the repository's data/ (the files it ships, data/README.md), ../shared
/// beside the repository for the few files it does not ship (llama.cpp's tokenizer test
/// vectors), the demo model under models/, and the built programs.
enum TestPaths {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    /// The data the repository ships (wikitext2, arc, hellaswag, piqa, winogrande, the Llama-3
    /// tokenizer).
    static let data = repo + "/data"
    static let shared: String = {
        if let s = ProcessInfo.processInfo.environment["TESSERA_SHARED"] { return s }
        return URL(fileURLWithPath: repo).deletingLastPathComponent().appendingPathComponent("shared").path
    }()
    static let demoModel = repo + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    static var haveDemoModel: Bool { FileManager.default.fileExists(atPath: demoModel) }
    /// The built products sit beside the test bundle (.build/<configuration>/).
    static let productsDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    /// CI=true: the CI entry point (.ci/run) sets it; there set-up provides everything a test
    /// needs, so a missing requirement is a failure rather than a skip.
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }
}

import XCTest

extension TestPaths {
    /// The error a test throws when something it needs is missing: an XCTSkip, recorded as a
    /// skip locally; under CI=true an XCTFail at the caller's line comes first, so the test fails.
    static func unavailable(_ message: String, file: StaticString = #filePath, line: UInt = #line) -> XCTSkip {
        if isCI { XCTFail("\(message) (CI=true: a failure, not a skip)", file: file, line: line) }
        return XCTSkip(message, file: file, line: line)
    }

    /// `path` when the file exists; otherwise skips the test (fails it in CI).
    @discardableResult
    static func requireFile(_ path: String, _ hint: String = "", file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if FileManager.default.fileExists(atPath: path) { return path }
        throw unavailable("\(path) not present" + (hint.isEmpty ? "" : " (\(hint))"), file: file, line: line)
    }

    /// A file under ../shared (TESSERA_SHARED), for what the repository does not ship: skips
    /// where it is missing, fails in CI.
    static func requireShared(_ relative: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try requireFile(shared + "/" + relative, "the shared data folder beside the repository, or TESSERA_SHARED", file: file, line: line)
    }

    /// A built program (chat, tessera, bench) beside the test bundle: skips where it is not
    /// built, fails in CI (`swift test` builds every product).
    static func requireProgram(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> URL {
        let url = productsDirectory.appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        throw unavailable("\(name) is not built at \(url.path)", file: file, line: line)
    }

    /// The demo model's path. Skips the test where the model was not fetched, but fails in
    /// CI, where the set-up step always fetches it.
    static func requireDemoModel(file: StaticString = #filePath, line: UInt = #line) throws -> String {
        if haveDemoModel { return demoModel }
        throw unavailable("demo model not present at \(demoModel) (run scripts/setup.sh)", file: file, line: line)
    }
}

extension XCTestCase {
    /// A path named `name` in a fresh temporary folder that is removed when the test ends.
    func temporaryPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir.appendingPathComponent(name).path
    }
}
