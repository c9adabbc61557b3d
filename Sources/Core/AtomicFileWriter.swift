import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a file atomically: bytes go to a temporary file in the destination's directory,
/// which is renamed over the destination only by `commit()`. A writer that is neither
/// committed nor aborted removes its temporary file when released.
public final class AtomicFileWriter {
    let path: String
    let tempPath: String
    private var fd: Int32
    public private(set) var bytesWritten = 0
    private var finished = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        tempPath = dir + "/." + url.lastPathComponent + ".tmp-" + UUID().uuidString
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FormatError.cannotOpen(path: path, reason: "cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))")
        }
    }

    deinit { if !finished { abort() } }

    /// Throws what `init(path:)` would, leaving nothing behind: a long job calls it first, so an
    /// output path it could not write is refused before the work, not after.
    public static func checkWritable(path: String) throws { try AtomicFileWriter(path: path).abort() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, p, left)
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError.invalid(path: path, reason: "cannot write: \(String(cString: strerror(errno)))")
            }
            p += n
            left -= n
            bytesWritten += n
        }
    }

    public func write(_ data: Data) throws { try data.withUnsafeBytes { try write($0) } }
    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// Writes zero bytes until the file length is a multiple of `alignment`.
    public func pad(to alignment: Int, byte: UInt8 = 0) throws {
        let n = (alignment - bytesWritten % alignment) % alignment
        if n > 0 { try write([UInt8](repeating: byte, count: n)) }
    }

    /// Flushes, closes and renames the temporary file over the destination.
    public func commit() throws {
        precondition(!finished)
        finished = true
        var failure: String?
        if fsync(fd) != 0 { failure = "fsync failed: \(String(cString: strerror(errno)))" }
        if close(fd) != 0, failure == nil { failure = "close failed: \(String(cString: strerror(errno)))" }
        fd = -1
        if failure == nil, rename(tempPath, path) != 0 { failure = "rename failed: \(String(cString: strerror(errno)))" }
        if let failure {
            unlink(tempPath)
            throw FormatError.invalid(path: path, reason: "cannot write: \(failure)")
        }
    }

    /// Closes and removes the temporary file; the destination is untouched.
    public func abort() {
        finished = true
        if fd >= 0 { close(fd); fd = -1 }
        unlink(tempPath)
    }
}
