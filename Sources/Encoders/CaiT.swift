import NN
import TensorCore

/// Talking-heads attention (Shazeer et al. 2020), as CaiT uses it: the logits of the heads are
/// mixed by one learned (heads, heads) matrix before the softmax and the probabilities by another
/// after it. Queries from norm(x); keys and values from norm(x), or, in a class-attention layer,
/// from [norm(x), patches] (vit-pytorch's cat((x, context))).
public final class TalkingHeadsAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQ: Linear
    public let toKV: Linear
    public let mixHeadsPreAttn: Parameter
    public let mixHeadsPostAttn: Parameter
    public let toOut: Linear
    let dropout: Dropout?

    public init(dim: Int, heads: Int, dimHead: Int, dropout p: Float = 0, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        let inner = heads * dimHead
        norm = LayerNorm(dim)
        toQ = Linear(dim, inner, bias: false, initializer: initializer)
        toKV = Linear(dim, 2 * inner, bias: false, initializer: initializer)
        mixHeadsPreAttn = Parameter(initializer.embedding([heads, heads]))
        mixHeadsPostAttn = Parameter(initializer.embedding([heads, heads]))
        toOut = Linear(inner, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    /// x (B, N, D) and the normalised tokens the keys and values come from (B, M, D).
    func attend(_ h: Tensor, source: Tensor) -> Tensor {
        let kv = toKV(source).chunked(2, axis: -1)
        let dots = Tensor.headScores(toQ(h), kv[0], heads: heads, scale: Float(1 / Double(dimHead).squareRoot()))
        var attention = Tensor.mixingHeads(dots, mixHeadsPreAttn.value).softmax()
        if let dropout { attention = dropout(attention) }
        return toOut(Tensor.headWeightedValues(Tensor.mixingHeads(attention, mixHeadsPostAttn.value), kv[1]))
    }

    /// Self-attention, or keys and values from norm(context) (MP3's cross-attention).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let h = norm(x)
        return attend(h, source: context.map { norm($0) } ?? h)
    }

    /// Class attention: the queries of norm(x) attend to [norm(x), patches].
    public func classAttention(_ x: Tensor, patches: Tensor) -> Tensor {
        let h = norm(x)
        return attend(h, source: Tensor.concat([h, patches], axis: 1))
    }
}

/// LayerScale (Touvron et al. 2021): a residual branch's output times a learned per-channel gain
/// that starts small, shaped (1, 1, dim) in CaiT and (dim) in XCiT.
public final class LayerScale<Fn: Module>: Module {
    public let fn: Fn
    public let scale: Parameter
    init(dim: Int, _ fn: Fn, initialValue: Float, shape: [Int]? = nil) {
        self.fn = fn
        scale = Parameter(Tensor.full(shape ?? [1, 1, dim], initialValue), decays: false)
    }
}

/// vit-pytorch's dropout_layers: in training, each of `count` layers is skipped with probability
/// p, and one drawn at random is kept when all would be.
func keptLayers(_ count: Int, probability p: Float, training: Bool, rng: RandomStream) -> [Bool] {
    guard training, p > 0, count > 0 else { return Array(repeating: true, count: count) }
    var keep = (0..<count).map { _ in rng.nextFloat() >= p }
    if !keep.contains(true) { keep[rng.nextInt(below: count)] = true }
    return keep
}

/// One CaiT layer: x + LayerScale(talking-heads attention), then + LayerScale(feed-forward).
public final class CaiTBlock: Module {
    public let attention: LayerScale<TalkingHeadsAttention>
    public let feedForward: LayerScale<FeedForward>
    init(attention: LayerScale<TalkingHeadsAttention>, feedForward: LayerScale<FeedForward>) {
        (self.attention, self.feedForward) = (attention, feedForward)
    }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// A stack of CaiT layers with layer dropout: in training, each forward skips every layer with
/// probability `layerDropout`, always keeping at least one (vit-pytorch's dropout_layers).
public final class CaiTTransformer: Module {
    public let layers: [CaiTBlock]
    let layerDropout: Float
    let rng: RandomStream

    init(_ layers: [CaiTBlock], layerDropout: Float, rng: RandomStream) {
        (self.layers, self.layerDropout, self.rng) = (layers, layerDropout, rng)
    }

    /// The layers this forward runs.
    public func keptLayers() -> [Bool] { Encoders.keptLayers(layers.count, probability: layerDropout, training: isTraining, rng: rng) }
}

/// The LayerScale start values: the paper's, chosen by the model's depth, or vit-pytorch 1.7.14's,
/// chosen by each layer's index (so every layer of a stack up to 18 deep starts at 0.1).
public enum LayerScaleInit: String, Codable, CaseIterable, Sendable {
    case paper
    case vitPytorch1714 = "vit-pytorch-1.7.14"

    /// CaiT §2: 0.1 up to depth 18, 1e-5 up to 24, 1e-6 beyond.
    static func epsilon(_ depth: Int) -> Float { depth <= 18 ? 0.1 : depth <= 24 ? 1e-5 : 1e-6 }

