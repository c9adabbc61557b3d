/// Linears that read the same input x (a block's q, k and v; its gate and up), run together.
///
/// When every member is a `QuantizedLinear` that prepares x the same way (same activation
/// mode, row width and group), x is prepared once (A8/A4: quantized, A16: its group sums) and
/// the rows of all members run in one parallel region of the pool instead of one per member.
/// Each member's rows are split exactly as its own `forward` splits them (the multi-count
/// `ThreadPool.parallelFor`), so every kernel call is the same call on the same rows as in
/// the unfused path and the outputs are bit-identical to it. Otherwise (fp32 or fp16
/// members, mixed modes or groups, the A16 prefill by sgemm) each member runs its own
/// `forward`, one after the other.
public final class LinearGroup {
    public let members: [LinearWeights]
    /// The members, when all are `QuantizedLinear`.
    private let quantized: [QuantizedLinear]?
    private let rowCounts: [Int]
    /// Off: always run the members one by one (the tests compare the two paths).
    var fuses = true

    public init(_ members: [LinearWeights]) {
        precondition(!members.isEmpty, "a linear group needs a member")
        precondition(members.allSatisfy { $0.inFeatures == members[0].inFeatures }, "linears of a group read the same input")
        self.members = members
        let quantized = members.compactMap { $0 as? QuantizedLinear }
        self.quantized = quantized.count == members.count ? quantized : nil
        rowCounts = members.map(\.outFeatures)
    }

    /// outputs[i] = x·members[i]ᵀ ([T, members[i].outFeatures]) for x [T, inFeatures].
    public func forward(_ x: UnsafePointer<Float>, tokens T: Int, into outputs: [UnsafeMutablePointer<Float>], pool: ThreadPool) {
        precondition(outputs.count == members.count, "one output per member")
        guard T > 0 else { return }
        if fuses, let q = quantized, q.allSatisfy({ q[0].preparesInputLike($0) && $0.runsByRows(tokens: T) }) {
            let input = q[0].prepare(x, tokens: T, pool: pool)
            pool.parallelFor(rowCounts, multiple: QuantizedLinear.rowMultiple) { i, rows in
                q[i].run(input, rows: rows, into: outputs[i])
            }
            return
        }
        for (member, y) in zip(members, outputs) { member.forward(x, tokens: T, into: y, pool: pool) }
    }
}
