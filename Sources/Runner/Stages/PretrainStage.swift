import Data
import Encoders
import Evaluation
import Foundation
import NN
import Objectives
import Store
import TensorCore

/// The settings of one objective (`objective: {kind: mae, ...}` in a pretrain stage): decoded
/// like every recipe section, and able to build the objective around the run's encoder.
public protocol ObjectiveSettings: Codable {
    static var kind: String { get }
    static var summary: String { get }
    /// The training defaults of this objective's reference recipe.
    static var trainingDefaults: TrainingSettings { get }
    /// Problems only this objective can see (e.g. an encoder that is not patch-based).
    func validate(_ recipe: Recipe) throws
    /// The objective around `encoder`, or nil when it cannot wrap this encoder. `newEncoder`
    /// builds another encoder of the same architecture (for EMA teachers).
    func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
              seed: UInt64) -> (any Objective)?
    /// The augmented views the objective trains on, or nil for the plain (flipped) images.
    func views(_ recipe: Recipe) -> ViewPipeline?
}

extension ObjectiveSettings {
    public func views(_ recipe: Recipe) -> ViewPipeline? { nil }

    var kindName: String { Self.kind }
    var defaults: TrainingSettings { Self.trainingDefaults }
}

/// The objectives a pretrain stage may name.
public enum ObjectiveRegistry {
    public static let kinds: [any ObjectiveSettings.Type] = [MAESettings.self, SimMIMSettings.self, MPPSettings.self, MP3Settings.self,
                                                             BYOLSettings.self, DINOSettings.self, EsViTSettings.self]
}

/// `pretrain`: trains the encoder with a self-supervised objective; the stages after it use the
/// pretrained encoder.
public struct PretrainStage: Stage {
    public static let kind = "pretrain"
    public static let summary = "self-supervised pretraining of the encoder with an objective (objective.kind: "
        + ObjectiveRegistry.kinds.map { $0.kind }.joined(separator: ", ") + ")"

    public var objective: any ObjectiveSettings
    public var training: TrainingSettings
    /// kNN top-1 of the trained encoder (DINO's teacher) every `knnMonitor` epochs (0: never),
    /// with the first `knnMonitorImages` training images as the neighbours and every test image
    /// as queries: the `knn_top1` column of the epochs table (NaN in the epochs between).
    public var knnMonitor = 0
    public var knnMonitorImages = 10000
    public var knnMonitorLayer = "pooled"

    static let monitorKeys = ["knn_monitor", "knn_monitor_images", "knn_monitor_layer"]

