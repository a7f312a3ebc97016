import NN
import TensorCore

/// MobileViT's configuration (vit-pytorch 1.7.14's arguments): 11 channel widths (stem, stages
/// and the head's 1x1 convolution), the transformer widths and depths of the three MobileViT
/// blocks, the inverted residuals' expansion, the blocks' kernel and their patch size.
public struct MobileViTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var inputChannels = 1
    public var numClasses = 10
    /// MobileViT-XXS's widths (Mehta and Rastegari 2022).
    public var channels = [16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320]
    public var dims = [64, 80, 96]
    public var depths = [2, 4, 3]
    public var expansion = 2
    public var kernelSize = 3
    /// At 28 px the three blocks see 4x4, 2x2 and 1x1 maps, so the patches are single positions.
    public var patchSize = 1
    public init() {}

    /// The map's side after the first convolution, the stem and each trunk stage (every stride 2 a ceil half).
    public func sides(imageSide side: Int) -> [Int] {
        let half = { (s: Int) in (s - 1) / 2 + 1 }
        let stem = half(half(side))
        return [half(stem), half(half(stem)), half(half(half(stem)))]
    }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits", "stages.0", "stages.1", "stages.2"] }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if channels.count != 11 || channels.contains(where: { $0 < 1 }) { return ("channels", "give 11 positive widths (vit-pytorch's channels), e.g. [16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320]") }
        if dims.count != 3 || dims.contains(where: { $0 < 1 }) { return ("dims", "give the three MobileViT blocks' transformer widths") }
        if depths.count != 3 || depths.contains(where: { $0 < 1 }) { return ("depths", "give the three MobileViT blocks' depths") }
        if kernelSize != 3 { return ("kernel_size", "vit-pytorch's blocks pad their n x n convolutions by 1, which keeps the map's size only for kernel 3") }
        for (i, s) in sides(imageSide: side).enumerated() where s % patchSize != 0 {
            return ("patch_size", "MobileViT block \(i)'s \(s)x\(s) map (\(side)-pixel images) does not split into \(patchSize)x\(patchSize) patches; use patch_size 1 below 64 pixels")
        }
        return nil
    }
}

/// Convolution (no bias), BatchNorm, SiLU: vit-pytorch's conv_1x1_bn and conv_nxn_bn.
public final class ConvBNSiLU: Module {
    public let conv: Conv2d
    public let norm: BatchNorm
    let activation: Bool
    let firstIndex: Int
    /// `firstIndex`: the convolution's position in the Sequential it belongs to (the BatchNorm's is next).
    init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, groups: Int = 1, activation: Bool = true, firstIndex: Int = 0,
         initializer: Initializer) {
        conv = Conv2d(inChannels, outChannels, kernel: kernel, stride: stride, padding: kernel / 2, groups: groups, bias: false, initializer: initializer)
        norm = BatchNorm(outChannels)
        self.activation = activation
        self.firstIndex = firstIndex
    }
    public override var stateNames: [String: String] { ["conv": "\(firstIndex)", "norm": "\(firstIndex + 1)"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = norm(conv(x))
        return activation ? y.silu() : y
    }

    /// The same on a channels-last map (B, H, W, C): 1x1 as a product, depthwise over contiguous
    /// channels, a full n x n convolution through the (B, C, H, W) kernel.
    func channelsLast(_ x: Tensor) -> Tensor {
        let k = conv.weight.shape[2]
        let c = k == 1 && conv.groups == 1 ? pointwise(x, conv)
            : conv.groups > 1 && conv.groups == x.shape[3] && conv.weight.shape[0] == x.shape[3] ? depthwise(x, conv)
            : channelsLastConv(x, conv)
        let y = channelsLastBatchNorm(c, norm)
        return activation ? y.silu() : y
    }
}

