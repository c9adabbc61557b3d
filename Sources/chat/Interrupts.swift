import Dispatch
import Foundation
import Synchronization

/// Ctrl-C handling: during a reply the first press stops the reply; at the prompt (or a
/// second press while stopping) it exits with status 130, as shells expect.
final class Interrupts: @unchecked Sendable {
    private let generating = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private var source: DispatchSourceSignal?

    init() {
        signal(SIGINT, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        s.setEventHandler { [unowned self] in
            if self.generating.load(ordering: .acquiring) && !self.stopRequested.load(ordering: .acquiring) {
                self.stopRequested.store(true, ordering: .releasing)
            } else {
                FileHandle.standardError.write("\n".data(using: .utf8)!)
                exit(130)
            }
        }
        s.resume()
        source = s
    }

    /// Marks the start of a reply.
    func beginReply() {
        stopRequested.store(false, ordering: .releasing)
        generating.store(true, ordering: .releasing)
    }

    func endReply() { generating.store(false, ordering: .releasing) }

    var shouldStop: Bool { stopRequested.load(ordering: .acquiring) }
}
