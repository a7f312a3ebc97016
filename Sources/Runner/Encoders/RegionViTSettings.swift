import Encoders
import NN

/// `encoder: {kind: regionvit}`: vit-pytorch 1.7.14's RegionViT (Chen et al. 2022): local and
/// regional tokens, regional self-attention then regional-to-local attention. `heads` and
/// `dim_head`, which 1.7.14 fixes at 4 and 32, are keys.
public struct RegionViTSettings: StagedEncoderSettings {
    public static let kind = "regionvit"
    public static let summary = "RegionViT (Chen et al. 2022): regional and local tokens, regional-to-local attention; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its local tokens come from an overlapping convolution (kernel 8, stride 4) and its regional tokens from whole regions, so no token can be hidden alone"

    public var config = RegionViTConfig()

    public init() {}

    public static let fields: [Field<RegionViTSettings>] = [
        .numberOrList("dim", \.config.dims, "width of each stage (one number: four stages of it, as vit-pytorch)", repeatSingle: 4),
        .numberOrList("depth", \.config.depths, "blocks of each stage (one number: four stages of it; as many as dim has)", repeatSingle: 4),
        .value("window_size", \.config.windowSize, "local tokens per region side (a region is local_patch_size * window_size pixels, which must divide the image)", .positive),
        .value("local_patch_size", \.config.localPatchSize, "pixels per local token (4: the local tokeniser's stride)", .positive),
        .value("tokenize_local_3_conv", \.config.tokenizeLocal3Conv, "three 3x3 convolutions (strides 2, 2, 1) for the local tokens instead of one 8x8 of stride 4"),
        .value("use_peg", \.config.usePEG, "a position-encoding depthwise convolution on the local tokens after each downsampling"),
        .value("heads", \.config.heads, "attention heads (1.7.14 fixes 4)", .positive),
        .value("dim_head", \.config.dimHead, "width per head (1.7.14 fixes 32)", .positive),
        .converted("attn_dropout", \.config.attentionDropout, "dropout of the attention weights and output", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .converted("ff_dropout", \.config.ffDropout, "dropout in the feed-forward", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
    ]

    public static func build(_ config: RegionViTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        RegionViT(config, initializer: initializer)
    }
}

extension RegionViTConfig: StagedEncoderConfig {}