    public init(objective: any ObjectiveSettings) {
        self.objective = objective
        training = objective.defaults
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(["objective"] + TrainingSettings.keys + Self.monitorKeys)
        let kinds = ObjectiveRegistry.kinds.map { $0.kind }
        let objectiveDecoder = try c.superDecoder(forKey: RecipeKey("objective"))
        let kinded = try objectiveDecoder.container(keyedBy: RecipeKey.self)
        guard let kind = try kinded.optional("kind", String.self) else {
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + ["objective", "kind"],
                              message: "name the objective: objective: {kind: \(kinds.joined(separator: " | "))}")
        }
        guard let type = ObjectiveRegistry.kinds.first(where: { $0.kind == kind }) else {
            var message = "unknown objective '\(kind)'"
            if let near = nearest(kind, in: kinds) { message += "; did you mean '\(near)'?" }
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + ["objective", "kind"],
                              message: message + " Objectives available: \(kinds.joined(separator: ", ")).")
        }
        objective = try type.init(from: objectiveDecoder)
        training = try TrainingSettings(c, defaults: type.trainingDefaults)
        knnMonitor = try c.value("knn_monitor", knnMonitor)
        try c.check(knnMonitor >= 0, "knn_monitor", "is a number of epochs between kNN evaluations (0: none), got \(knnMonitor)")
        knnMonitorImages = try c.value("knn_monitor_images", knnMonitorImages)
        try c.check(knnMonitorImages > 0, "knn_monitor_images", "must be positive, got \(knnMonitorImages)")
        knnMonitorLayer = try c.value("knn_monitor_layer", knnMonitorLayer)
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields([("objective", objective)] + training.fields
                           + [("knn_monitor", knnMonitor), ("knn_monitor_images", knnMonitorImages), ("knn_monitor_layer", knnMonitorLayer)])
    }

    public func validate(_ recipe: Recipe) throws {
        try training.validate(recipe)
        if knnMonitor > 0 {
            do { try checkHiddenLayer(knnMonitorLayer, recipe) } catch let issue as RecipeIssue {
                throw RecipeIssue(path: ["knn_monitor_layer"], message: issue.message)
            }
        }
        do { try objective.validate(recipe) } catch let issue as RecipeIssue {
            throw RecipeIssue(path: ["objective"] + issue.path, message: issue.message)
        }
    }

    public func run(_ context: RunContext) throws -> [String: Double] {
        let seed = context.recipe.seed &+ UInt64(context.stageIndex)
        let initializer = Initializer(scheme: context.recipe.encoder.initScheme, seed: seed &+ 0x0B1E_C71E)
        let recipe = context.recipe
        let newEncoder = { EncoderFactory.make(recipe.encoder, data: recipe.data, seed: seed &+ 0x7EAC_4E12).0 }
        guard let model = objective.make(encoder: context.encoder, newEncoder: newEncoder, recipe: recipe, initializer: initializer, seed: seed) else {
            throw RunError("\(context.stagePath): \(objective.kindName) cannot wrap the \(context.recipe.encoder.kind) encoder")
        }
        let data = context.data
        let loader = training.loader(data, seed: seed)
        loader.views = objective.views(recipe)
        if let views = loader.views {
            context.log("\(context.stageName): \(views.views.count) views per image (\(views.views.map { "\($0.size)px" }.joined(separator: ", "))), made on the data thread")
        }
        context.log("\(context.stageName): \(objective.kindName), \(training.epochs) epochs of \(loader.batchesPerEpoch) steps, batch \(training.batchSize), \(data.train.count) training images, \(training.optimizer) lr \(training.lr)")
        let loop = training.loop(context, module: model, loader: loader, streams: model.randomStreams)
        let totalSteps = loader.batchesPerEpoch * training.epochs
        var lastLoss = 0.0
        let perEpoch = loader.batchesPerEpoch
        let steps = try loop.run(step: { batch in
            let output = batch.views.isEmpty ? model.loss(batch.images) : model.loss(views: batch.views)
            return StepOutput(loss: output.loss, diagnostics: output.diagnostics)
        }, beforeStep: { step in
            model.willStep(step, of: totalSteps, stepsPerEpoch: perEpoch)
        }, afterStep: { step in
            model.afterStep(step, of: totalSteps)
        }, endOfEpoch: { epoch, sums in
            let loss = sums["loss", default: 0] / Swift.max(sums["batches", default: 1], 1)
            let seconds = sums["seconds", default: 0]
            let rate = sums["seen", default: 0] / Swift.max(seconds, 1e-9)
            lastLoss = loss
            let line = String(format: "%@: epoch %d/%d  loss %.4f  %.1f s  %.0f img/s", context.stageName, epoch + 1, training.epochs, loss, seconds, rate)
            guard knnMonitor > 0 else {
                return EpochReport(columns: ["loss": loss, "seconds": seconds, "images_per_s": rate], score: loss, higherIsBetter: false, line: line)
            }
            let knn = (epoch + 1) % knnMonitor == 0 ? monitorKNN(model.trainedEncoder, context) : .nan
            return EpochReport(columns: ["loss": loss, "knn_top1": knn, "seconds": seconds, "images_per_s": rate], score: loss, higherIsBetter: false,
                               line: line + (knn.isNaN ? "" : String(format: "  kNN top-1 %.2f%%", 100 * knn)))
        })
        // Objectives that evaluate another network than the one they were handed (DINO's teacher)
        // leave its weights in the run's encoder for the stages after this one.
        if model.trainedEncoder !== context.encoder {
            try context.encoder.load(model.trainedEncoder.stateDict())
            context.log("\(context.stageName): the encoder now holds the \(objective.kindName) teacher's weights (what the later stages use)")
        }
        try writeReconstructions(model, context)
        try context.metrics.results(context.stageName, scalars: ["final_loss": lastLoss])
        return ["final_loss": lastLoss, "steps": Double(steps)]
    }

    /// kNN top-1 (k 20, T 0.07, as the knn stage) of `encoder`'s monitor layer: the first
    /// knn_monitor_images training images against the whole test split.
    func monitorKNN(_ encoder: any HiddenLayerEncoder, _ context: RunContext) -> Double {
        let data = context.data
        let bank = Subset(first: Swift.min(knnMonitorImages, data.train.count), of: data.train)
        let train = extractFeatures(encoder, layer: knnMonitorLayer, dataset: bank, mean: data.mean, std: data.std)
        let test = extractFeatures(encoder, layer: knnMonitorLayer, dataset: data.test, mean: data.mean, std: data.std)
        let scores = knnClassify(train: train, trainLabels: (0..<bank.count).map { bank.label(at: $0) }, test: test, classes: data.classNames.count)
        return topAccuracy(scores, labels: (0..<data.test.count).map { data.test.label(at: $0) }).top1
    }

    /// For objectives that reconstruct pixels: the first 8 test images, their masked version and
    /// the reconstruction, in [0, 1] pixels, under /STAGE/reconstructions.
    func writeReconstructions(_ model: any Objective, _ context: RunContext) throws {
        let data = context.data
        let count = Swift.min(8, data.test.count)
        let loader = DataLoader(Subset(first: count, of: data.test), batchSize: count, shuffle: false, dropLast: false,
                                mean: data.mean, std: data.std, seed: 0)
        guard let batch = loader.makeIterator().next(),
              let grid = Autograd.noGrad({ model.reconstructions(batch.images, rng: RandomStream(seed: context.recipe.seed, purpose: "reconstructions")) })
        else { return }
        let shape = batch.images.shape
        func pixels(_ t: Tensor) -> [Float] { Runner.pixels(t, mean: data.mean, std: data.std, clamped: true) }
        try context.metrics.withFile { file in
            let group = try file.root.group("\(context.stageName)/reconstructions")
            try group.write("input", pixels(batch.images), shape: shape)
            try group.write("masked", pixels(grid.masked), shape: shape)
            try group.write("reconstruction", pixels(grid.reconstruction), shape: shape)
            try group.write("indices", batch.indices.map { Int64(data.test.sourceIndex(at: $0)) })
            try group.setAttribute("split", "test")
        }
    }
}

