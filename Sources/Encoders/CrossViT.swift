import NN
import TensorCore

/// One CrossViT branch's sizes (vit-pytorch's sm_ / lg_ arguments).
public struct CrossViTBranch: Codable, Equatable, Sendable {
    public var dim: Int                  // sm_dim / lg_dim
    public var patchSize: Int            // *_patch_size
    public var depth: Int                // *_enc_depth
    public var heads: Int                // *_enc_heads
    public var mlpDim: Int               // *_enc_mlp_dim
    public var dimHead: Int              // *_enc_dim_head
    public init(dim: Int, patchSize: Int, depth: Int, heads: Int, mlpDim: Int, dimHead: Int) {
        (self.dim, self.patchSize, self.depth, self.heads, self.mlpDim, self.dimHead) = (dim, patchSize, depth, heads, mlpDim, dimHead)
    }
}

/// CrossViT's configuration; the defaults are sized for 28 px (patches of 4 and 7 pixels: 49 and
/// 16 tokens), vit-pytorch's argument names in comments.
public struct CrossViTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28, channels = 1, numClasses = 10
    public var small = CrossViTBranch(dim: 64, patchSize: 4, depth: 1, heads: 4, mlpDim: 128, dimHead: 16)
    public var large = CrossViTBranch(dim: 128, patchSize: 7, depth: 2, heads: 4, mlpDim: 256, dimHead: 32)
    public var crossDepth = 1            // cross_attn_depth
    public var crossHeads = 4            // cross_attn_heads
    public var crossDimHead = 16         // cross_attn_dim_head
    public var depth = 2                 // depth (multi-scale layers)
    public var dropout: Float = 0.1      // dropout
    public var embeddingDropout: Float = 0.1   // emb_dropout
    public init() {}

    public var hiddenLayerNames: [String] { ["tokens", "large_tokens", "pooled", "logits"] + (0..<depth).map { "blocks.\($0)" } }

    /// Why images of `size` pixels cannot be encoded, or nil.
    public func problem(imageSize size: Int) -> String? {
        for (name, branch) in [("sm_patch_size", small), ("lg_patch_size", large)] where size % branch.patchSize != 0 {
            return "\(name) \(branch.patchSize) does not divide \(size)-pixel images; both patch sizes must divide the image size"
        }
        return nil
    }
}

/// A CrossViT branch's embedding: ViT's patch embedding (LayerNorm, Linear, LayerNorm), a class
/// token and learned positions.
public final class CrossViTImageEmbedder: Module {
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    let patchSize: Int, grid: Int, dim: Int
    let dropout: Dropout?

    init(_ branch: CrossViTBranch, imageSize: Int, channels: Int, dropout p: Float, initializer: Initializer) {
        (patchSize, grid, dim) = (branch.patchSize, imageSize / branch.patchSize, branch.dim)
        let patchDim = channels * branch.patchSize * branch.patchSize
        patchNorm = LayerNorm(patchDim)
        patchLinear = Linear(patchDim, branch.dim, initializer: initializer)
        tokenNorm = LayerNorm(branch.dim)
        posEmbedding = Parameter(initializer.embedding([1, grid * grid + 1, branch.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, branch.dim]), decays: false)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }

    func callAsFunction(_ images: Tensor) -> Tensor {
        let b = images.shape[0]
        let patches = Encoders.patchify(images, patchHeight: patchSize, patchWidth: patchSize)
        var table = posEmbedding.value
        let side = images.shape[2] / patchSize
        if side != grid {
            let resized = Tensor.matmul(bicubicResizeMatrix(from: (grid, grid), to: (side, side)),
                                        posEmbedding.value.slice(axis: 1, start: 1, length: grid * grid).reshaped([grid * grid, dim]))
            table = Tensor.concat([posEmbedding.value.slice(axis: 1, start: 0, length: 1), resized.reshaped([1, side * side, dim])], axis: 1)
        }
        let x = Tensor.concat([clsToken.value.expanded(to: [b, 1, dim]), tokenNorm(patchLinear(patchNorm(patches)))], axis: 1) + table
        return dropout.map { $0(x) } ?? x
    }
}

