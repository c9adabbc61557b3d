import Foundation
import XCTest
import KernelsC
#if canImport(Darwin)
import Darwin
#endif

/// Which implementation the KernelsC dispatchers run (tsr_kernel_path: the value every
/// dispatcher switches on), and which one this CPU should run, worked out apart from KernelsC's
/// own detection: from the feature list the operating system reports.
enum KernelPaths {
    /// The families, by TSR_KERNEL_* id, with a name for messages.
    static let families: [(id: Int, name: String)] = [
        (TSR_KERNEL_F32, "f32 (gemv, dot, axpy)"),
        (TSR_KERNEL_F16_GEMV, "f16 gemv"),
        (TSR_KERNEL_F16_CONVERT, "f16 to f32"),
        (TSR_KERNEL_READ_BYTES, "read bytes"),
        (TSR_KERNEL_QUANT, "quant (dequantize, activations, A16)"),
        (TSR_KERNEL_QUANT_I8, "quant A8/A4"),
    ]

    static func name(_ path: Int) -> String { String(cString: tsr_path_name(Int32(path))) }

    /// What the dispatchers of `family` run now.
    static func current(_ family: Int) -> Int { Int(tsr_kernel_path(Int32(family))) }

    /// The CPU's features as the operating system names them (x86-64: avx2, fma, f16c; AArch64:
    /// asimd, asimddp), or nil where they cannot be read.
    static let cpuFlags: Set<String>? = {
        #if os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        // x86-64 lists "flags : ...", AArch64 "Features : ..." (per CPU; the first one speaks for all).
        for line in info.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            #if arch(x86_64)
            if key == "flags" { return Set(parts[1].split(separator: " ").map(String.init)) }
            #else
            if key == "Features" { return Set(parts[1].split(separator: " ").map(String.init)) }
            #endif
        }
        #if arch(arm64)
        // No "Features" line: an emulator (qemu-user shows the host's /proc/cpuinfo). The
        // kernel's hardware capability bits say the same: HWCAP_ASIMD (1 << 1), HWCAP_ASIMDDP (1 << 20).
        // Read from /proc/self/auxv (pairs of 64-bit type, value; AT_HWCAP = 16), which qemu emulates.
        var hwcap: UInt64 = 0
        if let auxv = FileHandle(forReadingAtPath: "/proc/self/auxv")?.readDataToEndOfFile() {
            let words = auxv.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
            var i = 0
            while i + 1 < words.count && words[i] != 0 {
                if words[i] == 16 { hwcap = words[i + 1] }
                i += 2
            }
        }
        var flags: Set<String> = []
        if hwcap & (1 << 1) != 0 { flags.insert("asimd") }
        if hwcap & (1 << 20) != 0 { flags.insert("asimddp") }
        return flags
        #else
        return nil
        #endif
        #elseif canImport(Darwin)
        func has(_ name: String) -> Bool {
            var v: Int32 = 0
            var size = MemoryLayout<Int32>.size
            return sysctlbyname(name, &v, &size, nil, 0) == 0 && v != 0
        }
        var flags: Set<String> = []
        #if arch(x86_64)
        if has("hw.optional.avx2_0") { flags.insert("avx2") }
        if has("hw.optional.fma") { flags.insert("fma") }
        if has("hw.optional.f16c") { flags.insert("f16c") }
        for (sysctl, name) in [("hw.optional.avx512f", "avx512f"), ("hw.optional.avx512bw", "avx512bw"),
                               ("hw.optional.avx512vl", "avx512vl"), ("hw.optional.avx512vnni", "avx512_vnni")] where has(sysctl) {
            flags.insert(name)
        }
        #elseif arch(arm64)
        flags.insert("asimd")
        if has("hw.optional.arm.FEAT_DotProd") { flags.insert("asimddp") }
        #endif
        return flags
        #else
        return nil
        #endif
    }()

    /// Whether this CPU reports the AVX-512 parts the avx2vnni A8/A4 path needs (F, BW, VL, VNNI)
    /// and GFNI.
    static var hasAVX512VNNI: Bool {
        guard let f = cpuFlags else { return false }
        return ["avx512f", "avx512bw", "avx512vl", "avx512_vnni", "gfni"].allSatisfy(f.contains)
    }

    /// The path this CPU should run for `family` with nothing forced (x86-64 with AVX2 and FMA:
    /// AVX2, the A8/A4 family with AVX-512 VNNI where the CPU has it; AArch64: NEON, the A8/A4
    /// family with dotprod where the CPU has it), or nil where the CPU's features cannot be read.
    /// `disabled`: TSR_CPU_* bits cleared by tsr_cpu_disable.
    static func expected(_ family: Int, disabled: Int = 0) -> Int? {
        #if arch(x86_64)
        guard let f = cpuFlags else { return nil }
        let avx2 = f.contains("avx2") && f.contains("fma"), f16c = f.contains("f16c")
        let vnni = hasAVX512VNNI && disabled & TSR_CPU_AVX512_VNNI == 0
        switch family {
        case TSR_KERNEL_QUANT_I8: return avx2 && f16c && vnni ? TSR_PATH_AVX2_VNNI : avx2 ? TSR_PATH_AVX2 : TSR_PATH_REF
        case TSR_KERNEL_F16_GEMV: return avx2 && f16c ? TSR_PATH_AVX2 : TSR_PATH_REF
        case TSR_KERNEL_F16_CONVERT: return f16c ? TSR_PATH_F16C : TSR_PATH_REF
        default: return avx2 ? TSR_PATH_AVX2 : TSR_PATH_REF
        }
        #elseif arch(arm64)
        switch family {
        case TSR_KERNEL_READ_BYTES: return TSR_PATH_REF
        case TSR_KERNEL_QUANT_I8:
            guard let f = cpuFlags else { return nil }
            return f.contains("asimddp") ? TSR_PATH_NEON_DOT : TSR_PATH_NEON
        default: return TSR_PATH_NEON
        }
        #else
        return TSR_PATH_REF
        #endif
    }

    static func familyName(_ family: Int) -> String {
        families.first { $0.id == family }?.name ?? "family \(family)"
    }

    /// Runs `body` with every family on the portable path (tsr_force_portable) and restores
    /// dispatch afterwards, even when `body` throws.
    static func portable<T>(_ body: () throws -> T) rethrows -> T {
        tsr_force_portable(1)
        defer { tsr_force_portable(0) }
        return try body()
    }
}

