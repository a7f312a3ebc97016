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

    public var epochs = 5
    public var batchSize = 256
    public var optimizer = "adamw"
    public var lr = 1e-3
    public var minLr = 0.0
    public var warmupEpochs = 0
    public var weightDecay = 0.05
    public var betas = [0.9, 0.999]
    public var decayAll = true
    public var momentum = 0.9
    public var labelSmoothing = 0.0
    public var horizontalFlip = true
    public var gradientClip: Double?
    public var evalBatchSize = 1000

    static let keys = ["epochs", "batch_size", "optimizer", "lr", "min_lr", "warmup_epochs", "weight_decay", "betas", "decay_all",
                       "momentum", "label_smoothing", "horizontal_flip", "gradient_clip", "eval_batch_size"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        epochs = try c.value("epochs", epochs)
        try c.check(epochs > 0, "epochs", "must be positive, got \(epochs)")
        batchSize = try c.value("batch_size", batchSize)
        try c.check(batchSize > 0, "batch_size", "must be positive, got \(batchSize)")
        optimizer = try c.choice("optimizer", ["adamw", "sgd"], optimizer)
        lr = try c.value("lr", lr)
        try c.check(lr > 0 && lr.isFinite, "lr", "must be a positive number, got \(lr)")
        minLr = try c.value("min_lr", minLr)
        warmupEpochs = try c.value("warmup_epochs", warmupEpochs)
        try c.check(warmupEpochs >= 0 && warmupEpochs <= epochs, "warmup_epochs", "must be between 0 and epochs (\(epochs))")
        weightDecay = try c.value("weight_decay", weightDecay)
        try c.check(weightDecay >= 0, "weight_decay", "must not be negative")
        betas = try c.value("betas", betas)
        try c.check(betas.count == 2 && betas.allSatisfy { (0..<1).contains($0) }, "betas", "give two numbers in [0, 1), e.g. [0.9, 0.999]")
        decayAll = try c.value("decay_all", decayAll)
        momentum = try c.value("momentum", momentum)
        labelSmoothing = try c.value("label_smoothing", labelSmoothing)
        try c.check((0..<1).contains(labelSmoothing), "label_smoothing", "must be in [0, 1)")
        horizontalFlip = try c.value("horizontal_flip", horizontalFlip)
        gradientClip = try c.optional("gradient_clip")
        try c.check((gradientClip ?? 1) > 0, "gradient_clip", "must be positive (or null for none)")
        evalBatchSize = try c.value("eval_batch_size", evalBatchSize)
        try c.check(evalBatchSize > 0, "eval_batch_size", "must be positive")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["epochs": epochs,
                            "batch_size": batchSize,
                            "optimizer": optimizer,
                            "lr": lr,
                            "min_lr": minLr,
                            "warmup_epochs": warmupEpochs,
                            "weight_decay": weightDecay,
                            "betas": betas,
                            "decay_all": decayAll,
                            "momentum": momentum,
                            "label_smoothing": labelSmoothing,
                            "horizontal_flip": horizontalFlip,
                            "gradient_clip": gradientClip,
                            "eval_batch_size": evalBatchSize])
    }

    public func validate(_ recipe: Recipe) throws {
        let trainCount = recipe.data.trainSubset ?? 60000
        if batchSize > trainCount {
            throw RecipeIssue(path: ["batch_size"], message: "batch size \(batchSize) exceeds the \(trainCount) training images, so an epoch would have no full batch (data.train_subset)")
        }
    }

    public func run(_ context: RunContext) throws -> [String: Double] {
        try train(context.encoder, context)
    }

    func train(_ model: some HiddenLayerEncoder, _ context: RunContext) throws -> [String: Double] {
        let data = context.data
        let seed = context.recipe.seed &+ UInt64(context.stageIndex)
        let loader = DataLoader(data.train, batchSize: batchSize, shuffle: true, dropLast: true, mean: data.mean, std: data.std,
                                horizontalFlip: horizontalFlip, seed: seed)
        let optimizer: Optimizer = self.optimizer == "sgd"
            ? SGD(model.parameters, learningRate: Float(lr), momentum: Float(momentum), weightDecay: Float(weightDecay))
            : AdamW(model.parameters, learningRate: Float(lr), betas: (Float(betas[0]), Float(betas[1])), weightDecay: Float(weightDecay),
                    decayAll: decayAll)
        let schedule = CosineSchedule(base: lr, final: minLr, totalSteps: loader.batchesPerEpoch * epochs,
                                      warmupSteps: loader.batchesPerEpoch * warmupEpochs)
        context.log("\(context.stageName): \(epochs) epochs of \(loader.batchesPerEpoch) steps, batch \(batchSize), \(data.train.count) training images, \(self.optimizer) lr \(lr)")
        let loop = TrainingLoop(context: context, module: model, optimizer: optimizer, loader: loader, epochs: epochs,
                                schedule: schedule, gradientClip: gradientClip.map { Float($0) })
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
