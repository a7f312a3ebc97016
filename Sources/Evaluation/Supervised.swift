import Data
import Dispatch
import Encoders
import Foundation
import NN
import TensorCore

/// Settings of the supervised stage; the defaults are the reference recipe of
/// shared/reference/REFERENCE.md (AdamW 1e-3, weight decay 0.05, batch 256, per-step cosine to 0
/// without warmup, per-image horizontal flips, 5 epochs).
public struct SupervisedConfig: Codable, Equatable, Sendable {
    public var epochs = 5
    public var batchSize = 256
    public var learningRate: Double = 1e-3
    public var minLearningRate: Double = 0
    public var warmupEpochs = 0
    public var weightDecay: Float = 0.05
    /// Decay every parameter (as torch.optim.AdamW(model.parameters()) in the reference) instead
    /// of exempting biases, norms, position embeddings and class tokens.
    public var decayAll = true
    public var betas: [Float] = [0.9, 0.999]
    public var labelSmoothing: Float = 0
    public var horizontalFlip = true
    public var gradientClip: Float?
    public var evaluationBatchSize = 1000
    public var seed: UInt64 = 0

    public init() {}
}

/// What one epoch did.
public struct EpochSummary: Codable, Sendable {
    public var epoch: Int
    public var loss: Double
    public var trainTop1: Double
    public var testTop1: Double
    public var testTop5: Double
    public var seconds: Double
    public var imagesPerSecond: Double
    public var learningRate: Double
}

/// Top-1 and top-5 accuracy of `model`'s logits on `dataset` (evaluation mode, no tape).
public func classificationAccuracy(_ model: some HiddenLayerEncoder, on dataset: Dataset, mean: [Float], std: [Float],
                                   batchSize: Int = 1000) -> (top1: Double, top5: Double) {
    let wasTraining = model.isTraining
    model.eval()
    defer { model.train(wasTraining) }
    let loader = DataLoader(dataset, batchSize: batchSize, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
    var top1 = 0, top5 = 0
    for batch in loader {
        let logits = Autograd.noGrad { model.hidden(batch.images, layer: "logits") }
        let (_, best) = logits.topK(Swift.min(5, logits.shape[1]))
        let k = best.shape[1]
        for (row, label) in batch.labels.enumerated() {
            if best.values[row * k] == label { top1 += 1 }
            if best.values[(row * k)..<((row + 1) * k)].contains(label) { top5 += 1 }
        }
    }
    return (Double(top1) / Double(dataset.count), Double(top5) / Double(dataset.count))
}

/// Trains an encoder's logits with cross-entropy: the `supervised` stage.
public final class SupervisedTrainer<Model: HiddenLayerEncoder> {
    public let model: Model
    public let config: SupervisedConfig
    public let train: Dataset
    public let test: Dataset
    public let mean: [Float], std: [Float]
    public let optimizer: AdamW
    public let schedule: CosineSchedule
    public let loader: DataLoader
    public private(set) var step = 0
    let log: (String) -> Void

    public init(model: Model, train: Dataset, test: Dataset, mean: [Float], std: [Float], config: SupervisedConfig,
                log: @escaping (String) -> Void = { print($0) }) {
        self.model = model
        self.config = config
        self.train = train
        self.test = test
        self.mean = mean
        self.std = std
        self.log = log
        optimizer = AdamW(model.parameters, learningRate: Float(config.learningRate), betas: (config.betas[0], config.betas[1]),
                          weightDecay: config.weightDecay, decayAll: config.decayAll)
        loader = DataLoader(train, batchSize: config.batchSize, shuffle: true, dropLast: true, mean: mean, std: std,
                            horizontalFlip: config.horizontalFlip, seed: config.seed)
        schedule = CosineSchedule(base: config.learningRate, final: config.minLearningRate,
                                  totalSteps: loader.batchesPerEpoch * config.epochs,
                                  warmupSteps: loader.batchesPerEpoch * config.warmupEpochs)
    }

    /// Runs every epoch, logging one summary line each.
    public func run() -> [EpochSummary] {
        (0..<config.epochs).map { _ in runEpoch() }
    }

    public func runEpoch() -> EpochSummary {
        model.train()
        let epoch = loader.epoch
        var lossSum = 0.0, correct = 0, seen = 0
        var lr = 0.0
        let start = DispatchTime.now().uptimeNanoseconds
        for batch in loader {
            lr = schedule.value(at: step)
            optimizer.learningRate = Float(lr)
            let logits = model.hidden(batch.images, layer: "logits")
            let loss = logits.crossEntropy(.labels(batch.labels), labelSmoothing: config.labelSmoothing)
            loss.backward()
            if let clip = config.gradientClip { clipGradientNorm(model.parameters, maxNorm: clip) }
            optimizer.step()
            optimizer.zeroGrad()
            lossSum += Double(loss.item)
            correct += zip(logits.topK(1).indices.values, batch.labels).filter { $0 == $1 }.count
            seen += batch.labels.count
            step += 1
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let (top1, top5) = classificationAccuracy(model, on: test, mean: mean, std: std, batchSize: config.evaluationBatchSize)
        let summary = EpochSummary(epoch: epoch + 1, loss: lossSum / Double(Swift.max(loader.batchesPerEpoch, 1)),
                                   trainTop1: Double(correct) / Double(Swift.max(seen, 1)), testTop1: top1, testTop5: top5,
                                   seconds: seconds, imagesPerSecond: Double(seen) / seconds, learningRate: lr)
        log(String(format: "epoch %d/%d  loss %.4f  train top-1 %.2f%%  test top-1 %.2f%%  top-5 %.2f%%  %.1f s  %.0f img/s  lr %.2e",
                   summary.epoch, config.epochs, summary.loss, 100 * summary.trainTop1, 100 * top1, 100 * top5,
                   seconds, summary.imagesPerSecond, lr))
        return summary
    }
}
