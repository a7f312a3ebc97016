import Data
import Encoders
import Foundation
import NN
import Objectives
import TensorCore

/// `augment:` inside a BYOL or DINO objective: how the views are made (the Data layer's
/// transforms, on the loader's thread). Two global views, then `local_crops` local ones; `blur`
/// and `solarize` give the probability for the first global, the second global and the local views.
public struct AugmentSection: Codable, Equatable {
    public var globalSize: Int?
    public var globalScale = [0.4, 1.0]
    public var localCrops = 0
    /// nil: the global views' size.
    public var localSize: Int?
    public var localScale = [0.05, 0.4]
    public var ratio = [3.0 / 4.0, 4.0 / 3.0]
    public var flip = 0.5
    public var jitter = [0.4, 0.4, 0.2, 0.1]
    public var jitterP = 0.8
    public var grayscale = 0.2
    public var blur = [1.0, 0.1, 0.5]
    public var blurKernel = 3
    public var blurSigma = [0.1, 2.0]
    public var solarize = [0.0, 0.2, 0.0]

    static let keys = ["global_size", "global_scale", "local_crops", "local_size", "local_scale", "ratio", "flip", "jitter", "jitter_p",
                       "grayscale", "blur", "blur_kernel", "blur_sigma", "solarize"]

    public init() {}

    public init(from decoder: Decoder) throws { try self.init(from: decoder, defaults: AugmentSection()) }

