import Foundation
import Engine

public struct CalibrationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The whole run: block by block, carrying the quantized trajectory (inputs) and the fp
/// trajectory (targets), checkpointing after every block into `<output>.calib/`:
///
///   state.json         options fingerprint, blocks done, per-block reports (the commit point)
///   block-NNN.gguf     block NNN's norms and packed linears
///   xq-NNN.f16 / fp-NNN.f16   both trajectories at the input of block NNN
///
/// (a `Checkpoint`: every file atomic, state.json last), so a run killed at any point resumes
/// from the last finished block with `--resume`; per-block random streams are derived from the
/// seed, so the result equals an uninterrupted run's. With `blockLimit` (`--blocks N`) the run
/// stops after block N − 1 with the checkpoint kept and no model written.
public final class Calibrator {
    public let source: ModelSource
    public let options: CalibrationOptions
    public let outputPath: String
    public let pool: ThreadPool
    let checkpoint: Checkpoint<State>
    public var checkpointDirectory: String { checkpoint.directory }
    /// Calibrate only the first N blocks (`--blocks N`): `run` stops once they are
    /// checkpointed and writes no model; a later run with `--resume` continues from there.
    public var blockLimit: Int?
    /// `--max-memory`: bytes the four live trajectories (inputs, targets and the next block's)
    /// may keep in RAM; sequences past a quarter of it are read from and written to the
    /// checkpoint folder's files at every use. nil keeps every sequence in RAM. It does not
    /// change the result, so it is not part of the checkpoint's fingerprint.
    public var trajectoryBudget: Int?
    /// A time budget's re-plan (`calibrate --time-budget`): called once, when block 0 of a run is
    /// done, with the seconds the run has taken so far; it returns the steps per stage of every
    /// later block. The answer is committed with block 0, so a resumed run follows it, and the
    /// output records it (`steps_after_block0`). nil: every block runs `options.stepsPerStage`.
    public var replanAfterFirstBlock: ((_ secondsSoFar: Double) throws -> Int)?

    /// Sequences of each trajectory kept in RAM under `trajectoryBudget`.
    public var residentSamples: Int {
        guard let budget = trajectoryBudget else { return options.samples }
        let perSequence = Trajectory.sequenceBytes(T: options.sequenceLength, C: source.config.hidden)
        return min(options.samples, max(0, budget / 4 / perSequence))
    }

    public init(source: ModelSource, options: CalibrationOptions, outputPath: String, pool: ThreadPool) {
        self.source = source
        self.options = options
        self.outputPath = outputPath
        self.pool = pool
        checkpoint = Checkpoint(output: outputPath, suffix: ".calib")
    }

    struct State: CheckpointState {
        var version = 1
        var fingerprint: [String]
        var completedBlocks: Int
        var reports: [BlockReport]
        /// Steps per stage of blocks 1… when a time budget re-planned them after block 0.
        var laterStepsPerStage: Int? = nil
    }

    /// The options block `b` runs with (a re-plan changes the later blocks' steps).
    func options(block b: Int, _ state: State) -> CalibrationOptions {
        var o = options
        if b > 0, let steps = state.laterStepsPerStage { o.stepsPerStage = steps }
        return o
    }

    public struct Summary {
        /// One per calibrated block, the checkpoint's included.
        public var reports: [BlockReport]
        public var seconds: Double
        public var resumedAt: Int
        /// False when `blockLimit` stopped the run before the last block: no model was written.
        public var wroteModel: Bool
    }

    func fingerprint(tokens: [Int32]) -> [String] {
        options.metadata.map { "\($0.0)=\($0.1)" } + Self.fingerprint(source: source, tokens: tokens)
    }

    /// The model (and its rotation) and the data, as a checkpoint's fingerprint records them.
    static func fingerprint(source: ModelSource, tokens: [Int32]) -> [String] {
        let h = tokens.withUnsafeBytes { PackedFormat.checksum($0.baseAddress!, $0.count) }
        // A rotated source has its base's path: its rotation is part of what the blocks were made from.
        let rotation = source.rotation.map { ["rotation=\($0.kind.rawValue):seed \($0.seed):online_down \($0.onlineDownHadamard)"] } ?? []
        return ["model=\(source.path)"] + rotation + ["data=\(tokens.count):\(String(h, radix: 16))"]
    }

