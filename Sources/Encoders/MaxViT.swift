import NN
import TensorCore

/// MaxViT's configuration (vit-pytorch 1.7.14's arguments). A stride-2 convolutional stem, then
/// stages of blocks; a block is an MBConv (the first of a stage halves the map) followed by block
/// attention (within w x w windows) and grid attention (over a w x w grid spread across the map),
/// each with a feed-forward. Widths double per stage.
public struct MaxViTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var dim = 64
    /// Blocks of each stage.
    public var depth = [2]
    public var dimHead = 32
    /// The stem's width (nil: dim).
    public var dimConvStem: Int?
    public var windowSize = 7
    public var expansionRate = 4
    public var shrinkageRate = 0.25
    /// Dropout of the attention weights, the attention output and the feed-forward (1.7.14's default 0.1).
    public var dropout: Float = 0.1
    public init() {}

    public var stemDim: Int { dimConvStem ?? dim }
    public func stageDim(_ i: Int) -> Int { dim << i }
    /// The map's side after stage i for images of `side` pixels (stem: stride 2; each stage: stride 2).
    public func stageSide(_ i: Int, imageSide side: Int) -> Int { (0...i + 1).reduce(side) { s, _ in (s - 1) / 2 + 1 } }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + depth.indices.map { "stages.\($0)" } }

    /// What is wrong for images of `side` pixels, with the key to blame, or nil.
    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if depth.isEmpty || depth.contains(where: { $0 < 1 }) { return ("depth", "give each stage one or more blocks, e.g. [2]") }
        for i in depth.indices where stageDim(i) % dimHead != 0 {
            return ("dim_head", "stage \(i)'s width \(stageDim(i)) must be a multiple of dim_head \(dimHead) (heads = width / dim_head)")
        }
        if Int(Double(stageDim(0) * expansionRate) * shrinkageRate) < 1 { return ("mbconv_shrinkage_rate", "leaves the squeeze-excitation no width") }
        for i in depth.indices {
            let s = stageSide(i, imageSide: side)
            if s % windowSize != 0 {
                return ("window_size", "stage \(i)'s \(s)x\(s) map (\(side)-pixel images: the stem and each stage halve it) does not split into \(windowSize)x\(windowSize) windows; use a window size dividing \(s), fewer stages or larger images")
            }
        }
        return nil
    }
}

/// MBConv (Howard et al. 2019, Tan and Le 2019) as MaxViT uses it: 1x1 expansion, BatchNorm, GELU,
/// 3x3 depthwise convolution (stride 2 when downsampling), BatchNorm, GELU, squeeze-excitation,
/// 1x1 projection, BatchNorm; residual when the shape is kept.
public final class MBConv: Module {
    public let expand: Conv2d
    public let norm1: BatchNorm
    public let depthwise: Conv2d
    public let norm2: BatchNorm
    public let squeezeExcitation: SqueezeExcitation
    public let project: Conv2d
    public let norm3: BatchNorm
    public let residual: Bool

    init(_ dimIn: Int, _ dimOut: Int, downsample: Bool, expansionRate: Int, shrinkageRate: Double, initializer: Initializer) {
        let hidden = expansionRate * dimOut
        expand = Conv2d(dimIn, hidden, kernel: 1, initializer: initializer)
        norm1 = BatchNorm(hidden)
        depthwise = Conv2d(hidden, hidden, kernel: 3, stride: downsample ? 2 : 1, padding: 1, groups: hidden, initializer: initializer)
        norm2 = BatchNorm(hidden)
        squeezeExcitation = SqueezeExcitation(channels: hidden, hidden: Int(Double(hidden) * shrinkageRate), initializer: initializer)
        project = Conv2d(hidden, dimOut, kernel: 1, initializer: initializer)
        norm3 = BatchNorm(dimOut)
        residual = dimIn == dimOut && !downsample
    }

    public override var stateNames: [String: String] {
        let p = residual ? "fn." : ""
        return ["expand": p + "0", "norm1": p + "1", "depthwise": p + "3", "norm2": p + "4", "squeezeExcitation": p + "6", "project": p + "7", "norm3": p + "8"]
    }

    /// x (B, H, W, C), channels-last: the 1x1 convolutions are products, the depthwise one and
    /// the BatchNorms run over contiguous channels (the same computation as vit-pytorch's NCHW).
    func callAsFunction(_ x: Tensor) -> Tensor {
        let a = channelsLastBatchNorm(pointwise(x, expand), norm1).gelu()
        let h = squeezeExcitation.channelsLast(channelsLastBatchNorm(Encoders.depthwise(a, depthwise), norm2).gelu())
        let y = channelsLastBatchNorm(pointwise(h, project), norm3)
        return residual ? y + x : y
    }
}

/// MaxViT's attention within windows: LayerNorm, bias-free q/k/v, softmax attention with a learned
/// relative-position bias per head ((2w - 1)^2 offsets), bias-free output projection.
public final class WindowAttention: Module {
    public let norm: LayerNorm
    public let toQKV: Linear
    public let toOut: Linear
    public let relPosBias: Embedding
    let heads: Int
    let indices: IndexTensor
    let attentionDropout: Dropout?
    let outputDropout: Dropout?

