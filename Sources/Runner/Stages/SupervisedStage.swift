import Data
import Encoders
import Evaluation
import Foundation
import NN
import TensorCore

/// `supervised`: cross-entropy training of the encoder's logits, with test top-1/top-5 after
/// every epoch. Defaults are the reference recipe (shared/reference/REFERENCE.md): AdamW 1e-3,
/// weight decay 0.05 on every parameter, batch 256, per-step cosine to 0, per-image flips.
public struct SupervisedStage: Stage {
    public static let kind = "supervised"
    public static let summary = "train the encoder and its classification head with cross-entropy; test top-1/top-5 per epoch"

    public var training = TrainingSettings()
    public var labelSmoothing = 0.0
    public var evalBatchSize = 1000

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(TrainingSettings.keys + ["label_smoothing", "eval_batch_size"])
        training = try TrainingSettings(c, defaults: training)
        labelSmoothing = try c.value("label_smoothing", labelSmoothing)
        try c.check((0..<1).contains(labelSmoothing), "label_smoothing", "must be in [0, 1)")
        evalBatchSize = try c.value("eval_batch_size", evalBatchSize)
        try c.check(evalBatchSize > 0, "eval_batch_size", "must be positive")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(training.fields + [("label_smoothing", labelSmoothing), ("eval_batch_size", evalBatchSize)])
    }

    public func validate(_ recipe: Recipe) throws { try training.validate(recipe) }

    public func run(_ context: RunContext) throws -> [String: Double] {
        try train(context.encoder, context)
    }

    func train(_ model: some HiddenLayerEncoder, _ context: RunContext) throws -> [String: Double] {
        let data = context.data
        let seed = context.recipe.seed &+ UInt64(context.stageIndex)
        let loader = training.loader(data, seed: seed)
        let epochs = training.epochs
        context.log("\(context.stageName): \(epochs) epochs of \(loader.batchesPerEpoch) steps, batch \(training.batchSize), \(data.train.count) training images, \(training.optimizer) lr \(training.lr)")
        let loop = training.loop(context, module: model, loader: loader)
        var last: (top1: Double, top5: Double, loss: Double) = (0, 0, 0)
        let steps = try loop.run(step: { batch in
            let logits = model.hidden(batch.images, layer: "logits")
            let loss = logits.crossEntropy(.labels(batch.labels), labelSmoothing: Float(labelSmoothing))
            let predicted = logits.topK(1).indices.values
            return StepOutput(loss: loss, correct: zip(predicted, batch.labels).filter { $0 == $1 }.count)
        }, endOfEpoch: { epoch, sums in
            let (top1, top5) = classificationAccuracy(model, on: data.test, mean: data.mean, std: data.std, batchSize: evalBatchSize)
            let loss = sums["loss", default: 0] / Swift.max(sums["batches", default: 1], 1)
            let trainTop1 = sums["correct", default: 0] / Swift.max(sums["seen", default: 1], 1)
            let seconds = sums["seconds", default: 0]
            let rate = sums["seen", default: 0] / Swift.max(seconds, 1e-9)
            last = (top1, top5, loss)
            return EpochReport(columns: ["loss": loss, "train_top1": trainTop1, "test_top1": top1, "test_top5": top5,
                                         "seconds": seconds, "images_per_s": rate],
                               score: top1, higherIsBetter: true,
                               line: String(format: "%@: epoch %d/%d  loss %.4f  train top-1 %.2f%%  test top-1 %.2f%%  top-5 %.2f%%  %.1f s  %.0f img/s",
                                            context.stageName, epoch + 1, epochs, loss, 100 * trainTop1, 100 * top1, 100 * top5, seconds, rate))
        })
        let confusion = confusionMatrix(model, on: data.test, mean: data.mean, std: data.std, classes: data.classNames.count, batchSize: evalBatchSize)
        try context.metrics.results(context.stageName, scalars: ["test_top1": last.top1, "test_top5": last.top5, "final_loss": last.loss],
                                    arrays: ["confusion": (confusion, [data.classNames.count, data.classNames.count])],
                                    strings: ["class_names": data.classNames])
        return ["test_top1": last.top1, "test_top5": last.top5, "final_loss": last.loss, "steps": Double(steps)]
    }
}
