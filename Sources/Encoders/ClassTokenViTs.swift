import NN
import TensorCore

/// What vit-pytorch's class-token ViT variants share (DeepViT, Parallel ViT): a patch embedding,
/// a class token and learned positions, blocks of residual attention and feed-forward without a
/// final norm, cls or mean pooling, and a head Sequential(LayerNorm, Linear) named `mlp_head`.
/// Each variant supplies its embedding and its blocks; the hidden layers, the masked objectives'
/// protocol and the heads come from here.
public protocol ClassTokenViT: PatchTokenEncoder {
    var config: ViTConfig { get }
    var posEmbedding: Parameter { get }
    var clsToken: Parameter { get }
    var mlpHead: LayerNormLinear { get }
    var depth: Int { get }
    /// Block `i` on x (B, n, D), keys and values from `context` when given (MP3).
    func block(_ i: Int, _ x: Tensor, context: Tensor?) -> Tensor
}

extension ClassTokenViT {
    public var patchCount: Int { config.patchCount }
    public var dim: Int { config.dim }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(images, patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func patchPositions() -> Tensor { posEmbedding.value.slice(axis: 1, start: 1, length: config.patchCount) }

    public func prefixTokens(batch: Int) -> Tensor? {
        (clsToken.value + posEmbedding.value.slice(axis: 1, start: 0, length: 1)).expanded(to: [batch, 1, config.dim])
    }

    public func encodeTokens(_ tokens: Tensor) -> Tensor {
        var h = tokens
        for i in 0..<depth { h = block(i, h, context: nil) }
        return h
    }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor {
        var h = tokens
        for i in 0..<depth { h = block(i, h, context: context) }
        return h
    }

    /// The class token and the embedded patches with their positions; images of another size
    /// than the configured one (DINO's local crops) get the position grid resized bicubically.
    public func inputTokens(_ images: Tensor) -> Tensor {
        let cls = clsToken.value.expanded(to: [images.shape[0], 1, config.dim])
        var table = posEmbedding.value
        if images.shape[2] != config.imageHeight || images.shape[3] != config.imageWidth {
            let grid = resizedPositionGrid(patchPositions(), config: config, height: images.shape[2], width: images.shape[3])
            table = Tensor.concat([posEmbedding.value.slice(axis: 1, start: 0, length: 1), grid], axis: 1)
        }
        return Tensor.concat([cls, embedPatches(patchify(images))], axis: 1) + table
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        var h = inputTokens(images)
        for i in 0..<depth {
            h = block(i, h, context: nil)
            if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h }
        }
        if layers.contains("tokens") { out["tokens"] = h }
        if layers.contains("pooled") || layers.contains("logits") {
            let b = images.shape[0]
            let pooled = config.pool == .mean ? h.mean(axis: 1) : h.slice(axis: 1, start: 0, length: 1).reshaped([b, config.dim])
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = mlpHead(pooled) }
        }
        return out
    }
}

/// nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, classes)): the head of vit-pytorch's DeepViT,
/// Parallel ViT and CaiT.
/// `firstIndex` is the LayerNorm's position in PyTorch's Sequential (1 in MaxViT's, after a Reduce).
public final class LayerNormLinear: Module {
    public let norm: LayerNorm
    public let linear: Linear
    let firstIndex: Int
    public init(_ dim: Int, _ out: Int, firstIndex: Int = 0, initializer: Initializer) {
        norm = LayerNorm(dim)
        linear = Linear(dim, out, initializer: initializer)
        self.firstIndex = firstIndex
    }
    public override var stateNames: [String: String] { ["norm": "\(firstIndex)", "linear": "\(firstIndex + 1)"] }
    public func callAsFunction(_ x: Tensor) -> Tensor { linear(norm(x)) }
}

/// DeepViT's re-attention (Zhou et al. 2021, "DeepViT: Towards Deeper Vision Transformer"): the
/// softmax attention maps of the heads are mixed by a learned (heads, heads) matrix, then
/// normalised over the heads (LayerNorm(heads)), before they weight the values.
public final class ReAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQKV: Linear
    public let reattnWeights: Parameter
    public let reattnNorm: LayerNorm
    public let toOut: Linear

    public init(dim: Int, heads: Int, dimHead: Int, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        norm = LayerNorm(dim)
        toQKV = Linear(dim, 3 * heads * dimHead, bias: false, initializer: initializer)
        reattnWeights = Parameter(initializer.embedding([heads, heads]))
        reattnNorm = LayerNorm(heads)
        toOut = Linear(heads * dimHead, dim, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["reattnNorm": "reattn_norm.1", "toOut": "to_out.0"] }

    /// x (B, N, D); keys and values from context (B, M, D) when given, with the same projection.
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let (b, n) = (x.shape[0], x.shape[1])
        let inner = heads * dimHead
        let h = norm(x)
        let (q, k, v) = toQKV.queriesKeysValues(h, context: context, norm: norm, inner: inner)
        let m = k.shape[1]
        let attention = Tensor.headScores(q, k, heads: heads, scale: Float(1 / Double(dimHead).squareRoot())).softmax()   // (B, h, N, M)
        // einsum('b h i j, h g -> b g i j'), then LayerNorm over g.
        let mixed = Tensor.matmul(attention.permuted([0, 2, 3, 1]).reshaped([b * n * m, heads]), reattnWeights.value)
        let normed = reattnNorm(mixed).reshaped([b, n, m, heads]).permuted([0, 3, 1, 2])
        let out = Tensor.headWeightedValues(normed, v)
        return toOut(out)
    }
}