/// MobileNetV2's inverted residual (Sandler et al. 2018) with SiLU: 1x1 expansion (unless the
/// expansion is 1), 3x3 depthwise convolution (the stride), 1x1 projection without activation;
/// residual when the shape is kept. Named as vit-pytorch's `conv` Sequential.
public final class InvertedResidual: Module {
    public let expand: ConvBNSiLU?
    public let depthwise: ConvBNSiLU
    public let project: ConvBNSiLU
    let residual: Bool

    init(_ inChannels: Int, _ outChannels: Int, stride: Int, expansion: Int, initializer: Initializer) {
        let hidden = inChannels * expansion
        // vit-pytorch's `conv` Sequential: (conv, bn, SiLU) per step, the projection without SiLU.
        let first = expansion == 1 ? 0 : 3
        expand = expansion == 1 ? nil : ConvBNSiLU(inChannels, hidden, kernel: 1, initializer: initializer)
        depthwise = ConvBNSiLU(hidden, hidden, kernel: 3, stride: stride, groups: hidden, firstIndex: first, initializer: initializer)
        project = ConvBNSiLU(hidden, outChannels, kernel: 1, activation: false, firstIndex: first + 3, initializer: initializer)
        residual = stride == 1 && inChannels == outChannels
    }

    public override var stateNames: [String: String] { ["expand": "conv", "depthwise": "conv", "project": "conv"] }

    /// x (B, H, W, C), channels-last.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = project.channelsLast(depthwise.channelsLast(expand.map { $0.channelsLast(x) } ?? x))
        return residual ? y + x : y
    }
}

/// The MobileViT block: local n x n and 1x1 convolutions, a transformer over the positions at the
/// same place in every patch (heads 4 of 8, as vit-pytorch fixes them), a 1x1 convolution back,
/// and an n x n convolution fusing it with the block's input.
public final class MobileViTBlock: Module {
    public let conv1: ConvBNSiLU
    public let conv2: ConvBNSiLU
    public let transformer: MobileViTTransformer
    public let conv3: ConvBNSiLU
    public let conv4: ConvBNSiLU
    let patch: Int

    init(dim: Int, depth: Int, channels: Int, kernel: Int, patch: Int, mlpDim: Int, initializer: Initializer) {
        self.patch = patch
        conv1 = ConvBNSiLU(channels, channels, kernel: kernel, initializer: initializer)
        conv2 = ConvBNSiLU(channels, dim, kernel: 1, initializer: initializer)
        transformer = MobileViTTransformer(dim: dim, depth: depth, mlpDim: mlpDim, initializer: initializer)
        conv3 = ConvBNSiLU(dim, channels, kernel: 1, initializer: initializer)
        conv4 = ConvBNSiLU(2 * channels, channels, kernel: kernel, initializer: initializer)
    }

    /// x (B, H, W, C), channels-last.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = conv2.channelsLast(conv1.channelsLast(x))
        let (b, h, w, d) = (y.shape[0], y.shape[1], y.shape[2], y.shape[3])
        let (gh, gw, p) = (h / patch, w / patch, patch)
        // 'b d (h ph) (w pw) -> (b ph pw) (h w) d': attention among the patches, per place in a
        // patch (with 1-pixel patches, the map's positions as they lie).
        let tokens = p == 1 ? y.reshaped([b, h * w, d])
            : y.reshaped([b, gh, p, gw, p, d]).permuted([0, 2, 4, 1, 3, 5]).reshaped([b * p * p, gh * gw, d])
        let mixed = transformer(tokens)
        let out = p == 1 ? mixed.reshaped([b, h, w, d])
            : mixed.reshaped([b, p, p, gh, gw, d]).permuted([0, 3, 1, 4, 2, 5]).reshaped([b, h, w, d])
        return conv4.channelsLast(Tensor.concat([conv3.channelsLast(out), x], axis: 3))
    }
}

