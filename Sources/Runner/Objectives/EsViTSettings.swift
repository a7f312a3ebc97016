import Data
import Encoders
import NN
import Objectives

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
    public var regionWeight = 1.0

    public init() {}

    public static let fields: [Field<EsViTSettings>] =
        DINOSettings.fields.filter { $0.key != "hidden_layer" }.map { $0.lifted(\.dino) } + [
            .value("region_layer", \.regionLayer, "the token map (B, n, C) of the region loss; the view loss reads its mean"),
            .value("region_weight", \.regionWeight, "the region loss's weight: loss = (view + region_weight * region) / 2 (0: DINO's view loss alone, halved)", .nonNegative),
            .refused("hidden_layer", "EsViT's view feature is the mean of its region tokens; name the token map with region_layer instead"),
        ]

    public func check() -> (key: String, problem: String)? { dino.check() }

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
        config.regionWeight = regionWeight
        return EsViT(student: encoder, teacher: newEncoder(), imageShape: recipe.data.imageShape,
                     config: config, initializer: initializer)
    }
}
