import Encoders
import NN

/// `encoder: {kind: cross-vit}`: vit-pytorch 1.7.14's CrossViT (Chen et al. 2021): two patch sizes,
/// a transformer per branch, class-token cross-attention between them, summed heads. Keys are
/// vit-pytorch's argument names; the defaults are sized for 28 px (patches of 4 and 7).
public struct CrossViTSettings: EncoderSettings {
    public static let kind = "cross-vit"
    public static let summary = "CrossViT (Chen et al. 2021): small- and large-patch branches exchanging class tokens; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "it embeds the image twice, with small and large patches, and its branches exchange class tokens, so there is no single sequence of patch tokens to mask"

    public var config = CrossViTConfig()

    public init() {}

    static func branchFields(_ prefix: String, _ path: WritableKeyPath<CrossViTSettings, CrossViTBranch>, _ name: String) -> [Field<CrossViTSettings>] {
        [
            .value("\(prefix)_dim", path.appending(path: \.dim), "token width of the \(name)-patch branch", .positive),
            .value("\(prefix)_patch_size", path.appending(path: \.patchSize), "patch side of the \(name)-patch branch; must divide data.image_size", .positive),
            .value("\(prefix)_enc_depth", path.appending(path: \.depth), "blocks of the \(name)-patch transformer per multi-scale layer", .positive),
            .value("\(prefix)_enc_heads", path.appending(path: \.heads), "its attention heads", .positive),
            .value("\(prefix)_enc_mlp_dim", path.appending(path: \.mlpDim), "its feed-forward hidden width", .positive),
            .value("\(prefix)_enc_dim_head", path.appending(path: \.dimHead), "its width per head", .positive),
        ]
    }

    public static let fields: [Field<CrossViTSettings>] = branchFields("sm", \.config.small, "small") + branchFields("lg", \.config.large, "large") + [
        .value("cross_attn_depth", \.config.crossDepth, "cross-attention layers per multi-scale layer", .positive),
        .value("cross_attn_heads", \.config.crossHeads, "cross-attention heads", .positive),
        .value("cross_attn_dim_head", \.config.crossDimHead, "cross-attention width per head", .positive),
        .value("depth", \.config.depth, "multi-scale layers", .positive),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward (vit-pytorch's default 0.1)", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.embeddingDropout, "dropout after the position embeddings (vit-pytorch's default 0.1)", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    public var learnedPositions: Bool { true }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        guard let problem = config.problem(imageSize: input.imageSize) else { return nil }
        return (problem.hasPrefix("sm_") ? "sm_patch_size" : "lg_patch_size", problem)
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        var c = config
        (c.imageSize, c.channels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return CrossViT(c, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config, s = c.small, l = c.large
        return "vit_pytorch.cross_vit.CrossViT(image_size=\(input.imageSize), num_classes=\(input.classes), channels=\(input.channels), sm_dim=\(s.dim), lg_dim=\(l.dim), sm_patch_size=\(s.patchSize), sm_enc_depth=\(s.depth), sm_enc_heads=\(s.heads), sm_enc_mlp_dim=\(s.mlpDim), sm_enc_dim_head=\(s.dimHead), lg_patch_size=\(l.patchSize), lg_enc_depth=\(l.depth), lg_enc_heads=\(l.heads), lg_enc_mlp_dim=\(l.mlpDim), lg_enc_dim_head=\(l.dimHead), cross_attn_depth=\(c.crossDepth), cross_attn_heads=\(c.crossHeads), cross_attn_dim_head=\(c.crossDimHead), depth=\(c.depth), dropout=\(c.dropout), emb_dropout=\(c.embeddingDropout))"
    }
}
