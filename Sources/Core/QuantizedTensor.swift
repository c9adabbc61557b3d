/// An error in the shape or parameters of group-quantized weights, as one readable sentence.
public struct QuantizationError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// How activations meet quantized weights at run time (a property of a file or a run, not of
/// the weights). Integer modes are dynamic and symmetric: codes in [−levels, levels] times a
/// scale, either one scale per token (the design's A8/A4, for rotated models) or one per block
/// of 32 activations (ggml's q8_1 style, robust to the outlier channels of unrotated models).
public enum ActivationMode: Sendable, CaseIterable {
    /// fp32 activations.
    case a16
    /// INT8, one scale per block of 32 activations (dx = max|x|/127 over the block, like
    /// ggml's q8_1), integer dot products per block.
    case a8
    /// INT4, one scale per block of 32 (dx = max|x|/7), codes stored as int8.
    case a4
    /// INT8, one scale per token (d = clip·max|x|/127 over the token's row).
    case a8Token
    /// INT4, one scale per token (d = clip·max|x|/7).
    case a4Token

    /// Largest code magnitude (0 for fp32).
    public var levels: Int32 {
        switch self {
        case .a16: return 0
        case .a8, .a8Token: return 127
        case .a4, .a4Token: return 7
        }
    }

    /// The mode with at least 8-bit codes (A4 → A8 at the same granularity): what the embedding
    /// table and head run with, since 4-bit codes on the logits' input cost far more than they
    /// save (QuaRot and llama.cpp both keep the head's activations at 8 bits or more).
    public var atLeast8Bit: ActivationMode {
        switch self {
        case .a4: return .a8
        case .a4Token: return .a8Token
        default: return self
        }
    }

    /// Whether one scale covers the whole token (else one per block of 32).
    public var perToken: Bool { self == .a8Token || self == .a4Token }

    /// The name files use: a16; a8, a4 (per block of 32); a8t, a4t (per token).
    public var name: String {
        switch self {
        case .a16: return "a16"
        case .a8: return "a8"
        case .a4: return "a4"
        case .a8Token: return "a8t"
        case .a4Token: return "a4t"
        }
    }

    public init?(name: String) {
        guard let m = ActivationMode.allCases.first(where: { $0.name == name }) else { return nil }
        self = m
    }

    /// Activation bits: 16 (fp32), 8 or 4.
    public var bits: Int {
        switch self {
        case .a16: return 16
        case .a8, .a8Token: return 8
        case .a4, .a4Token: return 4
        }
    }

    /// The value the `--act` flags take: 16; 8, 4 (per token); 8-block, 4-block (per block of 32).
    public var flag: String {
        switch self {
        case .a16: return "16"
        case .a8Token, .a4Token: return "\(bits)"
        case .a8, .a4: return "\(bits)-block"
        }
    }

    public init?(flag: String) {
        guard let m = ActivationMode.allCases.first(where: { $0.flag == flag }) else { return nil }
        self = m
    }

    /// The mode an `--act` value names, or the one-line error a command prints.
    public static func parse(flag: String) -> Result<ActivationMode, QuantizationError> {
        if let m = ActivationMode(flag: flag) { return .success(m) }
        return .failure(QuantizationError("--act must be one of \(allCases.map(\.flag).joined(separator: ", ")), got \(flag)"))
    }

    /// What `--help` and `inspect` say: "fp32", "A8 per token", "A4 per block of 32".
    public var summary: String {
        switch self {
        case .a16: return "fp32"
        case .a8Token, .a4Token: return "A\(bits) per token"
        case .a8, .a4: return "A\(bits) per block of 32"
        }
    }

    /// The `--act` flags' help text, shared by every command that takes one.
    public static let flagHelp = "16 (fp32), 8 or 4 (integer, one scale per token: for rotated models), 8-block or 4-block (one scale per block of 32 activations)"
}

