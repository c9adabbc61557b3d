import KernelsC

/// An error in the shape or parameters of group-quantized weights, as one readable sentence.
public struct QuantizationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Uniform asymmetric group-quantized weights W [rows, cols]: unsigned `bits`-bit codes q,
/// and per (row, group of `group` consecutive weights) an fp16 scale s and offset m, with
/// w = q·s + m. The byte layout of codes is documented at the top of KernelsQuant.h; scales
/// and offsets are [rows, cols / group] row-major. All buffers are 64-byte aligned.
public final class PackedWeights: @unchecked Sendable {
    public static let supportedBits = [2, 3, 4, 8]
    /// Group sizes offered besides the whole row.
    public static let standardGroups = [32, 64, 128]

    public let bits: Int
    /// Weights per group (== cols for row-wide groups).
    public let group: Int
    public let rows: Int
    public let cols: Int
    public let codes: UnsafeMutablePointer<UInt8>
    public let scales: UnsafeMutablePointer<UInt16>
    public let offsets: UnsafeMutablePointer<UInt16>

    public var groupsPerRow: Int { cols / group }
    public var rowBytes: Int { Int(tsr_q_row_bytes(Int32(bits), Int32(cols))) }
    public var codeBytes: Int { rows * rowBytes }
    /// Bytes in memory: codes plus fp16 scales and offsets.
    public var byteCount: Int { codeBytes + 4 * rows * groupsPerRow }
    /// Stored bits per weight, scales and offsets included (B + 32/G).
    public var bitsPerWeight: Double { Double(byteCount * 8) / Double(rows * cols) }

    /// Checks bits and group size for rows of width `cols` and returns the group size in
    /// weights (`group` 0 or `cols` means one group per row).
    @discardableResult
    public static func validate(bits: Int, group: Int, cols: Int, name: String = "weights") throws -> Int {
        guard supportedBits.contains(bits) else {
            throw QuantizationError("unsupported bit width \(bits) for \(name); use 2, 3, 4 or 8")
        }
        guard cols > 0, cols % 32 == 0 else {
            throw QuantizationError("the row width \(cols) of \(name) is not a multiple of 32; group-quantized rows are made of 32-weight blocks")
        }
        let g = group == 0 ? cols : group
        guard g > 0, g % 32 == 0 else {
            throw QuantizationError("group size \(group) of \(name) is not a multiple of 32; use \(suggestion(cols)) or the whole row")
        }
        guard cols % g == 0 else {
            throw QuantizationError("group size \(g) does not divide the row width \(cols) of \(name); use \(suggestion(cols))")
        }
        return g
    }

    /// "32 or 64", "32, 64 or 128": the standard group sizes that divide `cols`.
    static func suggestion(_ cols: Int) -> String {
        let fits = standardGroups.filter { cols % $0 == 0 }.map(String.init)
        if fits.count <= 1 { return fits.first ?? "32" }
        return fits.dropLast().joined(separator: ", ") + " or " + fits.last!
    }

    /// Zero-filled storage (all codes 0, scales and offsets +0).
    public init(bits: Int, group: Int, rows: Int, cols: Int, name: String = "weights") throws {
        let g = try PackedWeights.validate(bits: bits, group: group, cols: cols, name: name)
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
            for r in 0..<rows { tsr_q_unpack_row(codes + r * rowBytes, Int32(bits), Int32(cols), buffer.baseAddress! + r * cols) }
        }
        return q
    }

    public func scale(row: Int, group g: Int) -> Float { tsr_f16_to_f32(scales[row * groupsPerRow + g]) }
    public func offset(row: Int, group g: Int) -> Float { tsr_f16_to_f32(offsets[row * groupsPerRow + g]) }
}

// MARK: - ggml blocks

/// The ggml block types that repack losslessly (numeric values are ggml's type ids, so
/// `GGMLBlockType(rawValue: ggmlType.rawValue)` converts from the Runtime's GGMLType).
public enum GGMLBlockType: UInt32, Sendable {
    case q4_0 = 2, q4_1 = 3, q8_0 = 8

