import Data
import Dispatch
import Foundation
import NN
import Store
import TensorCore

/// What one training step reports besides its loss.
public struct StepOutput {
    public let loss: Tensor
    /// Correct predictions in the batch, for stages that classify.
    public var correct: Int?
    /// The objective's own per-step figures (EsViT's view and region losses, DINO's teacher
    /// temperature...): extra columns of the steps table and TensorBoard scalars.
    public var diagnostics: [String: Double]
    public init(loss: Tensor, correct: Int? = nil, diagnostics: [String: Double] = [:]) {
        self.loss = loss
        self.correct = correct
        self.diagnostics = diagnostics
    }
}

/// What the end of an epoch reports: columns for the `epochs` table, and the value that decides
/// the best checkpoint.
public struct EpochReport {
    public var columns: KeyValuePairs<String, Double>
    public var score: Double?
    public var higherIsBetter: Bool
    public var line: String
    public init(columns: KeyValuePairs<String, Double>, score: Double?, higherIsBetter: Bool, line: String) {
        (self.columns, self.score, self.higherIsBetter, self.line) = (columns, score, higherIsBetter, line)
    }
}

/// The loop every training stage shares: per-step learning rate, forward, backward, optional
/// clipping, update; a row per step in metrics.h5 and TensorBoard; progress lines; a resumable
/// checkpoint every `checkpoint.every_steps` steps; an end-of-epoch report; the best weights.
/// A non-finite loss stops it with a message that names the stage, the step and the fix.
public final class TrainingLoop {
    let context: RunContext
    let module: Module
    let optimizer: Optimizer
    let loader: DataLoader
    let epochs: Int
    let schedule: CosineSchedule
    let gradientClip: Float?
    let learningRateKey: String
    /// Weight decay per step (DINO's cosine from weight_decay to weight_decay_end), or constant.
    let weightDecaySchedule: CosineSchedule?
    /// Random streams the step draws from (masks, augmentations): saved in checkpoints.
    let streams: [String: RandomStream]
    /// Where the encoder the later stages use sits in `module`'s state_dict ("" when `module` is
    /// the encoder): the `encoder_prefix` metadata of every checkpoint, so `extract` finds it.
    public var encoderPrefix = ""

    public init(context: RunContext, module: Module, optimizer: Optimizer, loader: DataLoader, epochs: Int,
                schedule: CosineSchedule, gradientClip: Float?, learningRateKey: String = "lr", streams: [String: RandomStream] = [:],
                weightDecaySchedule: CosineSchedule? = nil) {
        self.streams = streams
        self.weightDecaySchedule = weightDecaySchedule
        self.context = context
        self.module = module
        self.optimizer = optimizer
        self.loader = loader
        self.epochs = epochs
        self.schedule = schedule
        self.gradientClip = gradientClip
        self.learningRateKey = learningRateKey
    }

