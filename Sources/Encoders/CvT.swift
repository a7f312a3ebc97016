import NN
import TensorCore

/// One stage of a CvT (vit-pytorch's `s1_...`, `s2_...`, `s3_...` arguments).
public struct CvTStage: Codable, Equatable, Sendable {
    public var embDim: Int
    public var embKernel: Int
    public var embStride: Int
    public var projKernel = 3
    public var kvProjStride = 2
    public var heads: Int
    public var depth: Int
    public var mlpMult = 4

    public init(embDim: Int, embKernel: Int, embStride: Int, heads: Int, depth: Int) {
        (self.embDim, self.embKernel, self.embStride, self.heads, self.depth) = (embDim, embKernel, embStride, heads, depth)
    }
}

/// Hyperparameters of a CvT.
public struct CvTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var dimHead = 64
    public var dropout: Float = 0
    /// EsViT's CvT (microsoft/esvit, models/cvt_v4_transformer.py): a LayerNorm over the channels
    /// of the last stage's tokens before they are pooled and handed to the region head. vit-pytorch's
    /// CvT has none (false, the default).
    public var finalNorm = false
    /// Three stages by default, sized for 28-pixel images: 28 -> 7 -> 4 -> 2.
    public var stages = [CvTStage(embDim: 64, embKernel: 7, embStride: 4, heads: 1, depth: 1),
                         CvTStage(embDim: 128, embKernel: 3, embStride: 2, heads: 2, depth: 2),
                         CvTStage(embDim: 192, embKernel: 3, embStride: 2, heads: 3, depth: 2)]

    public init() {}

    /// The hidden layers a CvT of this configuration exposes.
    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + stages.indices.map { "stages.\($0)" } }

    /// The side of stage `i`'s token map for images of `size` pixels.
    public func mapSide(after i: Int, imageSize size: Int) -> Int {
        var side = size
        for s in stages[0...i] { side = (side + 2 * (s.embKernel / 2) - s.embKernel) / s.embStride + 1 }
        return side
    }
}

/// A 2-D convolution layer (torch's nn.Conv2d; PyTorch's default initialisation).
public final class Conv2d: Module, Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1, bias: Bool = true,
                initializer: Initializer) {
        let fanIn = inChannels / groups * kernel * kernel
        let (w, b) = initializer.linear(inFeatures: fanIn, outFeatures: outChannels)
        weight = Parameter(w.reshaped([outChannels, inChannels / groups, kernel, kernel]))
        self.bias = bias ? Parameter(b) : nil
        (self.stride, self.padding, self.groups) = (stride, padding, groups)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.conv2d(weight: weight.value, bias: bias?.value, stride: stride, padding: padding, groups: groups)
    }
}

/// vit-pytorch's CvT LayerNorm: normalises (B, C, H, W) over the channels at each position,
/// (x - mean) / sqrt(var + eps) * g + b with g, b shaped (1, C, 1, 1).
public final class ChannelLayerNorm: Module, Layer {
    public let g: Parameter
    public let b: Parameter

    public init(_ channels: Int) {
        g = Parameter(.ones([1, channels, 1, 1]))
        b = Parameter(.zeros([1, channels, 1, 1]))
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.channelLayerNorm(weight: g.value, bias: b.value, eps: 1e-5)
    }

    /// The same over the last axis of a channels-last map (B, H, W, C) or tokens (B, N, C).
    public func channelsLast(_ x: Tensor) -> Tensor { channelsLastLayerNorm(x, g: g, b: b) }
}

/// vit-pytorch's CvT attention: channel LayerNorm, queries from a depthwise-separable convolution
/// (depthwise k x k, BatchNorm, pointwise) at stride 1, keys and values from another at
/// `kvProjStride`, multi-head softmax attention over the token map, pointwise output convolution.
public final class CvTAttention: Module {
    public let norm: ChannelLayerNorm
    public let toQ: Sequential
    public let toKV: Sequential
    public let toOut: Sequential
    let heads: Int, dimHead: Int

    static func depthwiseSeparable(_ dimIn: Int, _ dimOut: Int, kernel: Int, stride: Int, initializer: Initializer) -> Sequential {
        Sequential([Conv2d(dimIn, dimIn, kernel: kernel, stride: stride, padding: kernel / 2, groups: dimIn, bias: false, initializer: initializer),
                    BatchNorm(dimIn),
                    Conv2d(dimIn, dimOut, kernel: 1, bias: false, initializer: initializer)])
    }

