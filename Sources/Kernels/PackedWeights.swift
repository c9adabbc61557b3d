import Core
import KernelsC

/// Group-quantized weights W [rows, cols] in the kernels' own layout: unsigned `bits`-bit codes
/// q, and per (row, group of `group` consecutive weights) an fp16 scale s and offset m, with
/// w = q·s + m. The byte layout of codes is the kernels' (KernelsQuant.h) and may change with
/// them: files and tools exchange `QuantizedTensor` (the canonical layout), which
/// `init(_:)` repacks at load and `canonical` converts back. Scales and offsets hold
/// rows·(cols / group) values in the kernels' row-panel order (`groupIndex(row:group:)`; plain
/// row-major for the last rows % panel rows). All buffers are 64-byte aligned.
public final class PackedWeights: @unchecked Sendable {
    public let bits: Int
    /// Weights per group (== cols for row-wide groups).
    public let group: Int
    public let rows: Int
    public let cols: Int
    public let codes: UnsafeMutablePointer<UInt8>
    public let scales: UnsafeMutablePointer<UInt16>
    public let offsets: UnsafeMutablePointer<UInt16>

    public var groupsPerRow: Int { cols / group }
    /// Where (row, group g) sits in `scales` and `offsets`.
    public func groupIndex(row: Int, group g: Int) -> Int {
        Int(tsr_q_group_index(Int32(bits), Int32(rows), Int32(groupsPerRow), Int32(row), Int32(g)))
    }
    public var rowBytes: Int { Int(tsr_q_row_bytes(Int32(bits), Int32(cols))) }
    public var codeBytes: Int { rows * rowBytes }
    /// Bytes in memory: codes plus fp16 scales and offsets.
    public var byteCount: Int { codeBytes + 4 * rows * groupsPerRow }
    /// Stored bits per weight, scales and offsets included (B + 32/G).
    public var bitsPerWeight: Double { Double(byteCount * 8) / Double(rows * cols) }

    /// Zero-filled storage (all codes 0, scales and offsets +0).
    public init(bits: Int, group: Int, rows: Int, cols: Int, name: String = "weights") throws {
        let g = try QuantizedTensor.validate(bits: bits, group: group, cols: cols, name: name)
        precondition(rows >= 0)
        self.bits = bits
        self.group = g
        self.rows = rows
        self.cols = cols
        let nCodes = max(rows * Int(tsr_q_row_bytes(Int32(bits), Int32(cols))), 1)
        let nGroups = max(rows * (cols / g), 1)
        codes = UnsafeMutableRawPointer.allocate(byteCount: nCodes, alignment: 64).bindMemory(to: UInt8.self, capacity: nCodes)
        codes.initialize(repeating: 0, count: nCodes)
        scales = UnsafeMutableRawPointer.allocate(byteCount: nGroups * 2, alignment: 64).bindMemory(to: UInt16.self, capacity: nGroups)
        scales.initialize(repeating: 0, count: nGroups)
        offsets = UnsafeMutableRawPointer.allocate(byteCount: nGroups * 2, alignment: 64).bindMemory(to: UInt16.self, capacity: nGroups)
        offsets.initialize(repeating: 0, count: nGroups)
    }

    /// Canonical weights repacked into the kernels' layout.
    public convenience init(_ t: QuantizedTensor, name: String = "weights") throws {
        try self.init(bits: t.bits, group: t.group, rows: t.rows, cols: t.cols, name: name)
        tsr_q_from_canonical(t.codes, Int32(bits), Int32(rows), Int32(cols), codes)
        tsr_q_pack_groups(t.scales, Int32(bits), Int32(rows), Int32(groupsPerRow), scales)
        tsr_q_pack_groups(t.offsets, Int32(bits), Int32(rows), Int32(groupsPerRow), offsets)
    }

    /// These weights in the canonical layout.
    public var canonical: QuantizedTensor {
        var c = [UInt8](repeating: 0, count: rows * QuantizedTensor.rowBytes(bits: bits, cols: cols))
        tsr_q_to_canonical(codes, Int32(bits), Int32(rows), Int32(cols), &c)
        let n = rows * groupsPerRow
        var s = [UInt16](repeating: 0, count: n), m = [UInt16](repeating: 0, count: n)
        tsr_q_unpack_groups(scales, Int32(bits), Int32(rows), Int32(groupsPerRow), &s)
        tsr_q_unpack_groups(offsets, Int32(bits), Int32(rows), Int32(groupsPerRow), &m)
        return try! QuantizedTensor(bits: bits, group: group, rows: rows, cols: cols, codes: c, scales: s, offsets: m)
    }

    deinit {
        UnsafeMutableRawPointer(codes).deallocate()
        UnsafeMutableRawPointer(scales).deallocate()
        UnsafeMutableRawPointer(offsets).deallocate()
    }

    /// The C view of these weights; valid while `self` is alive.
    public var view: tsr_qweights {
        tsr_qweights(codes: codes, scales: scales, offsets: offsets,
                     rows: Int32(rows), cols: Int32(cols), bits: Int32(bits), group: Int32(group))
    }

    /// Runs `body` with a pointer to the C view, keeping `self` alive.
    @inline(__always)
    public func withView<R>(_ body: (UnsafePointer<tsr_qweights>) throws -> R) rethrows -> R {
        var v = view
        return try withExtendedLifetime(self) { try body(&v) }
    }

    /// fp32 weights [rows, cols]: q·s + m.
    public func dequantize() -> FloatBuffer {
        let out = FloatBuffer(count: rows * cols)
        withView { tsr_q_dequantize($0, out.pointer, 0, Int32(rows)) }
        return out
    }

    /// Row `r` as fp32 (q·s + m) into `out` (cols values).
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(r >= 0 && r < rows, "row \(r) outside 0..<\(rows)")
        withView { tsr_q_dequantize($0, out, Int32(r), Int32(r + 1)) }
    }

    /// One code per weight, [rows, cols].
    public func unpackedCodes() -> [UInt8] {
        var q = [UInt8](repeating: 0, count: rows * cols)
        q.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<rows { tsr_q_unpack_row(codes, Int32(bits), Int32(rows), Int32(cols), Int32(r), buffer.baseAddress! + r * cols) }
        }
        return q
    }

    public func scale(row: Int, group g: Int) -> Float { tsr_f16_to_f32(scales[groupIndex(row: row, group: g)]) }
    public func offset(row: Int, group g: Int) -> Float { tsr_f16_to_f32(offsets[groupIndex(row: row, group: g)]) }
}

