import Encoders
import NN

/// `encoder: {kind: rvt}`: vit-pytorch 1.7.14's RvT (Chu et al. 2021): 2-D axial rotary positions,
/// a depthwise-separable convolutional query, GEGLU feed-forwards, and no position table. Its
/// queries read the full token grid: SimMIM and MPP apply, MAE and MP3 do not.
public struct RvTSettings: ViTConfigSettings {
    public static let kind = "rvt"
    public static let summary = "RvT (Chu et al. 2021): axial rotary positions, convolutional queries, GEGLU; for simmim, mpp, byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = true
    public static let refusedObjectives = [
        "mae": "its convolutional queries read each token's neighbours on the full token grid, so it cannot encode MAE's random subset of the patches alone",
        "mp3": "it has no position table for MP3 to leave out: its positions are rotary, applied to the queries and keys inside every attention",
    ]

    public var config = ViTConfig()
    public var options = RvTOptions()

    public init() {}

    public static let fields: [Field<RvTSettings>] = ViTSettings.transformerFields(\RvTSettings.config) + [
        .value("rotary", \.options.rotary, "2-D axial rotary positions on queries and keys (use_rotary); false leaves RvT without positions"),
        .value("conv_query", \.options.convolutionalQuery, "queries from a depthwise-separable convolution over the token grid (use_ds_conv); false: a Linear"),
        .value("query_kernel", \.options.queryKernel, "the convolutional query's depthwise kernel (odd; vit-pytorch's conv_query_kernel, 5)",
               Check<Int>.that({ $0 > 0 && $0 % 2 == 1 }) { _ in "must be a positive odd number, e.g. 5" }),
        .value("glu", \.options.glu, "GEGLU feed-forwards (use_glu); false: GELU"),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        RvT(config(for: input), options: options, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let call = "vit_pytorch.rvt.RvT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), channels=\(input.channels), dim_head=\(c.dimHead), use_rotary=\(options.rotary ? "True" : "False"), use_ds_conv=\(options.convolutionalQuery ? "True" : "False"), use_glu=\(options.glu ? "True" : "False"))"
        return options.queryKernel == 5 ? call : call + " (conv_query_kernel=\(options.queryKernel) is not a constructor argument in 1.7.14: set it on each Attention)"
    }
}
