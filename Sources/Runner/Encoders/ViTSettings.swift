import Encoders
import NN

/// The settings of the encoders built from a ViTConfig (vit, simple-vit and the zoo's
/// plain-token variants): patches, depth, hidden layers and the configuration for a run's images.
public protocol ViTConfigSettings: EncoderSettings {
    var config: ViTConfig { get }
}

extension ViTConfigSettings {
    public var patchSize: Int? { config.patchHeight }
    public var layerDecayDepth: Int? { config.depth }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public func check(_ input: EncoderInput) -> (key: String, problem: String)? { ViTSettings.checkPatches(config, input) }

    /// The configuration for `input`'s images and classes.
    public func config(for input: EncoderInput) -> ViTConfig {
        var c = config
        (c.imageHeight, c.imageWidth, c.channels, c.numClasses) = (input.imageSize, input.imageSize, input.channels, input.classes)
        return c
    }
}

/// `encoder: {kind: vit}`: vit-pytorch 1.7.14's ViT (Dosovitskiy et al. 2020): learned positions,
/// a class token, cls or mean pooling. The defaults are ViTConfig's (the reference encoder).
public struct ViTSettings: ViTConfigSettings {
    public static let kind = "vit"
    public static let summary = "ViT (vit-pytorch 1.7.14): learned positions, cls or mean pooling"
    public static let isPatchTokenEncoder = true

    public var config = ViTConfig()

    public init() {}

    public static let fields: [Field<ViTSettings>] = transformerFields(\ViTSettings.config) + [
        .choice("pool", \.config.pool, "cls (the class token) | mean (of the patch tokens)"),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("emb_dropout", \.config.embeddingDropout, "dropout after the position embedding", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
    ]

    /// The keys ViT and SimpleViT share (vit-pytorch's argument names).
    static func transformerFields<S>(_ path: WritableKeyPath<S, ViTConfig>) -> [Field<S>] {
        [
            Field("patch_size", help: "side of the square patches in pixels; must divide data.image_size", read: { s, c in
                guard let value = try c.decodeIfPresent(Int.self, forKey: RecipeKey("patch_size")) else { return }
                try c.check(Check<Int>.positive.problem(value), "patch_size")
                (s[keyPath: path].patchHeight, s[keyPath: path].patchWidth) = (value, value)
            }, write: { $0[keyPath: path].patchHeight }),
            .value("dim", path.appending(path: \.dim), "token width", .positive),
            .value("depth", path.appending(path: \.depth), "transformer blocks", .positive),
            .value("heads", path.appending(path: \.heads), "attention heads", .positive),
            .value("dim_head", path.appending(path: \.dimHead), "width per head", .positive),
            .value("mlp_dim", path.appending(path: \.mlpDim), "feed-forward hidden width", .positive),
        ]
    }

    public var learnedPositions: Bool { true }

    static func checkPatches(_ config: ViTConfig, _ input: EncoderInput) -> (key: String, problem: String)? {
        guard input.imageSize % config.patchHeight != 0 else { return nil }
        let divisors = (2..<Swift.max(input.imageSize, 2)).filter { input.imageSize % $0 == 0 }
        return ("patch_size", "patch size \(config.patchHeight) does not divide the image size \(input.imageSize) (data.image_size); use one of \(divisors.map(String.init).joined(separator: ", "))")
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        ViT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.ViT(image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), pool='\(c.pool.rawValue)', channels=\(input.channels), dim_head=\(c.dimHead))"
    }
}