    /// Runs (or, after a resume, finishes) every epoch. Returns the number of steps taken.
    public func run(step: (Batch) -> StepOutput, beforeStep: (Int) -> Void = { _ in }, afterStep: (Int) -> Void = { _ in },
                    endOfEpoch: (Int, [String: Double]) throws -> EpochReport) throws -> Int {
        let stage = context.stageName
        let log = context.log
        if loader.batchSize < Distributed.size {
            throw RunError("\(context.stagePath).batch_size is \(loader.batchSize), fewer images than the run's \(Distributed.size) processes: each process needs a share of every batch. Raise batch_size or start fewer processes (mpirun -np).")
        }
        context.encoderChanged()
        let exchange = Distributed.isMultiProcess ? GradientExchange(module.parameters) : nil
        var progress = StageProgress(epoch: 0, batch: 0, step: 0, sums: [:], best: nil)
        if let resume = context.resumePoint {
            progress = resume.progress
            try module.load(try resumeWeights("\(resume.folder)/model.safetensors"))
            let optimizerFile = "\(resume.folder)/optimizer.safetensors"
            if FileManager.default.fileExists(atPath: optimizerFile) { try optimizer.loadState(try resumeWeights(optimizerFile)) }
            for (name, stream) in streams {
                guard let words = progress.streams[name] else { throw RunError("\(resume.folder)/state.json lacks the '\(name)' random stream") }
                stream.restore(words)
            }
            log("\(stage): resumed at epoch \(progress.epoch + 1), batch \(progress.batch), step \(progress.step)")
        }
        let every = context.recipe.checkpoint.everySteps
        let perEpoch = loader.batchesPerEpoch
        let base = context.globalStepBase
        let batchSize = loader.batchSize
        // Steps and epochs are counted from 1 everywhere (metrics.h5, TensorBoard, the log,
        // checkpoints): row `step` is the stage's step-th optimizer step, in epoch `epoch`;
        // `global_step` (TensorBoard's step) counts the steps of the run's stages before it too.
        let columns = ["step", "epoch", "global_step", "loss", "lr", "images_per_s", "wall_time"]
        // The diagnostics the first step reports fix the table's extra columns (a missing one is NaN).
        var diagnosticKeys: [String]?
        while progress.epoch < epochs {
            module.train()
            let epochStart = DispatchTime.now().uptimeNanoseconds
            let elapsedBefore = progress.sums["seconds"] ?? 0
            let iterator = loader.iterate(epoch: progress.epoch, from: progress.batch)
            var stepStart = DispatchTime.now().uptimeNanoseconds
            while let batch = try iterator.next() {
                let lr = schedule.value(at: progress.step)
                optimizer.learningRate = Float(lr)
                if let weightDecaySchedule { optimizer.weightDecay = Float(weightDecaySchedule.value(at: progress.step)) }
                beforeStep(progress.step)
                Distributed.stepRows = (batch.rowOffset, batch.globalRows)
                exchange?.prepare()
                let output = step(batch)
                Distributed.stepRows = nil
                // Spread over processes: the global batch's loss, count and diagnostics (each
                // process's share weighted by its rows), the same on every process.
                let share = DataParallel.combine(output, rows: batch.labels.count)
                let loss = share.loss
                guard loss.isFinite else {
                    exchange?.cancel()
                    Autograd.discardTape()
                    try? context.metrics.flush()
                    throw RunError("""
                        \(context.stagePath): the loss is \(loss.isNaN ? "NaN" : loss > 0 ? "infinite" : "-infinite") at step \(progress.step + 1) (epoch \(progress.epoch + 1), batch \(progress.batch + 1)); training stopped. \
                        Lower \(context.stagePath).\(learningRateKey) (now \(String(format: "%g", schedule.base))) or set \(context.stagePath).gradient_clip. \
                        metrics.h5 holds every step before this one. The run is deterministic, so --resume would meet the same loss: \
                        run the recipe again with the change (for example --set \(context.stagePath).\(learningRateKey)=\(String(format: "%g", schedule.base / 10))).
                        """)
                }
                // Spread over processes: every process's gradients, weighted by its share of the
                // batch, summed in buckets that start during backward.
                exchange?.weight = Float(batch.labels.count) / Float(share.rows)
                output.loss.backward()
                var diagnostics = share.diagnostics
                if let exchange {
                    let (seconds, overlapped) = exchange.finish()
                    diagnostics["allreduce_seconds"] = seconds
                    diagnostics["allreduce_overlapped"] = overlapped
                }
                if let clip = gradientClip { _ = clipGradientNorm(module.parameters, maxNorm: clip) }
                optimizer.step()
                optimizer.zeroGrad()
                afterStep(progress.step)
                let now = DispatchTime.now().uptimeNanoseconds
                let seconds = Double(now - stepStart) / 1e9
                stepStart = now
                progress.sums["loss", default: 0] += Double(loss)
                progress.sums["batches", default: 0] += 1
                progress.sums["seen", default: 0] += Double(share.rows)
                if let correct = share.correct { progress.sums["correct", default: 0] += Double(correct) }
                progress.sums["seconds"] = elapsedBefore + Double(now - epochStart) / 1e9
                let wall = Date().timeIntervalSince1970
                let keys = diagnosticKeys ?? diagnostics.keys.filter { !columns.contains($0) }.sorted()
                diagnosticKeys = keys
                let extra = keys.map { diagnostics[$0] ?? .nan }
                progress.step += 1
                let global = base + progress.step
                context.metrics.append("\(stage)/steps", columns: columns + keys,
                                       values: [Double(progress.step), Double(progress.epoch + 1), Double(global), Double(loss), lr,
                                                Double(share.rows) / seconds, wall] + extra)
                for (key, value) in zip(keys, extra) { context.events.scalar("\(stage)/\(key)", value, step: global, wallTime: wall) }
                context.events.scalar("\(stage)/loss", Double(loss), step: global, wallTime: wall)
                context.events.scalar("\(stage)/lr", lr, step: global, wallTime: wall)
                context.events.scalar("\(stage)/images_per_s", Double(share.rows) / seconds, step: global, wallTime: wall)
                progress.batch += 1
                let rate = progress.sums["seen"]! / Swift.max(progress.sums["seconds"]!, 1e-9)
                let meanLoss = progress.sums["loss"]! / progress.sums["batches"]!
                let left = Double((epochs - progress.epoch) * perEpoch - progress.batch) * Double(batchSize) / rate
                let done = Double(progress.epoch * perEpoch + progress.batch) / Double(Swift.max(epochs * perEpoch, 1))
                log.progress(
                    bar: String(format: "%@ epoch %d/%d %@ step %d/%d  loss %.4f  %.0f img/s  %@ left", stage, progress.epoch + 1, epochs,
                                progressBar(done), progress.batch, perEpoch, meanLoss, rate, formatDuration(left)),
                    line: String(format: "%@: epoch %d/%d batch %d/%d  loss %.4f  %.0f img/s  lr %.2e  about %@ left", stage, progress.epoch + 1,
                                 epochs, progress.batch, perEpoch, meanLoss, rate, lr, formatDuration(left)))
                let stopping = StopSignal.stopRequested()
                if progress.step % every == 0 || stopping {
                    try checkpoint(&progress, "epoch \(progress.epoch + 1), batch \(progress.batch)")
                }
                if stopping { throw StopSignal.interruption(stage: stage, step: progress.step) }
            }
            let report = try endOfEpoch(progress.epoch, progress.sums)
            context.metrics.append("\(stage)/epochs", columns: ["epoch", "global_step"] + report.columns.map(\.key),
                                   values: [Double(progress.epoch + 1), Double(base + progress.step)] + report.columns.map(\.value))
            for (key, value) in report.columns { context.events.scalar("\(stage)/epoch_\(key)", value, step: base + progress.step) }
            log(report.line)
            if let score = report.score, context.recipe.checkpoint.keepBest,
               progress.best.map({ report.higherIsBetter ? score > $0 : score < $0 }) ?? true {
                progress.best = score
                try context.checkpoints.saveWeights("best.safetensors", module.stateDict(),
                                                    metadata: context.weightsMetadata.merging(["stage": stage, "epoch": String(progress.epoch + 1),
                                                                                               "score": String(score), "encoder_prefix": encoderPrefix]) { $1 })
            }
            progress.epoch += 1
            progress.batch = 0
            progress.sums = [:]
            try context.metrics.flush()
            try context.events.flush()
            // A signal during the epoch's evaluation: stop at the start of the next epoch.
            if progress.epoch < epochs && StopSignal.stopRequested() {
                try checkpoint(&progress, "end of epoch \(progress.epoch)")
                throw StopSignal.interruption(stage: stage, step: progress.step)
            }
        }
        try printEpochTable()
        return progress.step
    }