/// Uniform asymmetric group-quantized weights W [rows, cols] in Tessera's canonical layout, the
/// form files store and every tool exchanges (kernels repack it into their own layout at load):
///
///   w = q·s + m, q an unsigned `bits`-bit code, s and m fp16 per (row, group of `group`
///   consecutive weights of the row).
///   codes: row r is `rowBytes = cols·bits/8` bytes at r·rowBytes, a little-endian bit stream:
///   code k of the row occupies bits k·bits ..< (k+1)·bits, counting from bit 0 of byte 0
///   (so for B = 4 byte j holds codes 2j (low nibble) and 2j+1 (high nibble); for B = 3 and 6
///   code k may straddle two bytes).
///   scales, offsets: fp16 bit patterns [rows, cols / group], row-major.
///
/// cols % 32 == 0 and group % 32 == 0 (group == cols: one group per row).
public struct QuantizedTensor: Sendable, Equatable {
    public static let supportedBits = [2, 3, 4, 6, 8]
    /// Group sizes offered besides the whole row.
    public static let standardGroups = [32, 64, 128]

    public let bits: Int
    /// Weights per group (== cols for row-wide groups).
    public let group: Int
    public let rows: Int
    public let cols: Int
    /// Canonical packed codes, rows × rowBytes.
    public var codes: [UInt8]
    /// fp16 bit patterns, [rows, groupsPerRow].
    public var scales: [UInt16]
    public var offsets: [UInt16]

    public var groupsPerRow: Int { cols / group }
    public var rowBytes: Int { QuantizedTensor.rowBytes(bits: bits, cols: cols) }
    /// Bytes stored: codes plus fp16 scales and offsets.
    public var byteCount: Int { rows * rowBytes + 4 * rows * groupsPerRow }
    /// Stored bits per weight, scales and offsets included (B + 32/G).
    public var bitsPerWeight: Double { Double(byteCount * 8) / Double(rows * cols) }

    public static func rowBytes(bits: Int, cols: Int) -> Int { cols * bits / 8 }