    init(dim: Int, projKernel: Int, kvProjStride: Int, heads: Int, dimHead: Int, dropout: Float, initializer: Initializer) {
        let inner = heads * dimHead
        norm = ChannelLayerNorm(dim)
        toQ = Self.depthwiseSeparable(dim, inner, kernel: projKernel, stride: 1, initializer: initializer)
        toKV = Self.depthwiseSeparable(dim, 2 * inner, kernel: projKernel, stride: kvProjStride, initializer: initializer)
        var out: [any Layer] = [Conv2d(inner, dim, kernel: 1, initializer: initializer)]
        if dropout > 0 { out.append(Dropout(dropout, rng: initializer.dropoutStream)) }
        toOut = Sequential(out)
        (self.heads, self.dimHead) = (heads, dimHead)
    }

    public override var stateNames: [String: String] { ["toQ": "to_q.net", "toKV": "to_kv.net", "toOut": "to_out"] }

    /// A depthwise-separable projection (depthwise k x k, BatchNorm, pointwise) of a channels-last map.
    static func separable(_ x: Tensor, _ net: Sequential) -> Tensor {
        let (dw, bn, pw) = (net.layers[0] as! Conv2d, net.layers[1] as! BatchNorm, net.layers[2] as! Conv2d)
        return pointwise(channelsLastBatchNorm(depthwise(x, dw), bn), pw)
    }

    /// The attention on a channels-last map (B, H, W, C): the projections convolve the map
    /// where it is, and the fused attention kernel reads the heads from the queries and from the
    /// keys and values packed side by side (`Tensor.multiHeadAttention(queries:packedKV:)`), with
    /// no slices or permutes.
    public func channelsLast(_ x: Tensor) -> Tensor {
        let (b, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let inner = heads * dimHead
        let normed = norm.channelsLast(x)
        let q = Self.separable(normed, toQ).reshaped([b, h * w, inner])
        let kv = Self.separable(normed, toKV)
        let packed = kv.reshaped([b, kv.shape[1] * kv.shape[2], 2 * inner])
        let attended = Tensor.multiHeadAttention(queries: q, packedKV: packed, heads: heads).output
        var out = pointwise(attended, toOut.layers[0] as! Conv2d)
        if toOut.layers.count > 1 { out = toOut.layers[1](out) }
        return out.reshaped([b, h, w, x.shape[3]])
    }
}

/// vit-pytorch's CvT feed-forward: channel LayerNorm, pointwise conv to dim * mult, GELU, pointwise back.
public final class CvTFeedForward: Module {
    public let net: Sequential

    init(dim: Int, mult: Int, dropout: Float, initializer: Initializer) {
        // Indices as PyTorch's Sequential: 0 norm, 1 conv, 2 GELU, 3 dropout, 4 conv, 5 dropout.
        let drop: any Layer = dropout > 0 ? Dropout(dropout, rng: initializer.dropoutStream) : Identity()
        net = Sequential([ChannelLayerNorm(dim), Conv2d(dim, dim * mult, kernel: 1, initializer: initializer), GELU(), drop,
                          Conv2d(dim * mult, dim, kernel: 1, initializer: initializer), drop])
    }

    /// On a channels-last map (B, H, W, C): LayerNorm over the channels, products.
    public func channelsLast(_ x: Tensor) -> Tensor {
        let l = net.layers
        let hidden = l[3](pointwiseGELU((l[0] as! ChannelLayerNorm).channelsLast(x), l[1] as! Conv2d))
        return l[5](pointwise(hidden, l[4] as! Conv2d))
    }
}

/// The identity as a layer (torch's nn.Identity): stands where a PyTorch Sequential has a
/// parameter-free layer that does nothing here (a dropout of 0), so the indices after it match.
public final class Identity: Module, Layer {
    public override init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x }
}