/// CrossViT's branch transformer: pre-norm blocks whose attention has separate to_q and to_kv,
/// then a LayerNorm.
public final class CrossViTTransformer: Module {
    public let layers: [TransformerBlock]
    public let norm: LayerNorm
    init(_ b: CrossViTBranch, dropout: Float, initializer: Initializer) {
        layers = (0..<b.depth).map { _ in
            TransformerBlock(attention: Attention(dim: b.dim, heads: b.heads, dimHead: b.dimHead, dropout: dropout, crossAttention: true, initializer: initializer),
                             feedForward: FeedForward(dim: b.dim, hiddenDim: b.mlpDim, dropout: dropout, initializer: initializer))
        }
        norm = LayerNorm(b.dim)
    }
    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        for layer in layers {
            h = layer.attention(h).0 + h
            h = layer.feedForward(h) + h
        }
        return norm(h)
    }
}

/// ProjectInOut(Attention): one branch's class token projected to the other's width, attending
/// to [itself, the other branch's patch tokens] (kv_include_self), and projected back.
public final class CrossAttentionBridge: Module {
    public let fn: ClassAttention
    public let projectIn: Linear?
    public let projectOut: Linear?
    init(from dimIn: Int, to dimOut: Int, heads: Int, dimHead: Int, dropout: Float, initializer: Initializer) {
        fn = ClassAttention(dim: dimOut, heads: heads, dimHead: dimHead, dropout: dropout, initializer: initializer)
        projectIn = dimIn != dimOut ? Linear(dimIn, dimOut, initializer: initializer) : nil
        projectOut = dimIn != dimOut ? Linear(dimOut, dimIn, initializer: initializer) : nil
    }
    func callAsFunction(_ cls: Tensor, patches: Tensor) -> Tensor {
        let x = projectIn.map { $0(cls) } ?? cls
        let y = fn(x, patches: patches)
        return projectOut.map { $0(y) } ?? y
    }
}

/// One cross-attention layer: the small branch's class token attends to the large branch's
/// patches, and the large branch's to the small's (vit-pytorch's layers.i.0 and .1).
public final class CrossAttentionLayer: Module {
    public let smallAttendsLarge: CrossAttentionBridge
    public let largeAttendsSmall: CrossAttentionBridge
    init(_ c: CrossViTConfig, initializer: Initializer) {
        smallAttendsLarge = CrossAttentionBridge(from: c.small.dim, to: c.large.dim, heads: c.crossHeads, dimHead: c.crossDimHead, dropout: c.dropout, initializer: initializer)
        largeAttendsSmall = CrossAttentionBridge(from: c.large.dim, to: c.small.dim, heads: c.crossHeads, dimHead: c.crossDimHead, dropout: c.dropout, initializer: initializer)
    }
    public override var stateNames: [String: String] { ["smallAttendsLarge": "0", "largeAttendsSmall": "1"] }
}

public final class CrossTransformer: Module {
    public let layers: [CrossAttentionLayer]
    init(_ layers: [CrossAttentionLayer]) { self.layers = layers }
}

/// One multi-scale layer: each branch's transformer, then the cross-attention of the class tokens.
public final class MultiScaleLayer: Module {
    public let small: CrossViTTransformer
    public let large: CrossViTTransformer
    public let cross: CrossTransformer
    init(_ c: CrossViTConfig, initializer: Initializer) {
        small = CrossViTTransformer(c.small, dropout: c.dropout, initializer: initializer)
        large = CrossViTTransformer(c.large, dropout: c.dropout, initializer: initializer)
        cross = CrossTransformer((0..<c.crossDepth).map { _ in CrossAttentionLayer(c, initializer: initializer) })
    }
    public override var stateNames: [String: String] { ["small": "0", "large": "1", "cross": "2"] }
}

