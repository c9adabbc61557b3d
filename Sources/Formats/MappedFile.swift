import Tokenizer
import Architecture
import Core
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory map of a whole file. Tensor data is read straight from the map.
public final class MappedFile {
    public let path: String
    public let size: Int
    public let base: UnsafeRawPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError.cannotOpen(path: path, reason: "not a regular file") }
        size = Int(st.st_size)
        if size == 0 {
            // mmap of length 0 fails; keep a valid pointer to an empty region.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FormatError.cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size > 0 { munmap(UnsafeMutableRawPointer(mutating: base), size) }
        else { UnsafeMutableRawPointer(mutating: base).deallocate() }
    }

    /// Drops the map's pages from this process's resident set (they are read again from the
    /// file if touched). Loading copies weights out of the map, so after it the map's pages
    /// would only double the RSS.
    public func dropResidentPages() {
        if size > 0 { _ = madvise(UnsafeMutableRawPointer(mutating: base), size, Int32(MADV_DONTNEED)) }
    }

    /// The same for the pages holding bytes [offset, offset+count): streaming through a large
    /// file (checksums, copies) then keeps one tensor resident at a time, not the whole file.
    public func dropResidentPages(offset: Int, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = max(0, offset) / page * page
        let end = min(size, offset + count)
        guard size > 0, end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    /// Bytes [offset, offset+count) or a `truncated` error naming `what`.
    public func bytes(at offset: Int, count: Int, what: String) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw FormatError.truncated(path: path, what: what, offset: offset, needed: count, fileSize: size)
        }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }
}

/// A little-endian cursor over a mapped file that checks every read against the file's end.
struct ByteReader {
    let file: MappedFile
    var offset: Int

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let b = try file.bytes(at: offset, count: MemoryLayout<T>.size, what: what())
        offset += MemoryLayout<T>.size
        return T(littleEndian: b.loadUnaligned(as: T.self))
    }
    mutating func readFloat(_ what: @autoclosure () -> String) throws -> Float { Float(bitPattern: try read(UInt32.self, what())) }
    mutating func readDouble(_ what: @autoclosure () -> String) throws -> Double { Double(bitPattern: try read(UInt64.self, what())) }
    mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let b = try file.bytes(at: offset, count: count, what: what())
        offset += count
        return b
    }
}
