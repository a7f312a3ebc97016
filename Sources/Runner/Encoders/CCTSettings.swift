import Encoders
import NN

/// `encoder: {kind: cct}`: vit-pytorch 1.7.14's Compact Convolutional Transformer (Hassani et al.
/// 2021): a convolutional tokeniser, sequence pooling, the named sizes cct_2 ... cct_16 (`size`).
/// 1.7.14 refuses `dropout_rate` and fixes attention dropout and stochastic depth at 0.1; here all
/// three are keys, with 1.7.14's values as defaults.
public struct CCTSettings: EncoderSettings {
    public static let kind = "cct"
    public static let summary = "CCT (Hassani et al. 2021): convolutional tokeniser, sequence pooling, sizes cct_2 ... cct_16; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its convolutional tokeniser makes each token from an overlapping window (convolution, then max-pooling), so a token cannot be embedded, or hidden, alone"

    public var config = CCTConfig()
    public var size: String? = nil

    public init() {}

    public static let fields: [Field<CCTSettings>] = [
        Field("size", help: "a named size, \(CCTConfig.named.map(\.name).joined(separator: " | ")): sets dim, depth, heads and mlp_ratio (keys given beside it win)", read: { s, c in
            guard let name = try c.decodeIfPresent(String.self, forKey: RecipeKey("size")) else { return }
            guard let named = CCTConfig.named.first(where: { $0.name == name }) else {
                try c.check(false, "size", "'\(name)' is not a CCT size; use one of \(CCTConfig.named.map(\.name).joined(separator: ", "))")
                return
            }
            (s.config.depth, s.config.heads, s.config.mlpRatio, s.config.dim) = (named.depth, named.heads, named.mlpRatio, named.dim)
            s.size = name
        }, write: { $0.size }),
        .value("dim", \.config.dim, "token width (embedding_dim)", .positive),
        .value("depth", \.config.depth, "transformer layers (num_layers)", .positive),
        .value("heads", \.config.heads, "attention heads (num_heads); must divide dim", .positive),
        .value("mlp_ratio", \.config.mlpRatio, "feed-forward width as a multiple of dim", Check<Double>.that({ $0 > 0 }) { _ in "must be positive" }),
        .value("conv_layers", \.config.convLayers, "tokeniser convolutions, each followed by ReLU and max-pooling (n_conv_layers)", .positive),
        .value("kernel_size", \.config.kernelSize, "tokeniser convolution kernel", .positive),
        .nullable("stride", \.config.stride, "tokeniser convolution stride (null: max(1, kernel_size // 2 - 1), as cct_N)", Check<Int>.positive),
        .nullable("padding", \.config.padding, "tokeniser convolution padding (null: max(1, kernel_size // 2))", Check<Int>.nonNegative),
        .value("pooling_kernel_size", \.config.poolingKernel, "max-pooling kernel", .positive),
        .value("pooling_stride", \.config.poolingStride, "max-pooling stride", .positive),
        .value("pooling_padding", \.config.poolingPadding, "max-pooling padding (at most half the kernel)", .nonNegative),
        .choice("positional_embedding", \.config.positions, "sine (fixed sinusoids) | learnable | none"),
        .converted("dropout", \.config.dropout, "dropout after the positions, the attention projection and the feed-forward (dropout_rate)",
                   Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .converted("attention_dropout", \.config.attentionDropout, "dropout on the attention weights", Check<Double>.fraction,
                   to: { Float($0) }, from: { Double($0) }),
        .converted("stochastic_depth", \.config.stochasticDepth, "drop-path rate of the last layer, rising linearly from 0 at the first (stochastic_depth_rate)",
                   Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
    ]

    public var layerDecayDepth: Int? { nil }
    public var learnedPositions: Bool { config.positions == .learnable }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    func config(for input: EncoderInput) -> CCTConfig {
        var c = config
        (c.imageHeight, c.imageWidth, c.channels, c.numClasses) = (input.imageSize, input.imageSize, input.channels, input.classes)
        return c
    }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        let c = config(for: input)
        guard let problem = c.problem else { return nil }
        let key = problem.contains("heads") ? "heads" : problem.contains("pooling padding") ? "pooling_padding" : "conv_layers"
        return (key, problem)
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        CCT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        return "vit_pytorch.cct.CCT(img_size=\(input.imageSize), embedding_dim=\(c.dim), n_input_channels=\(input.channels), n_conv_layers=\(c.convLayers), kernel_size=\(c.kernelSize), stride=\(c.convStride), padding=\(c.convPadding), pooling_kernel_size=\(c.poolingKernel), pooling_stride=\(c.poolingStride), pooling_padding=\(c.poolingPadding), num_layers=\(c.depth), num_heads=\(c.heads), mlp_ratio=\(c.mlpRatio), num_classes=\(input.classes), positional_embedding='\(c.positions.rawValue)')"
    }
}