public final class MultiScaleEncoder: Module {
    public let layers: [MultiScaleLayer]
    init(_ layers: [MultiScaleLayer]) { self.layers = layers }
}

/// The two heads, whose logits CrossViT sums (named sm_mlp_head and lg_mlp_head at the top).
public final class CrossViTHeads: Module {
    public let smMlpHead: LayerNormLinear
    public let lgMlpHead: LayerNormLinear
    init(_ c: CrossViTConfig, initializer: Initializer) {
        smMlpHead = LayerNormLinear(c.small.dim, c.numClasses, initializer: initializer)
        lgMlpHead = LayerNormLinear(c.large.dim, c.numClasses, initializer: initializer)
    }
}

/// vit-pytorch 1.7.14's CrossViT (Chen et al. 2021, "CrossViT: Cross-Attention Multi-Scale Vision
/// Transformer for Image Classification"): the image embedded twice, with small and large patches,
/// each branch with its own transformer; after each multi-scale layer, each branch's class token
/// attends to the other branch's patch tokens. The logits are the sum of the two heads'. Its
/// "pooled" feature is the two class tokens side by side (sm_dim + lg_dim), "tokens" the small
/// branch's tokens and "large_tokens" the large branch's. There is no single patch sequence to
/// mask, so the masked objectives do not apply.
public final class CrossViT: Module, HiddenLayerEncoder {
    public let config: CrossViTConfig
    public let smImageEmbedder: CrossViTImageEmbedder
    public let lgImageEmbedder: CrossViTImageEmbedder
    public let multiScaleEncoder: MultiScaleEncoder
    public let heads: CrossViTHeads

    public init(_ config: CrossViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSize: config.imageSize) == nil, "CrossViT: \(config.problem(imageSize: config.imageSize)!)")
        self.config = config
        smImageEmbedder = CrossViTImageEmbedder(config.small, imageSize: config.imageSize, channels: config.channels, dropout: config.embeddingDropout, initializer: initializer)
        lgImageEmbedder = CrossViTImageEmbedder(config.large, imageSize: config.imageSize, channels: config.channels, dropout: config.embeddingDropout, initializer: initializer)
        multiScaleEncoder = MultiScaleEncoder((0..<config.depth).map { _ in MultiScaleLayer(config, initializer: initializer) })
        heads = CrossViTHeads(config, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["heads": ""] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { heads }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var small = smImageEmbedder(images), large = lgImageEmbedder(images)
        var out: [String: Tensor] = [:]
        for (i, layer) in multiScaleEncoder.layers.enumerated() {
            small = layer.small(small)
            large = layer.large(large)
            let (ns, nl) = (small.shape[1], large.shape[1])
            var smallCls = small.slice(axis: 1, start: 0, length: 1), largeCls = large.slice(axis: 1, start: 0, length: 1)
            let smallPatches = small.slice(axis: 1, start: 1, length: ns - 1), largePatches = large.slice(axis: 1, start: 1, length: nl - 1)
            for cross in layer.cross.layers {
                smallCls = cross.smallAttendsLarge(smallCls, patches: largePatches) + smallCls
                largeCls = cross.largeAttendsSmall(largeCls, patches: smallPatches) + largeCls
            }
            small = Tensor.concat([smallCls, smallPatches], axis: 1)
            large = Tensor.concat([largeCls, largePatches], axis: 1)
            if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = small }
        }
        if layers.contains("tokens") { out["tokens"] = small }
        if layers.contains("large_tokens") { out["large_tokens"] = large }
        if layers.contains("pooled") || layers.contains("logits") {
            let b = images.shape[0]
            let smallCls = small.slice(axis: 1, start: 0, length: 1).reshaped([b, config.small.dim])
            let largeCls = large.slice(axis: 1, start: 0, length: 1).reshaped([b, config.large.dim])
            out["pooled"] = Tensor.concat([smallCls, largeCls], axis: 1)
            if layers.contains("logits") { out["logits"] = heads.smMlpHead(smallCls) + heads.lgMlpHead(largeCls) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