    init(dim: Int, dimHead: Int, window w: Int, dropout p: Float, initializer: Initializer) {
        heads = dim / dimHead
        norm = LayerNorm(dim)
        toQKV = Linear(dim, 3 * dim, bias: false, initializer: initializer)
        toOut = Linear(dim, dim, bias: false, initializer: initializer)
        relPosBias = Embedding((2 * w - 1) * (2 * w - 1), heads, initializer: initializer)
        // Offset (dy, dx) of query i from key j, shifted to 0...2w-2, as row-major table indices.
        var values: [Int] = []
        for i in 0..<(w * w) {
            for j in 0..<(w * w) { values.append((i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1)) }
        }
        indices = IndexTensor(shape: [w * w * w * w], values)
        attentionDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0", "relPosBias": "rel_pos_bias"] }

    /// Windows (B', n, C) with n = w * w.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let n = x.shape[1]
        let bias = relPosBias.weight.value.gather(axis: 0, index: indices).reshaped([n, n, heads]).permuted([2, 0, 1])
        let merged = Tensor.biasedSelfAttention(packedQKV: toQKV(norm(x)), heads: heads, bias: bias,
                                                dropout: attentionDropout.map { d in { d($0) } })
        let y = toOut(merged)
        return outputDropout.map { $0(y) } ?? y
    }
}

/// One MaxViT block: MBConv, then block attention and its feed-forward, then grid attention and
/// its feed-forward (each residual), as vit-pytorch's Sequential (indices 0, 2, 3, 6, 7).
public final class MaxViTBlock: Module {
    public let mbconv: MBConv
    public let blockAttention: WindowAttention
    public let blockFeedForward: FeedForward
    public let gridAttention: WindowAttention
    public let gridFeedForward: FeedForward
    let window: Int

    init(_ dimIn: Int, _ dim: Int, downsample: Bool, config c: MaxViTConfig, initializer: Initializer) {
        window = c.windowSize
        mbconv = MBConv(dimIn, dim, downsample: downsample, expansionRate: c.expansionRate, shrinkageRate: c.shrinkageRate, initializer: initializer)
        blockAttention = WindowAttention(dim: dim, dimHead: c.dimHead, window: c.windowSize, dropout: c.dropout, initializer: initializer)
        blockFeedForward = FeedForward(dim: dim, hiddenDim: 4 * dim, dropout: c.dropout, initializer: initializer)
        gridAttention = WindowAttention(dim: dim, dimHead: c.dimHead, window: c.windowSize, dropout: c.dropout, initializer: initializer)
        gridFeedForward = FeedForward(dim: dim, hiddenDim: 4 * dim, dropout: c.dropout, initializer: initializer)
    }

    public override var stateNames: [String: String] {
        ["mbconv": "0", "blockAttention": "2.fn", "blockFeedForward": "3.fn", "gridAttention": "6.fn", "gridFeedForward": "7.fn"]
    }

    /// x (B, H, W, C) to (B, H', W', C'), channels-last throughout.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = mbconv(x)
        let (h, w) = (y.shape[1], y.shape[2])
        // Block attention over windows of neighbouring positions, then grid attention over a
        // window-sized grid spread across the map.
        var t = y.windows(window, window)
        t = blockAttention(t) + t
        t = blockFeedForward(t) + t
        t = t.mergingWindows(height: h, width: w, window, window).windows(window, window, strided: true)
        t = gridAttention(t) + t
        t = gridFeedForward(t) + t
        return t.mergingWindows(height: h, width: w, window, window, strided: true)
    }
}

/// vit-pytorch 1.7.14's MaxViT (Tu et al. 2022, "MaxViT: Multi-Axis Vision Transformer"): a
/// convolutional stem, then stages of MBConv with squeeze-excitation, block attention and grid
/// attention (both over w x w windows, with relative-position biases); the head averages the last
/// map, normalises and classifies. Hidden layers: "stages.i" (B, C_i, H_i, W_i) each stage's map,
/// "tokens" (B, H * W, C) the last one flattened, "pooled" (B, C) its mean (what the head's
/// LayerNorm reads), "logits".
public final class MaxViT: Module, HiddenLayerEncoder {
    public let config: MaxViTConfig
    public let stem1: Conv2d
    public let stem2: Conv2d
    public let layers: [MaxViTBlock]
    public let mlpHead: LayerNormLinear

    public init(_ config: MaxViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "MaxViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        stem1 = Conv2d(config.channels, config.stemDim, kernel: 3, stride: 2, padding: 1, initializer: initializer)
        stem2 = Conv2d(config.stemDim, config.stemDim, kernel: 3, padding: 1, initializer: initializer)
        var layers: [MaxViTBlock] = []
        var dimIn = config.stemDim
        for (i, depth) in config.depth.enumerated() {
            for j in 0..<depth {
                layers.append(MaxViTBlock(j == 0 ? dimIn : config.stageDim(i), config.stageDim(i), downsample: j == 0, config: config, initializer: initializer))
            }
            dimIn = config.stageDim(i)
        }
        self.layers = layers
        mlpHead = LayerNormLinear(dimIn, config.numClasses, firstIndex: 1, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["stem1": "conv_stem.0", "stem2": "conv_stem.1"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers names: Set<String>) -> [String: Tensor] {
        // The stem's full convolutions in (B, C, H, W), then the blocks channels-last.
        var x = stem2(stem1(images)).permuted([0, 2, 3, 1])
        var out: [String: Tensor] = [:]
        var index = 0
        for (i, depth) in config.depth.enumerated() {
            for _ in 0..<depth { x = layers[index](x); index += 1 }
            if names.contains("stages.\(i)") { out["stages.\(i)"] = x.permuted([0, 3, 1, 2]) }
        }
        let (b, c, side) = (x.shape[0], x.shape[3], x.shape[1] * x.shape[2])
        let tokens = x.reshaped([b, side, c])
        meanPooledOutputs(tokens, head: { mlpHead($0) }, layers: names, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
