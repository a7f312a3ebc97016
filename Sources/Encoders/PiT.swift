import NN
import TensorCore

/// PiT's configuration (vit-pytorch 1.7.14's arguments): an overlapping patch embedding (unfold
/// with kernel `patchSize`, stride `patchSize / 2`), then one transformer per entry of `depth`,
/// with a pooling layer between them that halves the token grid and doubles the width.
public struct PiTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var patchSize = 4
    public var dim = 64
    /// Blocks of each stage (vit-pytorch's tuple `depth`).
    public var depth = [1, 1, 1]
    /// Heads of each stage (one number for all, or one per stage).
    public var heads = [2, 4, 8]
    public var dimHead = 32
    public var mlpDim = 256
    public var dropout: Float = 0
    public var embeddingDropout: Float = 0
    public init() {}

    public var stride: Int { patchSize / 2 }
    /// The token grid's side after the embedding, for images of `side` pixels (conv_output_size).
    public func embeddedSide(_ side: Int) -> Int { (side - patchSize) / stride + 1 }
    /// The side of stage `i`'s grid: each pooling is a stride-2 convolution with kernel 3, padding 1.
    public func stageSide(_ i: Int, imageSide: Int) -> Int { (0..<i).reduce(embeddedSide(imageSide)) { s, _ in (s - 1) / 2 + 1 } }
    public func stageDim(_ i: Int) -> Int { dim << i }
    public func stageHeads(_ i: Int) -> Int { heads.count == 1 ? heads[0] : heads[i] }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + depth.indices.map { "stages.\($0)" } }

    /// What is wrong, with the recipe key to blame, or nil.
    public var keyedProblem: (key: String, problem: String)? {
        if depth.isEmpty || depth.contains(where: { $0 < 1 }) { return ("depth", "give each stage one or more blocks, e.g. [1, 1, 1]") }
        if heads.count != 1 && heads.count != depth.count { return ("heads", "give one heads value, or one per stage (\(depth.count))") }
        if patchSize < 2 { return ("patch_size", "the patch size must be 2 or more (the embedding's stride is half of it)") }
        if imageSize < patchSize { return ("patch_size", "\(imageSize)-pixel images are smaller than the \(patchSize)-pixel patches") }
        return nil
    }

    public var problem: String? { keyedProblem?.problem }
}

/// PiT's pooling between stages: the class token through Linear(dim, 2 dim), the token map
/// through a stride-2 depthwise convolution with two outputs per channel (kernel 3, padding 1)
/// and a pointwise one (vit-pytorch's DepthWiseConv2d).
public final class PiTPool: Module {
    public let depthwise: Conv2d
    public let pointwise: Conv2d
    public let clsFF: Linear
    let dim: Int

    init(dim: Int, initializer: Initializer) {
        self.dim = dim
        depthwise = Conv2d(dim, 2 * dim, kernel: 3, stride: 2, padding: 1, groups: dim, initializer: initializer)
        pointwise = Conv2d(2 * dim, 2 * dim, kernel: 1, initializer: initializer)
        clsFF = Linear(dim, 2 * dim, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["depthwise": "downsample.net.0", "pointwise": "downsample.net.1", "clsFF": "cls_ff"] }

    /// The class token (B, 1, dim) and the map (B, dim, s, s) to (B, 1, 2 dim) and (B, 2 dim, s', s').
    func callAsFunction(cls: Tensor, map: Tensor) -> (Tensor, Tensor) {
        let (b, h, w) = (map.shape[0], map.shape[2], map.shape[3])
        // Each input channel feeds two outputs: repeat every channel twice, then the fast depthwise kernel.
        let repeated = map.reshaped([b, dim, 1, h, w]).expanded(to: [b, dim, 2, h, w]).reshaped([b, 2 * dim, h, w])
        let pooled = repeated.conv2d(weight: depthwise.weight.value, bias: depthwise.bias?.value, stride: 2, padding: 1, groups: 2 * dim)
        return (clsFF(cls), pointwise(pooled))
    }
}

/// vit-pytorch's PiT Transformer: pre-norm attention and feed-forward blocks, no final norm.
public final class PiTTransformer: Module {
    public let layers: [TransformerBlock]
    init(dim: Int, depth: Int, heads: Int, dimHead: Int, mlpDim: Int, dropout: Float, initializer: Initializer) {
        layers = (0..<depth).map { _ in
            TransformerBlock(attention: Attention(dim: dim, heads: heads, dimHead: dimHead, dropout: dropout, initializer: initializer),
                             feedForward: FeedForward(dim: dim, hiddenDim: mlpDim, dropout: dropout, initializer: initializer))
        }
    }
    func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// vit-pytorch 1.7.14's PiT (Heo et al. 2021, "Rethinking Spatial Dimensions of Vision
/// Transformers"): overlapping patch embedding, a class token and learned positions, then stages
/// of transformer blocks with pooling between them (a stride-2 depthwise convolution on the token
/// map, a Linear on the class token) that halves the grid and doubles the width; the head reads
/// the class token. Hidden layers: "stages.i" (B, C_i, H_i, W_i) each stage's token map, "tokens"
/// (B, H * W, C) the last stage's map flattened (EsViT's regions), "pooled" (B, C) the final
/// class token, "logits". Names equal vit-pytorch's state_dict (its `layers` Sequential
/// alternates transformers and pools).
public final class PiT: Module, HiddenLayerEncoder {
    public let config: PiTConfig
    public let embedding: Linear
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    /// vit-pytorch's `layers` Sequential: transformer i at 2 i, pool i at 2 i + 1.
    public let layers: [Module]
    public let mlpHead: LayerNormLinear
    let embeddingDropout: Dropout?

