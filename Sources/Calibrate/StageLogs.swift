import Engine
import Foundation

// What a block-wise run and a tune round print and write beside their output: shared by
// `tessera calibrate` (its chain), `tessera tune` and the chain runner.

extension BlockReport {
    /// "block  3: loss 1.2 → 0.9 (−25.0%) on 4 windows, … on 32  12.3 s  peak RSS 900 MB", and
    /// a second line when the guard kept the initialisation.
    public func summaryLines(options o: CalibrationOptions) -> [String] {
        func change(_ a: Double, _ b: Double) -> String { String(format: "%.5g → %.5g (%+.1f%%)", a, b, 100 * (b / max(a, 1e-30) - 1)) }
        // The logged loss uses the first few windows (as the reference); the guard's, when on, uses more.
        var losses = "loss \(change(lossInitial, lossFinal)) on \(min(o.lossSequences, o.samples)) windows"
        if let a = checkLossInitial, let b = checkLossFinal { losses += ", \(change(a, b)) on \(min(o.guardSequences, o.samples))" }
        var lines = [String(format: "block %2d: %@  %.1f s  peak RSS %.0f MB", block, losses, seconds, Double(peakResidentBytes ?? 0) / 1e6)]
        if keptInitialisation == true, let a = checkLossInitial, let b = checkLossFinal {
            lines.append(String(format: "  block %d kept its initialisation: TesseraQ ended at %.5g against %.5g on %d windows", block, b, a, min(o.guardSequences, o.samples)))
        }
        return lines
    }
}

extension CalibrationReport {
    /// Writes `output`.log.json and `output`.svg for a finished block-wise run.
    public static func writeLogs(_ summary: Calibrator.Summary, options o: CalibrationOptions, output: String) throws {
        let log = try json(reports: summary.reports, options: o, seconds: summary.seconds, peakResidentBytes: ProcessStats.peakResidentBytes())
        try log.write(to: URL(fileURLWithPath: output + ".log.json"), options: .atomic)
        let title = "\(o.method.rawValue) W\(o.bits)g\(o.group == 0 ? "row" : "\(o.group)"): block reconstruction loss"
        try Data(svg(reports: summary.reports, title: title).utf8).write(to: URL(fileURLWithPath: output + ".svg"), options: .atomic)
    }

    /// "rounding flipped vs nearest: attn_q 1.23%, …"
    public static func flippedLine(_ reports: [BlockReport]) -> String {
        "rounding flipped vs nearest: " + flippedByLayer(reports).map { String(format: "%@ %.2f%%", $0.0, 100 * $0.1) }.joined(separator: ", ")
    }
}

extension EndToEndTuner {
    /// The run's header: what is tuned, on which windows, at which rate.
    public func headerLines(data: String, tokens: Int, pool: ThreadPool) -> [String] {
        let o = options
        var lines = ["tune: \(student.path) → \(outputPath), teacher \(teacher.path)",
                     "  W\(student.bits)g\(student.group); \(o.samples) windows × \(o.sequenceLength) tokens from \(data) (\(tokens) tokens); \(o.steps) steps, lr \(o.learningRate) cosine to 0\(o.warmupSteps > 0 ? " after \(o.warmupSteps) warm-up steps" : ""); held-out KL on \(o.evalSamples) windows; \(o.trainNorms ? "scales, offsets and norms" : "scales and offsets"); seed \(o.seed); \(pool.threads) threads; OpenBLAS core \(Matmul.blasCore)"]
        if let r = student.rotation { lines.append("  rotated (\(r.summary)): the teacher is \(teacher.path) rotated the same way") }
        if student.storedActivation != .a16 {
            lines.append("  activations \(student.storedActivation.summary)\(student.storedActivationClip != 1 ? ", clip \(student.storedActivationClip)" : ""), fake-quantized in the student")
        }
        if let note = weightNote { lines.append(note) }
        return lines
    }

    /// Says so when the student's fp32 weights take turns in one block's worth of RAM.
    public var weightNote: String? {
        model.streamsWeights ? String(format: "  student weights: %.1f GB in fp32, over the memory budget: materialized one block at a time (the same result)", Double(model.weightBytes) / 1e9) : nil
    }

    /// Writes `prefix`.json (the report) and `prefix`.svg (its plot): `OUT.tune.json` for `tune`.
    public func writeLogs(_ report: EndToEndReport, prefix: String) throws {
        try JSONEncoder().encode(report).write(to: URL(fileURLWithPath: prefix + ".json"), options: .atomic)
        let title = "tune W\(student.bits)g\(student.group): KL to the fp model"
        try Data(CalibrationReport.svg(tuning: report, title: title).utf8).write(to: URL(fileURLWithPath: prefix + ".svg"), options: .atomic)
    }
}

extension EndToEndReport {
    /// The held-out KL at every check, and whether the tuned scales were kept.
    public var summaryLines: [String] {
        let before = evalKL.first![1], after = evalKL.last![1]
        return evalKL.map { String(format: "held-out KL after %4d steps: %.5f", Int($0[0]), $0[1]) }
            + [kept ? String(format: "kept: held-out KL %.5f → %.5f (%+.1f%%)", before, after, 100 * (after / before - 1))
                    : String(format: "not kept: held-out KL %.5f → %.5f did not improve; wrote the input unchanged", before, after)]
    }
}
