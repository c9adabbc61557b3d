import Architecture
import Core
import Kernels
/// Where a forward pass spends its time, step by step (`bench --profile`). The session calls
/// `lap(step)` after each step: the time since the previous lap is charged to that step.
/// Costs one clock read per step, and nothing when no profile is attached.
public final class StepProfile {
    public enum Step: String, CaseIterable, Sendable {
        case embedding = "token embedding"
        case attentionNorm = "attention RMSNorm"
        case qkv = "q, k, v linears"
        case rope = "RoPE + KV-cache write"
        case attention = "attention (scores, softmax, ·V)"
        case attentionOutput = "o linear + residual"
        case mlpNorm = "MLP RMSNorm"
        case gateUp = "gate, up linears"
        case swiglu = "SwiGLU"
        case downHadamard = "online Hadamard (down input)"
        case down = "down linear + residual"
        case head = "final norm + output head"
        case caller = "caller's use of the logits"
    }

    /// Seconds per step.
    public private(set) var seconds: [Step: Double] = [:]
    /// Forward passes (batches) timed.
    public private(set) var batches = 0
    private var last: ContinuousClock.Instant?

    public init() {}

    func start() {
        last = ContinuousClock.now
        batches += 1
    }

    func lap(_ step: Step) {
        let now = ContinuousClock.now
        if let last {
            let d = (now - last).components
            seconds[step, default: 0] += Double(d.seconds) + Double(d.attoseconds) * 1e-18
        }
        last = now
    }

    public var total: Double { seconds.values.reduce(0, +) }

    public func reset() {
        seconds = [:]
        batches = 0
        last = nil
    }
}
