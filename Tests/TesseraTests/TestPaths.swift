import Foundation

/// Locations the tests read: ../shared beside the repository, and the demo model under models/.
enum TestPaths {
    static let repo: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static let shared: String = {
        if let s = ProcessInfo.processInfo.environment["TESSERA_SHARED"] { return s }
        return URL(fileURLWithPath: repo).deletingLastPathComponent().appendingPathComponent("shared").path
    }()
    static let demoModel = repo + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    static var haveDemoModel: Bool { FileManager.default.fileExists(atPath: demoModel) }
}

import XCTest

extension TestPaths {
    /// The demo model's path. Skips the test where the model was not fetched, but fails in
    /// CI (CI=true), where the set-up step always fetches it.
    static func requireDemoModel() throws -> String {
        if haveDemoModel { return demoModel }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            XCTFail("demo model missing at \(demoModel) in CI: scripts/setup.sh should have fetched it")
        }
        throw XCTSkip("demo model not present (run scripts/setup.sh)")
    }
}
