import NN
import TensorCore

/// NesT's configuration (vit-pytorch 1.7.14's arguments). The patch map is cut into
/// 2^(hierarchies - 1) x 2^(hierarchies - 1) blocks that attend within themselves; each
/// hierarchy but the last ends with an aggregation (3x3 convolution, channel LayerNorm, 3x3 max
/// pool with stride 2) that halves the map and doubles the width, while the blocks per side halve.
public struct NesTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var patchSize = 2
    /// The width of the first hierarchy (the last one's is dim * 2^(hierarchies - 1)).
    public var dim = 64
    /// Heads of the first hierarchy (doubling with the width); each head is dim / heads wide.
    public var heads = 2
    public var hierarchies = 2
    /// Blocks (attention and feed-forward) per hierarchy: one number, or one per hierarchy.
    public var blockRepeats = [2]
    public var mlpMult = 4
    public var dropout: Float = 0
    public init() {}

    public func levelDim(_ i: Int) -> Int { dim << i }
    public func levelHeads(_ i: Int) -> Int { heads << i }
    public func repeats(_ i: Int) -> Int { blockRepeats.count == 1 ? blockRepeats[0] : blockRepeats[i] }
    /// Blocks per side at hierarchy i (counting from the first): 2^(hierarchies - 1 - i).
    public func blocksPerSide(_ i: Int) -> Int { 1 << (hierarchies - 1 - i) }
    /// The map's side at hierarchy i for images of `side` pixels.
    public func mapSide(_ i: Int, imageSide: Int) -> Int { (0..<i).reduce(imageSide / patchSize) { s, _ in (s - 1) / 2 + 1 } }
    /// The side of each block at the configured size: the position table holds its square.
    public var blockSide: Int { (imageSize / patchSize) / blocksPerSide(0) }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + (0..<hierarchies).map { "stages.\($0)" } }

    /// What is wrong for images of `side` pixels, with the key to blame, or nil.
    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if hierarchies < 1 { return ("num_hierarchies", "give 1 or more hierarchies") }
        if blockRepeats.count != 1 && blockRepeats.count != hierarchies { return ("block_repeats", "give one number, or one per hierarchy (\(hierarchies))") }
        if dim % heads != 0 { return ("heads", "dim \(dim) must be a multiple of heads (\(heads)): each head is dim / heads wide") }
        if side % patchSize != 0 { return ("patch_size", "patch size \(patchSize) does not divide \(side)-pixel images") }
        for i in 0..<hierarchies {
            let s = mapSide(i, imageSide: side), blocks = blocksPerSide(i)
            if s % blocks != 0 || s < blocks {
                return ("num_hierarchies", "hierarchy \(i)'s \(s)x\(s) map does not split into \(blocks)x\(blocks) blocks (\(side)-pixel images, patch \(patchSize)); use a patch size or image size whose map divides by \(blocksPerSide(0)), or fewer hierarchies")
            }
        }
        return nil
    }
}

/// NesT's attention: channel LayerNorm, 1x1-convolution q/k/v (no bias), softmax attention among
/// a block's tokens, 1x1-convolution output.
public final class NesTAttention: Module {
    public let norm: ChannelsLastNorm
    public let toQKV: PointwiseConv
    public let toOut: PointwiseConv
    let heads: Int
    let dropout: Dropout?
    init(dim: Int, heads: Int, dropout p: Float, initializer: Initializer) {
        self.heads = heads
        norm = ChannelsLastNorm(dim)
        toQKV = PointwiseConv(dim, 3 * dim, bias: false, initializer: initializer)
        toOut = PointwiseConv(dim, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }
    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }
    /// x (blocks, n, C).
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (merged, _) = Tensor.multiHeadSelfAttention(packedQKV: toQKV(norm(x)), heads: heads)
        let y = toOut(merged)
        return dropout.map { $0(y) } ?? y
    }
}

public final class NesTBlock: Module {
    public let attention: NesTAttention
    public let feedForward: ConvFeedForward
    init(attention: NesTAttention, feedForward: ConvFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = attention(x) + x
        return feedForward(y) + y
    }
}

/// One hierarchy: a position value per place in a block (added to every channel), then blocks of
/// attention and feed-forward within each block of the map; and the aggregation to the next
/// hierarchy (absent after the last).
public final class NesTLevel: Module {
    public let posEmb: Parameter
    public let layers: [NesTBlock]
    public let aggregateConv: Conv2d?
    public let aggregateNorm: ChannelLayerNorm?