/// Masked objectives need a PatchTokenEncoder; says so, naming the encoder, when it is not.
func requirePatchEncoder(_ objective: String, _ recipe: Recipe) throws {
    guard EncoderSection.patchEncoders.contains(recipe.encoder.kind) else {
        throw RecipeIssue(path: ["kind"], message: "\(objective) masks patches, so it needs a patch-based encoder (a PatchTokenEncoder: \(EncoderSection.patchEncoders.joined(separator: ", "))); encoder.kind is \(recipe.encoder.kind), which is not. Use encoder.kind: vit, or an objective that reads views (byol, dino, esvit).")
    }
}

/// `objective: {kind: mae}`: vit-pytorch 1.7.14's MAE (He et al. 2021). Defaults are the
/// reference recipe's (shared/reference/REFERENCE.md): ratio 0.75, decoder 128 wide, 2 deep,
/// 4 heads of 32; AdamW 1.5e-4, betas (0.9, 0.95), weight decay 0.05, 1 warmup epoch, 5 epochs.
public struct MAESettings: ObjectiveSettings {
    public static let kind = "mae"
    public static let summary = "masked autoencoder: encode 25% of the patches, decode the rest's pixels (He et al. 2021)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs) = (1.5e-4, [0.9, 0.95], 0.05, 1, 5)
        return t
    }

    public var config = MAE.Config()

    static let keys = ["kind", "masking_ratio", "decoder_dim", "decoder_depth", "decoder_heads", "decoder_dim_head", "norm_pix_loss"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        config.maskingRatio = try c.value("masking_ratio", config.maskingRatio)
        try c.check(config.maskingRatio > 0 && config.maskingRatio < 1, "masking_ratio", "must be strictly between 0 and 1")
        config.decoderDim = try c.value("decoder_dim", config.decoderDim)
        config.decoderDepth = try c.value("decoder_depth", config.decoderDepth)
        config.decoderHeads = try c.value("decoder_heads", config.decoderHeads)
        config.decoderDimHead = try c.value("decoder_dim_head", config.decoderDimHead)
        for (key, value) in [("decoder_dim", config.decoderDim), ("decoder_depth", config.decoderDepth),
                             ("decoder_heads", config.decoderHeads), ("decoder_dim_head", config.decoderDimHead)] {
            try c.check(value > 0, key, "must be positive, got \(value)")
        }
        config.normPixLoss = try c.value("norm_pix_loss", config.normPixLoss)
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": Self.kind, "masking_ratio": config.maskingRatio, "decoder_dim": config.decoderDim,
                            "decoder_depth": config.decoderDepth, "decoder_heads": config.decoderHeads,
                            "decoder_dim_head": config.decoderDimHead, "norm_pix_loss": config.normPixLoss])
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        let patches = (recipe.data.imageSize / recipe.encoder.patchSize) * (recipe.data.imageSize / recipe.encoder.patchSize)
        if Int(config.maskingRatio * Double(patches)) < 1 || Int(config.maskingRatio * Double(patches)) >= patches {
            throw RecipeIssue(path: ["masking_ratio"], message: "masks \(Int(config.maskingRatio * Double(patches))) of \(patches) patches; at least one must be masked and one visible")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return MAE(encoder: patchEncoder, config: config, initializer: initializer, maskSeed: seed)
    }
}