    /// A resumable checkpoint of `progress` (with the random streams' states), announced with `place`.
    func checkpoint(_ progress: inout StageProgress, _ place: String) throws {
        progress.streams = streams.mapValues(\.stateWords)
        try context.checkpoint(progress, module: module, optimizer: optimizer, metadata: ["encoder_prefix": encoderPrefix])
        context.log("\(context.stageName): checkpoint at step \(progress.step) (\(place))")
    }

    /// The stage's epochs as a table (read back from metrics.h5, so a resumed run shows them all).
    func printEpochTable() throws {
        let columns = try context.metrics.read("\(context.stageName)/epochs")
        guard let epochs = columns["epoch"], !epochs.isEmpty else { return }
        let names = columns.keys.filter { $0 != "epoch" && $0 != "global_step" }.sorted { (Self.columnOrder[$0] ?? 99, $0) < (Self.columnOrder[$1] ?? 99, $1) }
        let rows = epochs.indices.map { i in
            [String(Int(epochs[i]))] + names.map { name in
                let v = columns[name]![i]
                return name.contains("top") ? String(format: "%.2f%%", 100 * v) : name.contains("seconds") || name.contains("images")
                    ? String(format: "%.0f", v) : String(format: "%.4f", v)
            }
        }
        context.log("\(context.stageName): summary")
        context.log.table(["epoch"] + names.map { $0.replacingOccurrences(of: "_", with: " ") }, rows)
    }

    static let columnOrder = ["loss": 0, "knn_top1": 1, "train_top1": 1, "test_top1": 2, "test_top5": 3, "seconds": 8, "images_per_s": 9]
}

func progressBar(_ fraction: Double, width: Int = 20) -> String {
    let filled = Swift.max(0, Swift.min(width, Int((fraction * Double(width)).rounded(.down))))
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
}

/// Reads a checkpoint's weights for resume, naming the file in errors.
func resumeWeights(_ path: String) throws -> [String: Tensor] {
    do { return try WeightFiles.read(path: path) } catch {
        throw RunError("cannot resume from \(path): \(error)")
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s / 60 % 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}

/// A step's figures over the global batch when the run is spread over processes.
enum DataParallel {
    struct Share {
        var loss: Float
        var rows: Int
        var correct: Int?
        var diagnostics: [String: Double]
    }

    /// The loss, correct count and diagnostics of the global batch: each process's figures
    /// weighted by its `rows`, summed over processes (one process: its own figures).
    static func combine(_ output: StepOutput, rows: Int) -> Share {
        let local = output.loss.item
        guard Distributed.isMultiProcess else { return Share(loss: local, rows: rows, correct: output.correct, diagnostics: output.diagnostics) }
        let keys = output.diagnostics.keys.sorted()
        let weight = Double(rows)
        let sums = Distributed.sum([weight, Double(local) * weight, Double(output.correct ?? 0)] + keys.map { output.diagnostics[$0]! * weight })
        let total = sums[0]
        return Share(loss: Float(sums[1] / total), rows: Int(total), correct: output.correct.map { _ in Int(sums[2]) },
                     diagnostics: Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, sums[3 + $0] / total) }))
    }
}