    init(from decoder: Decoder, defaults: AugmentSection) throws {
        self = defaults
        let c = try decoder.section(Self.keys)
        globalSize = try c.optional("global_size") ?? globalSize
        globalScale = try c.value("global_scale", globalScale)
        localCrops = try c.value("local_crops", localCrops)
        localSize = try c.optional("local_size") ?? localSize
        localScale = try c.value("local_scale", localScale)
        ratio = try c.value("ratio", ratio)
        flip = try c.value("flip", flip)
        jitter = try c.value("jitter", jitter)
        jitterP = try c.value("jitter_p", jitterP)
        grayscale = try c.value("grayscale", grayscale)
        blur = try c.value("blur", blur)
        blurKernel = try c.value("blur_kernel", blurKernel)
        blurSigma = try c.value("blur_sigma", blurSigma)
        solarize = try c.value("solarize", solarize)
        for (key, range) in [("global_scale", globalScale), ("local_scale", localScale)] {
            try c.check(range.count == 2 && range[0] > 0 && range[0] <= range[1] && range[1] <= 1, key,
                        "give [low, high] area fractions with 0 < low <= high <= 1, e.g. [0.4, 1.0]")
        }
        try c.check(ratio.count == 2 && ratio[0] > 0 && ratio[0] <= ratio[1], "ratio", "give [low, high] aspect ratios, e.g. [0.75, 1.3333]")
        try c.check(localCrops >= 0, "local_crops", "must not be negative")
        try c.check((globalSize ?? 1) > 0, "global_size", "must be positive")
        try c.check((localSize ?? 1) > 0, "local_size", "must be positive")
        try c.check(jitter.count == 4 && jitter.allSatisfy { $0 >= 0 } && jitter[3] <= 0.5, "jitter",
                    "give [brightness, contrast, saturation, hue] strengths (hue at most 0.5), e.g. [0.4, 0.4, 0.2, 0.1]")
        for (key, p) in [("flip", flip), ("jitter_p", jitterP), ("grayscale", grayscale)] {
            try c.check((0...1).contains(p), key, "is a probability: give a number in [0, 1]")
        }
        for (key, ps) in [("blur", blur), ("solarize", solarize)] {
            try c.check(ps.count == 3 && ps.allSatisfy { (0...1).contains($0) }, key,
                        "give three probabilities: first global view, second global view, local views, e.g. [1.0, 0.1, 0.5]")
        }
        try c.check(blurKernel > 0 && blurKernel % 2 == 1, "blur_kernel", "must be an odd number of pixels, e.g. 3")
        try c.check(blurSigma.count == 2 && blurSigma[0] > 0 && blurSigma[0] <= blurSigma[1], "blur_sigma", "give [low, high] with 0 < low <= high, e.g. [0.1, 2.0]")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["global_size": globalSize, "global_scale": globalScale, "local_crops": localCrops, "local_size": localSize,
                            "local_scale": localScale, "ratio": ratio, "flip": flip, "jitter": jitter, "jitter_p": jitterP,
                            "grayscale": grayscale, "blur": blur, "blur_kernel": blurKernel, "blur_sigma": blurSigma, "solarize": solarize])
    }

    /// Decodes `augment` from an objective section when present.
    static func decode(_ c: KeyedDecodingContainer<RecipeKey>, defaults: AugmentSection) throws -> AugmentSection {
        guard c.contains(RecipeKey("augment")) else { return defaults }
        return try AugmentSection(from: c.superDecoder(forKey: RecipeKey("augment")), defaults: defaults)
    }

    /// The pipeline for images of `imageSize`: two global views, then the local ones.
    public func pipeline(imageSize: Int) -> ViewPipeline {
        func view(_ size: Int, _ scale: [Double], _ kind: Int) -> ViewAugmentation {
            var v = ViewAugmentation(size: size, scale: (scale[0], scale[1]))
            v.ratio = (ratio[0], ratio[1])
            v.flip = flip
            v.jitter = ColorJitter(probability: jitterP, brightness: jitter[0], contrast: jitter[1], saturation: jitter[2], hue: jitter[3])
            v.grayscale = grayscale
            (v.blur, v.blurKernel, v.blurSigma) = (blur[kind], blurKernel, (blurSigma[0], blurSigma[1]))
            v.solarize = solarize[kind]
            return v
        }
        let g = globalSize ?? imageSize
        return ViewPipeline(views: [view(g, globalScale, 0), view(g, globalScale, 1)]
                            + Array(repeating: view(localSize ?? g, localScale, 2), count: localCrops))
    }

    /// Sizes must split into the encoder's patches and be large enough for the blur.
    func validate(_ recipe: Recipe) throws {
        // Patch encoders need whole patches; a CvT takes any size its strides do not shrink to nothing.
        let patch = recipe.encoder.kind == "cvt" ? 1 : recipe.encoder.patchSize
        let global = globalSize ?? recipe.data.imageSize
        for (key, size) in [("global_size", global), ("local_size", localSize ?? global)] where key == "global_size" || localCrops > 0 {
            if size % patch != 0 {
                throw RecipeIssue(path: ["augment", key], message: "\(size) pixels do not split into the encoder's \(patch)-pixel patches; use a multiple of \(patch)")
            }
            if blurKernel / 2 >= size {
                throw RecipeIssue(path: ["augment", "blur_kernel"], message: "a \(blurKernel)-pixel blur needs views larger than \(blurKernel / 2) pixels (\(key) is \(size))")
            }
        }
    }

}

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

    static let keys = ["kind", "hidden_layer", "projection_size", "projection_hidden_size", "momentum", "momentum_schedule", "augment"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        config.hiddenLayer = try c.value("hidden_layer", config.hiddenLayer)
        config.projectionSize = try c.value("projection_size", config.projectionSize)
        config.projectionHiddenSize = try c.value("projection_hidden_size", config.projectionHiddenSize)
        for (key, value) in [("projection_size", config.projectionSize), ("projection_hidden_size", config.projectionHiddenSize)] {
            try c.check(value > 0, key, "must be positive, got \(value)")
        }
        config.momentum = try c.value("momentum", config.momentum)
        try c.check(config.momentum >= 0 && config.momentum <= 1, "momentum", "is the target's EMA momentum tau: give a number in [0, 1], e.g. 0.99")
        config.momentumSchedule = MomentumSchedule(rawValue: try c.choice("momentum_schedule", ["cosine", "constant"], config.momentumSchedule.rawValue))!
        augment = try AugmentSection.decode(c, defaults: Self.augmentDefaults)
        try c.check(augment.localCrops == 0, "augment", "BYOL trains on two views: set augment.local_crops to 0")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": Self.kind, "hidden_layer": config.hiddenLayer, "projection_size": config.projectionSize,
                            "projection_hidden_size": config.projectionHiddenSize, "momentum": config.momentum,
                            "momentum_schedule": config.momentumSchedule.rawValue, "augment": augment])
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

