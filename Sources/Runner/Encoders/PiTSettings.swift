import Encoders
import NN

/// `encoder: {kind: pit}`: vit-pytorch 1.7.14's PiT (Heo et al. 2021): overlapping patch
/// embedding, then transformer stages with pooling between them (a stride-2 depthwise convolution
/// that halves the token grid and doubles the width). Its stages downsample and its embedding
/// overlaps, so only the view objectives (byol, dino, esvit) and the evaluation stages take it.
public struct PiTSettings: EncoderSettings {
    public static let kind = "pit"
    public static let summary = "PiT (Heo et al. 2021): overlapping patches, pooling stages that halve the grid; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let isHierarchical = true
    public static let notPatchTokenReason = "its patch embedding unfolds overlapping windows (stride patch_size / 2) and its stages pool the token grid, so no token can be embedded, or hidden, alone"

    public var config = PiTConfig()

    public init() {}

    public static let fields: [Field<PiTSettings>] = [
        .value("patch_size", \.config.patchSize, "side of the overlapping patches (the unfold's stride is half of it)", .positive),
        .value("dim", \.config.dim, "token width of the first stage (each pooling doubles it)", .positive),
        Field("depth", help: "blocks of each stage, e.g. [1, 1, 1]: a pooling between consecutive stages", read: { s, c in
            guard let depth = try c.decodeIfPresent([Int].self, forKey: RecipeKey("depth")) else { return }
            try c.check(!depth.isEmpty && depth.allSatisfy { $0 > 0 }, "depth", "give each stage one or more blocks, e.g. [1, 1, 1]")
            s.config.depth = depth
        }, write: { $0.config.depth }),
        .numberOrList("heads", \.config.heads, "attention heads: one number for every stage, or a list with one per stage"),
        .value("dim_head", \.config.dimHead, "width per head", .positive),
        .value("mlp_dim", \.config.mlpDim, "feed-forward hidden width, every stage", .positive),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.embeddingDropout, "dropout after the position embedding", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    public var learnedPositions: Bool { true }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    func config(for input: EncoderInput) -> PiTConfig {
        var c = config
        (c.imageSize, c.channels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return c
    }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        config(for: input).keyedProblem
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        PiT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let heads = c.heads.count == 1 ? "\(c.heads[0])" : "(\(c.heads.map(String.init).joined(separator: ", ")),)"
        return "vit_pytorch.pit.PiT(image_size=\(input.imageSize), patch_size=\(c.patchSize), num_classes=\(input.classes), dim=\(c.dim), depth=(\(c.depth.map(String.init).joined(separator: ", ")),), heads=\(heads), mlp_dim=\(c.mlpDim), dim_head=\(c.dimHead), channels=\(input.channels))"
    }
}