extension XCTestCase {
    /// Asserts that the dispatcher runs the path this CPU should run for `family` (for tests that
    /// check a dispatched entry point against values computed apart from KernelsC, so they test
    /// something on any path). Where the CPU's features cannot be read: skipped locally, fails in CI.
    @discardableResult
    func assertDispatch(_ family: Int, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let name = KernelPaths.familyName(family), ran = KernelPaths.current(family)
        guard let expected = KernelPaths.expected(family) else {
            throw TestPaths.unavailable("cannot read this CPU's features to check which \(name) path runs (ran \(KernelPaths.name(ran)))",
                                        file: file, line: line)
        }
        XCTAssertEqual(KernelPaths.name(ran), KernelPaths.name(expected),
                       "\(name): the dispatcher runs \(KernelPaths.name(ran)), this CPU should run \(KernelPaths.name(expected))",
                       file: file, line: line)
        return ran
    }

    /// For a test comparing a dispatched entry point of `family` with its scalar reference:
    /// asserts that the dispatcher runs the path this CPU should run (on x86-64 with AVX2 + FMA
    /// the AVX2 path) and returns it. Where that is the scalar reference (no SIMD path for this
    /// CPU), or the CPU's features cannot be read, the comparison would set the reference against
    /// itself: the test is skipped locally and fails in CI.
    @discardableResult
    func requireSIMDPath(_ family: Int, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let ran = try assertDispatch(family, file: file, line: line)
        if KernelPaths.expected(family) == TSR_PATH_REF {
            throw TestPaths.unavailable("\(KernelPaths.familyName(family)): this CPU has no SIMD path; the comparison would test the reference against itself",
                                        file: file, line: line)
        }
        return ran
    }

    /// Asserts that under tsr_force_portable every family runs the scalar path.
    func assertPortablePaths(file: StaticString = #filePath, line: UInt = #line) {
        for (id, name) in KernelPaths.families {
            XCTAssertEqual(KernelPaths.name(KernelPaths.current(id)), "ref", "\(name) under tsr_force_portable", file: file, line: line)
        }
    }
}
