import Encoders
import NN

/// `encoder: {kind: maxvit}`: vit-pytorch 1.7.14's MaxViT (Tu et al. 2022): a convolutional stem,
/// MBConv blocks with squeeze-excitation, block and grid attention over windows with relative-
/// position biases. Convolutional and pooled in stages, so only the view objectives (byol, dino,
/// esvit) and the evaluation stages take it.
public struct MaxViTSettings: StagedEncoderSettings {
    public static let kind = "maxvit"
    public static let summary = "MaxViT (Tu et al. 2022): MBConv, block and grid window attention with relative-position bias; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its stem and MBConv blocks are convolutions over the whole image, so there are no patch tokens to hide"

    public var config = MaxViTConfig()

    public init() {}

    public static let fields: [Field<MaxViTSettings>] = [
        .value("dim", \.config.dim, "width of the first stage (each stage doubles it)", .positive),
        Field("depth", help: "blocks of each stage, e.g. [2]; the stem and every stage halve the map, which each stage's window_size must divide",
              read: { s, c in
                  guard let depth = try c.decodeIfPresent([Int].self, forKey: RecipeKey("depth")) else { return }
                  try c.check(!depth.isEmpty && depth.allSatisfy { $0 > 0 }, "depth", "give each stage one or more blocks, e.g. [2]")
                  s.config.depth = depth
              }, write: { $0.config.depth }),
        .value("dim_head", \.config.dimHead, "width per head (heads = the stage's width / dim_head)", .positive),
        .nullable("dim_conv_stem", \.config.dimConvStem, "width of the convolutional stem (null: dim)", .positive),
        .value("window_size", \.config.windowSize, "side of the attention windows (block and grid)", .positive),
        .value("mbconv_expansion_rate", \.config.expansionRate, "MBConv's hidden width as a multiple of its output width", .positive),
        .value("mbconv_shrinkage_rate", \.config.shrinkageRate, "squeeze-excitation's width as a fraction of MBConv's hidden width", .openFraction),
        .converted("dropout", \.config.dropout, "dropout of the attention weights, the attention output and the feed-forward (1.7.14's default 0.1)",
                   Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
    ]

    public static func build(_ config: MaxViTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        MaxViT(config, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.max_vit.MaxViT(num_classes=\(input.classes), dim=\(c.dim), depth=(\(c.depth.map(String.init).joined(separator: ", ")),), dim_head=\(c.dimHead), dim_conv_stem=\(c.dimConvStem.map(String.init) ?? "None"), window_size=\(c.windowSize), mbconv_expansion_rate=\(c.expansionRate), mbconv_shrinkage_rate=\(c.shrinkageRate), dropout=\(c.dropout), channels=\(input.channels))"
    }
}

extension MaxViTConfig: StagedEncoderConfig {}
