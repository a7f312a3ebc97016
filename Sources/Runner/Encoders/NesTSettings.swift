import Encoders
import NN

/// `encoder: {kind: nest}`: vit-pytorch 1.7.14's NesT (Zhang et al. 2022): hierarchies of local
/// transformers attending within square blocks of the patch map, joined by convolution-LayerNorm-
/// max-pool aggregation. Its stages pool the map, so only the view objectives (byol, dino, esvit)
/// and the evaluation stages take it.
public struct NesTSettings: StagedEncoderSettings {
    public static let kind = "nest"
    public static let summary = "NesT (Zhang et al. 2022): local attention in nested blocks, conv-LN-max-pool aggregation; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its aggregations convolve and max-pool the whole map between hierarchies, so a hidden patch's pixels reach the later hierarchies through its neighbours and no sequence of patch tokens stays fixed"

    public var config = NesTConfig()

    public init() {}

    public static let fields: [Field<NesTSettings>] = [
        .value("patch_size", \.config.patchSize, "side of the square patches; the patch map must split into 2^(num_hierarchies - 1) blocks a side", .positive),
        .value("dim", \.config.dim, "width of the first hierarchy (each aggregation doubles it)", .positive),
        .value("heads", \.config.heads, "heads of the first hierarchy (doubling with the width; each head is dim / heads wide)", .positive),
        .value("num_hierarchies", \.config.hierarchies, "hierarchies; the first attends within 2^(n-1) x 2^(n-1) blocks, the last within the whole map", .positive),
        .numberOrList("block_repeats", \.config.blockRepeats, "attention and feed-forward blocks per hierarchy: one number, or a list with one per hierarchy"),
        .value("mlp_mult", \.config.mlpMult, "feed-forward width as a multiple of the hierarchy's width", .positive),
        .converted("dropout", \.config.dropout, "dropout after attention and in the feed-forward", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
    ]

    public var learnedPositions: Bool { true }
    public static func build(_ config: NesTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        NesT(config, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let repeats = c.blockRepeats.count == 1 ? "\(c.blockRepeats[0])" : "(\(c.blockRepeats.map(String.init).joined(separator: ", ")),)"
        return "vit_pytorch.nest.NesT(image_size=\(input.imageSize), patch_size=\(c.patchSize), num_classes=\(input.classes), dim=\(c.dim), heads=\(c.heads), num_hierarchies=\(c.hierarchies), block_repeats=\(repeats), mlp_mult=\(c.mlpMult), channels=\(input.channels))"
    }
}

extension NesTConfig: StagedEncoderConfig {}