    public init(_ config: PiTConfig, initializer: Initializer) {
        precondition(config.problem == nil, "PiT: \(config.problem!)")
        self.config = config
        let side = config.embeddedSide(config.imageSize)
        embedding = Linear(config.channels * config.patchSize * config.patchSize, config.dim, initializer: initializer)
        posEmbedding = Parameter(initializer.embedding([1, side * side + 1, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        embeddingDropout = config.embeddingDropout > 0 ? Dropout(config.embeddingDropout, rng: initializer.dropoutStream) : nil
        var layers: [Module] = []
        for i in config.depth.indices {
            layers.append(PiTTransformer(dim: config.stageDim(i), depth: config.depth[i], heads: config.stageHeads(i), dimHead: config.dimHead,
                                         mlpDim: config.mlpDim, dropout: config.dropout, initializer: initializer))
            if i < config.depth.count - 1 { layers.append(PiTPool(dim: config.stageDim(i), initializer: initializer)) }
        }
        self.layers = layers
        mlpHead = LayerNormLinear(config.stageDim(config.depth.count - 1), config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["embedding": "to_patch_embedding.2"] }

    public var transformers: [PiTTransformer] { stride(from: 0, to: layers.count, by: 2).map { layers[$0] as! PiTTransformer } }
    public var pools: [PiTPool] { stride(from: 1, to: layers.count, by: 2).map { layers[$0] as! PiTPool } }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let b = images.shape[0]
        let side = config.embeddedSide(images.shape[2]), own = config.embeddedSide(config.imageSize)
        let tokens = embedding(images.unfold(kernel: config.patchSize, stride: config.stride).permuted([0, 2, 1]))
        var table = posEmbedding.value
        if side != own {
            // Other image sizes (DINO's local crops): the position grid resized bicubically
            // (vit-pytorch slices the table's first n + 1 rows).
            let grid = Tensor.matmul(bicubicResizeMatrix(from: (own, own), to: (side, side)),
                                     posEmbedding.value.slice(axis: 1, start: 1, length: own * own).reshaped([own * own, config.dim]))
            table = Tensor.concat([posEmbedding.value.slice(axis: 1, start: 0, length: 1), grid.reshaped([1, side * side, config.dim])], axis: 1)
        }
        var x = Tensor.concat([clsToken.value.expanded(to: [b, 1, config.dim]), tokens], axis: 1) + table
        if let embeddingDropout { x = embeddingDropout(x) }
        var out: [String: Tensor] = [:]
        var s = side
        let pools = self.pools
        for (i, transformer) in transformers.enumerated() {
            x = transformer(x)
            let d = config.stageDim(i)
            let cls = x.slice(axis: 1, start: 0, length: 1)
            let patchTokens = x.slice(axis: 1, start: 1, length: s * s)
            let map = patchTokens.permuted([0, 2, 1]).reshaped([b, d, s, s])
            if layers.contains("stages.\(i)") { out["stages.\(i)"] = map }
            if i < pools.count {
                let (pooledCls, pooledMap) = pools[i](cls: cls, map: map)
                s = pooledMap.shape[2]
                x = Tensor.concat([pooledCls, pooledMap.reshaped([b, 2 * d, s * s]).permuted([0, 2, 1])], axis: 1)
            } else {
                if layers.contains("tokens") { out["tokens"] = patchTokens }
                if layers.contains("pooled") || layers.contains("logits") {
                    let pooled = cls.reshaped([b, d])
                    out["pooled"] = pooled
                    if layers.contains("logits") { out["logits"] = mlpHead(pooled) }
                }
            }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