    public var blockBytes: Int {
        switch self {
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }
}

extension PackedWeights {
    /// Repacks ggml blocks (rows × cols/32 blocks, rows contiguous) without loss, group 32:
    /// Q4_1 (d, m, nibbles) → s = d, m = m, codes copied; Q4_0 (d, nibbles) → s = d, m = −8d;
    /// Q8_0 (d, int8 c) → q = c + 128, s = d, m = −128d. Dequantization then equals ggml's
    /// (q − 8)·d, q·d + m and c·d exactly (every product and sum is exact in fp32; the one
    /// difference is the sign of an exact zero: ggml's 0·d is −0 for d < 0, ours +0).
    /// Throws when −8d or −128d does not fit fp16 (|d| ≥ 8192 or ≥ 512).
    public static func fromGGML(type: GGMLBlockType, blocks: UnsafeRawPointer, rows: Int, cols: Int,
                                name: String = "weights") throws -> PackedWeights {
        let bits = type == .q8_0 ? 8 : 4
        let w = try PackedWeights(bits: bits, group: 32, rows: rows, cols: cols, name: name)
        let blocksPerRow = cols / 32, codeBytes = bits == 8 ? 32 : 16
        for b in 0..<rows * blocksPerRow {
            let src = blocks + b * type.blockBytes
            let d = src.loadUnaligned(as: UInt16.self)
            let dst = w.codes + b * codeBytes
            w.scales[b] = d
            switch type {
            case .q4_1:
                w.offsets[b] = (src + 2).loadUnaligned(as: UInt16.self)
                dst.update(from: (src + 4).assumingMemoryBound(to: UInt8.self), count: 16)
            case .q4_0:
                w.offsets[b] = try exactHalf(-8 * tsr_f16_to_f32(d), name: name)
                dst.update(from: (src + 2).assumingMemoryBound(to: UInt8.self), count: 16)
            case .q8_0:
                w.offsets[b] = try exactHalf(-128 * tsr_f16_to_f32(d), name: name)
                let c = (src + 2).assumingMemoryBound(to: UInt8.self)
                for j in 0..<32 { dst[j] = c[j] ^ 0x80 }
            }
        }
        return w
    }

    private static func exactHalf(_ v: Float, name: String) throws -> UInt16 {
        let h = tsr_f32_to_f16(v)
        guard tsr_f16_to_f32(h) == v || v.isNaN else {
            throw QuantizationError("a ggml block scale of \(name) is too large to repack: its offset \(v) does not fit fp16")
        }
        return h
    }
}

// MARK: - round-to-nearest quantization

/// How the offset m of a group is chosen.
public enum ZeroPoint: Sendable {
    /// m = group minimum (rounded down to fp16), like ggml's Q4_1.
    case float
    /// An integer zero point z = round(−min/s) in [0, 2^B − 1], m = −z·s; the range is
    /// widened to include 0 (so w = 0 is on the grid up to fp16 rounding of m).
    case integer
}

public enum GroupQuantizer {
    /// Round-to-nearest quantization of fp32 weights [rows, cols] with per-group min/max.
    /// s = (max − min)/(2^B − 1), rounded up to fp16 so the grid covers the group; codes are
    /// computed against the stored fp16 s and m, so |dequantized − w| ≤ s/2 (s the stored
    /// scale) up to fp32 rounding, except where m's fp16 rounding moves the grid (.integer only).
    /// `group` 0 means one group per row.
    public static func rtn(weights: UnsafePointer<Float>, rows: Int, cols: Int, bits: Int, group: Int,
                           zeroPoint: ZeroPoint = .float, name: String = "weights") throws -> PackedWeights {
        let w = try PackedWeights(bits: bits, group: group, rows: rows, cols: cols, name: name)
        let G = w.group, groups = w.groupsPerRow
        let qmax = Float((1 << bits) - 1)
        var q = [UInt8](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for g in 0..<groups {
                let base = weights + r * cols + g * G
                var lo = base[0], hi = base[0]
                for i in 1..<G { lo = min(lo, base[i]); hi = max(hi, base[i]) }
                guard lo.isFinite, hi.isFinite else { throw QuantizationError("\(name) has a non-finite weight in row \(r)") }
                var s16: Float16, m16: Float16
                switch zeroPoint {
                case .float:
                    m16 = roundedDown(lo)
                    s16 = roundedUp((hi - Float(m16)) / qmax)
                case .integer:
                    lo = min(lo, 0); hi = max(hi, 0)
                    s16 = roundedUp((hi - lo) / qmax)
                    let z = s16 == 0 ? 0 : min(max((-lo / Float(s16)).rounded(), 0), qmax)
                    m16 = Float16(-z * Float(s16))
                }
                guard s16.isFinite, m16.isFinite else {
                    throw QuantizationError("\(name) row \(r) group \(g): scale or offset out of fp16 range")
                }
                let s = Float(s16), m = Float(m16)
                w.scales[r * groups + g] = s16.bitPattern
                w.offsets[r * groups + g] = m16.bitPattern
                for i in 0..<G {
                    let v = s == 0 ? 0 : ((base[i] - m) / s).rounded()
                    q[r * cols + g * G + i] = UInt8(min(max(v, 0), qmax))
                }
            }
        }
        tsr_q_pack(q, Int32(bits), Int32(rows), Int32(cols), w.codes)
        return w
    }

    /// The largest fp16 ≤ v.
    static func roundedDown(_ v: Float) -> Float16 {
        var h = Float16(v)
        if Float(h) > v { h = h.nextDown }
        return h
    }

    /// The smallest fp16 ≥ v.
    static func roundedUp(_ v: Float) -> Float16 {
        var h = Float16(v)
        if Float(h) < v { h = h.nextUp }
        return h
    }
}
