import Encoders
import NN

/// `encoder: {kind: cait}`: vit-pytorch 1.7.14's CaiT (Touvron et al. 2021): talking-heads
/// attention with LayerScale over the patches alone, then class-attention layers; layer dropout.
/// 1.7.14 starts LayerScale by each layer's index rather than the model's depth (a defect for
/// stacks deeper than 18); `layerscale_init: vit-pytorch-1.7.14` reproduces it.
public struct CaiTSettings: ViTConfigSettings {
    public static let kind = "cait"
    public static let summary = "CaiT (Touvron et al. 2021): LayerScale, talking heads, class-attention layers, layer dropout"
    public static let isPatchTokenEncoder = true

    public var config = ViTConfig()
    public var options = CaiTOptions()

    public init() {}

    public static let fields: [Field<CaiTSettings>] = ViTSettings.transformerFields(\CaiTSettings.config) + [
        .value("cls_depth", \.options.classDepth, "class-attention layers after the patch stack", .positive),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.embeddingDropout, "dropout after the position embedding", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("layer_dropout", \.options.layerDropout, "in training, the probability of skipping each whole layer (one always runs)",
                   Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .choice("layerscale_init", \.options.layerScaleInit,
                "paper (LayerScale starts at 0.1, 1e-5 or 1e-6 by the model's depth) | vit-pytorch-1.7.14 (by each layer's index)"),
    ]

    public var learnedPositions: Bool { true }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        CaiT(config(for: input), options: options, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let call = "vit_pytorch.cait.CaiT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), cls_depth=\(options.classDepth), heads=\(c.heads), mlp_dim=\(c.mlpDim), dim_head=\(c.dimHead))"
        return input.channels == 3 ? call : call + " (1.7.14 hard-codes 3 channels: set patch_dim = \(input.channels) * patch_size ** 2 in cait.py)"
    }
}