/// One CvT block pair: x = attn(x) + x; x = ff(x) + x.
public final class CvTBlock: Module {
    public let attention: CvTAttention
    public let feedForward: CvTFeedForward
    init(attention: CvTAttention, feedForward: CvTFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
    /// On a channels-last map.
    func channelsLast(_ x: Tensor) -> Tensor {
        let y = attention.channelsLast(x) + x
        return feedForward.channelsLast(y) + y
    }
}

/// One CvT stage: a convolutional token embedding (k x k, stride s, padding k/2), the channel
/// LayerNorm, then `depth` blocks over the token map.
public final class CvTStageModule: Module {
    public let embedding: Conv2d
    public let norm: ChannelLayerNorm
    public let blocks: [CvTBlock]

    init(_ stage: CvTStage, inChannels: Int, dimHead: Int, dropout: Float, initializer: Initializer) {
        embedding = Conv2d(inChannels, stage.embDim, kernel: stage.embKernel, stride: stage.embStride, padding: stage.embKernel / 2,
                           initializer: initializer)
        norm = ChannelLayerNorm(stage.embDim)
        blocks = (0..<stage.depth).map { _ in
            CvTBlock(attention: CvTAttention(dim: stage.embDim, projKernel: stage.projKernel, kvProjStride: stage.kvProjStride,
                                             heads: stage.heads, dimHead: dimHead, dropout: dropout, initializer: initializer),
                     feedForward: CvTFeedForward(dim: stage.embDim, mult: stage.mlpMult, dropout: dropout, initializer: initializer))
        }
    }

    public override var stateNames: [String: String] { ["embedding": "0", "norm": "1", "blocks": "2.layers"] }

    /// On a channels-last map (B, H, W, C) to (B, H', W', C').
    func channelsLast(_ x: Tensor) -> Tensor {
        blocks.reduce(norm.channelsLast(channelsLastConv(x, embedding))) { $1.channelsLast($0) }
    }
}

/// CvT, the Convolutional vision Transformer (Wu et al. 2021), as vit-pytorch 1.7.14 defines it:
/// three stages of convolutional token embedding and transformer blocks whose query, key and
/// value projections are depthwise-separable convolutions, then global average pooling and a
/// linear head. Not patch-based, so it conforms to HiddenLayerEncoder only. Hidden layers:
/// "stages.i" (B, C_i, H_i, W_i), "tokens" (B, H * W, C) the last stage's token map (EsViT's
/// regions), "pooled" (B, C) its spatial mean, and "logits". Names equal vit-pytorch's state_dict.
/// With `finalNorm`, "tokens", "pooled" and "logits" come after EsViT's last LayerNorm ("stages.i"
/// stay before it).
public final class CvT: Module, HiddenLayerEncoder {
    public let config: CvTConfig
    public let stages: [CvTStageModule]
    /// The last stage's LayerNorm when `config.finalNorm` (state-dict name `norm`).
    public let norm: ChannelLayerNorm?
    public let head: Linear

    public init(_ config: CvTConfig, initializer: Initializer) {
        self.config = config
        var channels = config.channels
        stages = config.stages.map { stage in
            defer { channels = stage.embDim }
            return CvTStageModule(stage, inChannels: channels, dimHead: config.dimHead, dropout: config.dropout, initializer: initializer)
        }
        norm = config.finalNorm ? ChannelLayerNorm(channels) : nil
        head = Linear(channels, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["stages": "layers", "head": "to_logits.2"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        // Channels-last from the images on: every convolution, norm and product reads the
        // channels of a position side by side (the same computation as vit-pytorch's NCHW).
        var out: [String: Tensor] = [:]
        // One channel is already channels-last: the same bytes, no copy.
        var x = images.shape[1] == 1 ? images.reshaped([images.shape[0], images.shape[2], images.shape[3], 1]) : images.permuted([0, 2, 3, 1])
        for (i, stage) in stages.enumerated() {
            x = stage.channelsLast(x)
            if layers.contains("stages.\(i)") { out["stages.\(i)"] = x.permuted([0, 3, 1, 2]) }
        }
        if let norm { x = norm.channelsLast(x) }
        let (b, c, side) = (x.shape[0], x.shape[3], x.shape[1] * x.shape[2])
        if layers.contains("tokens") { out["tokens"] = x.reshaped([b, side, c]) }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = x.reshaped([b, side, c]).mean(axis: 1)
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = head(pooled) }
        }
        return out
    }

    /// Class logits (B, numClasses).
    public func callAsFunction(_ images: Tensor) -> Tensor { hiddenOutputs(images, layers: ["logits"])["logits"]! }
}
