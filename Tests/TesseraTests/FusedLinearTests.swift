import Foundation
import XCTest
@testable import Kernels
@testable import Engine

/// q/k/v and gate/up run as one `LinearGroup` each: one prepared input and one parallel
/// region per group, with logits bit-identical to running every linear on its own.
final class FusedLinearTests: XCTestCase {
    /// Rows of q 64, k/v 32, gate/up 96 (a 2-thread split at multiples of 16 cuts each).
    static let config = PackedModelTests.config

    /// The synthetic model with every block linear RTN-quantized (a different width per role,
    /// so members of one group differ in bits) and run with activation `mode`.
    func quantizedModel(_ mode: ActivationMode, a16Prefill: QuantizedLinear.A16Prefill = .dequantizeAndSgemm,
                        threads: Int, keyGroup: Int = 32, keyMode: ActivationMode? = nil) throws -> LlamaModel {
        let source = InMemorySource(config: Self.config, seed: 21)
        let fp = try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: threads))
        let bits: [BlockLinear: Int] = [.query: 4, .key: 2, .value: 8, .attentionOutput: 3, .gate: 4, .up: 2, .down: 3]
        let blocks = try fp.blocks.map { b -> LlamaBlock in
            func q(_ role: BlockLinear) throws -> LinearWeights {
                let f = try XCTUnwrap(b.linear(role) as? FP32Linear)
                let t = try GroupQuantizer.rtn(weights: f.weight.pointer, rows: f.outFeatures, cols: f.inFeatures,
                                               bits: bits[role]!, group: role == .key ? keyGroup : 32)
                let linear = QuantizedLinear(weights: try PackedWeights(t), activation: role == .key ? keyMode ?? mode : mode)
                linear.a16Prefill = a16Prefill
                return linear
            }
            return LlamaBlock(attentionNorm: b.attentionNorm, query: try q(.query), key: try q(.key), value: try q(.value),
                              attentionOutput: try q(.attentionOutput), mlpNorm: b.mlpNorm,
                              gate: try q(.gate), up: try q(.up), down: try q(.down))
        }
        return LlamaModel(config: fp.config, tokenEmbedding: fp.tokenEmbedding, blocks: blocks, outputNorm: fp.outputNorm,
                          output: fp.output, pool: fp.pool)
    }

    func setFusion(_ on: Bool, _ model: LlamaModel) {
        for b in model.blocks {
            b.qkv.fuses = on
            b.gateUp.fuses = on
        }
    }

    /// A prefill of the prompt (all its logits), then greedy decoding: every logit row and the
    /// tokens picked, and the pool's dispatches of each decode step.
    func greedy(_ model: LlamaModel, prompt: [Int32], steps: Int, context: Int = 32) throws
        -> (logits: [[Float]], tokens: [Int32], dispatches: [Int]) {
        let session = InferenceSession(model: model, contextLength: context, maxBatch: 4)
        var logits = try session.forward(prompt, logitRows: prompt.count)
        var tokens: [Int32] = [], dispatches: [Int] = []
        for _ in 0..<steps {
            let last = logits[logits.count - 1]
            let next = Int32(last.indices.max { last[$0] < last[$1] }!)
            tokens.append(next)
            let before = model.pool.regionStats.runs
            logits += try session.forward([next])
            dispatches.append(model.pool.regionStats.runs - before)
        }
        return (logits, tokens, dispatches)
    }

    func testFusedGroupsGiveBitIdenticalLogitsWithFewerDispatches() throws {
        let prompt: [Int32] = [1, 50, 96, 3, 3, 17]   // two prefill batches of maxBatch 4
        let cases: [(ActivationMode, QuantizedLinear.A16Prefill)] = [(.a16, .dequantizeAndSgemm), (.a16, .fused), (.a8, .fused), (.a4, .fused), (.a8Token, .fused), (.a4Token, .fused)]
        for (mode, prefill) in cases {
            for threads in [1, 2] {
                let label = "\(mode) \(prefill) \(threads) threads"
                let model = try quantizedModel(mode, a16Prefill: prefill, threads: threads)
                XCTAssertTrue(model.blocks[0].query is QuantizedLinear, label)
                let fused = try greedy(model, prompt: prompt, steps: 8)
                setFusion(false, model)
                let separate = try greedy(model, prompt: prompt, steps: 8)
                XCTAssertEqual(fused.tokens, separate.tokens, label)
                XCTAssertEqual(fused.logits.count, prompt.count + 8, label)
                for (t, (a, b)) in zip(fused.logits, separate.logits).enumerated() {
                    XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(label) row \(t)")
                }
                // Per block, q/k/v's three regions become one and gate/up's two become one.
                let saved = threads == 1 ? 0 : 3 * Self.config.blockCount
                XCTAssertEqual(zip(separate.dispatches, fused.dispatches).map { $0 - $1 },
                               Array(repeating: saved, count: 8), label)
                if threads == 2 { XCTAssertGreaterThan(fused.dispatches[0], 0, label) }
            }
        }
    }

    /// The demo model (30 blocks, Q4_1 linears) at A16, A8 and A4: identical greedy decoding with
    /// 90 fewer parallel regions per token.
    func testDemoModelDecodesIdenticallyWithThreeFewerDispatchesPerBlock() throws {
        let path = try TestPaths.requireDemoModel()
        let prompt: [Int32] = [1, 9690, 8, 1041, 314, 260, 3575, 282, 4649, 47]
        for mode in ActivationMode.allCases {
            let model = try LoadedModel.load(path: path, threads: 2, activation: mode).model
            XCTAssertTrue(model.blocks.allSatisfy { $0.qkv.members.allSatisfy { $0 is QuantizedLinear } }, "\(mode)")
            let fused = try greedy(model, prompt: prompt, steps: 6, context: 64)
            setFusion(false, model)
            let separate = try greedy(model, prompt: prompt, steps: 6, context: 64)
            XCTAssertEqual(fused.tokens, separate.tokens, "\(mode)")
            XCTAssertEqual(fused.logits.map { $0.map(\.bitPattern) }, separate.logits.map { $0.map(\.bitPattern) }, "\(mode)")
            XCTAssertEqual(zip(separate.dispatches, fused.dispatches).map { $0 - $1 }, Array(repeating: 90, count: 6), "\(mode)")
            print("demo model \(mode): parallel regions per decoded token \(separate.dispatches) unfused, \(fused.dispatches) fused")
        }
    }

    /// Groups that cannot share one prepared input (a member in another activation mode or
    /// group size, or fp32 linears) run their members one by one: same logits, same dispatches.
    func testGroupsThatCannotFuseRunTheirMembersOneByOne() throws {
        let prompt: [Int32] = [4, 8, 15, 16, 23]
        let models = [
            try quantizedModel(.a8, threads: 2, keyMode: .a4),
            try quantizedModel(.a8, threads: 2, keyGroup: 64),
            try WeightBinder(source: InMemorySource(config: Self.config, seed: 21), linears: .fp32).model(pool: ThreadPool(threads: 2)),
        ]
        for (i, model) in models.enumerated() {
            let fused = try greedy(model, prompt: prompt, steps: 3)
            setFusion(false, model)
            let separate = try greedy(model, prompt: prompt, steps: 3)
            XCTAssertEqual(fused.tokens, separate.tokens, "model \(i)")
            XCTAssertEqual(fused.logits.map { $0.map(\.bitPattern) }, separate.logits.map { $0.map(\.bitPattern) }, "model \(i)")
            // q/k/v cannot fuse; gate/up still can in the quantized ones.
            let saved = model.blocks[0].gate is QuantizedLinear ? Self.config.blockCount : 0
            XCTAssertEqual(zip(separate.dispatches, fused.dispatches).map { $0 - $1 }, [saved, saved, saved], "model \(i)")
        }
    }

    /// The multi-count parallelFor hands each loop exactly the ranges a parallelFor of its own would.
    func testMultiCountParallelForGivesEachLoopItsOwnRanges() {
        let counts = [0, 5, 16, 17, 32, 100, 2048]
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            let lock = NSLock()
            var together: [[Range<Int>]] = Array(repeating: [], count: counts.count)
            pool.parallelFor(counts, multiple: 16) { j, r in
                lock.lock(); together[j].append(r); lock.unlock()
            }
            for (j, n) in counts.enumerated() {
                var alone: [Range<Int>] = []
                pool.parallelFor(n, multiple: 16) { r in lock.lock(); alone.append(r); lock.unlock() }
                XCTAssertEqual(together[j].sorted { $0.lowerBound < $1.lowerBound }, alone.sorted { $0.lowerBound < $1.lowerBound },
                               "\(threads) threads, count \(n)")
            }
            // One region for all of them (none when it all runs inline).
            let before = pool.regionStats.runs
            pool.parallelFor(counts, multiple: 16) { _, _ in }
            XCTAssertEqual(pool.regionStats.runs - before, threads == 1 ? 0 : 1)
        }
    }
}
