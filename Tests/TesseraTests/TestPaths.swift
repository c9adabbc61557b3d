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