    /// The start value of layer `index` (0-based) of a model `depth` deep. XCiT's 1.7.14 file
    /// also misreads the middle range (`18 > depth <= 24`), so its layers past 18 start at 1e-6.
    public func value(layer index: Int, depth: Int, xcit: Bool = false) -> Float {
        switch self {
        case .paper: return Self.epsilon(depth)
        case .vitPytorch1714: return xcit ? (index + 1 <= 18 ? 0.1 : 1e-6) : Self.epsilon(index + 1)
        }
    }
}

/// What CaiT adds to a ViT's configuration.
public struct CaiTOptions: Codable, Equatable, Sendable {
    /// Class-attention layers after the patch stack (vit-pytorch's cls_depth).
    public var classDepth = 2
    /// The probability of skipping a whole layer in training (layer_dropout).
    public var layerDropout: Float = 0
    public var layerScaleInit = LayerScaleInit.paper
    public init() {}
}

/// vit-pytorch 1.7.14's CaiT (Touvron et al. 2021, "Going deeper with Image Transformers"): ViT's
/// patch embedding (LayerNorm, Linear, LayerNorm) and learned positions, a stack of talking-heads
/// attention layers with LayerScale over the patches alone, then class-attention layers where a
/// class token attends to itself and the patches, and mlp_head = LayerNorm + Linear on it. The
/// patch stack has no class token, so every masked objective applies to it.
public final class CaiT: Module, PatchTokenEncoder {
    public let config: ViTConfig
    public let options: CaiTOptions
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let patchTransformer: CaiTTransformer
    public let clsTransformer: CaiTTransformer
    public let mlpHead: LayerNormLinear
    let embeddingDropout: Dropout?

    public init(_ config: ViTConfig, options: CaiTOptions = CaiTOptions(), initializer: Initializer) {
        precondition(config.problem == nil, "CaiT: \(config.problem!)")
        self.config = config
        self.options = options
        patchNorm = LayerNorm(config.patchDim)
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        tokenNorm = LayerNorm(config.dim)
        posEmbedding = Parameter(initializer.embedding([1, config.patchCount, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        embeddingDropout = config.embeddingDropout > 0 ? Dropout(config.embeddingDropout, rng: initializer.dropoutStream) : nil
        func stack(_ depth: Int) -> CaiTTransformer {
            CaiTTransformer((0..<depth).map { i in
                let eps = options.layerScaleInit.value(layer: i, depth: config.depth)
                return CaiTBlock(
                    attention: LayerScale(dim: config.dim, TalkingHeadsAttention(dim: config.dim, heads: config.heads, dimHead: config.dimHead,
                                                                                 dropout: config.dropout, initializer: initializer), initialValue: eps),
                    feedForward: LayerScale(dim: config.dim, FeedForward(dim: config.dim, hiddenDim: config.mlpDim, dropout: config.dropout,
                                                                         initializer: initializer), initialValue: eps))
            }, layerDropout: options.layerDropout, rng: initializer.dropoutStream)
        }
        patchTransformer = stack(config.depth)
        clsTransformer = stack(options.classDepth)
        mlpHead = LayerNormLinear(config.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }

    public var patchCount: Int { config.patchCount }
    public var patchDim: Int { config.patchDim }
    public var dim: Int { config.dim }
    public var classificationHead: Module? { mlpHead }
    public var hiddenLayerNames: [String] {
        config.hiddenLayerNames + (0..<options.classDepth).map { "class_blocks.\($0)" }
    }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(images, patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func embedPatches(_ patches: Tensor) -> Tensor { tokenNorm(patchLinear(patchNorm(patches))) }

    public func patchPositions() -> Tensor { posEmbedding.value }

    /// The patch stack over tokens (B, n, D); keys and values from `context` when given (MP3).
    func patchStack(_ x: Tensor, context: Tensor? = nil, each: (Int, Tensor) -> Void = { _, _ in }) -> Tensor {
        var h = x
        for (i, (layer, kept)) in zip(patchTransformer.layers, patchTransformer.keptLayers()).enumerated() {
            if kept {
                h = layer.attention.fn(h, context: context) * layer.attention.scale.value + h
                h = layer.feedForward.fn(h) * layer.feedForward.scale.value + h
            }
            each(i, h)
        }
        return h
    }

    public func encodeTokens(_ tokens: Tensor) -> Tensor { patchStack(tokens) }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor { patchStack(tokens, context: context) }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let positions = resizedPositionGrid(posEmbedding.value, config: config, height: images.shape[2], width: images.shape[3])
        var x = embedPatches(patchify(images)) + positions
        if let embeddingDropout { x = embeddingDropout(x) }
        let patches = patchStack(x) { i, h in if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h } }
        if layers.contains("tokens") { out["tokens"] = patches }
        let wantsClass = layers.contains("pooled") || layers.contains("logits") || layers.contains { $0.hasPrefix("class_blocks.") }
        guard wantsClass else { return out }
        let b = images.shape[0]
        var cls = clsToken.value.expanded(to: [b, 1, config.dim])
        for (j, (layer, kept)) in zip(clsTransformer.layers, clsTransformer.keptLayers()).enumerated() {
            if kept {
                cls = layer.attention.fn.classAttention(cls, patches: patches) * layer.attention.scale.value + cls
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
