import Encoders
import NN

/// `encoder: {kind: deepvit}`: vit-pytorch 1.7.14's DeepViT (Zhou et al. 2021): ViT with
/// re-attention, the heads' attention maps mixed by a learned matrix and normalised over the
/// heads; no final norm, mlp_head = LayerNorm + Linear.
public struct DeepViTSettings: ViTConfigSettings {
    public static let kind = "deepvit"
    public static let summary = "DeepViT (Zhou et al. 2021): re-attention mixes the heads' maps; learned positions, cls or mean pooling"
    public static let isPatchTokenEncoder = true

    public var config = ViTConfig()

    public init() {}

    public static let fields: [Field<DeepViTSettings>] = ViTSettings.transformerFields(\DeepViTSettings.config) + [
        .choice("pool", \.config.pool, "cls (the class token) | mean (of all tokens, the class token included, as vit-pytorch)"),
    ]

    public var learnedPositions: Bool { true }


    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        DeepViT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.deepvit.DeepViT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), pool='\(c.pool.rawValue)', channels=\(input.channels), dim_head=\(c.dimHead))"
    }
}
