import Encoders
import NN
import Objectives

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
    /// MP3 trains the encoder without its positions: on an encoder with learned ones (vit), they
    /// stay random, and every later stage reads features scrambled by them.
    public var allowLearnedPositions = false

    public init() {}

    public static let fields: [Field<MP3Settings>] = [
        .value("masking_ratio", \.config.maskingRatio, "the share of patches hidden from the keys and values", .openFraction),
        .value("allow_learned_positions", \.allowLearnedPositions, "run on an encoder with learned positions (vit), whose position table MP3 never trains and which then scrambles the later stages' features"),
    ]

    public static var benchmarks: [ObjectiveBenchmark<MP3Settings>] { [ObjectiveBenchmark("mp3", MP3Settings())] }

    public func validate(_ recipe: Recipe) throws {
        try requirePatchEncoder(Self.kind, recipe)
        if recipe.encoder.settings.learnedPositions && !allowLearnedPositions {
            throw RecipeIssue(path: ["kind"], message: "mp3 trains without positions, so the \(recipe.encoder.kind) encoder's learned position table stays random and scrambles the features the later stages read; use encoder.kind: simple-vit (fixed sin-cos positions, as Recipes/mp3.yaml), or set allow_learned_positions: true")
        }
        let patches = patchCount(recipe)
        let masked = Int(config.maskingRatio * Double(patches))
        if masked >= patches || masked < 1 {
            throw RecipeIssue(path: ["masking_ratio"], message: "must leave at least one of the \(patches) patches as context and mask one")
        }
    }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        guard let patchEncoder = encoder as? any PatchTokenEncoder else { return nil }
        return MP3(encoder: patchEncoder, config: config, initializer: initializer, maskSeed: seed)
    }
}
