import Foundation
import XCTest
import KernelsC
@testable import Engine
@testable import Calibrate

/// End-to-end scale tuning (`tessera tune`) on the tiny calibration model: its forward against
/// the packed model's inference, its gradients against finite differences, the held-out KL,
/// resume, and the output file.
final class EndToEndTests: XCTestCase {
    /// The tiny model (teacher) and its W2g32 AWQ quantization (student, a packed file).
    func models() throws -> (InMemorySource, PackedModelSource) {
        let teacher = CalibrationTests.tinySource()
        let path = temporaryPath("awq.gguf")
        let calibrator = Calibrator(source: teacher, options: CalibrationTests.options(.awq), outputPath: path, pool: ThreadPool(threads: 2))
        _ = try calibrator.run(tokens: CalibrationTests.tokens(), tokenizer: nil, embedding: .f16, resume: false)
        return (teacher, try PackedModelSource(gguf: GGUFFile(path: path)))
    }

    static func options(steps: Int = 40, norms: Bool = false) -> EndToEndOptions {
        var o = EndToEndOptions()
        o.trainNorms = norms
        o.samples = 24
        o.sequenceLength = 16
        o.steps = steps
        o.learningRate = 3e-3
        o.evalSamples = 3
        o.evalEvery = 20
        o.checkpointEvery = 10
        return o
    }

    /// With α = β = 0 the tuner's logits are the packed model's (run by InferenceSession on its
    /// fp32 dequantization).
    func testForwardMatchesThePackedModel() throws {
        let (teacher, student) = try models()
        let pool = ThreadPool(threads: 2)
        let tuner = try EndToEndModel(teacher: teacher, student: student, sequenceLength: 16, pool: pool)
        let window = Array(CalibrationTests.tokens()[100..<116])
        tuner.forward(window)
        let model = try WeightBinder(source: student, linears: .fp32).model(pool: pool)
        let expected = try InferenceSession(model: model, contextLength: 32).forward(window, logitRows: 16)
        let V = student.config.vocab
        for t in 0..<16 {
            for i in 0..<V { XCTAssertEqual(tuner.logits[t * V + i], expected[t][i], accuracy: 1e-4 * max(1, abs(expected[t][i])), "token \(t)") }
        }
    }

    /// dKL/dα, dKL/dβ and dKL/dγ against central differences of the KL, on the groups (norm
    /// channels) with the largest gradients and some of every kind.
    func testGradientsMatchFiniteDifferences() throws {
        let (teacher, student) = try models()
        try Self.checkGradients(teacher: teacher, student: student)
    }

    /// The gradient check of `testGradientsMatchFiniteDifferences`, for any teacher and student.
    static func checkGradients(teacher: ModelSource, student: PackedModelSource, weightBudget: Int? = nil) throws {
        let pool = ThreadPool(threads: 2)
        let tuner = try EndToEndModel(teacher: teacher, student: student, sequenceLength: 16, pool: pool, weightBudget: weightBudget)
        XCTAssertEqual(tuner.streamsWeights, weightBudget == 0)
        let window = Array(CalibrationTests.tokens()[200..<216])
        let state = try tuner.teacherStates([window], progress: { _ in })[0]
        let dAlpha = FloatBuffer(count: tuner.alpha.count), dBeta = FloatBuffer(count: tuner.beta.count)
        let dGamma = FloatBuffer(count: tuner.gamma.count)
        let kl = tuner.trainingStep(window, teacherState: state, dAlpha: dAlpha.pointer, dBeta: dBeta.pointer, dGamma: dGamma.pointer)
        XCTAssertGreaterThan(kl, 1e-3, "the quantized model should differ from the teacher")
        func klAt(_ set: (EndToEndModel) -> Void) -> Double {
            set(tuner)
            tuner.materialize()
            tuner.projectTeacher(state)
            tuner.forward(window)
            return tuner.divergence(student: tuner.logits, teacher: tuner.teacherLogits, gradient: false)
        }
        let h: Float = 1e-2
        let C = student.config.hidden, normCount = tuner.norms.count
        XCTAssertEqual(normCount, 2 * student.config.blockCount + 1)
        let parameters: [(String, FloatBuffer, ReferenceWritableKeyPath<EndToEndModel, [Float]>, [Int])] = [
            // First group of each layer of block 1; a channel of each norm of block 1 and four of the output norm.
            ("α", dAlpha, \.alpha, tuner.layers.suffix(7).map { $0.first }),
            ("β", dBeta, \.beta, tuner.layers.suffix(7).map { $0.first }),
            ("γ", dGamma, \.gamma, [(normCount - 3) * C, (normCount - 2) * C + 1] + [2, 5, 11, 30].map { (normCount - 1) * C + $0 }),
        ]
        for (name, grad, path, some) in parameters {
            let order = (0..<grad.count).sorted { abs(grad[$0]) > abs(grad[$1]) }
            let picks = Array(order.prefix(6)) + some
            let scale = Double(abs(grad[order[0]]))
            XCTAssertGreaterThan(scale, 1e-5, "d\(name) is ~0")
            for k in picks {
                let plus = klAt { $0[keyPath: path][k] = h }
                let minus = klAt { $0[keyPath: path][k] = -h }
                _ = klAt { $0[keyPath: path][k] = 0 }
                let numeric = (plus - minus) / Double(2 * h)
                XCTAssertEqual(Double(grad[k]), numeric, accuracy: 3e-2 * (abs(numeric) + 1e-2 * scale), "d\(name)[\(k)]")
            }
        }
    }

