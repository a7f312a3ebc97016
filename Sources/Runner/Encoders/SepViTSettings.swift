import Encoders
import NN

/// `encoder: {kind: sepvit}`: vit-pytorch 1.7.14's SepViT (Li et al. 2022): overlapping
/// convolutional embeddings, PEG, depthwise-separable window attention with window tokens.
/// 1.7.14 ignores `window_size` and `dim_head` (always 7 and 32); `arguments: vit-pytorch-1.7.14`
/// keeps that.
public struct SepViTSettings: StagedEncoderSettings {
    public static let kind = "sepvit"
    public static let summary = "SepViT (Li et al. 2022): window attention with window tokens, then attention among windows; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its embeddings are overlapping convolutions (kernel 7, stride 4) and a position convolution reads every token's neighbours, so no token can be hidden alone"

    public var config = SepViTConfig()

    public init() {}

    public static let fields: [Field<SepViTSettings>] = [
        .value("dim", \.config.dim, "width of the first stage (each stage doubles it)", .positive),
        Field("depth", help: "blocks of each stage, e.g. [2]; the first stage embeds with stride 4, later ones with stride 2", read: { s, c in
            guard let depth = try c.decodeIfPresent([Int].self, forKey: RecipeKey("depth")) else { return }
            try c.check(!depth.isEmpty && depth.allSatisfy { $0 > 0 }, "depth", "give each stage one or more blocks, e.g. [2]")
            s.config.depth = depth
        }, write: { $0.config.depth }),
        .numberOrList("heads", \.config.heads, "heads of each stage: one number, or one per stage"),
        .numberOrList("window_size", \.config.windowSize, "window side of each stage (must divide its map): one number, or one per stage"),
        .value("dim_head", \.config.dimHead, "width per head", .positive),
        .value("ff_mult", \.config.ffMult, "feed-forward width as a multiple of the stage's width", .positive),
        .converted("dropout", \.config.dropout, "dropout of the attention weights, the output and the feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .choice("arguments", \.config.arguments,
                "paper (window_size and dim_head as given) | vit-pytorch-1.7.14 (both ignored, as 1.7.14 ignores them: windows of 7, heads 32 wide)"),
    ]

    public static func build(_ config: SepViTConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        SepViT(config, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        func tuple(_ v: [Int]) -> String { v.count == 1 ? "\(v[0])" : "(\(v.map(String.init).joined(separator: ", ")),)" }
        return "vit_pytorch.sep_vit.SepViT(num_classes=\(input.classes), dim=\(c.dim), depth=(\(c.depth.map(String.init).joined(separator: ", ")),), heads=\(tuple(c.heads)), window_size=\(tuple(c.windowSize)), dim_head=\(c.dimHead), ff_mult=\(c.ffMult), channels=\(input.channels)) (1.7.14 ignores window_size and dim_head: arguments: vit-pytorch-1.7.14)"
    }
}

extension SepViTConfig: StagedEncoderConfig {}
