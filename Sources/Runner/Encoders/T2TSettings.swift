import Encoders
import NN

/// `encoder: {kind: t2t-vit}`: vit-pytorch 1.7.14's T2T-ViT (Yuan et al. 2021): tokens-to-token
/// soft splits (overlapping unfolds with one-head token transformers between them), then ViT's
/// transformer with a class token. Its tokens overlap, so the masked objectives do not apply.
public struct T2TSettings: EncoderSettings {
    public static let kind = "t2t-vit"
    public static let summary = "T2T-ViT (Yuan et al. 2021): overlapping soft splits with token transformers; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its soft splits unfold overlapping windows, so every token holds pixels of its neighbours and cannot be embedded, or hidden, alone"

    public var config = T2TConfig()

    public init() {}

    public static let fields: [Field<T2TSettings>] = ViTSettings.transformerFields(\T2TSettings.config.vit).filter { $0.key != "patch_size" } + [
        Field("t2t_layers", help: "the soft splits, each [kernel, stride] (padding stride // 2); vit-pytorch's default [[7, 4], [3, 2], [3, 2]] leaves 2x2 tokens of a 28 px image, [[3, 2], [3, 2]] 7x7",
              read: { s, c in
                  guard let pairs = try c.decodeIfPresent([[Int]].self, forKey: RecipeKey("t2t_layers")) else { return }
                  try c.check(!pairs.isEmpty, "t2t_layers", "give at least one [kernel, stride] pair, e.g. [[3, 2], [3, 2]]")
                  for pair in pairs {
                      try c.check(pair.count == 2 && pair.allSatisfy { $0 > 0 }, "t2t_layers",
                                  "each entry is [kernel, stride], two positive numbers; got \(pair)")
                  }
                  s.config.layers = pairs.map { T2TLayer(kernel: $0[0], stride: $0[1]) }
              }, write: { $0.config.layers.map { [$0.kernel, $0.stride] } }),
        .choice("pool", \.config.vit.pool, "cls (the class token) | mean (of all tokens, the class token included, as vit-pytorch)"),
        .converted("dropout", \.config.vit.dropout, "dropout in attention and feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.vit.embeddingDropout, "dropout after the position embedding", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    public var layerDecayDepth: Int? { config.vit.depth }
    public var learnedPositions: Bool { true }
    public var hiddenLayerNames: [String] { config.vit.hiddenLayerNames }

    func config(for input: EncoderInput) -> T2TConfig {
        var c = config
        (c.vit.imageHeight, c.vit.imageWidth, c.vit.channels, c.vit.numClasses) = (input.imageSize, input.imageSize, input.channels, input.classes)
        return c
    }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        config(for: input).problem.map { ("t2t_layers", $0) }
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        T2TViT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config.vit
        let layers = config.layers.map { "(\($0.kernel), \($0.stride))" }.joined(separator: ", ")
        return "vit_pytorch.t2t.T2TViT(image_size=\(input.imageSize), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), pool='\(c.pool.rawValue)', channels=\(input.channels), dim_head=\(c.dimHead), t2t_layers=(\(layers),))"
    }
}
