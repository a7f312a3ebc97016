import Encoders
import NN
import Objectives

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

    public static let fields: [Field<SimMIMSettings>] = [
        .value("masking_ratio", \.config.maskingRatio, "fraction of the mask squares masked per image", .openFraction),
        .nullable("mask_patch_size", \.config.maskPatchSize, "side of the mask squares in pixels, a multiple of the patch that divides the image; null: the encoder's patch size", .positive),
        Field("loss_scale", help: "official (the L1 mean over masked pixels) | vit-pytorch (divided by the masked count)", read: { s, c in
            s.config.vitPytorchScale = try c.choice("loss_scale", ["official", "vit-pytorch"], s.config.vitPytorchScale ? "vit-pytorch" : "official") == "vit-pytorch"
        }, write: { $0.config.vitPytorchScale ? "vit-pytorch" : "official" }),
    ]

    public static var benchmarks: [ObjectiveBenchmark<SimMIMSettings>] {
        var s = SimMIMSettings()
        (s.config.maskingRatio, s.config.vitPytorchScale) = (0.5, true)
        return [ObjectiveBenchmark("simmim", s)]
    }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        let patch = recipe.encoder.settings.patchSize ?? 1, image = recipe.data.imageSize
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
        guard let patchEncoder = encoder as? any PatchTokenEncoder, let patch = recipe.encoder.settings.patchSize else { return nil }
        return SimMIM(encoder: patchEncoder, config: config, patchSize: patch,
                      imageSize: (recipe.data.imageSize, recipe.data.imageSize), initializer: initializer, maskSeed: seed)
    }
}
