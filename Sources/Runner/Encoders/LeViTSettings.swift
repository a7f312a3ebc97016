import Encoders
import NN

/// `encoder: {kind: levit}`: vit-pytorch 1.7.14's LeViT (Graham et al. 2021): a four-convolution
/// stem, attention with BatchNormed projections and a learned bias per offset, Hardswish
/// feed-forwards, downsampling attention between stages. 1.7.14 sizes its bias tables for
/// image_size // 16 (at 28 px a 1x1 table for a 2x2 map, broadcast: no effect) and starts every
/// attention output's BatchNorm at 0; `bias_grid` and `out_norm_init: vit-pytorch-1.7.14` keep that.
public struct LeViTSettings: StagedEncoderSettings {
    public static let kind = "levit"
    public static let summary = "LeViT (Graham et al. 2021): conv stem, attention with offset biases, Hardswish, downsampling attention; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its stem is four stride-2 convolutions over the whole image, so there are no patch tokens to hide"

    public var config = LeViTConfig()

    public init() {}

    public static let fields: [Field<LeViTSettings>] = [
        .value("stages", \.config.stages, "stages; between two, an attention block with strided queries halves the map", .positive),
        .numberOrList("dim", \.config.dims, "width of each stage: one number, or a list (the last value repeats)"),
        .numberOrList("depth", \.config.depths, "blocks of each stage: one number, or a list"),
        .numberOrList("heads", \.config.heads, "heads of each stage (the downsampling block between stages has twice as many)"),
        .value("mlp_mult", \.config.mlpMult, "feed-forward width as a multiple of the stage's width", .positive),
        .value("dim_key", \.config.dimKey, "query and key width per head", .positive),
        .value("dim_value", \.config.dimValue, "value width per head", .positive),
        .converted("dropout", \.config.dropout, "dropout of the attention weights and outputs and in the feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .choice("bias_grid", \.config.biasGrid,
                "exact (the bias tables fit the maps the stem makes) | vit-pytorch-1.7.14 (sized for image_size // 16: at 28 px a 1x1 table broadcast over a 2x2 map, so the bias has no effect)"),
        .choice("out_norm_init", \.config.outNormInit,
                "paper (the attention output's BatchNorm starts at 0 in residual blocks, at 1 in the downsampling ones, as the official code) | vit-pytorch-1.7.14 (0 in both: at the start every image gives the same output past the first downsampling)"),
    ]

    public static func build(_ config: LeViTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        LeViT(config, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        func tuple(_ v: [Int]) -> String { v.count == 1 ? "\(v[0])" : "(\(v.map(String.init).joined(separator: ", ")),)" }
        let call = "vit_pytorch.levit.LeViT(image_size=\(input.imageSize), num_classes=\(input.classes), dim=\(tuple(c.dims)), depth=\(tuple(c.depths)), heads=\(tuple(c.heads)), mlp_mult=\(c.mlpMult), stages=\(c.stages), dim_key=\(c.dimKey), dim_value=\(c.dimValue))"
        return input.channels == 3 ? call : call + " (1.7.14 hard-codes 3 input channels in conv_embedding.0)"
    }
}

extension LeViTConfig: StagedEncoderConfig {}