/// One DeepViT block: x + reattention(x), then + feedForward.
public final class ReAttentionBlock: Module {
    public let attention: ReAttention
    public let feedForward: FeedForward
    init(attention: ReAttention, feedForward: FeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// The blocks of a class-token variant, under vit-pytorch's `transformer.layers`.
public final class BlockList<Block: Module>: Module {
    public let layers: [Block]
    init(_ layers: [Block]) { self.layers = layers }
}

/// vit-pytorch 1.7.14's DeepViT: ViT's patch embedding (LayerNorm, Linear, LayerNorm), class token
/// and positions, re-attention blocks without a final norm, and mlp_head = LayerNorm + Linear.
public final class DeepViT: Module, ClassTokenViT {
    public let config: ViTConfig
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let transformer: BlockList<ReAttentionBlock>
    public let mlpHead: LayerNormLinear

    public init(_ config: ViTConfig, initializer: Initializer) {
        precondition(config.problem == nil, "DeepViT: \(config.problem!)")
        self.config = config
        patchNorm = LayerNorm(config.patchDim)
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        tokenNorm = LayerNorm(config.dim)
        posEmbedding = Parameter(initializer.embedding([1, config.patchCount + 1, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        transformer = BlockList((0..<config.depth).map { _ in
            ReAttentionBlock(attention: ReAttention(dim: config.dim, heads: config.heads, dimHead: config.dimHead, initializer: initializer),
                             feedForward: FeedForward(dim: config.dim, hiddenDim: config.mlpDim, initializer: initializer))
        })
        mlpHead = LayerNormLinear(config.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }
    public var depth: Int { config.depth }
    public var patchDim: Int { config.patchDim }

    public func embedPatches(_ patches: Tensor) -> Tensor { tokenNorm(patchLinear(patchNorm(patches))) }

    public func block(_ i: Int, _ x: Tensor, context: Tensor?) -> Tensor {
        let layer = transformer.layers[i]
        let y = layer.attention(x, context: context) + x
        return layer.feedForward(y) + y
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}

/// Branches whose outputs are summed (vit-pytorch's Parallel, its modules under `fns`).
public final class ParallelBranches<Branch: Module>: Module {
    public let fns: [Branch]
    init(_ fns: [Branch]) { self.fns = fns }
}

/// One Parallel ViT block: x + sum of the attention branches, then + sum of the feed-forward ones.
public final class ParallelBlock: Module {
    public let attentions: ParallelBranches<Attention>
    public let feedForwards: ParallelBranches<FeedForward>
    init(attentions: ParallelBranches<Attention>, feedForwards: ParallelBranches<FeedForward>) {
        (self.attentions, self.feedForwards) = (attentions, feedForwards)
    }
    public override var stateNames: [String: String] { ["attentions": "0", "feedForwards": "1"] }
}

/// vit-pytorch 1.7.14's parallel ViT (Touvron et al. 2022, "Three things everyone should know about
/// Vision Transformers"): each block sums `branches` parallel attention modules, then `branches`
/// parallel feed-forward modules; the patch embedding is a Linear alone; no final norm; mlp_head
/// = LayerNorm + Linear.
public final class ParallelViT: Module, ClassTokenViT {
    public let config: ViTConfig
    public let branches: Int
    public let patchLinear: Linear
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let transformer: BlockList<ParallelBlock>
    public let mlpHead: LayerNormLinear

    public init(_ config: ViTConfig, branches: Int = 2, initializer: Initializer) {
        precondition(config.problem == nil, "ParallelViT: \(config.problem!)")
        precondition(branches > 0, "ParallelViT needs at least one branch")
        self.config = config
        self.branches = branches
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        posEmbedding = Parameter(initializer.embedding([1, config.patchCount + 1, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        transformer = BlockList((0..<config.depth).map { _ in
            ParallelBlock(
                attentions: ParallelBranches((0..<branches).map { _ in
                    Attention(dim: config.dim, heads: config.heads, dimHead: config.dimHead, initializer: initializer)
                }),
                feedForwards: ParallelBranches((0..<branches).map { _ in
                    FeedForward(dim: config.dim, hiddenDim: config.mlpDim, initializer: initializer)
                }))
        })
        mlpHead = LayerNormLinear(config.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["patchLinear": "to_patch_embedding.1"] }
    public var depth: Int { config.depth }
    public var patchDim: Int { config.patchDim }

    public func embedPatches(_ patches: Tensor) -> Tensor { patchLinear(patches) }

    public func block(_ i: Int, _ x: Tensor, context: Tensor?) -> Tensor {
        let layer = transformer.layers[i]
        var a = layer.attentions.fns[0](x, context: context).0
        for branch in layer.attentions.fns.dropFirst() { a = a + branch(x, context: context).0 }
        let y = a + x
        var f = layer.feedForwards.fns[0](y)
        for branch in layer.feedForwards.fns.dropFirst() { f = f + branch(y) }
        return f + y
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
