import Encoders
import NN

/// `encoder: {kind: scalable-vit}`: vit-pytorch 1.7.14's ScalableViT (Yang et al. 2022): scalable
/// self-attention on reduced keys and values, interactive windowed self-attention, PEG.
/// 1.7.14's forward swaps the windowed attention and the second feed-forward; `block_order:
/// vit-pytorch-1.7.14` keeps that.
public struct ScalableViTSettings: StagedEncoderSettings {
    public static let kind = "scalable-vit"
    public static let summary = "ScalableViT (Yang et al. 2022): scalable self-attention with reduced keys, interactive window attention, PEG; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its embedding is an overlapping stride-4 convolution and its position convolution and local interactive module read every token's neighbours, so no token can be hidden alone"

    public var config = ScalableViTConfig()

    public init() {}

    public static let fields: [Field<ScalableViTSettings>] = [
        .value("dim", \.config.dim, "width of the first stage (each stage doubles it)", .positive),
        Field("depth", help: "blocks of each stage, e.g. [2, 2]; the embedding has stride 4, each later stage 2", read: { s, c in
            guard let depth = try c.decodeIfPresent([Int].self, forKey: RecipeKey("depth")) else { return }
            try c.check(!depth.isEmpty && depth.allSatisfy { $0 > 0 }, "depth", "give each stage one or more blocks, e.g. [2, 2]")
            s.config.depth = depth
        }, write: { $0.config.depth }),
        .numberOrList("heads", \.config.heads, "heads of each stage: one number, or one per stage"),
        .numberOrList("reduction_factor", \.config.reductionFactor, "scalable self-attention's keys and values from r x r, stride-r convolutions: one per stage"),
        .numberOrList("window_size", \.config.windowSize, "interactive windowed attention's window side per stage (0: the whole map, vit-pytorch's None)", allowZero: true),
        .numberOrList("iwsa_dim_key", \.config.iwsaDimKey, "windowed attention's key width per head"),
        .numberOrList("iwsa_dim_value", \.config.iwsaDimValue, "windowed attention's value width per head"),
        .numberOrList("ssa_dim_key", \.config.ssaDimKey, "scalable attention's key width per head"),
        .numberOrList("ssa_dim_value", \.config.ssaDimValue, "scalable attention's value width per head"),
        .value("ff_expansion_factor", \.config.ffExpansionFactor, "feed-forward width as a multiple of the stage's", .positive),
        .converted("dropout", \.config.dropout, "dropout of the attention weights, the outputs and the feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .choice("block_order", \.config.blockOrder,
                "paper (scalable attention, feed-forward, windowed attention, feed-forward) | vit-pytorch-1.7.14 (its forward runs the second feed-forward before the windowed attention)"),
    ]

    public static func build(_ config: ScalableViTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        ScalableViT(config, initializer: initializer)
    }
}

extension ScalableViTConfig: StagedEncoderConfig {}
