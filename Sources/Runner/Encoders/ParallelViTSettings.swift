import Encoders
import NN

/// `encoder: {kind: parallel-vit}`: vit-pytorch 1.7.14's parallel ViT (Touvron et al. 2022,
/// "Three things everyone should know about Vision Transformers"): each block sums `branches`
/// attention modules, then `branches` feed-forward modules; a Linear patch embedding; no final
/// norm, mlp_head = LayerNorm + Linear.
public struct ParallelViTSettings: ViTConfigSettings {
    public static let kind = "parallel-vit"
    public static let summary = "Parallel ViT (Touvron et al. 2022): summed parallel attention and feed-forward branches"
    public static let isPatchTokenEncoder = true

    public var config = ViTConfig()
    public var branches = 2

    public init() {}

    public static let fields: [Field<ParallelViTSettings>] = ViTSettings.transformerFields(\ParallelViTSettings.config) + [
        .choice("pool", \.config.pool, "cls (the class token) | mean (of all tokens, the class token included, as vit-pytorch)"),
        .value("branches", \.branches, "parallel attention and feed-forward branches per block (vit-pytorch's num_parallel_branches)", .positive),
    ]

    public var learnedPositions: Bool { true }


    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        ParallelViT(config(for: input), branches: branches, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.parallel_vit.ViT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), pool='\(c.pool.rawValue)', num_parallel_branches=\(branches), channels=\(input.channels), dim_head=\(c.dimHead))"
    }
}
