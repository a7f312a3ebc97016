import Data
import Encoders
import Evaluation
import Foundation
import NN
import TensorCore

/// `supervised`: cross-entropy training of the encoder's logits, with test top-1/top-5 after
/// every epoch. Defaults are the reference recipe (docs/REFERENCE.md): AdamW 1e-3,
/// weight decay 0.05 on every parameter, batch 256, per-step cosine to 0, per-image flips.
public struct SupervisedStage: Stage {
    public static let kind = "supervised"
    public static let trainsEncoder = true
    public static let summary = "train the encoder and its classification head with cross-entropy; test top-1/top-5 per epoch"

    public var settings = ClassifierTraining(finetune: false)

    public init() {}
    public static let fields = ClassifierTraining.fields.map { $0.lifted(\SupervisedStage.settings) }
    public func validate(_ recipe: Recipe) throws { try settings.training.validate(recipe) }
    public func run(_ context: RunContext) throws -> [String: Double] { try settings.train(context.encoder, context) }
}

/// `finetune`: the pretrained encoder and a fresh classification head trained end to end with
/// cross-entropy, with the official MAE fine-tuning's habits scaled to short runs: a lower
/// learning rate (5e-4), layer-wise learning-rate decay (0.65: block i of d learns at
/// 0.65^(d + 1 - (i + 1)) of the head's rate, the patch embedding at 0.65^(d + 1)), label
/// smoothing 0.1, no weight decay on biases, norms, positions and the class token, and the head
/// re-initialised (truncated normal, std 2e-5).
public struct FinetuneStage: Stage {
    public static let kind = "finetune"
    public static let trainsEncoder = true
    public static let summary = "fine-tune the whole encoder with a fresh head (layer-wise lr decay, label smoothing); test top-1/top-5 per epoch"

    public var settings = ClassifierTraining(finetune: true)

    public init() {}
    public static let fields = (ClassifierTraining.fields + ClassifierTraining.finetuneFields).map { $0.lifted(\FinetuneStage.settings) }
    public func validate(_ recipe: Recipe) throws { try settings.training.validate(recipe) }
    public func run(_ context: RunContext) throws -> [String: Double] { try settings.train(context.encoder, context) }
}

/// What the supervised and finetune stages share: classification training of the encoder's logits.
public struct ClassifierTraining {
    public var training = TrainingSettings()
    public var labelSmoothing = 0.0
    public var evalBatchSize = 1000
    /// Layer-wise learning-rate decay (nil: every layer at the full rate).
    public var layerDecay: Double?
    /// Re-initialise the classification head before training.
    public var resetHead = false
    let finetune: Bool

    public init(finetune: Bool) {
        self.finetune = finetune
        if finetune {
            (training.lr, training.warmupEpochs, training.epochs, training.decayAll) = (5e-4, 1, 3, false)
            (labelSmoothing, layerDecay, resetHead) = (0.1, 0.65, true)
        }
    }

    static let fields: [Field<ClassifierTraining>] = TrainingSettings.fields.map { $0.lifted(\ClassifierTraining.training) } + [
        .value("label_smoothing", \.labelSmoothing, "cross-entropy label smoothing", .fraction),
        .value("eval_batch_size", \.evalBatchSize, "images per batch of the per-epoch test evaluation", .positive),
    ]

    static let finetuneFields: [Field<ClassifierTraining>] = [
        .nullable("layer_decay", \.layerDecay, "layer-wise lr decay: block i of d learns at decay^(d - i) of the head's rate; null: off",
                  .that({ $0 > 0 && $0 <= 1 }) { _ in "must be in (0, 1], or null for none" }),
        .value("reset_head", \.resetHead, "re-initialise the classification head (truncated normal, std 2e-5)"),
    ]

    /// Learning-rate scales per parameter: the patch embedding, positions and class token are
    /// layer 0, block i is layer i + 1, the rest (final norm, head) layer depth + 1.
    public static func layerScales(_ model: Module, depth: Int, decay: Double) -> [(Parameter, Float)] {
        model.namedParameters().map { name, p in
            var layer = depth + 1
            if name.hasPrefix("to_patch_embedding") || name.hasPrefix("pos_embedding") || name.hasPrefix("cls_token") {
                layer = 0
            } else if name.hasPrefix("transformer.layers."), let i = Int(name.split(separator: ".")[2]) {
                layer = i + 1
            }
            return (p, Float(Foundation.pow(decay, Double(depth + 1 - layer))))
        }
    }

    func train(_ model: some HiddenLayerEncoder, _ context: RunContext) throws -> [String: Double] {
        let data = context.data
        if resetHead, let classifier = model as? any PatchTransformer, context.resumePoint == nil {
            let initializer = Initializer(scheme: .official, seed: context.recipe.seed &+ UInt64(context.stageIndex) &+ 0x4EAD)
            classifier.head.weight.assign(initializer.truncatedNormal(classifier.head.weight.shape, std: 2e-5))
            if let bias = classifier.head.bias { bias.assign(Tensor.zeros(bias.shape)) }
        }
        if let layerDecay {
            if let depth = context.recipe.encoder.settings.layerDecayDepth {
                for (p, scale) in Self.layerScales(model, depth: depth, decay: layerDecay) { p.learningRateScale = scale }
            } else {
                context.log("\(context.stageName): layer_decay does not apply to the \(context.recipe.encoder.kind) encoder (no ViT blocks); every layer learns at the full rate")
            }
        }
        defer { for p in model.parameters { p.learningRateScale = 1 } }
        let seed = context.recipe.seed &+ UInt64(context.stageIndex)
        let loader = training.loader(data, seed: seed)
        let epochs = training.epochs
        context.log("\(context.stageName): \(counted(epochs, "epoch")) of \(counted(loader.batchesPerEpoch, "step")), batch \(training.batchSize), \(counted(data.train.count, "training image")), \(training.optimizer) lr \(training.lr)")
        let loop = training.loop(context, module: model, loader: loader)
        var last: (top1: Double, top5: Double, loss: Double) = (0, 0, 0)
        let testLabels = (0..<data.test.count).map { data.test.label(at: $0) }
        func testLogits() throws -> Tensor {
            try extractFeatures(model, layer: "logits", dataset: data.test, mean: data.mean, std: data.std, batchSize: evalBatchSize)
        }
        var lastLogits: Tensor?
        let steps = try loop.run(step: { batch in
            let logits = model.hidden(batch.images, layer: "logits")
            let loss = logits.crossEntropy(.labels(batch.labels), labelSmoothing: Float(labelSmoothing))
            let predicted = logits.topK(1).indices.values
            return StepOutput(loss: loss, correct: zip(predicted, batch.labels).filter { $0 == $1 }.count)
        }, endOfEpoch: { epoch, sums in
            let logits = try testLogits()
            lastLogits = logits
            let (top1, top5) = topAccuracy(logits, labels: testLabels)
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
        // The last epoch's test logits (one evaluation pass per epoch, none extra for the matrix).
        let confusion = confusionCounts(try lastLogits ?? testLogits(), labels: testLabels, classes: data.classNames.count)
        try context.metrics.results(context.stageName, scalars: ["test_top1": last.top1, "test_top5": last.top5, "final_loss": last.loss],
                                    arrays: ["confusion": (confusion, [data.classNames.count, data.classNames.count])],
                                    strings: ["class_names": data.classNames])
        return ["test_top1": last.top1, "test_top5": last.top5, "final_loss": last.loss, "steps": Double(steps)]
    }
}
