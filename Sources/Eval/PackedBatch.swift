import Engine
import Core
import Foundation
import Model

// Sequence packing for scoring: many short sequences (a context and the continuations that
// extend it) run as one batch, each seeing only its ancestors, on InferenceSession.runBatch.

/// One sequence of a packed batch (`InferenceSession.forwardPacked`).
public struct PackedSequence: Sendable, Equatable {
    public var tokens: [Int32]
    /// An earlier sequence of the batch that this one continues, or nil for the cache's contents.
    public var parent: Int?
    /// Logits wanted for the last `logitRows` tokens.
    public var logitRows: Int

    public init(tokens: [Int32], parent: Int? = nil, logitRows: Int = 0) {
        self.tokens = tokens
        self.parent = parent
        self.logitRows = logitRows
    }
}

extension InferenceSession {
    /// Runs several sequences as one batch ("sequence packing"). Each sequence continues the
    /// cache's contents, or with `parent` an earlier sequence of the batch: it sees all of its
    /// ancestors and itself causally, never its siblings, and its RoPE positions follow its
    /// parent's. All tokens take cache slots from `position` on and advance it (rewind after).
    /// `body` gets (sequence, index in its tokens, logits) for each sequence's last `logitRows`.
    public func forwardPacked(_ sequences: [PackedSequence],
                              _ body: (Int, Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        let total = sequences.reduce(0) { $0 + $1.tokens.count }
        guard total <= maxBatch else { throw InferenceError.packedBatchTooLarge(tokens: total, maxBatch: maxBatch) }
        guard position + total <= capacity else {
            throw InferenceError.contextFull(position: position, adding: total, capacity: capacity)
        }
        var tokens: [Int32] = [], positions: [Int] = [], start: [Int] = [], firstPositions: [Int] = [], seen: [[Range<Int>]] = []
        var owner: [(sequence: Int, index: Int)] = [], wanted: [Int] = []
        tokens.reserveCapacity(total)
        for (i, s) in sequences.enumerated() {
            try checkTokens(s.tokens)
            let slot = position + tokens.count
            var ranges = [0..<position], firstPosition = position
            if let p = s.parent {
                guard p >= 0 && p < i else { throw InferenceError.badParent(sequence: i, parent: p) }
                ranges = seen[p] + [start[p]..<(start[p] + sequences[p].tokens.count)]
                firstPosition = firstPositions[p] + sequences[p].tokens.count
            }
            start.append(slot)
            seen.append(ranges)
            firstPositions.append(firstPosition)
            let n = s.tokens.count, rows = min(max(s.logitRows, 0), n)
            for j in 0..<n {
                positions.append(firstPosition + j)
                owner.append((i, j))
                if j >= n - rows { wanted.append(tokens.count) }
                tokens.append(s.tokens[j])
            }
        }
        guard !tokens.isEmpty else { return }
        let layout = BatchLayout.packed(positions: positions, visible: (0..<total).map { t in
            let (i, _) = owner[t]
            return seen[i].filter { !$0.isEmpty } + [start[i]..<(position + t + 1)]
        })
        try runBatch(tokens, layout: layout, logitRows: wanted) { index, row in
            try body(owner[index].sequence, owner[index].index, row)
        }
    }
}
