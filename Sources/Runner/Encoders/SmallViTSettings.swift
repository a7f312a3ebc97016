import Encoders
import NN

/// `encoder: {kind: vit-small-datasets}`: vit-pytorch 1.7.14's ViT for small datasets (Lee et al.
/// 2021): shifted patch tokenisation (the image and four one-pixel shifts) and locality
/// self-attention (a learned temperature, the diagonal masked). Its patches read their
/// neighbours, so the masked objectives do not apply.
public struct SmallViTSettings: ViTConfigSettings {
    public static let kind = "vit-small-datasets"
    public static let summary = "ViT for small datasets (Lee et al. 2021): shifted patch tokens, locality self-attention; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its shifted patch tokens each read the neighbouring patches' pixels, so a patch cannot be embedded, or hidden, alone"

    public var config = ViTConfig()

    public init() {}

    public static let fields: [Field<SmallViTSettings>] = ViTSettings.transformerFields(\SmallViTSettings.config) + [
        .choice("pool", \.config.pool, "cls (the class token) | mean (of all tokens, the class token included, as vit-pytorch)"),
    ]

    public var learnedPositions: Bool { true }


    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        SmallDatasetViT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.vit_for_small_dataset.ViT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), pool='\(c.pool.rawValue)', channels=\(input.channels), dim_head=\(c.dimHead))"
    }
}