    /// Checks bits and group size for rows of width `cols` and returns the group size in
    /// weights (`group` 0 or `cols` means one group per row).
    @discardableResult
    public static func validate(bits: Int, group: Int, cols: Int, name: String = "weights") throws -> Int {
        guard supportedBits.contains(bits) else {
            throw QuantizationError("unsupported bit width \(bits) for \(name); use 2, 3, 4, 6 or 8")
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

    /// From stored parts; checks every size.
    public init(bits: Int, group: Int, rows: Int, cols: Int, codes: [UInt8], scales: [UInt16], offsets: [UInt16],
                name: String = "weights") throws {
        let g = try QuantizedTensor.validate(bits: bits, group: group, cols: cols, name: name)
        guard rows >= 0 else { throw QuantizationError("\(name) has \(rows) rows") }
        let groups = rows * (cols / g)
        guard codes.count == rows * QuantizedTensor.rowBytes(bits: bits, cols: cols), scales.count == groups, offsets.count == groups else {
            throw QuantizationError("\(name): \(codes.count) code bytes, \(scales.count) scales and \(offsets.count) offsets do not fit [\(rows), \(cols)] at \(bits) bits, group \(g)")
        }
        self.bits = bits
        self.group = g
        self.rows = rows
        self.cols = cols
        self.codes = codes
        self.scales = scales
        self.offsets = offsets
    }

    /// From one code per weight ([rows, cols], each < 2^bits), packed into the canonical layout.
    public init(bits: Int, group: Int, rows: Int, cols: Int, unpacked q: [UInt8], scales: [UInt16], offsets: [UInt16],
                name: String = "weights") throws {
        precondition(q.count == rows * cols, "\(q.count) codes for [\(rows), \(cols)]")
        try self.init(bits: bits, group: group, rows: rows, cols: cols,
                      codes: QuantizedTensor.pack(q, bits: bits), scales: scales, offsets: offsets, name: name)
    }

    /// Packs codes (one per byte) into the canonical bit stream; the count must be a multiple of 8.
    public static func pack(_ q: [UInt8], bits: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: q.count * bits / 8)
        if bits == 8 { return q }
        var bit = 0
        for v in q {
            out[bit >> 3] |= UInt8(truncatingIfNeeded: Int(v) << (bit & 7))
            let spill = (bit & 7) + bits - 8
            if spill > 0 { out[(bit >> 3) + 1] |= UInt8(truncatingIfNeeded: Int(v) >> (bits - spill)) }
            bit += bits
        }
        return out
    }

    /// Code k of row r.
    @inline(__always)
    public func code(row r: Int, _ k: Int) -> UInt8 {
        if bits == 8 { return codes[r * rowBytes + k] }
        let bit = r * rowBytes * 8 + k * bits, byte = bit >> 3, shift = bit & 7
        var v = Int(codes[byte]) >> shift
        if shift + bits > 8 { v |= Int(codes[byte + 1]) << (8 - shift) }
        return UInt8(v & ((1 << bits) - 1))
    }

    /// One code per weight, [rows, cols].
    public func unpackedCodes() -> [UInt8] {
        var q = [UInt8](repeating: 0, count: rows * cols)
        for r in 0..<rows { for k in 0..<cols { q[r * cols + k] = code(row: r, k) } }
        return q
    }

    public func scale(row: Int, group g: Int) -> Float { Float(Float16(bitPattern: scales[row * groupsPerRow + g])) }
    public func offset(row: Int, group g: Int) -> Float { Float(Float16(bitPattern: offsets[row * groupsPerRow + g])) }

    /// fp32 weights [rows, cols]: q·s + m as one fused multiply-add (one rounding), as the
    /// SIMD kernels dequantize.
    public func dequantize() -> FloatBuffer {
        let out = FloatBuffer(count: rows * cols)
        for r in 0..<rows {
            for g in 0..<groupsPerRow {
                let s = scale(row: r, group: g), m = offset(row: r, group: g)
                for k in g * group..<(g + 1) * group { out[r * cols + k] = m.addingProduct(Float(code(row: r, k)), s) }
            }
        }
        return out
    }
}

/// The ggml block types that convert losslessly to Tessera's group-32 weights (numeric values
/// are ggml's type ids).
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

/// How the offset m of a round-to-nearest group is chosen (`tessera quantize --zero-point`).
public enum ZeroPoint: Sendable {
    /// m = group minimum (rounded down to fp16), like ggml's Q4_1.
    case float
    /// An integer zero point z = round(−min/s) in [0, 2^B − 1], m = −z·s; the range is
    /// widened to include 0 (so w = 0 is on the grid up to fp16 rounding of m).
    case integer

    /// The label files carry in `tessera.zero_point`.
    public var label: String { self == .float ? "float" : "integer" }
}

extension QuantizedTensor {
    /// The zero point these weights are on, read from the stored values: `.integer` when every
    /// group's offset is −z·s for an integer z in [0, 2^B − 1], up to the fp16 rounding of
    /// the product (m = fp16(−z·s), s the stored fp16 scale: what RTN `--zero-point int` and a
    /// calibration store); otherwise `.float` (free offsets: RTN `--zero-point float`, and
    /// offsets trained by `tune` or averaged). A group with s = 0 is integer when m = 0.
    public var zeroPoint: ZeroPoint {
        let qmax = Float((1 << bits) - 1)
        for k in 0..<scales.count {
            let s = Float(Float16(bitPattern: scales[k])), m16 = Float16(bitPattern: offsets[k])
            guard s.isFinite, m16.isFinite else { return .float }
            if s == 0 {
                if m16 != 0 { return .float }
                continue
            }
            // fp16 keeps 11 significant bits, so −m/s is within z·2⁻¹¹ ≤ 0.125 of z: rounding recovers it.
            let z = (-Float(m16) / s).rounded()
            guard z >= 0, z <= qmax, Float16(-z * s) == m16 else { return .float }
        }
        return .integer
    }
}
