import Encoders
import NN

/// `encoder: {kind: simple-vit}`: vit-pytorch 1.7.14's SimpleViT (Beyer et al. 2022): fixed 2-D
/// sin-cos positions, no class token, mean pooling, no dropout; and its variants as keys:
/// register_tokens (Darcet et al. 2023), qk_norm (ViT-22B) and patch_dropout (Liu et al. 2022).
public struct SimpleViTSettings: ViTConfigSettings {
    public static let kind = "simple-vit"
    public static let summary = "SimpleViT: 2-D sin-cos positions, mean pooling"
    public static let isPatchTokenEncoder = true

    public var config: ViTConfig = {
        var c = ViTConfig()
        c.pool = .mean
        return c
    }()

    public var options = SimpleViTOptions()

    public init() {}

    public static let fields: [Field<SimpleViTSettings>] = ViTSettings.transformerFields(\SimpleViTSettings.config) + [
        Field("pool", help: "mean: SimpleViT always mean-pools", read: { _, c in
            guard let pool = try c.decodeIfPresent(String.self, forKey: RecipeKey("pool")) else { return }
            try c.check(pool == "mean", "pool", "simple-vit always mean-pools; set pool: mean, or leave the key out")
        }, write: { _ in "mean" }),
        .value("register_tokens", \.options.registerTokens, "learned register tokens appended for the blocks and dropped after them (simple_vit_with_register_tokens.py; 0: none)", .nonNegative),
        .value("qk_norm", \.options.qkNorm, "RMS-normalise queries and keys with a learned per-head gain (simple_vit_with_qk_norm.py; its 1.7.14 LayerNorm head is a defect, the head here is the Linear)"),
        .converted("patch_dropout", \.options.patchDropout, "in training, drop this fraction of each image's patch tokens at random (simple_vit_with_patch_dropout.py)",
                   Check<Double>.that({ $0 >= 0 && $0 < 1 }) { _ in "must be in [0, 1), e.g. 0.5" }, to: { Float($0) }, from: { Double($0) }),
    ]



    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        SimpleViT(config(for: input), options: options, initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        let common = "image_size=\(input.imageSize), patch_size=\(c.patchHeight), num_classes=\(input.classes), dim=\(c.dim), depth=\(c.depth), heads=\(c.heads), mlp_dim=\(c.mlpDim), channels=\(input.channels), dim_head=\(c.dimHead)"
        switch (options.registerTokens > 0, options.qkNorm, options.patchDropout > 0) {
        case (false, false, false): return "vit_pytorch.SimpleViT(\(common))"
        case (true, false, false): return "vit_pytorch.simple_vit_with_register_tokens.SimpleViT(\(common), num_register_tokens=\(options.registerTokens))"
        case (false, false, true): return "vit_pytorch.simple_vit_with_patch_dropout.SimpleViT(\(common), patch_dropout=\(options.patchDropout))"
        // 1.7.14's qk-norm SimpleViT has a LayerNorm for a head: set model.linear_head = torch.nn.Linear(dim, classes) first.
        case (false, true, false): return "vit_pytorch.simple_vit_with_qk_norm.SimpleViT(\(common)) with linear_head = torch.nn.Linear(\(c.dim), \(input.classes))"
        default: return nil
        }
    }
}
