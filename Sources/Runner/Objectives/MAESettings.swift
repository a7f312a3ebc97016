import Encoders
import NN
import Objectives

/// `objective: {kind: mae}`: vit-pytorch 1.7.14's MAE (He et al. 2021). Defaults are MAE.Config's
/// and the reference recipe's training (docs/REFERENCE.md): AdamW 1.5e-4, betas (0.9, 0.95),
/// weight decay 0.05, 1 warmup epoch, 5 epochs.
public struct MAESettings: ObjectiveSettings {
    public static let kind = "mae"
    public static let summary = "masked autoencoder: encode 25% of the patches, decode the rest's pixels (He et al. 2021)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.betas, t.weightDecay, t.warmupEpochs, t.epochs) = (1.5e-4, [0.9, 0.95], 0.05, 1, 5)
        return t
    }

    public var config = MAE.Config()

    public init() {}

    public static let fields: [Field<MAESettings>] = [
        .value("masking_ratio", \.config.maskingRatio, "fraction of the patches masked per image", .openFraction),
        .value("decoder_dim", \.config.decoderDim, "decoder width (no projection when it equals the encoder's)", .positive),
        .value("decoder_depth", \.config.decoderDepth, "decoder blocks", .positive),
        .value("decoder_heads", \.config.decoderHeads, "decoder attention heads", .positive),
        .value("decoder_dim_head", \.config.decoderDimHead, "decoder width per head", .positive),
        .value("norm_pix_loss", \.config.normPixLoss, "per-patch normalised targets (official MAE); vit-pytorch: false"),
    ]

    public static var benchmarks: [ObjectiveBenchmark<MAESettings>] {
        var s = MAESettings()
        (s.config.maskingRatio, s.config.decoderDim, s.config.decoderDepth, s.config.decoderHeads, s.config.decoderDimHead) = (0.75, 128, 2, 8, 64)
        return [ObjectiveBenchmark("mae", s)]
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        let patches = patchCount(recipe)
        let masked = Int(config.maskingRatio * Double(patches))
        if masked < 1 || masked >= patches {
            throw RecipeIssue(path: ["masking_ratio"], message: "masks \(masked) of \(patches) patches; at least one must be masked and one visible")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return MAE(encoder: patchEncoder, config: config, initializer: initializer, maskSeed: seed)
    }
}