    /// Calibrates every block (up to `blockLimit`) and writes the packed model (after the last
    /// block only). `tokens` is the tokenized data.
    public func run(tokens: [Int32], tokenizer: Tokenizer?, embedding: PackedFormat.Embedding, resume: Bool,
                    progress: (CalibrationProgress) -> Void = { _ in },
                    blockDone: (BlockReport) -> Void = { _ in }) throws -> Summary {
        let start = ContinuousClock.now
        let c = source.config, o = options
        // A rotated source (RotatedModelSource): its weights hold the rotation, the block forward
        // applies the online transform its record asks for, and the file written records it.
        let shape = BlockShape(config: c, rotation: source.rotation)
        let print = fingerprint(tokens: tokens)
        var state = try checkpoint.open(fingerprint: print, resume: resume)
            ?? State(fingerprint: print, completedBlocks: 0, reports: [])
        let resumedAt = state.completedBlocks
        let lastBlock = min(blockLimit ?? c.blockCount, c.blockCount)

        // Calibration windows and the two trajectories at the first unfinished block.
        let windows = try CalibrationData.windows(tokens: tokens, count: o.samples, length: o.sequenceLength, seed: o.seed)
        var inputs: Trajectory, targets: Trajectory
        if state.completedBlocks == 0 {
            inputs = try trajectory("xq", 0)
            let embedding = try source.floatTensor(TensorName.tokenEmbedding)
            let row = FloatBuffer(count: o.sequenceLength * shape.C)
            for (n, window) in windows.enumerated() {
                CalibrationData.embed(window, table: embedding, C: shape.C, into: row.pointer)
                inputs.store(row.pointer, first: n, count: 1)
            }
            targets = try trajectory("fp", 0)
            targets.store(from: inputs)
        } else {
            let b = state.completedBlocks
            inputs = try trajectory("xq", b, existing: true)
            targets = try trajectory("fp", b, existing: true)
        }

        var calibrator = BlockCalibrator(shape: shape, options: options(block: state.completedBlocks, state), pool: pool)
        for b in state.completedBlocks..<max(state.completedBlocks, lastBlock) {
            if calibrator.options != options(block: b, state) { calibrator = BlockCalibrator(shape: shape, options: options(block: b, state), pool: pool) }
            let fp = try BlockParameters(source: source, block: b, shape: shape)
            // Targets: the fp block on the fp trajectory (fp activations).
            let nextTargets = try trajectory("fp", b + 1)
            calibrator.run(fp, input: targets, output: nextTargets, student: false)
            let out = try calibrator.calibrate(block: b, blocks: c.blockCount, fp: fp, inputs: inputs, targets: nextTargets, progress: progress)
            // Inputs of the next block: the quantized block on the quantized trajectory (its
            // activations quantized as the runtime will).
            let nextInputs = try trajectory("xq", b + 1)
            calibrator.run(out.quantized, input: inputs, output: nextInputs, student: true)

            // Checkpoint: block, trajectories, then the state (the commit point).
            try writeBlock(out, index: b)
            try nextInputs.commit()
            try nextTargets.commit()
            var report = out.report
            report.peakResidentBytes = ProcessStats.peakResidentBytes()
            state.completedBlocks = b + 1
            state.reports.append(report)
            if b == 0, let replan = replanAfterFirstBlock { state.laterStepsPerStage = try replan((ContinuousClock.now - start).seconds) }
            try checkpoint.save(state)
            checkpoint.remove(trajectoryName("xq", b))
            checkpoint.remove(trajectoryName("fp", b))
            inputs = nextInputs
            targets = nextTargets
            blockDone(report)
        }

        let complete = state.completedBlocks == c.blockCount
        if complete { try writeModel(tokenizer: tokenizer, embedding: embedding, reports: state.reports, laterSteps: state.laterStepsPerStage) }
        return Summary(reports: state.reports, seconds: (ContinuousClock.now - start).seconds, resumedAt: resumedAt, wroteModel: complete)
    }

    /// A new trajectory (`existing`: a checkpoint's) of `kind` at the input of `block`, under the memory budget.
    func trajectory(_ kind: String, _ block: Int, existing: Bool = false) throws -> Trajectory {
        let o = options, path = trajectoryPath(kind, block)
        let t = existing ? try Trajectory(samples: o.samples, T: o.sequenceLength, C: source.config.hidden, contentsOf: path)
                         : try Trajectory(samples: o.samples, T: o.sequenceLength, C: source.config.hidden, path: path)
        t.residentSamples = residentSamples
        return t
    }