/// MobileViT's transformer: pre-norm attention (4 heads of 8, as vit-pytorch fixes them) and SiLU
/// feed-forward blocks, no final norm.
public final class MobileViTTransformer: Module {
    public let layers: [TransformerBlock]
    init(dim: Int, depth: Int, mlpDim: Int, initializer: Initializer) {
        layers = (0..<depth).map { _ in
            TransformerBlock(attention: Attention(dim: dim, heads: 4, dimHead: 8, initializer: initializer),
                             feedForward: FeedForward(dim: dim, hiddenDim: mlpDim, activation: .silu, initializer: initializer))
        }
    }
    func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// One trunk stage: a stride-2 inverted residual, then a MobileViT block (vit-pytorch's ModuleList pair).
public final class MobileViTStage: Module {
    public let downsample: InvertedResidual
    public let block: MobileViTBlock
    init(downsample: InvertedResidual, block: MobileViTBlock) { (self.downsample, self.block) = (downsample, block) }
    public override var stateNames: [String: String] { ["downsample": "0", "block": "1"] }
    func callAsFunction(_ x: Tensor) -> Tensor { block(downsample(x)) }
}

/// vit-pytorch 1.7.14's MobileViT (Mehta and Rastegari 2022, "MobileViT: Light-weight,
/// General-purpose, and Mobile-friendly Vision Transformer"): a stride-2 convolution, four
/// inverted residuals, then three stages of a stride-2 inverted residual and a MobileViT block
/// (local convolutions, a transformer across patches, fusion with the input); the head is a 1x1
/// convolution, a mean and a bias-free Linear. Hidden layers: "stages.i" (B, C_i, H_i, W_i) each
/// stage's map, "tokens" (B, H * W, C) the last one flattened, "pooled" (B, C) the mean of the
/// head's 1x1 convolution (what its Linear reads), "logits".
public final class MobileViT: Module, HiddenLayerEncoder {
    public let config: MobileViTConfig
    public let conv1: ConvBNSiLU
    public let stem: [InvertedResidual]
    public let trunk: [MobileViTStage]
    public let headConv: ConvBNSiLU
    public let head: Linear

    public init(_ config: MobileViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "MobileViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        let c = config.channels, e = config.expansion
        conv1 = ConvBNSiLU(config.inputChannels, c[0], kernel: 3, stride: 2, initializer: initializer)
        // The fourth block reads channels[3] (1.7.14 writes channels[2], which runs only when the two are equal).
        stem = [InvertedResidual(c[0], c[1], stride: 1, expansion: e, initializer: initializer),
                InvertedResidual(c[1], c[2], stride: 2, expansion: e, initializer: initializer),
                InvertedResidual(c[2], c[3], stride: 1, expansion: e, initializer: initializer),
                InvertedResidual(c[3], c[3], stride: 1, expansion: e, initializer: initializer)]
        let mlp = [2, 4, 4]
        trunk = (0..<3).map { i in
            MobileViTStage(downsample: InvertedResidual(c[3 + 2 * i], c[4 + 2 * i], stride: 2, expansion: e, initializer: initializer),
                           block: MobileViTBlock(dim: config.dims[i], depth: config.depths[i], channels: c[5 + 2 * i], kernel: config.kernelSize,
                                                 patch: config.patchSize, mlpDim: config.dims[i] * mlp[i], initializer: initializer))
        }
        headConv = ConvBNSiLU(c[9], c[10], kernel: 1, initializer: initializer)
        head = Linear(c[10], config.numClasses, bias: false, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["headConv": "to_logits.0", "head": "to_logits.2"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        // The first convolution on (B, C, H, W) images, then everything channels-last.
        var x = stem.reduce(conv1(images).permuted([0, 2, 3, 1])) { $1($0) }
        var out: [String: Tensor] = [:]
        for (i, stage) in trunk.enumerated() {
            x = stage(x)
            if layers.contains("stages.\(i)") { out["stages.\(i)"] = x.permuted([0, 3, 1, 2]) }
        }
        let (b, c, n) = (x.shape[0], x.shape[3], x.shape[1] * x.shape[2])
        if layers.contains("tokens") { out["tokens"] = x.reshaped([b, n, c]) }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = headConv.channelsLast(x).mean(axes: [1, 2])
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = head(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
