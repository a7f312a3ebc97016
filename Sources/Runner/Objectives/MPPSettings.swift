import Encoders
import NN
import Objectives

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

    public static let fields: [Field<MPPSettings>] = [
        .value("mask_prob", \.config.maskProb, "probability that a patch is a prediction target", .openFraction),
        .value("replace_prob", \.config.replaceProb, "probability that a target patch is replaced by the mask token", .fraction),
        .value("random_patch_prob", \.config.randomPatchProb, "probability that a target patch is replaced by another image's patch", where: { value, s in
            value >= 0 && value <= 1 - s.config.replaceProb ? nil
                : "must be in [0, 1 - replace_prob] (vit-pytorch draws it with probability random_patch_prob / (1 - replace_prob))"
        }),
        .value("output_channel_bits", \.config.outputChannelBits, "bits per channel of the mean-colour classes",
               .that({ (1...4).contains($0) }) { "must be 1 to 4, got \($0)" }),
        .value("max_pixel_value", \.config.maxPixelValue, "the largest un-normalised pixel (targets are each patch's mean colour)", .positive),
    ]

    public static var benchmarks: [ObjectiveBenchmark<MPPSettings>] {
        var s = MPPSettings()
        (s.config.maskProb, s.config.randomPatchProb, s.config.replaceProb) = (0.15, 0.30, 0.50)
        return [ObjectiveBenchmark("mpp", s, mean: [0], std: [1])]
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
