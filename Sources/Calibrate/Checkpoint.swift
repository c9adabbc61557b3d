import Foundation
import Engine

/// What a checkpoint's `state.json` must hold besides the run's own fields: the settings the
/// run was started with, which a resumed run must repeat.
protocol CheckpointState: Codable {
    var fingerprint: [String] { get }
}

/// A run's checkpoint folder, `<output><suffix>/` (`calibrate`: OUT.calib/, `tune`: OUT.e2e/):
/// `state.json`, the commit point, and the run's own files beside it. Every file is written
/// atomically (temp + rename) and the state last, so a run killed at any point resumes from
/// its last saved state with `--resume`.
struct Checkpoint<State: CheckpointState> {
    let directory: String
    var statePath: String { directory + "/state.json" }

    init(output: String, suffix: String) { directory = output + suffix }

    /// The path of the run's file `name` in the folder.
    func path(_ name: String) -> String { directory + "/" + name }

    /// The saved state to continue from, or nil for a fresh start (the folder is then created).
    /// A saved state without `resume`, an unreadable one, or one made with another `fingerprint`
    /// is refused with a one-line error that says what to do.
    func open(fingerprint: [String], resume: Bool) throws -> State? {
        let fm = FileManager.default
        guard fm.fileExists(atPath: statePath) else {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return nil
        }
        guard resume else {
            throw CalibrationError("a checkpoint of an earlier run is in \(directory): pass --resume to continue it, or delete that folder to start over")
        }
        guard let saved = load() else { throw CalibrationError("cannot read \(statePath); delete \(directory) to start over") }
        guard saved.fingerprint == fingerprint else {
            throw CalibrationError("the checkpoint in \(directory) was made with other settings: \(Self.difference(saved.fingerprint, fingerprint)); use the same flags or delete it")
        }
        return saved
    }

    /// The saved state, if there is a readable one.
    func load() -> State? {
        guard let data = FileManager.default.contents(atPath: statePath) else { return nil }
        return try? JSONDecoder().decode(State.self, from: data)
    }

    /// Commits `state` (atomically).
    func save(_ state: State) throws {
        try JSONEncoder().encode(state).write(to: URL(fileURLWithPath: statePath), options: .atomic)
    }

    /// Removes a file of the folder (no error if it is gone).
    func remove(_ name: String) { try? FileManager.default.removeItem(atPath: path(name)) }

    /// Removes the folder (after the output file is written).
    func removeAll() { try? FileManager.default.removeItem(atPath: directory) }

    /// "steps=30 (now 31), norms=true (now absent)": the settings that differ, by key.
    static func difference(_ saved: [String], _ now: [String]) -> String {
        func split(_ entry: String) -> (String, String) {
            guard let eq = entry.firstIndex(of: "=") else { return (entry, "") }
            return (String(entry[..<eq]), String(entry[entry.index(after: eq)...]))
        }
        let before = Dictionary(saved.map(split), uniquingKeysWith: { a, _ in a })
        let after = Dictionary(now.map(split), uniquingKeysWith: { a, _ in a })
        var keys: [String] = []
        for (key, _) in saved.map(split) + now.map(split) where !keys.contains(key) { keys.append(key) }
        let changes = keys.compactMap { key -> String? in
            switch (before[key], after[key]) {
            case let (a?, b?) where a != b: return "\(key)=\(a) (now \(b))"
            case let (a?, nil): return "\(key)=\(a) (now absent)"
            case let (nil, b?): return "no \(key) (now \(key)=\(b))"
            default: return nil
            }
        }
        return changes.isEmpty ? "the same settings in another order" : changes.joined(separator: ", ")
    }

    /// Float arrays, one after another, into the folder's file `name` (atomically).
    func writeArrays(_ arrays: [[Float]], to name: String) throws {
        var data = Data()
        for a in arrays { a.withUnsafeBytes { data.append(contentsOf: $0) } }
        try data.write(to: URL(fileURLWithPath: path(name)), options: .atomic)
    }

    /// The arrays `writeArrays` wrote, of the given counts.
    func readArrays(_ name: String, counts: [Int]) throws -> [[Float]] {
        guard let data = FileManager.default.contents(atPath: path(name)), data.count == counts.reduce(0, +) * 4 else {
            throw CalibrationError("\(path(name)) is missing or truncated; delete \(directory) to start over")
        }
        return data.withUnsafeBytes { raw in
            let f = raw.bindMemory(to: Float.self)
            var start = 0
            return counts.map { count in
                defer { start += count }
                return Array(f[start..<start + count])
            }
        }
    }
}