    init(dim: Int, nextDim: Int?, seqLen: Int, depth: Int, heads: Int, mlpMult: Int, dropout: Float, initializer: Initializer) {
        posEmb = Parameter(initializer.embedding([seqLen]), decays: false)
        layers = (0..<depth).map { _ in
            NesTBlock(attention: NesTAttention(dim: dim, heads: heads, dropout: dropout, initializer: initializer),
                      feedForward: ConvFeedForward(dim: dim, mult: mlpMult, dropout: dropout, initializer: initializer))
        }
        aggregateConv = nextDim.map { Conv2d(dim, $0, kernel: 3, padding: 1, initializer: initializer) }
        aggregateNorm = nextDim.map { ChannelLayerNorm($0) }
    }

    public override var stateNames: [String: String] {
        ["posEmb": "0.pos_emb", "layers": "0.layers", "aggregateConv": "1.0", "aggregateNorm": "1.1"]
    }
}

/// vit-pytorch 1.7.14's NesT (Zhang et al. 2022, "Nested Hierarchical Transformer: Towards
/// Accurate, Data-Efficient and Interpretable Visual Understanding"): patches embedded by 1x1
/// convolutions between channel LayerNorms, then hierarchies of local transformers, each attending
/// within square blocks of the map, joined by convolution-LayerNorm-max-pool aggregation; the
/// head normalises the last map, averages it and applies a Linear. Computed channels-last (the
/// 1x1 convolutions as products over the channels). Hidden layers: "stages.i" (B, C_i, H_i, W_i)
/// each hierarchy's map after its transformer, "tokens" (B, H * W, C) the last one flattened,
/// "pooled" (B, C) the mean of the head's normalised map (what its Linear reads), "logits".
public final class NesT: Module, HiddenLayerEncoder {
    public let config: NesTConfig
    public let patchNorm: ChannelsLastNorm
    public let patchConv: PointwiseConv
    public let embeddingNorm: ChannelsLastNorm
    public let levels: [NesTLevel]
    public let headNorm: ChannelsLastNorm
    public let head: Linear

    public init(_ config: NesTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "NesT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        let patchDim = config.channels * config.patchSize * config.patchSize
        patchNorm = ChannelsLastNorm(patchDim)
        patchConv = PointwiseConv(patchDim, config.dim, initializer: initializer)
        embeddingNorm = ChannelsLastNorm(config.dim)
        let seqLen = config.blockSide * config.blockSide
        levels = (0..<config.hierarchies).map { i in
            NesTLevel(dim: config.levelDim(i), nextDim: i < config.hierarchies - 1 ? config.levelDim(i + 1) : nil, seqLen: seqLen,
                      depth: config.repeats(i), heads: config.levelHeads(i), mlpMult: config.mlpMult, dropout: config.dropout, initializer: initializer)
        }
        let last = config.levelDim(config.hierarchies - 1)
        headNorm = ChannelsLastNorm(last)
        head = Linear(last, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] {
        ["patchNorm": "to_patch_embedding.1", "patchConv": "to_patch_embedding.2", "embeddingNorm": "to_patch_embedding.3",
         "levels": "layers", "headNorm": "mlp_head.0", "head": "mlp_head.2"]
    }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let b = images.shape[0]
        var side = images.shape[2] / config.patchSize
        // 'b c (h p1) (w p2) -> b (p1 p2 c) h w', kept channels-last as (B, h * w, p1 p2 c).
        var x = embeddingNorm(patchConv(patchNorm(patchify(images, patchHeight: config.patchSize, patchWidth: config.patchSize))))
        var out: [String: Tensor] = [:]
        let own = config.blockSide
        for (i, level) in levels.enumerated() {
            let c = config.levelDim(i), blocks = config.blocksPerSide(i), s = side / blocks
            // 'b c (b1 h) (b2 w) -> (b b1 b2) c h w', channels-last: (B, b1, h, b2, w, C) -> (B b1 b2, h w, C).
            var t = x.reshaped([b, side, side, c]).windows(s, s)
            var position = level.posEmb.value
            if s != own {
                // Other image sizes (DINO's local crops): the block's position grid resized bicubically
                // (vit-pytorch takes the table's first h * w values).
                position = Tensor.matmul(bicubicResizeMatrix(from: (own, own), to: (s, s)), position.reshaped([own * own, 1]))
            }
            t = t + position.reshaped([1, s * s, 1])
            for block in level.layers { t = block(t) }
            x = t.mergingWindows(height: side, width: side, s, s).reshaped([b, side * side, c])
            let map = x.permuted([0, 2, 1]).reshaped([b, c, side, side])
            if layers.contains("stages.\(i)") { out["stages.\(i)"] = map }
            if let conv = level.aggregateConv, let norm = level.aggregateNorm {
                let pooled = norm(conv(map)).maxPool2d(kernel: 3, stride: 2, padding: 1)
                side = pooled.shape[2]
                x = pooled.reshaped([b, pooled.shape[1], side * side]).permuted([0, 2, 1])
            }
        }
        if layers.contains("tokens") { out["tokens"] = x }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = headNorm(x).mean(axis: 1)
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = head(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
