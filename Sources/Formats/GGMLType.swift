import Tokenizer
import Architecture
import Foundation
import Core

/// ggml tensor types Tessera decodes, with ggml's numeric ids and block layouts.
public enum GGMLType: UInt32, CustomStringConvertible, Sendable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, i8 = 24, i32 = 26, bf16 = 30

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q8_0: return "Q8_0"
        case .i8: return "I8"
        case .i32: return "I32"
        case .bf16: return "BF16"
        }
    }

    /// Elements per block.
    public var blockSize: Int {
        switch self {
        case .q4_0, .q4_1, .q8_0: return 32
        default: return 1
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        case .q4_0: return 18  // fp16 d, 16 bytes of nibbles
        case .q4_1: return 20  // fp16 d, fp16 m, 16 bytes of nibbles
        case .q8_0: return 34  // fp16 d, 32 int8
        }
    }

    /// Bytes used by `elements` values, or nil when `elements` is not a whole number of blocks.
    public func byteCount(elements: Int) -> Int? {
        guard elements % blockSize == 0 else { return nil }
        let (blocks, o1) = (elements / blockSize).multipliedReportingOverflow(by: blockBytes)
        return o1 ? nil : blocks
    }
}

/// Decoding of ggml blocks to fp32, exactly as ggml's reference `dequantize_row_*` does.
public enum GGMLDecode {
    /// Decodes `count` values of `type` from `src` into `dst`.
    public static func decode(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        switch type {
        case .f32:
            dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            Half.decode(src.assumingMemoryBound(to: UInt16.self), dst, count: count)
        case .bf16:
            let s = src.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(s[i]) << 16) }
        case .i8:
            let s = src.assumingMemoryBound(to: Int8.self)
            for i in 0..<count { dst[i] = Float(s[i]) }
        case .i32:
            let s = src.assumingMemoryBound(to: Int32.self)
            for i in 0..<count { dst[i] = Float(s[i]) }
        case .q8_0:
            for b in 0..<count / 32 {
                let block = src + b * 34
                let d = Half.toFloat(block.loadUnaligned(as: UInt16.self))
                let qs = (block + 2).assumingMemoryBound(to: Int8.self)
                for j in 0..<32 { dst[b * 32 + j] = Float(qs[j]) * d }
            }
        case .q4_0:
            for b in 0..<count / 32 {
                let block = src + b * 18
                let d = Half.toFloat(block.loadUnaligned(as: UInt16.self))
                let qs = (block + 2).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    dst[b * 32 + j] = Float(Int(qs[j] & 0x0F) - 8) * d
                    dst[b * 32 + j + 16] = Float(Int(qs[j] >> 4) - 8) * d
                }
            }
        case .q4_1:
            for b in 0..<count / 32 {
                let block = src + b * 20
                let d = Half.toFloat(block.loadUnaligned(as: UInt16.self))
                let m = Half.toFloat((block + 2).loadUnaligned(as: UInt16.self))
                let qs = (block + 4).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    dst[b * 32 + j] = Float(qs[j] & 0x0F) * d + m
                    dst[b * 32 + j + 16] = Float(qs[j] >> 4) * d + m
                }
            }
        }
    }
}
