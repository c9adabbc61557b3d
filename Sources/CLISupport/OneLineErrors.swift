import ArgumentParser
import Foundation

extension ParsableCommand {
    /// Parses and runs the command; any failure ends with exactly one line on stderr
    /// (`name: message`) and a non-zero exit. Help and version output are unchanged.
    public static func mainWithOneLineErrors() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            let name = configuration.commandName ?? "error"
            FileHandle.standardError.write("\(name): \(message)\n".data(using: .utf8)!)
            Foundation.exit(code == .failure || code.rawValue == 0 ? 1 : code.rawValue)
        }
    }
}

/// Writes a line to standard error.
public func printError(_ line: String) {
    FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
}
