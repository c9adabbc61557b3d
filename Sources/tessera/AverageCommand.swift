import Eval
import ArgumentParser
import Calibrate
import Foundation
import Engine

struct AverageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "average",
        abstract: "Weighted mean of several tunes of one calibrated file (same integer codes): their group scales, offsets and norms.",
        discussion: """
        Every input must hold the same integer codes (tunes of the same calibrate output, e.g. \
        with other windows, seeds or rates); files whose codes differ are refused. The output \
        has those codes and, per group, the weighted mean of the inputs' scales and offsets \
        (fp16), so the same size as each input.
        """)

    @Argument(help: "Two or more packed models (outputs of tessera tune of one calibrated file).")
    var models: [String]

    @Option(help: "One non-negative weight per model, comma-separated (default: equal); normalised to sum to 1.")
    var weights: String?

    @Option(name: .shortAndLong, help: "Output file.")
    var output: String

    var parsedWeights: [Double]? {
        weights.map { $0.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) ?? .nan } }
    }

    func validate() throws {
        guard models.count >= 2 else { throw ValidationError("give at least two packed models to average, got \(models.count)") }
        if let w = parsedWeights {
            guard w.count == models.count else { throw ValidationError("--weights has \(w.count) values for \(models.count) models") }
            guard w.allSatisfy({ $0 >= 0 && $0.isFinite }), w.contains(where: { $0 > 0 }) else {
                throw ValidationError("--weights must be non-negative numbers, not all zero, got \(weights!)")
            }
        }
    }

    func run() throws {
        try AtomicFileWriter.checkWritable(path: output)
        let inputs = try models.map { path -> PackedModelSource in
            guard let s = try ModelLoader.open(path) as? PackedModelSource else {
                throw ValidationError("\(path) is not a packed Tessera model; average the outputs of tessera tune")
            }
            return s
        }
        try ModelAverage.write(inputs, weights: parsedWeights, to: output)
        print("wrote \(output): the mean of \(models.count) models (weights \(parsedWeights.map { $0.map { String($0) }.joined(separator: ",") } ?? "equal"))")
    }
}