/// `objective: {kind: simmim}`: SimMIM (Xie et al. 2021). Defaults follow the official code
/// (mask ratio 0.6, the plain L1 mean, AdamW with weight decay 0.05, betas (0.9, 0.999), gradient
/// clipping at 5), with the mask square equal to the encoder's patch (28-pixel images have no
/// coarser grid that 32/224 would scale to) and the learning rate scaled to batch 256.
public struct SimMIMSettings: ObjectiveSettings {
    public static let kind = "simmim"
    public static let summary = "SimMIM: mask tokens in place of patches, encode all, L1 on the masked pixels (Xie et al. 2021)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs, t.gradientClip) = (2e-4, [0.9, 0.999], 0.05, 1, 5, 5.0)
        return t
    }

    public var config = SimMIM.Config()

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(["kind", "masking_ratio", "mask_patch_size", "loss_scale"])
        config.maskingRatio = try c.value("masking_ratio", config.maskingRatio)
        try c.check(config.maskingRatio > 0 && config.maskingRatio < 1, "masking_ratio", "must be strictly between 0 and 1")
        config.maskPatchSize = try c.optional("mask_patch_size")
        config.vitPytorchScale = try c.choice("loss_scale", ["official", "vit-pytorch"], "official") == "vit-pytorch"
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": Self.kind, "masking_ratio": config.maskingRatio, "mask_patch_size": config.maskPatchSize,
                            "loss_scale": config.vitPytorchScale ? "vit-pytorch" : "official"])
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        let patch = recipe.encoder.patchSize, image = recipe.data.imageSize
        if let size = config.maskPatchSize, size % patch != 0 || image % size != 0 {
            throw RecipeIssue(path: ["mask_patch_size"], message: "the mask square (\(size) pixels) must be a multiple of encoder.patch_size (\(patch)) that divides the image size \(image)")
        }
        let squares = (image / (config.maskPatchSize ?? patch)) * (image / (config.maskPatchSize ?? patch))
        if Int(config.maskingRatio * Double(squares)) < 1 {
            throw RecipeIssue(path: ["masking_ratio"], message: "masks no square of the \(squares); raise it or use smaller mask squares")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return SimMIM(encoder: patchEncoder, config: config, patchSize: recipe.encoder.patchSize,
                      imageSize: (recipe.data.imageSize, recipe.data.imageSize), initializer: initializer, maskSeed: seed)
    }
}