/// `objective: {kind: dino}`: DINO (Caron et al. 2021) with the official loss, head (bottleneck,
/// weight-normalised last layer frozen for the first epoch), temperatures (student 0.1, teacher
/// 0.04 warmed up to 0.07), centring (0.9), teacher EMA (0.996 to 1 on a cosine), multi-crop and
/// weight-decay schedule (0.04 to 0.4). `mode: vit-pytorch` switches to vit-pytorch 1.7.14's Dino
/// (its head, temperatures 0.9 / 0.04, constant EMA 0.9, two local crops at the full size seen by
/// the student only) for comparison with the reference recipe.
public struct DINOSettings: ObjectiveSettings {
    public static let kind = "dino"
    public static let summary = "DINO: self-distillation of a centred, sharpened EMA teacher over multi-crop views (Caron et al. 2021)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.minLr, t.betas, t.weightDecay, t.weightDecayEnd, t.warmupEpochs, t.epochs) = (5e-4, 1e-6, [0.9, 0.999], 0.04, 0.4, 1, 3)
        (t.decayAll, t.horizontalFlip, t.gradientClip) = (false, false, 3.0)
        return t
    }

    public static var officialAugment: AugmentSection {
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.localSize, a.localScale) = ([0.4, 1.0], 6, 12, [0.05, 0.4])
        return a
    }

    /// vit-pytorch's Dino: one colour pipeline for all crops (jitter 0.8 with p 0.3, grayscale
    /// 0.2, flip, 3x3 blur sigma 1-2 with p 0.2), global crops of 50-100%, two local crops of
    /// 5-40% resized to the full size.
    public static var vitPytorchAugment: AugmentSection {
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.localScale) = ([0.5, 1.0], 2, [0.05, 0.4])
        (a.jitter, a.jitterP, a.grayscale, a.blur, a.blurSigma, a.solarize) = ([0.8, 0.8, 0.8, 0.2], 0.3, 0.2, [0.2, 0.2, 0.2], [1, 2], [0, 0, 0])
        return a
    }

    public var config = DINO.Config()
    public var augment = DINOSettings.officialAugment

    static let keys = ["kind", "mode", "hidden_layer", "out_dim", "hidden_dim", "bottleneck_dim", "head_layers", "norm_last_layer",
                       "student_temp", "teacher_temp", "warmup_teacher_temp", "warmup_teacher_temp_epochs", "center_momentum",
                       "teacher_momentum", "momentum_schedule", "freeze_last_layer_epochs", "augment"]

    public init() {
        (config.hiddenDim, config.outDim, config.warmupTeacherTemperatureEpochs) = (2048, 4096, 1)
    }

    public init(from decoder: Decoder) throws { try self.init(from: decoder, extraKeys: []) }

    /// Reads the DINO keys (and accepts `extraKeys`, which EsViT adds).
    init(from decoder: Decoder, extraKeys: [String]) throws {
        self.init()
        let c = try decoder.section(Self.keys + extraKeys)
        let mode = try c.choice("mode", ["official", "vit-pytorch"], "official")
        if mode == "vit-pytorch" {
            config = DINO.Config.vitPytorchDefaults
            config.outDim = 4096   // the reference recipe's num_classes_K
            augment = Self.vitPytorchAugment
        }
        config.hiddenLayer = try c.value("hidden_layer", config.hiddenLayer)
        config.outDim = try c.value("out_dim", config.outDim)
        config.hiddenDim = try c.value("hidden_dim", config.hiddenDim)
        config.bottleneckDim = try c.value("bottleneck_dim", config.bottleneckDim)
        config.headLayers = try c.value("head_layers", config.headLayers)
        for (key, value) in [("out_dim", config.outDim), ("hidden_dim", config.hiddenDim), ("bottleneck_dim", config.bottleneckDim)] {
            try c.check(value > 0, key, "must be positive, got \(value)")
        }
        try c.check(config.headLayers >= 2, "head_layers", "the head needs at least 2 layers")
        config.normLastLayer = try c.value("norm_last_layer", config.normLastLayer)
        config.studentTemperature = try c.value("student_temp", config.studentTemperature)
        config.teacherTemperature = try c.value("teacher_temp", config.teacherTemperature)
        config.warmupTeacherTemperature = try c.value("warmup_teacher_temp", config.warmupTeacherTemperature)
        for (key, value) in [("student_temp", config.studentTemperature), ("teacher_temp", config.teacherTemperature),
                             ("warmup_teacher_temp", config.warmupTeacherTemperature)] {
            try c.check(value > 0, key, "a temperature must be positive, got \(value)")
        }
        config.warmupTeacherTemperatureEpochs = try c.value("warmup_teacher_temp_epochs", config.warmupTeacherTemperatureEpochs)
        try c.check(config.warmupTeacherTemperatureEpochs >= 0, "warmup_teacher_temp_epochs", "must not be negative")
        config.centerMomentum = try c.value("center_momentum", config.centerMomentum)
        config.teacherMomentum = try c.value("teacher_momentum", config.teacherMomentum)
        for (key, value) in [("center_momentum", config.centerMomentum), ("teacher_momentum", config.teacherMomentum)] {
            try c.check(value >= 0 && value <= 1, key, "is a momentum: give a number in [0, 1]")
        }
        config.momentumSchedule = MomentumSchedule(rawValue: try c.choice("momentum_schedule", ["cosine", "constant"], config.momentumSchedule.rawValue))!
        config.freezeLastLayerEpochs = try c.value("freeze_last_layer_epochs", config.freezeLastLayerEpochs)
        augment = try AugmentSection.decode(c, defaults: augment)
        if config.vitPytorch {
            try c.check(augment.localCrops == 2, "augment", "vit-pytorch's Dino uses exactly 2 local crops (augment.local_crops: 2)")
        }
    }

    public func encode(to encoder: Encoder) throws { try encoder.fields(fields(kind: Self.kind)) }

    func fields(kind: String) -> [(String, any Encodable)] {
        [("kind", kind), ("mode", config.vitPytorch ? "vit-pytorch" : "official"), ("hidden_layer", config.hiddenLayer),
         ("out_dim", config.outDim), ("hidden_dim", config.hiddenDim), ("bottleneck_dim", config.bottleneckDim),
         ("head_layers", config.headLayers), ("norm_last_layer", config.normLastLayer), ("student_temp", config.studentTemperature),
         ("teacher_temp", config.teacherTemperature), ("warmup_teacher_temp", config.warmupTeacherTemperature),
         ("warmup_teacher_temp_epochs", config.warmupTeacherTemperatureEpochs), ("center_momentum", config.centerMomentum),
         ("teacher_momentum", config.teacherMomentum), ("momentum_schedule", config.momentumSchedule.rawValue),
         ("freeze_last_layer_epochs", config.freezeLastLayerEpochs), ("augment", augment)]
    }

    public func validate(_ recipe: Recipe) throws {
        try checkHiddenLayer(config.hiddenLayer, recipe)
        let a = augment
        try a.validate(recipe)
        let global = a.globalSize ?? recipe.data.imageSize
        if config.hiddenLayer != "pooled" && a.localCrops > 0 && (a.localSize ?? global) != global {
            throw RecipeIssue(path: ["hidden_layer"], message: "'\(config.hiddenLayer)' has a different width for \(a.localSize ?? global)-pixel local crops than for the global ones; use hidden_layer: pooled, or make augment.local_size equal to the global size")
        }
    }

    public func views(_ recipe: Recipe) -> ViewPipeline? { augment.pipeline(imageSize: recipe.data.imageSize) }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        DINO(student: encoder, teacher: newEncoder(), imageShape: recipe.data.imageShape,
             config: config, initializer: initializer)
    }
}

