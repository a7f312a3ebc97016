import Data
import Foundation
import NN
import TensorCore

/// The optimisation keys every training stage (pretrain, supervised, finetune) shares, read from
/// the stage's own section: epochs, batch, optimizer, schedule, flips, clipping.
public struct TrainingSettings {
    public var epochs = 5
    public var batchSize = 256
    public var optimizer = "adamw"
    public var lr = 1e-3
    public var minLr = 0.0
    public var warmupEpochs = 0
    public var weightDecay = 0.05
    /// Where a cosine weight-decay schedule ends (DINO: 0.04 -> 0.4), or nil for a constant decay.
    public var weightDecayEnd: Double?
    public var betas = [0.9, 0.999]
    public var decayAll = true
    public var momentum = 0.9
    public var horizontalFlip = true
    public var gradientClip: Double?

    public static let keys = ["epochs", "batch_size", "optimizer", "lr", "min_lr", "warmup_epochs", "weight_decay", "weight_decay_end", "betas", "decay_all",
                              "momentum", "horizontal_flip", "gradient_clip"]

    public init() {}

    /// Reads the keys from `c`, with `defaults` for the absent ones.
    public init(_ c: KeyedDecodingContainer<RecipeKey>, defaults: TrainingSettings) throws {
        self = defaults
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
        if c.contains(RecipeKey("weight_decay_end")) { weightDecayEnd = try c.optional("weight_decay_end") }  // null: constant
        try c.check((weightDecayEnd ?? 0) >= 0, "weight_decay_end", "must not be negative (or null for a constant weight decay)")
        betas = try c.value("betas", betas)
        try c.check(betas.count == 2 && betas.allSatisfy { (0..<1).contains($0) }, "betas", "give two numbers in [0, 1), e.g. [0.9, 0.999]")
        decayAll = try c.value("decay_all", decayAll)
        momentum = try c.value("momentum", momentum)
        horizontalFlip = try c.value("horizontal_flip", horizontalFlip)
        if c.contains(RecipeKey("gradient_clip")) { gradientClip = try c.optional("gradient_clip") }  // null: no clipping
        try c.check((gradientClip ?? 1) > 0, "gradient_clip", "must be positive (or null for none)")
    }

    public var fields: [(String, any Encodable)] {
        [("epochs", epochs), ("batch_size", batchSize), ("optimizer", optimizer), ("lr", lr), ("min_lr", minLr),
         ("warmup_epochs", warmupEpochs), ("weight_decay", weightDecay), ("weight_decay_end", weightDecayEnd), ("betas", betas), ("decay_all", decayAll),
         ("momentum", momentum), ("horizontal_flip", horizontalFlip), ("gradient_clip", gradientClip)]
    }

    public func validate(_ recipe: Recipe) throws {
        let trainCount = recipe.data.trainSubset ?? 60000
        if batchSize > trainCount {
            throw RecipeIssue(path: ["batch_size"], message: "batch size \(batchSize) exceeds the \(trainCount) training images, so an epoch would have no full batch (data.train_subset)")
        }
    }

    /// The shuffled, flipped training batches (the last partial batch dropped).
    public func loader(_ data: RunData, seed: UInt64) -> DataLoader {
        DataLoader(data.train, batchSize: batchSize, shuffle: true, dropLast: true, mean: data.mean, std: data.std,
                   horizontalFlip: horizontalFlip, seed: seed)
    }

    public func makeOptimizer(_ parameters: [Parameter]) -> Optimizer {
        optimizer == "sgd"
            ? SGD(parameters, learningRate: Float(lr), momentum: Float(momentum), weightDecay: Float(weightDecay))
            : AdamW(parameters, learningRate: Float(lr), betas: (Float(betas[0]), Float(betas[1])), weightDecay: Float(weightDecay),
                    decayAll: decayAll)
    }

    /// Per-step warmup then cosine to min_lr.
    public func schedule(batchesPerEpoch: Int) -> CosineSchedule {
        CosineSchedule(base: lr, final: minLr, totalSteps: batchesPerEpoch * epochs, warmupSteps: batchesPerEpoch * warmupEpochs)
    }

    /// The loop over these settings; frozen parameters (EMA teachers) stay out of the optimizer.
    func loop(_ context: RunContext, module: Module, loader: DataLoader, streams: [String: RandomStream] = [:]) -> TrainingLoop {
        let perEpoch = loader.batchesPerEpoch
        return TrainingLoop(context: context, module: module, optimizer: makeOptimizer(module.parameters.filter { !$0.isFrozen }), loader: loader,
                            epochs: epochs, schedule: schedule(batchesPerEpoch: perEpoch), gradientClip: gradientClip.map { Float($0) },
                            streams: streams,
                            weightDecaySchedule: weightDecayEnd.map { CosineSchedule(base: weightDecay, final: $0, totalSteps: perEpoch * epochs) })
    }
}