/// `objective: {kind: mpp}`: masked patch prediction (the ViT paper), with vit-pytorch's
/// probabilities (mask 0.15, replace 0.5, random patch 0.5) and 3-bit colour targets; Adam-style
/// training at the ViT paper's 2e-4.
public struct MPPSettings: ObjectiveSettings {
    public static let kind = "mpp"
    public static let summary = "masked patch prediction: corrupt patches, classify their 3-bit mean colour (ViT paper, vit-pytorch)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs) = (2e-4, [0.9, 0.999], 0.05, 1, 5)
        return t
    }

    public var config = MPP.Config()

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(["kind", "mask_prob", "replace_prob", "random_patch_prob", "output_channel_bits", "max_pixel_value"])
        config.maskProb = try c.value("mask_prob", config.maskProb)
        try c.check(config.maskProb > 0 && config.maskProb < 1, "mask_prob", "must be strictly between 0 and 1")
        config.replaceProb = try c.value("replace_prob", config.replaceProb)
        try c.check(config.replaceProb >= 0 && config.replaceProb < 1, "replace_prob", "must be in [0, 1)")
        config.randomPatchProb = try c.value("random_patch_prob", config.randomPatchProb)
        try c.check(config.randomPatchProb >= 0 && config.randomPatchProb <= 1 - config.replaceProb, "random_patch_prob",
                    "must be in [0, 1 - replace_prob] (vit-pytorch draws it with probability random_patch_prob / (1 - replace_prob))")
        config.outputChannelBits = try c.value("output_channel_bits", config.outputChannelBits)
        try c.check((1...4).contains(config.outputChannelBits), "output_channel_bits", "must be 1 to 4")
        config.maxPixelValue = try c.value("max_pixel_value", config.maxPixelValue)
        try c.check(config.maxPixelValue > 0, "max_pixel_value", "must be positive")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": Self.kind, "mask_prob": config.maskProb, "replace_prob": config.replaceProb,
                            "random_patch_prob": config.randomPatchProb, "output_channel_bits": config.outputChannelBits,
                            "max_pixel_value": config.maxPixelValue])
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        if config.outputChannelBits * recipe.data.channels > 12 {
            throw RecipeIssue(path: ["output_channel_bits"], message: "\(config.outputChannelBits) bits for \(recipe.data.channels) channels is \(1 << (config.outputChannelBits * recipe.data.channels)) classes; use fewer bits")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return MPP(encoder: patchEncoder, config: config, channels: recipe.data.channels, mean: recipe.data.mean.map { Float($0) },
                   std: recipe.data.std.map { Float($0) }, initializer: initializer, seed: seed)
    }
}

/// `objective: {kind: mp3}`: masked position prediction (Zhai et al. 2022) as vit-pytorch's MP3:
/// 75% of the patches hidden from the keys and values, every position classified.
public struct MP3Settings: ObjectiveSettings {
    public static let kind = "mp3"
    public static let summary = "masked position prediction: no positions, attend to 25% of the patches, classify every patch's position (Zhai et al. 2022)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs) = (5e-4, [0.9, 0.999], 0.05, 1, 5)
        return t
    }

    public var config = MP3.Config()

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(["kind", "masking_ratio"])
        config.maskingRatio = try c.value("masking_ratio", config.maskingRatio)
        try c.check(config.maskingRatio > 0 && config.maskingRatio < 1, "masking_ratio", "must be strictly between 0 and 1")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": Self.kind, "masking_ratio": config.maskingRatio])
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        let patches = (recipe.data.imageSize / recipe.encoder.patchSize) * (recipe.data.imageSize / recipe.encoder.patchSize)
        if Int(config.maskingRatio * Double(patches)) >= patches || Int(config.maskingRatio * Double(patches)) < 1 {
            throw RecipeIssue(path: ["masking_ratio"], message: "must leave at least one of the \(patches) patches as context and mask one")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return MP3(encoder: patchEncoder, config: config, initializer: initializer, maskSeed: seed)
    }
}
