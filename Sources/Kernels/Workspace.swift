import Core
/// Scratch memory shared by every layer that runs on one thread pool. Layers run one at a
/// time on a pool, so one set of buffers, grown to the largest need seen, serves them all:
/// scratch kept per layer (quantized activations, dequantized panels) made a 90 MB model's
/// peak RSS five times its size. Contents are undefined between calls.
public final class Workspace: @unchecked Sendable {
    public enum Slot: Int, CaseIterable {
        /// Quantized activations and their block scales and sums (QuantizedLinear).
        case activations
        /// Per-worker fp32 panels of decoded weight rows (PanelGemm).
        case panels
    }

    private var buffers: [UnsafeMutableRawPointer?] = Array(repeating: nil, count: Slot.allCases.count)
    private var sizes: [Int] = Array(repeating: 0, count: Slot.allCases.count)

    public init() {}

    deinit { for b in buffers { b?.deallocate() } }

    /// At least `bytes` bytes, 64-byte aligned, valid until the next call for the same slot
    /// with a larger size.
    public func buffer(_ slot: Slot, bytes: Int) -> UnsafeMutableRawPointer {
        let i = slot.rawValue
        if bytes > sizes[i] || buffers[i] == nil {
            buffers[i]?.deallocate()
            let size = max(bytes, 64)
            buffers[i] = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            sizes[i] = size
        }
        return buffers[i]!
    }

    /// Bytes currently held.
    public var byteCount: Int { sizes.reduce(0, +) }
}