    /// Over the weight budget the blocks take turns in one block's fp32 weights: the same
    /// gradients, and a tune (killed and resumed, too) writes the same file byte for byte.
    func testStreamedStudentWeightsGiveTheSameFile() throws {
        let (teacher, student) = try models()
        try Self.checkGradients(teacher: teacher, student: student, weightBudget: 0)
        let pool = ThreadPool(threads: 2)
        let whole = temporaryPath("whole.gguf"), streamed = temporaryPath("streamed.gguf")
        _ = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 20), outputPath: whole, pool: pool)
            .run(tokens: CalibrationTests.tokens(), resume: false)
        let first = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 20), outputPath: streamed, pool: pool, weightBudget: 0)
        XCTAssertTrue(first.model.streamsWeights)
        XCTAssertNotNil(first.weightNote)
        first.stopAfterSteps = 10
        XCTAssertThrowsError(try first.run(tokens: CalibrationTests.tokens(), resume: false))
        _ = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 20), outputPath: streamed, pool: pool, weightBudget: 0)
            .run(tokens: CalibrationTests.tokens(), resume: true)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: whole)), try Data(contentsOf: URL(fileURLWithPath: streamed)))
        let resident = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(), outputPath: temporaryPath("r.gguf"), pool: pool)
        XCTAssertFalse(resident.model.streamsWeights, "a tiny model fits the default budget")
        XCTAssertNil(resident.weightNote)
    }

    /// Training lowers the held-out KL, the output loads and runs with the tuned scales, and
    /// only scales and offsets changed (the codes did not). The calibrated input says its zero
    /// point is integer; the tuned file says float, as its trained offsets are (PackedRewrite).
    func testTuningLowersHeldOutKLAndWritesAPackedModel() throws {
        let (teacher, student) = try models()
        let path = temporaryPath("tuned.gguf")
        let tuner = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(), outputPath: path, pool: ThreadPool(threads: 2))
        let report = try tuner.run(tokens: CalibrationTests.tokens(), resume: false)
        XCTAssertEqual(report.stepLosses.count, 40)
        XCTAssertEqual(report.evalKL.map { $0[0] }, [0, 20, 40])
        XCTAssertTrue(report.kept)
        XCTAssertLessThan(report.evalKL.last![1], 0.9 * report.evalKL[0][1], "tuning should cut the held-out KL clearly")

        let tuned = try PackedModelSource(gguf: GGUFFile(path: path))
        XCTAssertEqual(tuned.gguf.string("tessera.e2e.kept"), "true")
        XCTAssertEqual(student.gguf.string("tessera.zero_point"), "integer")
        XCTAssertEqual(tuned.gguf.string("tessera.zero_point"), "float")
        XCTAssertEqual(tuned.scheme.zeroPoint, .float)
        XCTAssertEqual(tuned.scheme, PackedFormat.Scheme(bits: student.bits, group: student.group, activation: student.activation,
                                                         zeroPoint: .float, embedding: student.scheme.embedding))
        XCTAssertEqual(tuned.gguf.string("tessera.calibration.method"), student.gguf.string("tessera.calibration.method"))
        let name = TensorName.block(1, "ffn_down")
        let a = try student.quantizedTensor(name), b = try tuned.quantizedTensor(name)
        XCTAssertEqual(a.unpackedCodes(), b.unpackedCodes())
        XCTAssertNotEqual(a.scales, b.scales)
        let pool = ThreadPool(threads: 2)
        let lowBit = try WeightBinder(source: tuned).model(pool: pool)
        let logits = try InferenceSession(model: lowBit, contextLength: 32).forward([1, 5, 9, 33], logitRows: 1)
        XCTAssertTrue(logits[0].allSatisfy(\.isFinite))
    }

    /// With the norms training too: the held-out KL falls, and the file holds the tuned norms
    /// (fp32, exactly the tuner's).
    func testTrainingTheNormsToo() throws {
        let (teacher, student) = try models()
        let path = temporaryPath("norms.gguf")
        let tuner = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(norms: true), outputPath: path, pool: ThreadPool(threads: 2))
        let report = try tuner.run(tokens: CalibrationTests.tokens(), resume: false)
        XCTAssertTrue(report.kept)
        XCTAssertLessThan(report.evalKL.last![1], 0.9 * report.evalKL[0][1])
        let tuned = try PackedModelSource(gguf: GGUFFile(path: path))
        XCTAssertEqual(tuned.gguf.string("tessera.e2e.settings")?.contains("norms=true"), true)
        for (name, norm) in zip(tuner.model.normNames, tuner.model.norms) {
            XCTAssertEqual(try tuned.floatTensor(name).array, norm.array, name)
        }
        let name = TensorName.block(1, "ffn_norm")
        XCTAssertNotEqual(try tuned.floatTensor(name).array, try student.floatTensor(name).array, "the norms should have moved")
    }

    /// Held-out windows share no token with the training windows; a text too short for that is a clear error.
    func testHeldOutWindowsAreDisjointFromTheTrainingWindows() throws {
        let tokens = (0..<5000).map { Int32($0) }   // token = its position
        let starts = try CalibrationData.starts(tokens: tokens.count, count: 40, length: 50, seed: 7)
        let held = try CalibrationData.windows(tokens: tokens, count: 12, length: 50, seed: 8, disjointFrom: starts)
        XCTAssertEqual(held.count, 12)
        let training = Set(starts.flatMap { $0..<$0 + 50 })
        for window in held {
            XCTAssertEqual(window.count, 50)
            XCTAssertTrue(window.allSatisfy { !training.contains(Int($0)) }, "held-out window at \(window[0]) overlaps a training window")
        }
        // Without the rule the same draws would overlap: the check is not vacuous.
        let plain = try CalibrationData.windows(tokens: tokens, count: 12, length: 50, seed: 8)
        XCTAssertTrue(plain.contains { $0.contains { training.contains(Int($0)) } })
        let dense = try CalibrationData.starts(tokens: 600, count: 60, length: 50, seed: 7)
        XCTAssertThrowsError(try CalibrationData.windows(tokens: Array(tokens[..<600]), count: 4, length: 50, seed: 8, disjointFrom: dense)) {
            XCTAssertTrue("\($0)".contains("fewer samples"), "\($0)")
        }
    }

    /// The rate schedule against a float64 evaluation: without warm-up the cosine exactly as before;
    /// with it a linear ramp, and a checkpoint fingerprint that differs from the plain run's.
    func testLearningRateScheduleWithAndWithoutWarmup() {
        var o = EndToEndOptions()
        o.steps = 37; o.learningRate = 1e-3
        let cosine = { (k: Int) -> Double in 1e-3 * 0.5 * (1 + cos(Double.pi * Double(k) / 37)) }
        let plainFingerprint = o.fingerprint
        for k in 0..<37 { XCTAssertEqual(Double(o.rate(atStep: k)), cosine(k), accuracy: 1e-9, "step \(k)") }
        XCTAssertEqual(Double(o.rate(atStep: 0)), 1e-3, accuracy: 1e-9)
        o.warmupSteps = 5
        XCTAssertNotEqual(o.fingerprint, plainFingerprint)
        for k in 0..<37 {
            let expected = cosine(k) * min(1, Double(k + 1) / 5)
            XCTAssertEqual(Double(o.rate(atStep: k)), expected, accuracy: 1e-9, "step \(k)")
        }
        XCTAssertEqual(Double(o.rate(atStep: 0)), 0.2 * cosine(0), accuracy: 1e-9)   // a fifth of the peak
        XCTAssertLessThan(o.rate(atStep: 3), o.rate(atStep: 4))                       // still rising
        XCTAssertGreaterThan(o.rate(atStep: 4), o.rate(atStep: 5))                    // then the cosine
    }

    /// Killed after a checkpoint and resumed (norms training too): the same file as an uninterrupted run.
    func testResumeEqualsAnUninterruptedRun() throws {
        let (teacher, student) = try models()
        let whole = temporaryPath("whole.gguf"), parts = temporaryPath("parts.gguf")
        _ = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 25, norms: true), outputPath: whole,
                              pool: ThreadPool(threads: 2)).run(tokens: CalibrationTests.tokens(), resume: false)
        let first = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 25, norms: true), outputPath: parts, pool: ThreadPool(threads: 2))
        first.stopAfterSteps = 10
        XCTAssertThrowsError(try first.run(tokens: CalibrationTests.tokens(), resume: false))
        let again = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 25, norms: true), outputPath: parts, pool: ThreadPool(threads: 2))
        XCTAssertThrowsError(try again.run(tokens: CalibrationTests.tokens(), resume: false)) {
            XCTAssertTrue("\($0)".contains("--resume"), "\($0)")
        }
        let report = try again.run(tokens: CalibrationTests.tokens(), resume: true)
        XCTAssertEqual(report.resumedAt, 10)
        XCTAssertEqual(FileManager.default.contents(atPath: whole), FileManager.default.contents(atPath: parts))
    }

    /// A time budget's re-plans, after the first 10 steps (here to 34 of 30 asked: more is
    /// allowed) and at half of that (step 17, here to 27), are saved with the checkpoints: killed
    /// after 20 steps and resumed, the run follows the second without asking again and writes the
    /// uninterrupted run's file, whose settings record the 27 steps.
    func testReplannedStepsAreKeptOnResume() throws {
        let (teacher, student) = try models()
        let whole = temporaryPath("whole.gguf"), parts = temporaryPath("parts.gguf")
        func tuner(_ path: String, answers: [Int: Int], asked: @escaping (Int) -> Void = { _ in }) throws -> EndToEndTuner {
            let t = try EndToEndTuner(teacher: teacher, student: student, options: Self.options(steps: 30), outputPath: path, pool: ThreadPool(threads: 2))
            var last = 0.0
            t.replanAfterSteps = { seconds, done, stepSeconds in
                XCTAssertNotNil(answers[done], "asked after \(done) steps")
                XCTAssertGreaterThan(stepSeconds, last)
                XCTAssertGreaterThanOrEqual(seconds, stepSeconds)
                last = stepSeconds
                asked(done)
                return answers[done] ?? 0
            }
            return t
        }
        var calls: [Int] = []
        let report = try tuner(whole, answers: [10: 34, 17: 27], asked: { calls.append($0) }).run(tokens: CalibrationTests.tokens(), resume: false)
        XCTAssertEqual(calls, [EndToEndTuner.replanStep, 17])
        XCTAssertEqual(report.stepLosses.count, 27)
        XCTAssertEqual(report.evalKL.map { Int($0[0]) }, [0, 20, 27])
        let first = try tuner(parts, answers: [10: 34, 17: 27])
        first.stopAfterSteps = 20
        XCTAssertThrowsError(try first.run(tokens: CalibrationTests.tokens(), resume: false))
        let resumed = try tuner(parts, answers: [:]).run(tokens: CalibrationTests.tokens(), resume: true)
        XCTAssertEqual(resumed.resumedAt, 20)
        XCTAssertEqual(FileManager.default.contents(atPath: whole), FileManager.default.contents(atPath: parts))
        let file = try PackedModelSource(gguf: GGUFFile(path: parts))
        XCTAssertTrue(file.gguf.string("tessera.e2e.settings")?.contains("steps=27") == true, "\(file.gguf.string("tessera.e2e.settings") ?? "")")
    }

    /// `tessera average`: two tunes of one file (other seeds, norms trained) average group by
    /// group into a file with the same codes that runs; a file with other codes is refused.
    func testAveragingTwoTunesOfOneFile() throws {
        let (teacher, student) = try models()
        var paths: [String] = []
        for seed: UInt64 in [1, 2] {
            var o = Self.options(steps: 10, norms: true)
            o.seed = seed
            let path = temporaryPath("tuned-\(seed).gguf")
            _ = try EndToEndTuner(teacher: teacher, student: student, options: o, outputPath: path, pool: ThreadPool(threads: 2))
                .run(tokens: CalibrationTests.tokens(), resume: false)
            paths.append(path)
        }
        let tunes = try paths.map { try PackedModelSource(gguf: GGUFFile(path: $0)) }
        let out = temporaryPath("mean.gguf")
        try ModelAverage.write(tunes, weights: [1, 3], to: out)
        let mean = try PackedModelSource(gguf: GGUFFile(path: out))
        XCTAssertEqual(mean.gguf.string("tessera.average.weights"), "0.25,0.75")
        XCTAssertEqual(mean.gguf.string("tessera.zero_point"), "float")   // means of trained offsets
        for name in [TensorName.block(0, "attn_q"), TensorName.block(1, "ffn_down")] {
            let a = try tunes[0].quantizedTensor(name), b = try tunes[1].quantizedTensor(name), m = try mean.quantizedTensor(name)
            XCTAssertEqual(m.unpackedCodes(), a.unpackedCodes(), name)
            let n = a.rows * a.groupsPerRow
            var moved = 0
            for k in 0..<n {
                let sa = Double(tsr_f16_to_f32(a.scales[k])), sb = Double(tsr_f16_to_f32(b.scales[k]))
                let oa = Double(tsr_f16_to_f32(a.offsets[k])), ob = Double(tsr_f16_to_f32(b.offsets[k]))
                // fp16 rounding of the mean: half an ulp (2⁻¹¹ relative).
                XCTAssertEqual(Double(tsr_f16_to_f32(m.scales[k])), 0.25 * sa + 0.75 * sb, accuracy: 1e-3 * abs(0.25 * sa + 0.75 * sb) + 1e-7, "\(name) group \(k)")
                XCTAssertEqual(Double(tsr_f16_to_f32(m.offsets[k])), 0.25 * oa + 0.75 * ob, accuracy: 1e-3 * abs(0.25 * oa + 0.75 * ob) + 1e-7, "\(name) group \(k)")
                if a.scales[k] != b.scales[k] { moved += 1 }
            }
            XCTAssertGreaterThan(moved, n / 2, "the two tunes should differ, or the check is vacuous")
        }
        let norm = TensorName.block(1, "ffn_norm")
        let na = try tunes[0].floatTensor(norm).array, nb = try tunes[1].floatTensor(norm).array, nm = try mean.floatTensor(norm).array
        XCTAssertNotEqual(na, nb)
        for i in na.indices { XCTAssertEqual(Double(nm[i]), 0.25 * Double(na[i]) + 0.75 * Double(nb[i]), accuracy: 1e-6) }
        let logits = try InferenceSession(model: WeightBinder(source: mean).model(pool: ThreadPool(threads: 2)),
                                          contextLength: 32).forward([1, 5, 9, 33], logitRows: 1)
        XCTAssertTrue(logits[0].allSatisfy(\.isFinite))

        // Another calibration of the same model (RTN init: other codes) cannot be averaged in.
        let rtnPath = temporaryPath("rtn.gguf")
        _ = try Calibrator(source: teacher, options: CalibrationTests.options(.rtn), outputPath: rtnPath, pool: ThreadPool(threads: 2))
            .run(tokens: CalibrationTests.tokens(), tokenizer: nil, embedding: .f16, resume: false)
        let rtn = try PackedModelSource(gguf: GGUFFile(path: rtnPath))
        XCTAssertThrowsError(try ModelAverage.write([tunes[0], rtn], to: temporaryPath("bad.gguf"))) {
            XCTAssertTrue("\($0)".contains("other integer codes"), "\($0)")
        }
        XCTAssertThrowsError(try ModelAverage.write([tunes[0]], to: temporaryPath("one.gguf")))
        XCTAssertThrowsError(try ModelAverage.write(tunes, weights: [1, -1], to: temporaryPath("neg.gguf")))
    }
}
