import NN
import TensorCore

/// Cross-covariance attention (El-Nouby et al. 2021): per head, the queries and keys are
/// L2-normalised along the tokens and the (d, d) matrix of their channels' covariances, times a
/// learned per-head temperature exp(t), is the softmax's input; the values' channels are mixed by
/// it. Its cost is linear in the number of tokens.
public final class CrossCovarianceAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQKV: Linear
    public let temperature: Parameter
    public let toOut: Linear
    let dropout: Dropout?

    init(dim: Int, heads: Int, dimHead: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        norm = LayerNorm(dim)
        toQKV = Linear(dim, 3 * heads * dimHead, bias: false, initializer: initializer)
        temperature = Parameter(Tensor.ones([heads, 1, 1]), decays: false)
        toOut = Linear(heads * dimHead, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    /// x (B, N, D).
    func callAsFunction(_ x: Tensor) -> Tensor {
        // q and k L2-normalised along the tokens ('b n (h d) -> b h d n', F.normalize(dim = -1)),
        // their (d, d) Gram per head, and its softmax applied to v's channels, all read from and
        // written to heads side by side (Tensor.crossCovarianceLogits / crossCovarianceValues).
        let qkv = toQKV(norm(x))
        let logits = Tensor.crossCovarianceLogits(packedQKV: qkv, heads: heads)
        var attention = (logits * temperature.value.exp()).softmax()   // (B, h, d, d)
        if let dropout { attention = dropout(attention) }
        return toOut(Tensor.crossCovarianceValues(attention, packedQKV: qkv))
    }
}

/// XCiT's local patch interaction: LayerNorm, then on the (B, D, h, w) grid a depthwise conv,
/// BatchNorm, GELU and a second depthwise conv (vit-pytorch's net.0, net.2, net.3, net.5).
public final class LocalPatchInteraction: Module {
    public let norm: LayerNorm
    public let conv1: Conv2d
    public let batchNorm: BatchNorm
    public let conv2: Conv2d

    init(dim: Int, kernel: Int, initializer: Initializer) {
        norm = LayerNorm(dim)
        conv1 = Conv2d(dim, dim, kernel: kernel, padding: kernel / 2, groups: dim, initializer: initializer)
        batchNorm = BatchNorm(dim)
        conv2 = Conv2d(dim, dim, kernel: kernel, padding: kernel / 2, groups: dim, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["norm": "net.0", "conv1": "net.2", "batchNorm": "net.3", "conv2": "net.5"] }

    /// x (B, h w, D) on a side x side grid, convolved channels-last where the tokens are (the same
    /// depthwise convolutions and BatchNorm as vit-pytorch's on 'b (h w) d -> b d h w').
    func callAsFunction(_ x: Tensor, side: Int) -> Tensor {
        let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        func conv(_ t: Tensor, _ layer: Conv2d) -> Tensor {
            t.depthwiseConv2dChannelsLast(weight: layer.weight.value, bias: layer.bias?.value, padding: layer.padding)
        }
        let map = norm(x).reshaped([b, side, side, d])
        let mid = batchNorm(conv(map, conv1).reshaped([b * n, d])).gelu()
        return conv(mid.reshaped([b, side, side, d]), conv2).reshaped([b, n, d])
    }
}

/// One XCiT layer: x + LayerScale(XCA), + LayerScale(LPI), + LayerScale(feed-forward).
public final class XCiTBlock: Module {
    public let attention: LayerScale<CrossCovarianceAttention>
    public let localPatchInteraction: LayerScale<LocalPatchInteraction>
    public let feedForward: LayerScale<FeedForward>
    init(attention: LayerScale<CrossCovarianceAttention>, localPatchInteraction: LayerScale<LocalPatchInteraction>, feedForward: LayerScale<FeedForward>) {
        (self.attention, self.localPatchInteraction, self.feedForward) = (attention, localPatchInteraction, feedForward)
    }
    public override var stateNames: [String: String] { ["attention": "0", "localPatchInteraction": "1", "feedForward": "2"] }
}

/// Class attention as XCiT's (and CaiT's) Transformer computes it with a context: queries from
/// norm(x), keys and values from [norm(x), patches].
public final class ClassAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQ: Linear
    public let toKV: Linear
    public let toOut: Linear
    let dropout: Dropout?

    init(dim: Int, heads: Int, dimHead: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        norm = LayerNorm(dim)
        toQ = Linear(dim, heads * dimHead, bias: false, initializer: initializer)
        toKV = Linear(dim, 2 * heads * dimHead, bias: false, initializer: initializer)
        toOut = Linear(heads * dimHead, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    func callAsFunction(_ x: Tensor, patches: Tensor) -> Tensor {
        let h = norm(x)
        let kv = toKV(Tensor.concat([h, patches], axis: 1)).chunked(2, axis: -1)
        var weights = Tensor.headScores(toQ(h), kv[0], heads: heads, scale: Float(1 / Double(dimHead).squareRoot())).softmax()
        if let dropout { weights = dropout(weights) }
        return toOut(Tensor.headWeightedValues(weights, kv[1]))
    }
}

/// One class-attention layer: LayerScale(class attention), then LayerScale(feed-forward).
public final class ClassAttentionBlock: Module {
    public let attention: LayerScale<ClassAttention>
    public let feedForward: LayerScale<FeedForward>
    init(attention: LayerScale<ClassAttention>, feedForward: LayerScale<FeedForward>) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// A stack of layers under vit-pytorch's `layers`, with layer dropout.
public final class LayerDropStack<Block: Module>: Module {
    public let layers: [Block]
    let layerDropout: Float
    let rng: RandomStream
    init(_ layers: [Block], layerDropout: Float, rng: RandomStream) { (self.layers, self.layerDropout, self.rng) = (layers, layerDropout, rng) }
    public func keptLayers() -> [Bool] { Encoders.keptLayers(layers.count, probability: layerDropout, training: isTraining, rng: rng) }
}

/// What XCiT adds to a ViT's configuration.
public struct XCiTOptions: Codable, Equatable, Sendable {
    public var classDepth = 2                     // cls_depth
    public var localPatchKernel = 3               // local_patch_kernel_size
    public var layerDropout: Float = 0            // layer_dropout
    public var layerScaleInit = LayerScaleInit.paper
    public init() {}
}

/// vit-pytorch 1.7.14's XCiT (El-Nouby et al. 2021, "XCiT: Cross-Covariance Image Transformers"):
/// ViT's patch embedding (LayerNorm, Linear, LayerNorm) and learned positions, layers of
/// cross-covariance attention, local patch interaction and feed-forward, each with LayerScale, a
/// final LayerNorm, then class-attention layers and mlp_head = LayerNorm + Linear on the class
/// token. The local patch interaction convolves the full token grid, so SimMIM and MPP apply and
/// MAE does not; cross-covariance attention has no queries-from-tokens, keys-from-context form,
/// so MP3 does not either.
public final class XCiT: Module, PatchTokenEncoder {
    public let config: ViTConfig
    public let options: XCiTOptions
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let xcitTransformer: LayerDropStack<XCiTBlock>
    public let finalNorm: LayerNorm
    public let clsTransformer: LayerDropStack<ClassAttentionBlock>
    public let mlpHead: LayerNormLinear
    let embeddingDropout: Dropout?

    public init(_ config: ViTConfig, options: XCiTOptions = XCiTOptions(), initializer: Initializer) {
        precondition(config.problem == nil, "XCiT: \(config.problem!)")
        precondition(config.imageHeight / config.patchHeight == config.imageWidth / config.patchWidth, "XCiT's grid must be square")
        self.config = config
        self.options = options
        let (d, c) = (config.dim, config)
        patchNorm = LayerNorm(c.patchDim)
        patchLinear = Linear(c.patchDim, d, initializer: initializer)
        tokenNorm = LayerNorm(d)
        posEmbedding = Parameter(initializer.embedding([1, c.patchCount, d]), decays: false)
        clsToken = Parameter(initializer.embedding([d]), decays: false)
        embeddingDropout = c.embeddingDropout > 0 ? Dropout(c.embeddingDropout, rng: initializer.dropoutStream) : nil
        func eps(_ i: Int) -> Float { options.layerScaleInit.value(layer: i, depth: c.depth, xcit: true) }
        func ff() -> FeedForward { FeedForward(dim: d, hiddenDim: c.mlpDim, dropout: c.dropout, initializer: initializer) }
        xcitTransformer = LayerDropStack((0..<c.depth).map { i in
            XCiTBlock(attention: LayerScale(dim: d, CrossCovarianceAttention(dim: d, heads: c.heads, dimHead: c.dimHead, dropout: c.dropout, initializer: initializer),
                                            initialValue: eps(i), shape: [d]),
                      localPatchInteraction: LayerScale(dim: d, LocalPatchInteraction(dim: d, kernel: options.localPatchKernel, initializer: initializer),
                                                        initialValue: eps(i), shape: [d]),
                      feedForward: LayerScale(dim: d, ff(), initialValue: eps(i), shape: [d]))
        }, layerDropout: options.layerDropout, rng: initializer.dropoutStream)
        finalNorm = LayerNorm(d)
        clsTransformer = LayerDropStack((0..<options.classDepth).map { i in
            ClassAttentionBlock(attention: LayerScale(dim: d, ClassAttention(dim: d, heads: c.heads, dimHead: c.dimHead, dropout: c.dropout, initializer: initializer),
                                                      initialValue: eps(i), shape: [d]),
                                feedForward: LayerScale(dim: d, ff(), initialValue: eps(i), shape: [d]))
        }, layerDropout: options.layerDropout, rng: initializer.dropoutStream)
        mlpHead = LayerNormLinear(d, c.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }

    public var patchCount: Int { config.patchCount }
    public var patchDim: Int { config.patchDim }
    public var dim: Int { config.dim }
    public var classificationHead: Module? { mlpHead }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames + (0..<options.classDepth).map { "class_blocks.\($0)" } }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(images, patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func embedPatches(_ patches: Tensor) -> Tensor { tokenNorm(patchLinear(patchNorm(patches))) }

    public func patchPositions() -> Tensor { posEmbedding.value }

    /// The XCiT layers and the final norm over a full square grid of tokens (B, n, D).
    func patchStack(_ x: Tensor, each: (Int, Tensor) -> Void = { _, _ in }) -> Tensor {
        let n = x.shape[1]
        var side = 1
        while (side + 1) * (side + 1) <= n { side += 1 }
        precondition(side * side == n, "XCiT runs on a full square grid of patch tokens, got \(n)")
        var h = x
        for (i, (layer, kept)) in zip(xcitTransformer.layers, xcitTransformer.keptLayers()).enumerated() {
            if kept {
                h = layer.attention.fn(h) * layer.attention.scale.value + h
                h = layer.localPatchInteraction.fn(h, side: side) * layer.localPatchInteraction.scale.value + h
                h = layer.feedForward.fn(h) * layer.feedForward.scale.value + h
            }
            each(i, h)
        }
        return finalNorm(h)
    }

    public func encodeTokens(_ tokens: Tensor) -> Tensor { patchStack(tokens) }

    /// Not reachable from a recipe (MP3 is refused): the patch stack over the tokens alone.
    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor { patchStack(tokens) }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let positions = resizedPositionGrid(posEmbedding.value, config: config, height: images.shape[2], width: images.shape[3])
        var x = embedPatches(patchify(images)) + positions
        if let embeddingDropout { x = embeddingDropout(x) }
        let patches = patchStack(x) { i, h in if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h } }
        if layers.contains("tokens") { out["tokens"] = patches }
        guard layers.contains("pooled") || layers.contains("logits") || layers.contains(where: { $0.hasPrefix("class_blocks.") }) else { return out }
        let b = images.shape[0]
        var cls = clsToken.value.reshaped([1, 1, config.dim]).expanded(to: [b, 1, config.dim])
        for (j, (layer, kept)) in zip(clsTransformer.layers, clsTransformer.keptLayers()).enumerated() {
            if kept {
                cls = layer.attention.fn(cls, patches: patches) * layer.attention.scale.value + cls
                cls = layer.feedForward.fn(cls) * layer.feedForward.scale.value + cls
            }
            if layers.contains("class_blocks.\(j)") { out["class_blocks.\(j)"] = cls.reshaped([b, config.dim]) }
        }
        let pooled = cls.reshaped([b, config.dim])
        out["pooled"] = pooled
        if layers.contains("logits") { out["logits"] = mlpHead(pooled) }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