/// `objective: {kind: esvit}`: EsViT (Li et al. 2021): DINO's keys and defaults for the view-level
/// loss, plus the region-level loss on `region_layer`, the encoder's token map (a CvT's last
/// stage by default); `pooled` must be that map's mean, as it is for a CvT. `mode: vit-pytorch`
/// reproduces vit-pytorch 1.7.14's EsViTTrainer.
public struct EsViTSettings: ObjectiveSettings {
    public static let kind = "esvit"
    public static let summary = "EsViT: DINO's view loss plus a region loss matching student to teacher region tokens (Li et al. 2021)"
    public static var trainingDefaults: TrainingSettings { DINOSettings.trainingDefaults }

    public var dino = DINOSettings()
    public var regionLayer = "tokens"

    public init() {}

    public init(from decoder: Decoder) throws {
        dino = try DINOSettings(from: decoder, extraKeys: ["region_layer"])
        let c = try decoder.container(keyedBy: RecipeKey.self)
        regionLayer = try c.value("region_layer", regionLayer)
        try c.check(!c.contains(RecipeKey("hidden_layer")), "hidden_layer",
                    "EsViT's view feature is the mean of its region tokens; name the token map with region_layer instead")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(dino.fields(kind: Self.kind).filter { $0.0 != "hidden_layer" } + [("region_layer", regionLayer)])
    }

    public func validate(_ recipe: Recipe) throws {
        do { try checkHiddenLayer(regionLayer, recipe) } catch let issue as RecipeIssue {
            throw RecipeIssue(path: ["region_layer"], message: issue.message)
        }
        if regionLayer != "tokens" && !regionLayer.hasPrefix("blocks.") {
            throw RecipeIssue(path: ["region_layer"], message: "EsViT's regions are a token map (B, n, C): use tokens (a CvT's last stage) or blocks.i")
        }
        try dino.augment.validate(recipe)
    }

    public func views(_ recipe: Recipe) -> ViewPipeline? { dino.augment.pipeline(imageSize: recipe.data.imageSize) }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        var config = EsViT.Config()
        config.dino = dino.config
        config.regionLayer = regionLayer
        return EsViT(student: encoder, teacher: newEncoder(), imageShape: recipe.data.imageShape,
                     config: config, initializer: initializer)
    }
}
