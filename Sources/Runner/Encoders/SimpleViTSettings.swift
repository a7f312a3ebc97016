import Encoders
import NN

/// `encoder: {kind: simple-vit}`: vit-pytorch 1.7.14's SimpleViT (Beyer et al. 2022): fixed 2-D
/// sin-cos positions, no class token, mean pooling, no dropout.
public struct SimpleViTSettings: EncoderSettings {
    public static let kind = "simple-vit"
    public static let summary = "SimpleViT: 2-D sin-cos positions, mean pooling"
    public static let isPatchTokenEncoder = true

    public var config: ViTConfig = {
        var c = ViTConfig()
        c.pool = .mean
        return c
    }()

    public init() {}

    public static let fields: [Field<SimpleViTSettings>] = ViTSettings.transformerFields(\SimpleViTSettings.config) + [
        Field("pool", help: "mean: SimpleViT always mean-pools", read: { _, c in
            guard let pool = try c.decodeIfPresent(String.self, forKey: RecipeKey("pool")) else { return }
            try c.check(pool == "mean", "pool", "simple-vit always mean-pools; set pool: mean, or leave the key out")
        }, write: { _ in "mean" }),
    ]

    public var patchSize: Int? { config.patchHeight }
    public var layerDecayDepth: Int? { config.depth }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? { ViTSettings.checkPatches(config, input) }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        var c = config
        (c.imageHeight, c.imageWidth, c.channels, c.numClasses) = (input.imageSize, input.imageSize, input.channels, input.classes)
        return SimpleViT(c, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.SimpleViT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), channels=\(input.channels), dim_head=\(c.dimHead))"
    }
}
