import Encoders
import NN

/// `encoder: {kind: timm-vit}`: timm's VisionTransformer, whose names are timm's state_dict keys
/// (so timm safetensors load unchanged). `preset` sets the sizes of timm's named models
/// (vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224); the other keys override it.
public struct TimmViTSettings: EncoderSettings {
    public static let kind = "timm-vit"
    public static let summary = "timm's ViT (conv patch embedding, qkv bias, LayerNorm eps 1e-6, token or avg+fc_norm pooling): timm weights load unchanged"
    public static let isPatchTokenEncoder = true
    public static let namesOf = "timm"

    /// embed_dim, depth, num_heads of timm's named ViTs (MLP ratio 4).
    public static let presets: [String: (dim: Int, depth: Int, heads: Int)] = [
        "vit_tiny_patch16_224": (192, 12, 3), "vit_small_patch16_224": (384, 12, 6), "vit_base_patch16_224": (768, 12, 12),
    ]

    public var config = TimmViTConfig()
    public var preset: String?

    public init() {}

    public static let fields: [Field<TimmViTSettings>] = [
        // First: a preset sets the sizes the keys after it may change.
        Field("preset", help: "timm's sizes: " + presets.keys.sorted().joined(separator: " | ") + " (patch 16, MLP ratio 4); null: the keys below", read: { s, c in
            guard let name = try c.decodeIfPresent(String.self, forKey: RecipeKey("preset")) else { return }
            guard let p = presets[name] else {
                var message = "'\(name)' is not one of \(presets.keys.sorted().joined(separator: ", "))"
                if let near = nearest(name, in: Array(presets.keys)) { message += "; did you mean '\(near)'?" }
                throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + ["preset"], message: message)
            }
            s.preset = name
            (s.config.dim, s.config.depth, s.config.heads, s.config.mlpDim, s.config.patchSize) = (p.dim, p.depth, p.heads, 4 * p.dim, 16)
        }, write: { $0.preset }),
        .value("patch_size", \.config.patchSize, "side of the square patches in pixels; must divide data.image_size", .positive),
        .value("dim", \.config.dim, "embed_dim: token width", .positive),
        .value("depth", \.config.depth, "blocks", .positive),
        .value("heads", \.config.heads, "num_heads (each dim / heads wide)", .positive, where: { heads, s in
            s.config.dim % heads == 0 ? nil : "must divide dim (\(s.config.dim)): timm's heads are dim / heads wide"
        }),
        .value("mlp_dim", \.config.mlpDim, "the MLP's hidden width (embed_dim * mlp_ratio)", .positive),
        .choice("pool", \.config.pool, "token (the class token after the final norm) | avg (the patch tokens' mean, then fc_norm)"),
        .value("qkv_bias", \.config.qkvBias, "a bias on the qkv projection (timm's ViTs: true)"),
    ]

    public var patchSize: Int? { config.patchSize }
    public var learnedPositions: Bool { true }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        guard input.imageSize % config.patchSize != 0 else { return nil }
        return ("patch_size", "patch size \(config.patchSize) does not divide the image size \(input.imageSize) (data.image_size)")
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        var c = config
        (c.imageSize, c.channels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return TimmViT(c, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        "timm.models.vision_transformer.VisionTransformer(img_size=\(input.imageSize), patch_size=\(config.patchSize), in_chans=\(input.channels), num_classes=\(input.classes), embed_dim=\(config.dim), depth=\(config.depth), num_heads=\(config.heads), mlp_ratio=\(Double(config.mlpDim) / Double(config.dim)), qkv_bias=\(config.qkvBias ? "True" : "False"), global_pool='\(config.pool.rawValue)')"
    }
}
