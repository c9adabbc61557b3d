import Foundation
import XCTest
@testable import Engine
@testable import Calibrate

/// `calibrate --rotate hadamard` with fake-quantized activations, and `tune` on its output, on
/// the tiny calibration model (issue 35): the file records the rotation and runs near the fp
/// model, resume gives the same file, and tune's teacher is rotated as the student.
final class RotatedCalibrationTests: XCTestCase {
    /// Options for a short calibration of the tiny model: W4g32, per-token activations.
    static func rotatedOptions(_ mode: ActivationMode, clip: Float = 1) -> CalibrationOptions {
        var o = CalibrationTests.options(.tesseraq, bits: 4)
        o.activation = mode
        o.activationClip = clip
        o.schedule = .exponential(t: 4, stages: 2)
        o.stepsPerStage = 3
        return o
    }

    func calibrateRotated(_ o: CalibrationOptions, seed: UInt64 = 3, to path: String, blocks: Int? = nil,
                          resume: Bool = false) throws -> Calibrator.Summary {
        let source = try RotatedModelSource(base: CalibrationTests.tinySource(), seed: seed)
        let calibrator = Calibrator(source: source, options: o, outputPath: path, pool: ThreadPool(threads: 2))
        calibrator.blockLimit = blocks
        return try calibrator.run(tokens: CalibrationTests.tokens(), tokenizer: nil, embedding: .f16, resume: resume)
    }

    /// `--rotate hadamard --act 8 --act-clip 0.95` and `--act 4` on the tiny model: the file
    /// records the rotation and the activation mode, loads, applies the online transform,
    /// decodes greedily, and its logits stay near the fp model's; the same weights without the
    /// online transform are far off. AWQ skipped down_proj (α −1), the other folds ran.
    func testTinyRotatedModelCalibratesLoadsAndChats() throws {
        let pool = ThreadPool(threads: 2)
        let fp = try RotationTests.fp32Model(CalibrationTests.tinySource())
        let tokens: [Int32] = [1, 50, 9, 3, 3, 17, 0, 44]
        let fpLogits = try RotationTests.logits(fp, tokens)
        for (mode, clip, bound) in [(ActivationMode.a8Token, Float(0.95), Float(0.05)), (.a4Token, 1, 0.07)] {
            let path = temporaryPath("rot-\(mode.name).gguf")
            let summary = try calibrateRotated(Self.rotatedOptions(mode, clip: clip), to: path)
            XCTAssertTrue(summary.wroteModel)
            for r in summary.reports {
                XCTAssertEqual(r.awqAlphas.count, 4)
                XCTAssertEqual(r.awqAlphas[3], -1, "down_proj's AWQ scale must be skipped across the online transform")
                XCTAssertGreaterThanOrEqual(r.awqAlphas[0], 0)
                XCTAssertGreaterThanOrEqual(r.awqAlphas[2], 0)
                XCTAssertTrue(r.lossFinal.isFinite)
            }
            let packed = try PackedModelSource(gguf: GGUFFile(path: path))
            XCTAssertEqual(packed.rotation, RotationRecord(seed: 3, onlineDownHadamard: true, outputNormHadamard: true))   // tied, final norm ≠ 1
            XCTAssertTrue(packed.config.tiedEmbeddings)
            XCTAssertEqual(packed.storedActivation, mode)
            XCTAssertEqual(packed.storedActivationClip, clip)
            XCTAssertEqual(packed.gguf.string("tessera.calibration.act"), mode.name)
            let model = try WeightBinder(source: packed).model(pool: pool)
            XCTAssertEqual(model.downInputHadamard?.width, packed.config.ffn)

            // Greedy decoding: a prompt, then four tokens one at a time.
            let session = InferenceSession(model: model, contextLength: 32)
            var last = try session.forward([1, 50, 9], logitRows: 1)[0]
            var generated: [Int32] = []
            for _ in 0..<4 {
                XCTAssertTrue(last.allSatisfy(\.isFinite))
                let next = Int32(last.indices.max { last[$0] < last[$1] }!)
                generated.append(next)
                last = try session.forward([next])[0]
            }
            XCTAssertEqual(generated.count, 4)

            let error = RotationTests.maxRelativeDifference(try RotationTests.logits(model, tokens), fpLogits)
            let broken = RotationTests.maxRelativeDifference(try RotationTests.logits(RotationTests.withoutOnlineTransform(model), tokens), fpLogits)
            // Measured: A8 0.017 (0.072 without the transform), A4 0.034 (0.086), of the largest logit.
            print("tiny rotated W4 \(mode.name): logits vs fp \(error); without the online transform \(broken)")
            XCTAssertLessThan(error, bound, "\(mode.name): logits against the fp model")
            XCTAssertGreaterThan(broken, 2 * error, "\(mode.name): without the online transform (\(broken) against \(error))")
        }
    }

