import Encoders
import NN

/// `encoder: {kind: twins-svt}`: vit-pytorch 1.7.14's Twins-SVT (Chu et al. 2021): patch merging,
/// locally-grouped and global sub-sampled attention, PEG. The stages are a list (vit-pytorch's
/// s1_ ... s4_ arguments); heads, dim_head and mlp_mult, which 1.7.14 fixes at 8, 64 and 4, are
/// keys (a 1.7.14 checkpoint loads with those values).
public struct TwinsSettings: StagedEncoderSettings {
    public static let kind = "twins-svt"
    public static let summary = "Twins-SVT (Chu et al. 2021): locally-grouped and global sub-sampled attention, PEG; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its stages merge patches and its position convolution and sub-sampled keys read every token's neighbours, so no token can be hidden alone"

    public var config = TwinsConfig()

    public init() {}

    public static let fields: [Field<TwinsSettings>] = [
        Field("twins_stages", help: "the stages (vit-pytorch's s1_ ... s4_ arguments), each {emb_dim, patch_size, local_patch_size, global_k, depth}; the last has no local attention; stages.i (B, C, H, W), tokens the last map as (B, H*W, C)",
              read: { s, c in
                  guard let stages = try c.decodeIfPresent([TwinsStageSection].self, forKey: RecipeKey("twins_stages")) else { return }
                  try c.check(!stages.isEmpty, "twins_stages", "give at least one stage")
                  s.config.stages = stages.map(\.stage)
              }, write: { $0.config.stages.map(TwinsStageSection.init) }),
        .value("heads", \.config.heads, "attention heads, every stage (1.7.14 fixes 8)", .positive),
        .value("dim_head", \.config.dimHead, "width per head (1.7.14 fixes 64)", .positive),
        .value("mlp_mult", \.config.mlpMult, "feed-forward width as a multiple of the stage's (1.7.14 fixes 4)", .positive),
        .value("peg_kernel_size", \.config.pegKernelSize, "the position-encoding depthwise convolution's kernel (odd)", .positive),
        .converted("dropout", \.config.dropout, "dropout of the global attention's weights, the attention outputs and the feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    public static func build(_ config: TwinsConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        TwinsSVT(config, initializer: initializer)
    }
}

/// One entry of `encoder.twins_stages`.
public struct TwinsStageSection: RecipeSection {
    public var stage = TwinsStage(embDim: 0, patchSize: 2, localPatchSize: 7, globalK: 7, depth: 1)

    public init() {}
    init(_ stage: TwinsStage) { self.stage = stage }

    public static let fields: [Field<TwinsStageSection>] = [
        Field("emb_dim", help: "channels of the stage (required)", read: { s, c in
            s.stage.embDim = try c.required("emb_dim")
            try c.check(Check<Int>.positive.problem(s.stage.embDim), "emb_dim")
        }, write: { $0.stage.embDim }),
        .value("patch_size", \.stage.patchSize, "side of the patches merged into one token", .positive),
        .value("local_patch_size", \.stage.localPatchSize, "side of the locally-grouped attention's windows (must divide the map)", .positive),
        .value("global_k", \.stage.globalK, "keys and values of the global attention from a k x k, stride-k convolution", .positive),
        .value("depth", \.stage.depth, "blocks after the PEG (one block comes before it)", .positive),
    ]
}

extension TwinsConfig: StagedEncoderConfig {}
