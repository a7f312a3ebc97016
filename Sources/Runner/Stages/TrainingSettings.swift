import Data
import Foundation
import NN
import TensorCore

/// The optimisation keys every training stage (pretrain, supervised, finetune) shares, read from
/// the stage's own section: epochs, batch, optimizer, schedule, flips, clipping. The values here
/// are the supervised reference recipe's; objectives and finetune start from their own.
public struct TrainingSettings: RecipeSection {
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
    /// RandomResizedCrop's area range for the training images; nil: the evaluation transform.
    public var randomResizedCrop: [Double]?
    public var gradientClip: Double?

    public init() {}

    public static let fields: [Field<TrainingSettings>] = [
        .value("epochs", \.epochs, "passes over the training images", .positive),
        .value("batch_size", \.batchSize, "images a step; the last partial batch is dropped", .positive),
        .choice("optimizer", \.optimizer, ["adamw", "sgd", "lars"], "adamw | sgd | lars (layer-wise trust ratio 0.001, as MAE's linear probe; biases and norms skip the ratio and the decay)"),
        .value("lr", \.lr, "peak learning rate: per-step linear warmup, then a cosine to min_lr", .positive),
        .value("min_lr", \.minLr, "where the cosine ends", .nonNegative),
        .value("warmup_epochs", \.warmupEpochs, "epochs of linear warmup (per step)", where: { value, s in
            value >= 0 && value <= s.epochs ? nil : "must be between 0 and epochs (\(s.epochs)), got \(value)"
        }),
        .value("weight_decay", \.weightDecay, "decoupled weight decay (adamw), L2 (sgd)", .nonNegative),
        .nullable("weight_decay_end", \.weightDecayEnd, "a cosine weight-decay schedule from weight_decay to this (DINO: 0.4); null: constant",
                  .nonNegative),
        .value("betas", \.betas, "adamw's betas", .that({ $0.count == 2 && $0.allSatisfy { (0..<1).contains($0) } }) { _ in
            "give two numbers in [0, 1), e.g. [0.9, 0.999]"
        }),
        .value("decay_all", \.decayAll, "decay every parameter (vit-pytorch recipes); false exempts biases, norms, positions and the class token"),
        .value("momentum", \.momentum, "sgd's and lars' momentum", .fraction),
        .value("horizontal_flip", \.horizontalFlip, "flip each image with probability 0.5 (seeded)"),
        .nullable("random_resized_crop", \.randomResizedCrop, "train on torchvision's RandomResizedCrop(data.image_size, scale: [low, high], ratio 3/4 to 4/3) of each image, e.g. [0.08, 1.0] (supervised), [0.2, 1.0] (MAE); null: the evaluation transform (data.crop_pct)",
                  .that({ $0.count == 2 && $0[0] > 0 && $0[0] <= $0[1] && $0[1] <= 1 }) { _ in "give [low, high] area fractions with 0 < low <= high <= 1, e.g. [0.08, 1.0]" }),
        .nullable("gradient_clip", \.gradientClip, "the largest global gradient norm; null: no clipping", .positive),
    ]

    public func validate(_ recipe: Recipe) throws {
        if let trainCount = recipe.data.trainCount, batchSize > trainCount {
            throw RecipeIssue(path: ["batch_size"], message: "batch size \(batchSize) exceeds the \(trainCount) training images, so an epoch would have no full batch (data.train_subset)")
        }
    }

    /// The shuffled, flipped batches of `images` (the training split unless given; the last
    /// partial batch dropped).
    public func loader(_ data: RunData, seed: UInt64, images: Dataset? = nil) -> DataLoader {
        let loader = DataLoader(images ?? data.train, batchSize: batchSize, shuffle: true, dropLast: true, mean: data.mean, std: data.std,
                                horizontalFlip: horizontalFlip, seed: seed)
        // Spread over processes, each builds its share of every batch.
        loader.sharded = Distributed.isMultiProcess
        if let scale = randomResizedCrop {
            loader.trainTransform = ImageTransform(size: data.imageSize, kind: .randomResizedCrop(scale: scale, ratio: [3.0 / 4.0, 4.0 / 3.0]),
                                                   filter: data.filter)
        }
        return loader
    }

    public func makeOptimizer(_ parameters: [Parameter]) -> Optimizer {
        switch optimizer {
        case "sgd": return SGD(parameters, learningRate: Float(lr), momentum: Float(momentum), weightDecay: Float(weightDecay))
        case "lars": return LARS(parameters, learningRate: Float(lr), momentum: Float(momentum), weightDecay: Float(weightDecay))
        default:
            return AdamW(parameters, learningRate: Float(lr), betas: (Float(betas[0]), Float(betas[1])), weightDecay: Float(weightDecay),
                         decayAll: decayAll)
        }
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