    /// A rotated run stopped after block 0 and resumed gives the uninterrupted run's file.
    func testRotatedResumeEqualsAnUninterruptedRun() throws {
        let o = Self.rotatedOptions(.a4Token, clip: 0.9)
        let whole = temporaryPath("whole.gguf"), split = temporaryPath("split.gguf")
        _ = try calibrateRotated(o, to: whole)
        let first = try calibrateRotated(o, to: split, blocks: 1)
        XCTAssertFalse(first.wroteModel)
        let rest = try calibrateRotated(o, to: split, resume: true)
        XCTAssertEqual(rest.resumedAt, 1)
        XCTAssertEqual(FileManager.default.contents(atPath: whole), FileManager.default.contents(atPath: split))
        // Another rotation seed, no rotation or another activation mode is another run: the checkpoint is refused.
        func assertRefused(_ body: @autoclosure () throws -> Calibrator.Summary, _ what: String) {
            XCTAssertThrowsError(try body(), what) { XCTAssertTrue("\($0)".contains("other settings"), "\(what): \($0)") }
        }
        assertRefused(try calibrateRotated(o, seed: 4, to: split, resume: true), "seed 4")
        assertRefused(try Calibrator(source: CalibrationTests.tinySource(), options: o, outputPath: split, pool: ThreadPool(threads: 2))
            .run(tokens: CalibrationTests.tokens(), tokenizer: nil, embedding: .f16, resume: true), "unrotated")
        assertRefused(try calibrateRotated(Self.rotatedOptions(.a8Token, clip: 0.9), to: split, resume: true), "A8")
    }

    /// The tune's gradients on a rotated student whose tied head kept one table (its final norm
    /// acts in the Hadamard domain, and trains there) against finite differences.
    func testTuneGradientsWithTheFinalNormInTheHadamardDomain() throws {
        let path = temporaryPath("rot16.gguf")
        var o = Self.rotatedOptions(.a16)
        o.method = .awq
        o.bits = 2
        _ = try calibrateRotated(o, seed: 7, to: path)
        let student = try PackedModelSource(gguf: GGUFFile(path: path))
        XCTAssertEqual(student.rotation?.outputNormHadamard, true)
        XCTAssertTrue(student.config.tiedEmbeddings)
        try EndToEndTests.checkGradients(teacher: CalibrationTests.tinySource(), student: student)
    }

    /// Tune on a rotated A8 file: the teacher is the fp model rotated with the file's seed (its
    /// logits through the student's head are the fp model's), the student forward equals the
    /// packed file's inference (online transform, integer activations), and a short tune keeps
    /// the rotation and activation keys.
    func testTuneOnARotatedStudent() throws {
        let path = temporaryPath("rot.gguf")
        var o = Self.rotatedOptions(.a8Token, clip: 0.95)
        o.method = .awq
        _ = try calibrateRotated(o, seed: 7, to: path)
        let student = try PackedModelSource(gguf: GGUFFile(path: path))
        let fpSource = CalibrationTests.tinySource()
        let pool = ThreadPool(threads: 2)
        let tuner = try EndToEndModel(teacher: fpSource, student: student, sequenceLength: 16, pool: pool)
        XCTAssertEqual((tuner.teacher as? RotatedModelSource)?.rotation, student.rotation)
        XCTAssertNotNil(tuner.studentActivations)

        let window = Array(CalibrationTests.tokens()[100..<116])
        // Teacher: its final states through the student's (rotated) norm and head give the fp logits.
        let states = try tuner.teacherStates([window], progress: { _ in })
        tuner.projectTeacher(states[0])
        let fpLogits = try InferenceSession(model: try RotationTests.fp32Model(fpSource), contextLength: 32).forward(window, logitRows: 16)
        let V = student.config.vocab
        let teacherLogits = (0..<16).map { t in Array(tuner.teacherLogits.array[t * V..<(t + 1) * V]) }
        XCTAssertLessThan(RotationTests.maxRelativeDifference(teacherLogits, fpLogits), 1e-2)
        // Student: the packed file's inference.
        tuner.forward(window)
        let model = try WeightBinder(source: student).model(pool: pool)
        let inference = try InferenceSession(model: model, contextLength: 32).forward(window, logitRows: 16)
        let studentLogits = (0..<16).map { t in Array(tuner.logits.array[t * V..<(t + 1) * V]) }
        XCTAssertLessThan(RotationTests.maxRelativeDifference(studentLogits, inference), 1e-4)

        // A teacher rotated otherwise is refused; the rotated fp model itself is accepted.
        XCTAssertThrowsError(try EndToEndModel(teacher: try RotatedModelSource(base: fpSource, seed: 8), student: student, sequenceLength: 16, pool: pool))
        XCTAssertNoThrow(try EndToEndModel(teacher: try RotatedModelSource(base: fpSource, seed: 7), student: student, sequenceLength: 16, pool: pool))

        let tuned = temporaryPath("tuned.gguf")
        var e2e = EndToEndTests.options(steps: 6)
        e2e.evalEvery = 3
        let report = try EndToEndTuner(teacher: fpSource, student: student, options: e2e, outputPath: tuned, pool: pool)
            .run(tokens: CalibrationTests.tokens(), resume: false)
        XCTAssertTrue(report.evalKL.allSatisfy { $0[1].isFinite })
        let out = try PackedModelSource(gguf: GGUFFile(path: tuned))
        XCTAssertEqual(out.rotation, student.rotation)
        XCTAssertEqual(out.storedActivation, .a8Token)
        XCTAssertEqual(out.storedActivationClip, 0.95)
    }
}
