import Data
import Encoders
import NN
import Objectives

/// `objective: {kind: byol}`: BYOL (Grill et al. 2020) with the paper's heads (projector and
/// predictor 4096 wide, 256 out), tau 0.99 on a cosine to 1 (the paper's value for short runs) and
/// its two asymmetric views (blur 1.0 / 0.1, solarisation 0 / 0.2, crops of 8-100% of the area).
/// Trained with AdamW (the paper's LARS at 4096 images a batch does not transfer to batch 256 and
/// a ViT; lr and weight decay follow DINO's ViT recipe).
public struct BYOLSettings: ObjectiveSettings {
    public static let kind = "byol"
    public static let summary = "BYOL: an online network predicts an EMA target's projection of another view (Grill et al. 2020)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.minLr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs) = (5e-4, 1e-6, [0.9, 0.999], 0.04, 1, 3)
        (t.decayAll, t.horizontalFlip, t.gradientClip) = (false, false, 3.0)
        return t
    }

    public static var augmentDefaults: AugmentSection {
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.blur, a.solarize) = ([0.08, 1.0], 0, [1.0, 0.1, 0.0], [0.0, 0.2, 0.0])
        return a
    }

    public var config = BYOL.Config()
    public var augment = BYOLSettings.augmentDefaults

    public init() {}

    public static let fields: [Field<BYOLSettings>] = [
        .value("hidden_layer", \.config.hiddenLayer, "the encoder output the projector reads"),
        .value("projection_size", \.config.projectionSize, "projector and predictor output width", .positive),
        .value("projection_hidden_size", \.config.projectionHiddenSize, "projector and predictor hidden width", .positive),
        .value("momentum", \.config.momentum, "the target's EMA momentum tau", .that({ $0 >= 0 && $0 <= 1 }) { _ in
            "is the target's EMA momentum tau: give a number in [0, 1], e.g. 0.99"
        }),
        .choice("momentum_schedule", \.config.momentumSchedule, "cosine (tau to 1) | constant"),
        .section("augment", \.augment, "the two views (defaults: global_scale [0.08, 1.0], blur [1.0, 0.1, 0.0], solarize [0.0, 0.2, 0.0], no local crops)"),
    ]

    public func check() -> (key: String, problem: String)? {
        augment.localCrops == 0 ? nil : ("augment", "BYOL trains on two views: set augment.local_crops to 0")
    }

    public static var benchmarks: [ObjectiveBenchmark<BYOLSettings>] {
        // torch_step_bench.py's byol row: byol-pytorch 0.9.1's BYOL(vit(channels=3), image_size=28, hidden_layer='to_latent',
        // use_simplicial_embeddings=False): heads 4096 -> 256, constant tau 0.99, one SimCLR-style augmentation for both
        // views (colour jitter 0.8/0.8/0.8/0.2 with p 0.3, grayscale 0.2, flip, 3x3 blur of sigma 1-2 with p 0.2, crops of 8-100%).
        var byolPytorch = BYOLSettings()
        byolPytorch.config.momentumSchedule = .constant
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.jitter, a.jitterP, a.grayscale) = ([0.08, 1.0], 0, [0.8, 0.8, 0.8, 0.2], 0.3, 0.2)
        (a.blur, a.blurKernel, a.blurSigma, a.solarize) = ([0.2, 0.2, 0.0], 3, [1.0, 2.0], [0.0, 0.0, 0.0])
        byolPytorch.augment = a
        return [ObjectiveBenchmark("byol", BYOLSettings()),
                ObjectiveBenchmark("byol-pytorch", byolPytorch, channels: 3, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])]
    }

    public func validate(_ recipe: Recipe) throws {
        try checkHiddenLayer(config.hiddenLayer, recipe)
        try augment.validate(recipe)
    }

    public func views(_ recipe: Recipe) -> ViewPipeline? { augment.pipeline(imageSize: recipe.data.imageSize) }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        BYOL(online: encoder, target: newEncoder(), imageShape: recipe.data.imageShape,
             config: config, initializer: initializer)
    }
}