    func trajectoryName(_ kind: String, _ block: Int) -> String { String(format: "%@-%03d.f16", kind, block) }
    func trajectoryPath(_ kind: String, _ block: Int) -> String { checkpoint.path(trajectoryName(kind, block)) }

    func blockPath(_ block: Int) -> String { checkpoint.path(String(format: "block-%03d.gguf", block)) }

    func writeBlock(_ out: BlockCalibrator.Output, index b: Int) throws {
        var w = GGUFWriter()
        try w.addTensor(name: TensorName.block(b, .norm(.attention)), shape: [out.quantized.attentionNorm.count], values: out.quantized.attentionNorm)
        try w.addTensor(name: TensorName.block(b, .norm(.mlp)), shape: [out.quantized.mlpNorm.count], values: out.quantized.mlpNorm)
        for (name, p) in zip(BlockParameters.linearNames, out.linears) {
            try PackedFormat.add(&w, name: TensorName.block(b, name), p)
        }
        try PackedFormat.addChecksums(&w)
        try w.write(to: blockPath(b))
    }

    /// Assembles the packed model: the source with every block's norms and linears replaced by
    /// the block files' (the embedding, final norm and head as RTN stores them).
    func writeModel(tokenizer: Tokenizer?, embedding: PackedFormat.Embedding, reports: [BlockReport], laterSteps: Int?) throws {
        let o = options
        var files: [Int: GGUFFile] = [:]
        func blockFile(_ b: Int) throws -> GGUFFile {
            if let f = files[b] { return f }
            let f = try GGUFFile(path: blockPath(b))
            files[b] = f
            return f
        }
        // (Every block linear comes from a block file: the zero point here is only RTN's fallback;
        // the file's label follows from the calibrated tensors, as PackedRewrite says.)
        var scheme = PackedFormat.Scheme(bits: o.bits, group: o.group, activation: o.activation, zeroPoint: .integer, embedding: embedding)
        scheme.activationClip = o.activationClip
        var metadata = o.metadata.map { ("tessera.calibration.\($0.0)", $0.1) }
        if let laterSteps { metadata.append(("tessera.calibration.steps_after_block0", "\(laterSteps)")) }
        metadata.append(("tessera.calibration.final_losses", reports.map { String(format: "%.6g", $0.lossFinal) }.joined(separator: ",")))
        metadata.append(("tessera.calibration.initial_losses", reports.map { String(format: "%.6g", $0.lossInitial) }.joined(separator: ",")))
        metadata.append(("tessera.version", TesseraVersion.string))
        let shapes = Dictionary(uniqueKeysWithValues: source.config.requiredTensorShapes.map { ($0.0, $0.1) })
        try PackedRewrite.write(base: source, tokenizer: tokenizer, scheme: scheme, method: o.method.rawValue,
                                metadata: metadata, to: outputPath) { name in
            guard name.hasPrefix("blk."), let b = Int(name.split(separator: ".")[1]), let shape = shapes[name] else { return nil }
            let file = try blockFile(b)
            if name.hasSuffix("_norm.weight") { return .f32(try file.floatData(name)) }
            return .quantized(try PackedFormat.readQuantized(file, name: name, rows: shape[0], cols: shape[1]))
        }
    }

    /// Removes the checkpoint folder (after the output file is written).
    public func removeCheckpoint() { checkpoint.removeAll() }
}

public enum TesseraVersion {
    public static let string = "0.3.0"
}

extension BlockParameters {
    /// Block `b`'s fp32 weights read from a model source.
    convenience init(source: ModelSource, block b: Int, shape: BlockShape) throws {
        self.init(shape: shape)
        let parts = BlockNorm.allCases.map(\.rawValue) + BlockParameters.linearNames
        for (part, buffer) in zip(parts, [attentionNorm, mlpNorm] + linears) {
            let name = TensorName.block(b, part)
            let values = try source.floatTensor(name)
            guard values.count == buffer.count else {
                throw FormatError.shapeMismatch(tensor: name, expected: [buffer.count], found: [values.count])
            }
            buffer.pointer.update(from: values.pointer, count: buffer.count)
        }
    }
}
