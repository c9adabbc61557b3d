import XCTest
import KernelsC
@testable import Kernels
@testable import Engine

/// Group-quantized weights: layout, every SIMD kernel against its scalar reference and a
/// float64 computation from the dequantized weights, on random non-zero data with ragged sizes.
/// Each comparison first asserts which path the dispatcher runs (tsr_kernel_path): the one this
/// CPU should run (AVX2 on x86-64 with AVX2 + FMA), never the reference itself; a CPU without a
/// SIMD path skips it locally and fails it in CI.
final class QuantKernelTests: XCTestCase {
    static let bitsList = [2, 3, 4, 6, 8]
    /// (cols, group): one group, several groups of each size, row-wide groups (group 0).
    static let shapes = [(32, 32), (96, 32), (192, 64), (256, 128), (384, 128), (96, 0), (576, 64), (576, 0),
                         (1536, 32), (1024, 64), (8256, 64)]
    /// Fewer rows than one 8-row panel, whole panels, and panels with a tail.
    static let rowCounts = [1, 3, 8, 17, 33]
    let u = 1.2e-7 // fp32 unit roundoff, rounded up

    struct Case {
        let w: PackedWeights
        let q: [UInt8]
        let deq: [Float]  // q·s + m in fp32, computed here
    }

    func randomCase(bits: Int, group: Int, rows: Int, cols: Int, _ rng: inout SplitMix64) throws -> Case {
        let w = try PackedWeights(bits: bits, group: group, rows: rows, cols: cols)
        let qmax = (1 << bits) - 1
        var q = [UInt8](repeating: 0, count: rows * cols)
        for i in q.indices { q[i] = UInt8(rng.next() % UInt64(qmax + 1)) }
        tsr_q_pack(q, Int32(bits), Int32(rows), Int32(cols), w.codes)
        for i in 0..<rows * w.groupsPerRow {
            let s = Float16(rng.uniform(0.5, 2) / Float(qmax))
            w.scales[i] = s.bitPattern
            w.offsets[i] = Float16(-Float(s) * Float(qmax) * rng.uniform(0.2, 0.8)).bitPattern
        }
        var deq = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for k in 0..<cols {
                let g = k / w.group
                deq[r * cols + k] = Float(q[r * cols + k]) * w.scale(row: r, group: g) + w.offset(row: r, group: g)
            }
        }
        return Case(w: w, q: q, deq: deq)
    }

    func randomFloats(_ n: Int, _ rng: inout SplitMix64) -> FloatBuffer {
        let b = FloatBuffer(count: n)
        for i in 0..<n { b[i] = rng.uniform(-1, 1) }
        return b
    }

    /// Activations whose 32-blocks differ in magnitude by up to 10^3 (so per-block scales
    /// matter), with an all-zero block every fifth block and one outlier.
    func blockyFloats(_ n: Int, _ rng: inout SplitMix64) -> FloatBuffer {
        let b = FloatBuffer(count: n)
        for block in 0..<n / 32 {
            let scale = block % 5 == 3 ? 0 : Float(pow(10, Double(rng.uniform(-2, 1))))
            for i in 32 * block..<32 * block + 32 { b[i] = rng.uniform(-1, 1) * scale }
        }
        if n / 3 / 32 % 5 != 3 { b[n / 3] = 25 }
        return b
    }

    func forEachCase(seed: UInt64, _ body: (Case, Int, Int, Int, Int, inout SplitMix64) throws -> Void) throws {
        var rng = SplitMix64(seed: seed)
        for bits in Self.bitsList {
            for (cols, group) in Self.shapes {
                for rows in Self.rowCounts {
                    let c = try randomCase(bits: bits, group: group, rows: rows, cols: cols, &rng)
                    try body(c, bits, c.w.group, rows, cols, &rng)
                }
            }
        }
    }

    // MARK: layout

    /// The byte layout written in KernelsQuant.h, rebuilt here from the formulas.
    func testPackingFollowsTheDocumentedLayout() throws {
        var rng = SplitMix64(seed: 1)
        for bits in Self.bitsList {
            let cols = 96, qmax = UInt64((1 << bits) - 1)
            let q = (0..<cols).map { _ in UInt8(rng.next() % (qmax + 1)) }
            var packed = [UInt8](repeating: 0xAA, count: Int(tsr_q_row_bytes(Int32(bits), Int32(cols))))
            tsr_q_pack(q, Int32(bits), 1, Int32(cols), &packed)
            var expected: [UInt8] = []
            for b in 0..<cols / 32 {
                let v = Array(q[b * 32..<b * 32 + 32])
                switch bits {
                case 8: expected += v
                case 4:
                    for j in 0..<16 { expected.append(v[j] | (v[j + 16] << 4)) }
                case 2:
                    for j in 0..<8 {
                        let a: UInt8 = v[j] | (v[j + 8] << 2)
                        let b: UInt8 = (v[j + 16] << 4) | (v[j + 24] << 6)
                        expected.append(a | b)
                    }
                case 6: // the B = 4 block of q & 15, then the B = 2 block of q >> 4
                    for j in 0..<16 { expected.append((v[j] & 15) | ((v[j + 16] & 15) << 4)) }
                    for j in 0..<8 {
                        var byte: UInt8 = 0
                        for i in 0..<4 { byte |= (v[j + 8 * i] >> 4) << UInt8(2 * i) }
                        expected.append(byte)
                    }
                default:
                    for j in 0..<8 {
                        var byte: UInt8 = 0
                        for i in 0..<4 { byte |= (v[j + 8 * i] & 3) << UInt8(2 * i) }
                        expected.append(byte)
                    }
                    var plane: UInt32 = 0
                    for j in 0..<32 { plane |= UInt32((v[j] >> 2) & 1) << j }
                    expected += (0..<4).map { UInt8(truncatingIfNeeded: plane >> (8 * $0)) }
                }
            }
            XCTAssertEqual(packed, expected, "bits \(bits)")
            var back = [UInt8](repeating: 0, count: cols)
            tsr_q_unpack_row(packed, Int32(bits), 1, Int32(cols), 0, &back)
            XCTAssertEqual(back, q)
        }
    }

    /// The row panels of KernelsQuant.h, rebuilt here from the formulas: block b of row r of a
    /// full panel at panelStart·rowBytes + (b·R + i)·blockBytes (B = 3: the low-bit bytes at
    /// panelStart·rowBytes + b·96 + 8i, bit 2 of q[8s + j] at bit (s & 1) + 4·(s / 2) + (2 if
    /// i < 4) of byte 64 + 8·(i % 4) + j of the block's run; B = 6: byte run + 16i + j =
    /// q[j] | (q[16 + j] & 3) << 6, q[16 + j] >> 2 of row 2k + L (+ 4) in bits 0-3 (4-7) of byte
    /// 128 + 32k + 16L + j of the 192-byte run), tail rows plain; the scales and offsets of a
    /// panel's rows side by side per group.
    func testRowPanelsFollowTheDocumentedLayout() throws {
        var rng = SplitMix64(seed: 14)
        for bits in Self.bitsList {
            for rows in [1, 7, 8, 19, 24] {
                let cols = 96, groups = 3, R = Int(tsr_q_panel_rows(Int32(bits)))
                XCTAssertEqual(R, 8) // every width, B = 6 included
                let qmax = UInt64((1 << bits) - 1)
                let q = (0..<rows * cols).map { _ in UInt8(rng.next() % (qmax + 1)) }
                let bb = Int(tsr_q_block_bytes(Int32(bits))), rowBytes = cols / 32 * bb
                var packed = [UInt8](repeating: 0, count: rows * rowBytes)
                tsr_q_pack(q, Int32(bits), Int32(rows), Int32(cols), &packed)
                let full = R > 1 ? rows - rows % R : 0
                for r in 0..<rows {
                    // The row alone, packed as a one-row matrix (the documented block format).
                    var one = [UInt8](repeating: 0, count: rowBytes)
                    tsr_q_pack(Array(q[r * cols..<(r + 1) * cols]), Int32(bits), 1, Int32(cols), &one)
                    for b in 0..<cols / 32 {
                        if bits == 3 && r < full {
                            let run = (r - r % R) * rowBytes + b * R * bb, i = r % R
                            XCTAssertEqual(Array(packed[run + 8 * i..<run + 8 * i + 8]), Array(one[b * bb..<b * bb + 8]),
                                           "B3 low bits rows \(rows) r\(r) b\(b)")
                            for j in 0..<8 {
                                for s in 0..<4 {
                                    let bit = (packed[run + 64 + 8 * (i % 4) + j] >> UInt8((s & 1) + 4 * (s / 2) + (i < 4 ? 2 : 0))) & 1
                                    XCTAssertEqual(bit, (q[r * cols + 32 * b + 8 * s + j] >> 2) & 1, "B3 high plane rows \(rows) r\(r) b\(b) j\(j) s\(s)")
                                }
                            }
                            continue
                        }
                        if bits == 6 && r < full {
                            let run = (r - r % R) * rowBytes + b * R * bb, i = r % R
                            XCTAssertEqual(bb, 24)
                            let v = Array(q[r * cols + 32 * b..<r * cols + 32 * b + 32])
                            // Row i = 2k + L + 4·upper of the panel: high half k, 128-bit lane L.
                            let upper = i / 4, k = (i % 4) / 2, L = i % 2
                            XCTAssertEqual(2 * k + L + 4 * upper, i)
                            for j in 0..<16 {
                                XCTAssertEqual(packed[run + 16 * i + j], v[j] | ((v[j + 16] & 3) << 6), "B6 row bytes rows \(rows) r\(r) b\(b) j\(j)")
                                let byte = packed[run + 128 + 32 * k + 16 * L + j], base = UInt8(4 * upper)
                                XCTAssertEqual((byte >> base) & 15, v[j + 16] >> 2, "B6 high bytes rows \(rows) r\(r) b\(b) q[\(j + 16)]")
                            }
                            continue
                        }
                        let at = r < full ? (r - r % R) * rowBytes + (b * R + r % R) * bb : r * rowBytes + b * bb
                        XCTAssertEqual(Array(packed[at..<at + bb]), Array(one[b * bb..<(b + 1) * bb]), "B\(bits) rows \(rows) r\(r) b\(b)")
                    }
                    var back = [UInt8](repeating: 0, count: cols)
                    tsr_q_unpack_row(packed, Int32(bits), Int32(rows), Int32(cols), Int32(r), &back)
                    XCTAssertEqual(back, Array(q[r * cols..<(r + 1) * cols]))
                    for g in 0..<groups {
                        let at = r < full ? (r - r % R) * groups + g * R + r % R : r * groups + g
                        XCTAssertEqual(Int(tsr_q_group_index(Int32(bits), Int32(rows), Int32(groups), Int32(r), Int32(g))), at)
                    }
                }
                // pack_groups puts row-major values there, unpack_groups brings them back.
                let values = (0..<rows * groups).map { UInt16($0) }
                var panel = [UInt16](repeating: 0, count: values.count), back = panel
                tsr_q_pack_groups(values, Int32(bits), Int32(rows), Int32(groups), &panel)
                tsr_q_unpack_groups(panel, Int32(bits), Int32(rows), Int32(groups), &back)
                XCTAssertEqual(back, values)
                for r in 0..<rows {
                    for g in 0..<groups {
                        XCTAssertEqual(panel[Int(tsr_q_group_index(Int32(bits), Int32(rows), Int32(groups), Int32(r), Int32(g)))], values[r * groups + g])
                    }
                }
            }
        }
    }

    func testDequantizeIsExactlyQTimesSPlusM() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT)
        try forEachCase(seed: 2) { c, bits, group, rows, cols, _ in
            let simd = c.w.dequantize()
            let ref = FloatBuffer(count: rows * cols)
            c.w.withView { tsr_q_dequantize_ref($0, ref.pointer, 0, Int32(rows)) }
            for i in 0..<rows * cols {
                XCTAssertEqual(simd[i].bitPattern, c.deq[i].bitPattern, "B\(bits) G\(group) \(rows)×\(cols) at \(i)")
                XCTAssertEqual(ref[i].bitPattern, c.deq[i].bitPattern)
            }
            // One row at a time, as an embedding lookup reads it.
            let row = FloatBuffer(count: cols)
            c.w.dequantizeRow(rows - 1, into: row.pointer)
            XCTAssertEqual(row.array, Array(c.deq[(rows - 1) * cols..<rows * cols]))
            // A sub-range writes rows [1, rows) from the start of dst.
            if rows > 1 {
                let part = FloatBuffer(count: (rows - 1) * cols)
                c.w.withView { tsr_q_dequantize($0, part.pointer, 1, Int32(rows)) }
                for i in 0..<(rows - 1) * cols { XCTAssertEqual(part[i], c.deq[cols + i]) }
            }
        }
    }

    // MARK: A16

    /// Bound for the fp32 result of the offset-folded product: the group dots Σq·x, the
    /// activation group sums and the sums over groups each add n·u relative error.
    func a16Bound(_ c: Case, row r: Int, _ x: FloatBuffer) -> Double {
        var mass = 0.0
        for k in 0..<c.w.cols {
            let g = k / c.w.group
            mass += abs(Double(c.q[r * c.w.cols + k]) * Double(c.w.scale(row: r, group: g)) * Double(x[k]))
            mass += abs(Double(c.w.offset(row: r, group: g)) * Double(x[k]))
        }
        return 2 * Double(c.w.cols + c.w.groupsPerRow + 8) * u * mass + 1e-30
    }

    func exactDot(_ c: Case, row r: Int, _ x: UnsafePointer<Float>) -> Double {
        var s = 0.0
        for k in 0..<c.w.cols { s += Double(c.deq[r * c.w.cols + k]) * Double(x[k]) }
        return s
    }

    func testA16GemvMatchesReferenceAndFloat64() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT)
        var differs = false
        try forEachCase(seed: 3) { c, bits, group, rows, cols, rng in
            let x = randomFloats(cols, &rng)
            let sums = FloatBuffer(count: cols / group)
            tsr_group_sums_f32(x.pointer, Int32(cols), Int32(group), sums.pointer)
            let fast = FloatBuffer(count: rows), ref = FloatBuffer(count: rows)
            c.w.withView { w in
                tsr_qgemv_f32(w, x.pointer, sums.pointer, fast.pointer, 0, Int32(rows))
                tsr_qgemv_f32_ref(w, x.pointer, sums.pointer, ref.pointer, 0, Int32(rows))
            }
            for r in 0..<rows {
                let exact = exactDot(c, row: r, x.pointer), bound = a16Bound(c, row: r, x)
                let label = "B\(bits) G\(group) \(rows)×\(cols) row \(r)"
                XCTAssertLessThanOrEqual(abs(Double(fast[r]) - exact), bound, "simd " + label)
                XCTAssertLessThanOrEqual(abs(Double(ref[r]) - exact), bound, "ref " + label)
                if fast[r].bitPattern != ref[r].bitPattern { differs = true }
            }
        }
        // The SIMD path folds the offsets (the reference does not): somewhere other bits.
        XCTAssertTrue(differs, "tsr_qgemv_f32 gave the reference's bits on every row: did the SIMD path run?")
    }

    // MARK: A8 / A4

    struct Activations {
        var xq: [Int8]
        var dx: [Float]     // per block of 32
        var bsums: [Int32]  // per block of 32
        var xsums: [Float]  // per group
    }

    func quantized(_ x: UnsafePointer<Float>, count n: Int, group: Int, levels: Int32, reference: Bool = false) -> Activations {
        var a = Activations(xq: [Int8](repeating: 0x55, count: n), dx: [Float](repeating: .nan, count: n / 32),
                            bsums: [Int32](repeating: 0x55, count: n / 32), xsums: [Float](repeating: .nan, count: n / group))
        (reference ? tsr_quantize_act_ref : tsr_quantize_act)(x, Int32(n), Int32(group), levels, &a.xq, &a.dx, &a.bsums, &a.xsums)
        return a
    }

    func tokenQuantized(_ x: UnsafePointer<Float>, count n: Int, group: Int, levels: Int32, clip: Float, reference: Bool = false) -> Activations {
        var a = Activations(xq: [Int8](repeating: 0x55, count: n), dx: [Float](repeating: .nan, count: n / 32),
                            bsums: [Int32](repeating: 0x55, count: n / 32), xsums: [Float](repeating: .nan, count: n / group))
        (reference ? tsr_quantize_act_token_ref : tsr_quantize_act_token)(x, Int32(n), Int32(group), levels, clip, &a.xq, &a.dx, &a.bsums, &a.xsums)
        return a
    }

    /// Per-token activations: one scale clip·max|x|/levels in every block's dx, codes rounded to
    /// nearest (float64 check) and clamped past the clip, the SIMD path giving the reference's
    /// bytes; the group sums are Σ dx·bsums in block order.
    func testPerTokenQuantizerMatchesFloat64AndReference() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT)
        var rng = SplitMix64(seed: 44)
        for levels: Int32 in [127, 7] {
            for clip: Float in [1, 0.9, 0.55] {
                for (n, group) in [(32, 32), (96, 32), (576, 64), (384, 128), (1536, 64), (3072, 128)] {
                    let x = blockyFloats(n, &rng)
                    let a = tokenQuantized(x.pointer, count: n, group: group, levels: levels, clip: clip)
                    let r = tokenQuantized(x.pointer, count: n, group: group, levels: levels, clip: clip, reference: true)
                    let label = "levels \(levels) clip \(clip) n \(n) G\(group)"
                    XCTAssertEqual(a.xq, r.xq, label)
                    XCTAssertEqual(a.dx.map(\.bitPattern), r.dx.map(\.bitPattern), label)
                    XCTAssertEqual(a.bsums, r.bsums, label)
                    XCTAssertEqual(a.xsums.map(\.bitPattern), r.xsums.map(\.bitPattern), label)
                    var amax: Float = 0
                    for i in 0..<n { amax = max(amax, abs(x[i])) }
                    let d = clip * amax / Float(levels)
                    XCTAssertEqual(a.dx, [Float](repeating: d, count: n / 32), label)
                    var clamped = 0
                    for i in 0..<n {
                        let exact = Double(x[i]) / Double(d), q = Int(a.xq[i])
                        if abs(exact) > Double(levels) + 0.5 {
                            XCTAssertEqual(q, exact > 0 ? Int(levels) : -Int(levels), "\(label) i \(i)")
                            clamped += 1
                        } else {
                            XCTAssertLessThanOrEqual(abs(Double(q) - exact), 0.5001, "\(label) i \(i)")
                        }
                    }
                    if clip == 1 { XCTAssertEqual(clamped, 0, label) }
                    for b in 0..<n / 32 {
                        XCTAssertEqual(a.bsums[b], (32 * b..<32 * b + 32).reduce(0) { $0 + Int32(a.xq[$1]) }, label)
                    }
                    for g in 0..<n / group {
                        var s: Float = 0
                        for b in g * group / 32..<(g + 1) * group / 32 { s += a.dx[b] * Float(a.bsums[b]) }
                        XCTAssertEqual(a.xsums[g].bitPattern, s.bitPattern, label)
                    }
                }
            }
        }
        // An all-zero token quantizes to zeros with dx = 0.
        let zeros = [Float](repeating: 0, count: 64)
        let z = zeros.withUnsafeBufferPointer { tokenQuantized($0.baseAddress!, count: 64, group: 64, levels: 7, clip: 0.9) }
        XCTAssertEqual(z.xq, [Int8](repeating: 0, count: 64))
        XCTAssertEqual(z.dx, [0, 0])
        XCTAssertEqual(z.xsums, [0])
    }

    func quantized(_ x: FloatBuffer, group: Int, levels: Int32) -> Activations {
        quantized(x.pointer, count: x.count, group: group, levels: levels)
    }

    func testActivationQuantizerSIMDAndReferenceAgreeExactly() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT)
        var rng = SplitMix64(seed: 4)
        for levels: Int32 in [127, 7] {
            for (n, group) in [(32, 32), (96, 32), (576, 64), (384, 128), (1536, 1536), (1536, 32)] {
                let x = blockyFloats(n, &rng)
                let a = quantized(x.pointer, count: n, group: group, levels: levels)
                let r = quantized(x.pointer, count: n, group: group, levels: levels, reference: true)
                let label = "levels \(levels) n \(n) G\(group)"
                XCTAssertEqual(a.xq, r.xq, label)
                XCTAssertEqual(a.dx.map(\.bitPattern), r.dx.map(\.bitPattern), label)
                XCTAssertEqual(a.bsums, r.bsums, label)
                XCTAssertEqual(a.xsums.map(\.bitPattern), r.xsums.map(\.bitPattern), label)
                for b in 0..<n / 32 {
                    let block = (32 * b..<32 * b + 32)
                    let amax = block.map { abs(x[$0]) }.max()!
                    XCTAssertEqual(a.dx[b], amax / Float(levels), label)  // exact: the same fp32 division
                    XCTAssertEqual(a.bsums[b], block.reduce(0) { $0 + Int32(a.xq[$1]) }, label)
                    for i in block {
                        XCTAssertLessThanOrEqual(abs(Int(a.xq[i])), Int(levels))
                        XCTAssertLessThanOrEqual(abs(Double(a.xq[i]) * Double(a.dx[b]) - Double(x[i])), Double(a.dx[b]) * 0.5001, label)
                    }
                    if amax == 0 { XCTAssertEqual(Array(a.xq[block]), [Int8](repeating: 0, count: 32), label) }
                    // The block's largest value lands on ±levels.
                    if amax > 0 { XCTAssertEqual(block.map { abs(Int(a.xq[$0])) }.max(), Int(levels), label) }
                }
                for g in 0..<n / group {
                    var s: Float = 0
                    for b in g * group / 32..<(g + 1) * group / 32 { s += a.dx[b] * Float(a.bsums[b]) }
                    XCTAssertEqual(a.xsums[g].bitPattern, s.bitPattern, label)
                }
            }
        }
        // An all-zero row quantizes to zeros with dx = 0.
        let zeros = [Float](repeating: 0, count: 64)
        let z = zeros.withUnsafeBufferPointer { quantized($0.baseAddress!, count: 64, group: 32, levels: 127) }
        XCTAssertEqual(z.xq, [Int8](repeating: 0, count: 64))
        XCTAssertEqual(z.dx, [0, 0])
        XCTAssertEqual(z.bsums, [0, 0])
        XCTAssertEqual(z.xsums, [0, 0])
    }

    func testIntegerBlockSumsAreExact() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        try forEachCase(seed: 5) { c, bits, group, rows, cols, rng in
            let x = blockyFloats(cols, &rng)
            for levels: Int32 in [127, 7] {
                let a = quantized(x, group: group, levels: levels)
                let blocks = cols / 32
                var fast = [Int32](repeating: 0, count: rows * blocks), ref = fast
                c.w.withView { w in
                    tsr_qdot_i8(w, a.xq, a.bsums, &fast, 0, Int32(rows))
                    tsr_qdot_i8_ref(w, a.xq, a.bsums, &ref, 0, Int32(rows))
                }
                var exact = [Int32](repeating: 0, count: rows * blocks)
                for r in 0..<rows {
                    for k in 0..<cols { exact[r * blocks + k / 32] += Int32(c.q[r * cols + k]) * Int32(a.xq[k]) }
                }
                XCTAssertEqual(fast, exact, "simd B\(bits) G\(group) \(rows)×\(cols) L\(levels)")
                XCTAssertEqual(ref, exact, "ref B\(bits) G\(group) \(rows)×\(cols) L\(levels)")
                // A sub-range writes rows [1, rows) from the start of out.
                if rows > 1 {
                    var part = [Int32](repeating: 0, count: (rows - 1) * blocks)
                    c.w.withView { tsr_qdot_i8($0, a.xq, a.bsums, &part, 1, Int32(rows)) }
                    XCTAssertEqual(part, Array(exact[blocks...]))
                }
            }
        }
    }

    /// The largest integer block dots: every code at 2^B − 1 against xq = ±127 (one sign per
    /// block). The SIMD kernels' int16 pair sums peak here (B = 6: 2·63·127 = 16002; B = 8 under
    /// the sign trick: 2·128·127); the block sums must still be exact.
    func testExtremeCodesAndActivationsGiveExactBlockSums() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        var rng = SplitMix64(seed: 15)
        for bits in Self.bitsList {
            for rows in [1, 8, 9] {
                let cols = 128, qmax = (1 << bits) - 1
                let w = try PackedWeights(bits: bits, group: 32, rows: rows, cols: cols)
                tsr_q_pack([UInt8](repeating: UInt8(qmax), count: rows * cols), Int32(bits), Int32(rows), Int32(cols), w.codes)
                for i in 0..<rows * w.groupsPerRow { w.scales[i] = Float16(1).bitPattern; w.offsets[i] = 0 }
                let x = FloatBuffer(count: cols)
                for k in 0..<cols { x[k] = (k / 32) % 2 == 0 ? rng.uniform(0.9, 1) : -rng.uniform(0.9, 1) }
                for k in stride(from: 0, to: cols, by: 32) { x[k] = k / 32 % 2 == 0 ? 1 : -1 }
                let a = quantized(x, group: 32, levels: 127)
                let blocks = cols / 32
                var fast = [Int32](repeating: 0, count: rows * blocks)
                w.withView { tsr_qdot_i8($0, a.xq, a.bsums, &fast, 0, Int32(rows)) }
                for r in 0..<rows {
                    for b in 0..<blocks {
                        let exact = (32 * b..<32 * b + 32).reduce(Int32(0)) { $0 + Int32(qmax) * Int32(a.xq[$1]) }
                        XCTAssertEqual(fast[r * blocks + b], exact, "B\(bits) rows \(rows) r\(r) b\(b)")
                    }
                }
                XCTAssertEqual(Int(a.xq[0]), 127)
                XCTAssertEqual(Int(a.xq[32]), -127)
            }
        }
    }

    /// The float64 value of the quantized-activation formula (per 32-block scales) and an fp32
    /// error bound for it: every fp32 product or sum on the way adds at most u relative to the
    /// magnitudes involved, and a path has at most blocks + groups + 16 of them.
    func i8Exact(_ c: Case, row r: Int, _ xq: UnsafePointer<Int8>, _ dx: UnsafePointer<Float>) -> (Double, Double) {
        let cols = c.w.cols, group = c.w.group
        var y = 0.0, mass = 0.0
        for g in 0..<c.w.groupsPerRow {
            let s = Double(c.w.scale(row: r, group: g)), m = Double(c.w.offset(row: r, group: g))
            for b in g * group / 32..<(g + 1) * group / 32 {
                var dot = 0, xs = 0, absDot = 0, absXs = 0
                for k in 32 * b..<32 * b + 32 {
                    let q = Int(c.q[r * cols + k]), v = Int(xq[k])
                    dot += q * v; xs += v
                    absDot += (q + 128) * abs(v); absXs += abs(v)
                }
                let d = Double(dx[b])
                y += d * (s * Double(dot) + m * Double(xs))
                mass += d * (abs(s) * Double(absDot + 128 * absXs) + abs(m) * Double(absXs))
            }
        }
        return (y, 2 * Double(cols / 32 + c.w.groupsPerRow + 16) * u * mass + 1e-30)
    }

    func testA8A4GemvMatchesReferenceAndFloat64() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        var differs = false
        try forEachCase(seed: 6) { c, bits, group, rows, cols, rng in
            let x = blockyFloats(cols, &rng)
            for levels: Int32 in [127, 7] {
                let a = quantized(x, group: group, levels: levels)
                let fast = FloatBuffer(count: rows), ref = FloatBuffer(count: rows)
                c.w.withView { w in
                    tsr_qgemv_i8(w, a.xq, a.dx, a.xsums, fast.pointer, 0, Int32(rows))
                    tsr_qgemv_i8_ref(w, a.xq, a.dx, a.xsums, ref.pointer, 0, Int32(rows))
                }
                // Rows [1, rows): a panel cut by the range runs row by row; nothing else is written.
                if rows > 1 {
                    let part = FloatBuffer(count: rows)
                    for i in 0..<rows { part[i] = 777 }
                    c.w.withView { tsr_qgemv_i8($0, a.xq, a.dx, a.xsums, part.pointer, 1, Int32(rows)) }
                    XCTAssertEqual(part[0], 777, "B\(bits) G\(group) \(rows)×\(cols): row 0 written")
                    for r in 1..<rows {
                        let (exact, bound) = a.xq.withUnsafeBufferPointer { xq in
                            a.dx.withUnsafeBufferPointer { i8Exact(c, row: r, xq.baseAddress!, $0.baseAddress!) }
                        }
                        XCTAssertLessThanOrEqual(abs(Double(part[r]) - exact), bound, "simd rows 1..<\(rows) B\(bits) G\(group) ×\(cols) row \(r)")
                    }
                }
                for r in 0..<rows {
                    let (exact, bound) = a.xq.withUnsafeBufferPointer { xq in
                        a.dx.withUnsafeBufferPointer { i8Exact(c, row: r, xq.baseAddress!, $0.baseAddress!) }
                    }
                    let label = "B\(bits) G\(group) \(rows)×\(cols) L\(levels) row \(r)"
                    XCTAssertLessThanOrEqual(abs(Double(fast[r]) - exact), bound, "simd " + label)
                    XCTAssertLessThanOrEqual(abs(Double(ref[r]) - exact), bound, "ref " + label)
                    if fast[r].bitPattern != ref[r].bitPattern { differs = true }
                    // And the quantized activations approximate the fp32 product:
                    // |Σ w·e| ≤ Σ_k |w_k|·dx_{k/32}/2.
                    var wMass = 0.0
                    for k in 0..<cols { wMass += abs(Double(c.deq[r * cols + k])) * Double(a.dx[k / 32]) }
                    XCTAssertLessThanOrEqual(abs(Double(fast[r]) - exactDot(c, row: r, x.pointer)), wMass * 0.5001 + bound, label)
                }
            }
        }
        // The SIMD path regroups the fp32 sums (the reference follows the formula literally).
        XCTAssertTrue(differs, "tsr_qgemv_i8 gave the reference's bits on every row: did the SIMD path run?")
    }

    // MARK: GEMM

    func testGemmMatchesFloat64ForRaggedTokenCountsAndRowRanges() throws {
        try requireSIMDPath(TSR_KERNEL_QUANT)
        try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        var rng = SplitMix64(seed: 7)
        for bits in Self.bitsList {
            for (cols, group) in [(96, 32), (192, 64), (256, 0), (1024, 32), (512, 128)] {
                for rows in [3, 17, 24, 33] {
                    let c = try randomCase(bits: bits, group: group, rows: rows, cols: cols, &rng)
                    let G = c.w.group, groups = cols / G
                    // Full token tiles of the panel GEMM and every remainder.
                    for T in [1, 2, 3, 4, 5, 7, 9, 13, 17] {
                        let X = blockyFloats(T * cols, &rng)
                        let fs = FloatBuffer(count: T * groups)
                        var xq: [Int8] = [], dx: [Float] = [], xsums: [Float] = []
                        for t in 0..<T {
                            tsr_group_sums_f32(X.pointer + t * cols, Int32(cols), Int32(G), fs.pointer + t * groups)
                            let a = quantized(X.pointer + t * cols, count: cols, group: G, levels: t % 2 == 0 ? 127 : 7)
                            xq += a.xq; dx += a.dx; xsums += a.xsums
                        }
                        // Rows [1, rows − 1) only; the sentinel must survive elsewhere.
                        let lo = 1, hi = rows - 1
                        let outputs = (0..<4).map { _ -> FloatBuffer in
                            let b = FloatBuffer(count: T * rows)
                            for i in 0..<T * rows { b[i] = 777 }
                            return b
                        }
                        c.w.withView { w in
                            tsr_qgemm_f32(w, Int32(T), X.pointer, fs.pointer, outputs[0].pointer, Int32(rows), Int32(lo), Int32(hi))
                            tsr_qgemm_f32_ref(w, Int32(T), X.pointer, fs.pointer, outputs[1].pointer, Int32(rows), Int32(lo), Int32(hi))
                            tsr_qgemm_i8(w, Int32(T), xq, dx, xsums, outputs[2].pointer, Int32(rows), Int32(lo), Int32(hi))
                            tsr_qgemm_i8_ref(w, Int32(T), xq, dx, xsums, outputs[3].pointer, Int32(rows), Int32(lo), Int32(hi))
                        }
                        for t in 0..<T {
                            for r in 0..<rows {
                                let label = "B\(bits) G\(G) \(rows)×\(cols) T\(T) t\(t) r\(r)"
                                if r < lo || r >= hi {
                                    for o in outputs { XCTAssertEqual(o[t * rows + r], 777, label) }
                                    continue
                                }
                                let xt = X.pointer + t * cols
                                let xb = FloatBuffer(count: cols)
                                xb.pointer.update(from: xt, count: cols)
                                let exact = exactDot(c, row: r, xt), bound = a16Bound(c, row: r, xb)
                                XCTAssertLessThanOrEqual(abs(Double(outputs[0][t * rows + r]) - exact), bound, "f32 simd " + label)
                                XCTAssertLessThanOrEqual(abs(Double(outputs[1][t * rows + r]) - exact), bound, "f32 ref " + label)
                                let (e8, b8) = xq.withUnsafeBufferPointer { xq in
                                    dx.withUnsafeBufferPointer { i8Exact(c, row: r, xq.baseAddress! + t * cols, $0.baseAddress! + t * cols / 32) }
                                }
                                XCTAssertLessThanOrEqual(abs(Double(outputs[2][t * rows + r]) - e8), b8, "i8 simd " + label)
                                XCTAssertLessThanOrEqual(abs(Double(outputs[3][t * rows + r]) - e8), b8, "i8 ref " + label)
                            }
                        }
                        // A8/A4 on ranges that start and stop at panel boundaries (whole panels, a
                        // tail, a thread's 16-row slice): each token's rows equal the GEMV of that
                        // token (on AVX2 bit for bit: the panel GEMM does the GEMV's operations).
                        let blocks = cols / 32
                        for (lo, hi) in [(0, rows), (8, rows), (0, rows / 16 * 16), (rows / 16 * 16, rows)] where lo < hi {
                            let Yg = FloatBuffer(count: T * rows), yv = FloatBuffer(count: rows)
                            for i in 0..<T * rows { Yg[i] = 777 }
                            c.w.withView { tsr_qgemm_i8($0, Int32(T), xq, dx, xsums, Yg.pointer, Int32(rows), Int32(lo), Int32(hi)) }
                            for t in 0..<T {
                                for i in 0..<rows { yv[i] = 777 }
                                xq.withUnsafeBufferPointer { xq in
                                    dx.withUnsafeBufferPointer { dx in
                                        xsums.withUnsafeBufferPointer { xs in
                                            c.w.withView {
                                                tsr_qgemv_i8($0, xq.baseAddress! + t * cols, dx.baseAddress! + t * blocks, xs.baseAddress! + t * groups,
                                                             yv.pointer, Int32(lo), Int32(hi))
                                            }
                                        }
                                    }
                                }
                                for r in 0..<rows {
                                    let label = "B\(bits) G\(G) \(rows)×\(cols) T\(T) rows \(lo)..<\(hi) t\(t) r\(r)"
                                    let got = Yg[t * rows + r]
                                    if r < lo || r >= hi { XCTAssertEqual(got, 777, label); continue }
                                    let (e8, b8) = xq.withUnsafeBufferPointer { xq in
                                        dx.withUnsafeBufferPointer { i8Exact(c, row: r, xq.baseAddress! + t * cols, $0.baseAddress! + t * blocks) }
                                    }
                                    XCTAssertLessThanOrEqual(abs(Double(got) - e8), b8, "i8 simd " + label)
                                    XCTAssertLessThanOrEqual(abs(Double(got) - Double(yv[r])), b8, "i8 gemm vs gemv " + label)
                                    #if arch(x86_64)
                                    XCTAssertEqual(got.bitPattern, yv[r].bitPattern, "i8 gemm vs gemv bits " + label)
                                    #endif
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: QuantizedLinear

    func testQuantizedLinearEveryModeAndPrefillMethod() throws {
        var rng = SplitMix64(seed: 8)
        let pool = ThreadPool(threads: 2)
        for bits in [2, 4, 6] {
            let rows = 37, cols = 192
            let c = try randomCase(bits: bits, group: 64, rows: rows, cols: cols, &rng)
            for mode in ActivationMode.allCases {
                for prefill in [QuantizedLinear.A16Prefill.fused, .dequantizeAndSgemm] {
                    let layer = QuantizedLinear(weights: c.w, activation: mode)
                    layer.a16Prefill = prefill
                    layer.panelRows = 16
                    XCTAssertEqual(layer.inFeatures, cols)
                    XCTAssertEqual(layer.outFeatures, rows)
                    for T in [1, 6, 3] { // shrinking T reuses the scratch
                        let X = blockyFloats(T * cols, &rng), Y = FloatBuffer(count: T * rows)
                        layer.forward(X.pointer, tokens: T, into: Y.pointer, pool: pool)
                        for t in 0..<T {
                            let xt = X.pointer + t * cols
                            // The activation step of each 32-block (0 for fp32; the token's for per-token modes).
                            let dx = (0..<cols / 32).map { b -> Double in
                                let span = mode.perToken ? 0..<cols : 32 * b..<32 * b + 32
                                let amax = span.map { abs(xt[$0]) }.max()!
                                return mode == .a16 ? 0 : Double(amax) / Double(mode.levels)
                            }
                            for r in 0..<rows {
                                var wMass = 0.0, wdx = 0.0, wx = 0.0
                                for k in 0..<cols {
                                    wMass += abs(Double(c.deq[r * cols + k]))
                                    wdx += abs(Double(c.deq[r * cols + k])) * dx[k / 32]
                                    wx += abs(Double(c.deq[r * cols + k]) * Double(xt[k]))
                                }
                                let exact = exactDot(c, row: r, xt)
                                let tol = wdx * 0.5001 + 1e-4 * (wx + wMass)
                                XCTAssertLessThanOrEqual(abs(Double(Y[t * rows + r]) - exact), tol, "B\(bits) \(mode) \(prefill) T\(T) t\(t) r\(r)")
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: RTN

    func testRTNErrorIsAtMostHalfAStep() throws {
        var rng = SplitMix64(seed: 9)
        for bits in Self.bitsList {
            for (cols, group) in [(64, 32), (192, 64), (256, 128), (96, 0)] {
                for zp in [ZeroPoint.float, .integer] {
                    let rows = 5
                    let W = FloatBuffer(count: rows * cols)
                    for i in 0..<rows * cols { W[i] = rng.uniform(-0.3, 0.5) * (i % 7 == 0 ? 3 : 1) }
                    for k in 0..<cols { W[3 * cols + k] = rng.uniform(0.1, 0.2) } // an all-positive row
                    let p = try GroupQuantizer.rtn(weights: W.pointer, rows: rows, cols: cols, bits: bits, group: group, zeroPoint: zp)
                    XCTAssertEqual(p.bitsPerWeight, Double(bits) + 32 / Double(p.group), accuracy: 1e-9)
                    let d = p.dequantize()
                    for r in 0..<rows {
                        for k in 0..<cols {
                            let s = Double(p.scale(row: r, group: k / p.group)), m = Double(p.offset(row: r, group: k / p.group))
                            // .integer: m = fp16(−z·s) may move the grid by half an fp16 ulp of m.
                            let slack = (zp == .integer ? abs(m) * 4.9e-4 : 0) + 1e-6 * (abs(Double(W[r * cols + k])) + abs(m)) + 1e-9
                            XCTAssertLessThanOrEqual(abs(Double(d[r * cols + k]) - Double(W[r * cols + k])), s / 2 + slack,
                                                     "B\(bits) G\(p.group) \(zp) r\(r) k\(k)")
                        }
                    }
                }
            }
        }
    }

    func testRTNIsExactForWeightsOnTheGrid() throws {
        var rng = SplitMix64(seed: 10)
        for bits in Self.bitsList {
            for (cols, group) in [(64, 32), (192, 64), (128, 0)] {
                let rows = 4, qmax = (1 << bits) - 1
                let G = group == 0 ? cols : group
                let W = FloatBuffer(count: rows * cols)
                for r in 0..<rows {
                    for g in 0..<cols / G {
                        let s = Float(Float16(rng.uniform(1.0 / 256, 1.0 / 16)))
                        let m = -Float(rng.next() % 1024) / 1024
                        for i in 0..<G {
                            // Every group holds both ends of the code range.
                            let q = i == 0 ? 0 : i == 1 ? qmax : Int(rng.next() % UInt64(qmax + 1))
                            W[r * cols + g * G + i] = Float(q) * s + m
                        }
                    }
                }
                let p = try GroupQuantizer.rtn(weights: W.pointer, rows: rows, cols: cols, bits: bits, group: group, zeroPoint: .float)
                let d = p.dequantize()
                for i in 0..<rows * cols { XCTAssertEqual(d[i], W[i], "B\(bits) G\(G) at \(i)") }
            }
        }
    }

    func testBadShapesAndBitsAreClearErrors() {
        let W = FloatBuffer(count: 4 * 576)
        func message(_ cols: Int, _ bits: Int, _ group: Int) -> String? {
            do {
                _ = try GroupQuantizer.rtn(weights: W.pointer, rows: 1, cols: cols, bits: bits, group: group, name: "blk.0.ffn_up")
                return nil
            } catch { return "\(error)" }
        }
        XCTAssertEqual(message(576, 4, 128), "group size 128 does not divide the row width 576 of blk.0.ffn_up; use 32 or 64")
        XCTAssertEqual(message(96, 4, 64), "group size 64 does not divide the row width 96 of blk.0.ffn_up; use 32")
        XCTAssertEqual(message(576, 4, 48), "group size 48 of blk.0.ffn_up is not a multiple of 32; use 32 or 64 or the whole row")
        XCTAssertEqual(message(100, 4, 0), "the row width 100 of blk.0.ffn_up is not a multiple of 32; group-quantized rows are made of 32-weight blocks")
        XCTAssertEqual(message(576, 5, 64), "unsupported bit width 5 for blk.0.ffn_up; use 2, 3, 4, 6 or 8")
        XCTAssertNil(message(576, 6, 32))
        XCTAssertNil(message(576, 4, 576))
        XCTAssertNil(message(576, 2, 0))
    }

    // MARK: ggml

    func testGGMLBlocksRepackLosslessly() throws {
        var rng = SplitMix64(seed: 12)
        let rows = 3, cols = 96
        for type in [GGMLBlockType.q4_0, .q4_1, .q8_0] {
            var raw = [UInt8](repeating: 0, count: rows * cols / 32 * type.blockBytes)
            for i in raw.indices { raw[i] = UInt8(truncatingIfNeeded: rng.next()) }
            var expected = [Float](repeating: 0, count: rows * cols)
            for b in 0..<rows * cols / 32 {
                let o = b * type.blockBytes
                // Random finite fp16 d (and m), sign included, magnitudes up to 2^4.
                func half() -> UInt16 { UInt16(truncatingIfNeeded: rng.next()) & 0xCFFF }
                let d = half(), m = half()
                raw[o] = UInt8(d & 0xFF); raw[o + 1] = UInt8(d >> 8)
                let df = Float(Float16(bitPattern: d)), mf = Float(Float16(bitPattern: m))
                switch type {
                case .q4_0:
                    for j in 0..<16 {
                        expected[b * 32 + j] = Float(Int(raw[o + 2 + j] & 0x0F) - 8) * df
                        expected[b * 32 + j + 16] = Float(Int(raw[o + 2 + j] >> 4) - 8) * df
                    }
                case .q4_1:
                    raw[o + 2] = UInt8(m & 0xFF); raw[o + 3] = UInt8(m >> 8)
                    for j in 0..<16 {
                        expected[b * 32 + j] = Float(raw[o + 4 + j] & 0x0F) * df + mf
                        expected[b * 32 + j + 16] = Float(raw[o + 4 + j] >> 4) * df + mf
                    }
                case .q8_0:
                    for j in 0..<32 { expected[b * 32 + j] = Float(Int8(bitPattern: raw[o + 2 + j])) * df }
                }
            }
            let p = try raw.withUnsafeBytes { try QuantizedTensor.fromGGML(type: type, blocks: $0.baseAddress!, rows: rows, cols: cols) }
            XCTAssertEqual(p.group, 32)
            let d = p.dequantize()
            // Bit-exact, except that Q4_0's q = 8 with d < 0 gives ggml −0 ((8 − 8)·d) and us +0 (8d − 8d).
            for i in 0..<rows * cols {
                if expected[i] == 0 { XCTAssertEqual(d[i], 0); continue }
                XCTAssertEqual(d[i].bitPattern, expected[i].bitPattern, "\(type) at \(i): \(d[i]) vs \(expected[i])")
            }
        }
        // A Q8_0 scale whose −128·d overflows fp16 is refused.
        var big = [UInt8](repeating: 0, count: 34)
        let h = Float16(1024).bitPattern
        big[0] = UInt8(h & 0xFF); big[1] = UInt8(h >> 8)
        XCTAssertThrowsError(try big.withUnsafeBytes { try QuantizedTensor.fromGGML(type: GGMLBlockType.q8_0, blocks: $0.baseAddress!, rows: 1, cols: 32) })
    }

    #if arch(x86_64)
    /// The x86-64 A8/A4 kernels with AVX-512 VNNI (vpdpbusd) and without (the same CPU with the
    /// feature cleared by tsr_cpu_disable) give the same bits: the block dots, the GEMV on every
    /// shape and row range, and the panel GEMM on ragged token counts. (The tests above check the
    /// dispatched path, VNNI where the CPU has it, against the scalar reference and float64.)
    /// Without VNNI the dispatcher must run the AVX2 path, and there is nothing else to compare.
    func testVNNIAndAVX2A8KernelsGiveTheSameBits() throws {
        let ran = try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        guard KernelPaths.hasAVX512VNNI else {
            XCTAssertEqual(KernelPaths.name(ran), "avx2")
            return
        }
        XCTAssertEqual(KernelPaths.name(ran), "avx2vnni")
        func bothPaths<T: Equatable>(_ label: String, _ body: () -> T) {
            let vnni = body()
            tsr_cpu_disable(Int32(TSR_CPU_AVX512_VNNI))
            defer { tsr_cpu_disable(0) }
            XCTAssertEqual(KernelPaths.name(KernelPaths.current(TSR_KERNEL_QUANT_I8)), "avx2", label)
            XCTAssertEqual(body(), vnni, label)
        }
        try forEachCase(seed: 21) { c, bits, group, rows, cols, rng in
            let x = blockyFloats(cols, &rng)
            for levels: Int32 in [127, 7] {
                let a = quantized(x, group: group, levels: levels)
                let label = "B\(bits) G\(group) \(rows)×\(cols) levels \(levels)"
                bothPaths("qdot " + label) { () -> [Int32] in
                    var out = [Int32](repeating: 0, count: rows * cols / 32)
                    c.w.withView { tsr_qdot_i8($0, a.xq, a.bsums, &out, 0, Int32(rows)) }
                    return out
                }
                bothPaths("gemv " + label) { () -> [UInt32] in
                    let y = FloatBuffer(count: rows)
                    c.w.withView { tsr_qgemv_i8($0, a.xq, a.dx, a.xsums, y.pointer, Int32(rows > 1 ? 1 : 0), Int32(rows)) }
                    return (0..<rows).map { y[$0].bitPattern }
                }
            }
            for T in [2, 5, 6, 13] where cols <= 1536 {
                var xq: [Int8] = [], dx: [Float] = [], xsums: [Float] = []
                for t in 0..<T {
                    let a = quantized(blockyFloats(cols, &rng), group: group, levels: t % 2 == 0 ? 127 : 7)
                    xq += a.xq; dx += a.dx; xsums += a.xsums
                }
                bothPaths("gemm B\(bits) G\(group) \(rows)×\(cols) T\(T)") { () -> [UInt32] in
                    let y = FloatBuffer(count: T * rows)
                    c.w.withView { tsr_qgemm_i8($0, Int32(T), xq, dx, xsums, y.pointer, Int32(rows), 0, Int32(rows)) }
                    return (0..<T * rows).map { y[$0].bitPattern }
                }
            }
        }
    }
    #endif

    // MARK: portable path

    func testPortablePathAgreesWithSIMD() throws {
        let quant = try requireSIMDPath(TSR_KERNEL_QUANT), quantI8 = try requireSIMDPath(TSR_KERNEL_QUANT_I8)
        var f32Differs = false, i8Differs = false
        var rng = SplitMix64(seed: 13)
        for bits in Self.bitsList {
            let rows = 19, cols = 320, group = 64
            let c = try randomCase(bits: bits, group: group, rows: rows, cols: cols, &rng)
            let x = blockyFloats(cols, &rng)
            func run() -> (deq: [Float], a: Activations, dots: [Int32], f32: [Float], i8: [Float]) {
                let sums = FloatBuffer(count: cols / group)
                tsr_group_sums_f32(x.pointer, Int32(cols), Int32(group), sums.pointer)
                let a = quantized(x, group: group, levels: 127)
                var dots = [Int32](repeating: 0, count: rows * cols / 32)
                let f = FloatBuffer(count: rows), i = FloatBuffer(count: rows)
                c.w.withView { w in
                    tsr_qdot_i8(w, a.xq, a.bsums, &dots, 0, Int32(rows))
                    tsr_qgemv_f32(w, x.pointer, sums.pointer, f.pointer, 0, Int32(rows))
                    tsr_qgemv_i8(w, a.xq, a.dx, a.xsums, i.pointer, 0, Int32(rows))
                }
                return (c.w.dequantize().array, a, dots, f.array, i.array)
            }
            let simd = run()
            let portable = KernelPaths.portable {
                assertPortablePaths()
                return run()
            }
            XCTAssertEqual(KernelPaths.current(TSR_KERNEL_QUANT), quant, "dispatch restored after tsr_force_portable(0)")
            XCTAssertEqual(KernelPaths.current(TSR_KERNEL_QUANT_I8), quantI8, "dispatch restored after tsr_force_portable(0)")
            if simd.f32.map(\.bitPattern) != portable.f32.map(\.bitPattern) { f32Differs = true }
            if simd.i8.map(\.bitPattern) != portable.i8.map(\.bitPattern) { i8Differs = true }
            XCTAssertEqual(simd.deq, portable.deq)
            XCTAssertEqual(simd.a.xq, portable.a.xq)
            XCTAssertEqual(simd.a.dx, portable.a.dx)
            XCTAssertEqual(simd.a.bsums, portable.a.bsums)
            XCTAssertEqual(simd.a.xsums, portable.a.xsums)
            XCTAssertEqual(simd.dots, portable.dots)
            for r in 0..<rows {
                XCTAssertEqual(simd.f32[r], portable.f32[r], accuracy: 1e-4 * max(1, abs(portable.f32[r])))
                XCTAssertEqual(simd.i8[r], portable.i8[r], accuracy: 1e-4 * max(1, abs(portable.i8[r])))
            }
        }
        // Forced portable, other code ran: the fp32 results differ in the last bits somewhere.
        XCTAssertTrue(f32Differs, "A16 GEMV: \(KernelPaths.name(quant)) and portable gave the same bits everywhere")
        XCTAssertTrue(i8Differs, "A8 GEMV: \(KernelPaths.name(quantI8)) and portable gave the same bits everywhere")
    }
}
