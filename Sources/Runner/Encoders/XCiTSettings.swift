import Encoders
import NN

/// `encoder: {kind: xcit}`: vit-pytorch 1.7.14's XCiT (El-Nouby et al. 2021): cross-covariance
/// attention, local patch interaction (depthwise convolutions and BatchNorm), LayerScale and
/// class-attention layers. Its convolutions read the full grid: SimMIM and MPP apply, MAE and MP3
/// do not. 1.7.14's LayerScale start values (by layer index, and 1e-6 past layer 18 from a misread
/// condition) are `layerscale_init: vit-pytorch-1.7.14`.
public struct XCiTSettings: ViTConfigSettings {
    public static let kind = "xcit"
    public static let summary = "XCiT (El-Nouby et al. 2021): cross-covariance attention, local patch interaction, class attention; for simmim, mpp, byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = true
    public static let refusedObjectives = [
        "mae": "its local patch interaction convolves the full token grid, so it cannot encode MAE's random subset of the patches alone",
        "mp3": "its cross-covariance attention mixes channels over all tokens at once and has no form with queries from the tokens and keys from a context, which MP3's encoder needs",
    ]

    public var config = ViTConfig()
    public var options = XCiTOptions()

    public init() {}

    public static let fields: [Field<XCiTSettings>] = ViTSettings.transformerFields(\XCiTSettings.config) + [
        .value("cls_depth", \.options.classDepth, "class-attention layers after the patch stack", .positive),
        .value("local_patch_kernel_size", \.options.localPatchKernel, "the local patch interaction's depthwise kernel (odd)",
               Check<Int>.that({ $0 > 0 && $0 % 2 == 1 }) { _ in "must be a positive odd number, e.g. 3" }),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.embeddingDropout, "dropout after the position embedding", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("layer_dropout", \.options.layerDropout, "in training, the probability of skipping each whole layer (one always runs)",
                   Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .choice("layerscale_init", \.options.layerScaleInit,
                "paper (LayerScale starts at 0.1, 1e-5 or 1e-6 by the model's depth) | vit-pytorch-1.7.14 (by each layer's index: 0.1 up to 18, then 1e-6)"),
    ]

    public var learnedPositions: Bool { true }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        XCiT(config(for: input), options: options, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let call = "vit_pytorch.xcit.XCiT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), cls_depth=\(options.classDepth), heads=\(c.heads), mlp_dim=\(c.mlpDim), dim_head=\(c.dimHead), local_patch_kernel_size=\(options.localPatchKernel))"
        return input.channels == 3 ? call : call + " (1.7.14 hard-codes 3 channels: set patch_dim = \(input.channels) * patch_size ** 2 in xcit.py)"
    }
}
