import Foundation
import NN
import TensorCore

/// What RvT changes in a ViT (vit-pytorch's RvT flags).
public struct RvTOptions: Codable, Equatable, Sendable {
    /// 2-D axial rotary positions on queries and keys (use_rotary); without them RvT has no positions.
    public var rotary = true
    /// Queries from a depthwise-separable convolution over the token grid (use_ds_conv), kernel `queryKernel`.
    public var convolutionalQuery = true
    public var queryKernel = 5
    /// A GEGLU feed-forward (use_glu), else GELU.
    public var glu = true
    public init() {}
}

/// vit-pytorch's AxialRotaryEmbedding: frequencies linspace(1, max_freq / 2, dim_head // 4) (the
/// buffer `scales`); token (i, j) of an n x n grid gets angles pi seq_i f and pi seq_j f with seq =
/// linspace(-1, 1, n), each repeated for the pair of channels it rotates.
public final class AxialRotaryEmbedding: Module {
    public let scales: Buffer
    let dimHead: Int

    init(dimHead: Int, maxFrequency: Int) {
        self.dimHead = dimHead
        let count = dimHead / 4
        let low: Float = 1, high = Float(maxFrequency) / 2
        scales = Buffer(Tensor(shape: [count], (0..<count).map { count == 1 ? low : low + (high - low) * Float($0) / Float(count - 1) }))
    }

    /// cos and sin (1, n n, 1, dimHead) for an n x n grid, 1 and 0 past the rotated channels; and
    /// the (dimHead, dimHead) matrix R with x R = rotate_every_two(x), zero past them too.
    func tables(side n: Int) -> (cos: Tensor, sin: Tensor, rotation: Tensor) {
        let quarter = dimHead / 4, rotated = 4 * quarter
        let f = scales.value.scalars
        let seq: [Float] = (0..<n).map { n == 1 ? -1 : -1 + 2 * Float($0) / Float(n - 1) }
        var cos = [Float](repeating: 1, count: n * n * dimHead), sin = [Float](repeating: 0, count: n * n * dimHead)
        for i in 0..<n {
            for j in 0..<n {
                let row = (i * n + j) * dimHead
                for k in 0..<quarter {
                    let ax = Double(seq[i]) * Double(f[k]) * Double.pi, ay = Double(seq[j]) * Double(f[k]) * Double.pi
                    for (slot, angle) in [(k, ax), (quarter + k, ay)] {
                        cos[row + 2 * slot] = Float(Foundation.cos(angle)); cos[row + 2 * slot + 1] = Float(Foundation.cos(angle))
                        sin[row + 2 * slot] = Float(Foundation.sin(angle)); sin[row + 2 * slot + 1] = Float(Foundation.sin(angle))
                    }
                }
            }
        }
        // rotate_every_two: (x1, x2) -> (-x2, x1) on each pair.
        var r = [Float](repeating: 0, count: dimHead * dimHead)
        for p in 0..<(rotated / 2) {
            r[(2 * p + 1) * dimHead + 2 * p] = -1
            r[(2 * p) * dimHead + 2 * p + 1] = 1
        }
        return (Tensor(shape: [1, n * n, 1, dimHead], cos), Tensor(shape: [1, n * n, 1, dimHead], sin), Tensor(shape: [dimHead, dimHead], r))
    }
}

/// RvT's SpatialConv query: the patch tokens as a (B, D, h, w) map through a depthwise 5x5 and a
/// pointwise convolution (no biases), the class token through cls_proj (a Linear when the widths differ).
public final class SpatialConvQuery: Module {
    public let depthwise: Conv2d
    public let pointwise: Conv2d
    public let clsProj: Linear?

    init(dim: Int, inner: Int, kernel: Int, initializer: Initializer) {
        depthwise = Conv2d(dim, dim, kernel: kernel, padding: kernel / 2, groups: dim, bias: false, initializer: initializer)
        pointwise = Conv2d(dim, inner, kernel: 1, bias: false, initializer: initializer)
        clsProj = dim != inner ? Linear(dim, inner, initializer: initializer) : nil
    }

    public override var stateNames: [String: String] { ["depthwise": "conv.net.0", "pointwise": "conv.net.1"] }

    /// x (B, 1 + h w, D) to queries (B, 1 + h w, inner).
    func callAsFunction(_ x: Tensor, side: Int) -> Tensor {
        let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        let cls = x.slice(axis: 1, start: 0, length: 1)
        let map = x.slice(axis: 1, start: 1, length: n - 1).permuted([0, 2, 1]).reshaped([b, d, side, side])
        let q = pointwise(depthwise(map))
        let inner = q.shape[1]
        return Tensor.concat([clsProj.map { $0(cls) } ?? cls, q.reshaped([b, inner, n - 1]).permuted([0, 2, 1])], axis: 1)
    }
}

/// RvT's attention: queries by the convolutional query (or a Linear), keys and values by to_kv,
/// rotary positions on the patch tokens' queries and keys (the class token's pass unrotated).
public final class RvTAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQ: SpatialConvQuery?
    public let toQLinear: Linear?
    public let toKV: Linear
    public let toOut: Linear
    let dropout: Dropout?

    init(dim: Int, heads: Int, dimHead: Int, dropout p: Float, options: RvTOptions, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        let inner = heads * dimHead
        norm = LayerNorm(dim)
        toQ = options.convolutionalQuery ? SpatialConvQuery(dim: dim, inner: inner, kernel: options.queryKernel, initializer: initializer) : nil
        toQLinear = options.convolutionalQuery ? nil : Linear(dim, inner, bias: false, initializer: initializer)
        toKV = Linear(dim, 2 * inner, bias: false, initializer: initializer)
        toOut = Linear(inner, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toQLinear": "to_q", "toOut": "to_out.0"] }

    /// x (B, 1 + n, D): queries from x; keys and values from x, or from norm(context) (unrotated).
    func callAsFunction(_ x: Tensor, side: Int, rotary: (cos: Tensor, sin: Tensor, rotation: Tensor)?, context: Tensor? = nil) -> Tensor {
        let h = norm(x)
        var q = toQ.map { $0(h, side: side) } ?? toQLinear!(h)
        let kv = toKV(context.map { norm($0) } ?? h).chunked(2, axis: -1)
        var k = kv[0]
        if let rotary {
            func rotate(_ t: Tensor) -> Tensor {
                let (b, n, inner) = (t.shape[0], t.shape[1], t.shape[2])
                let cls = t.slice(axis: 1, start: 0, length: 1)
                let p = t.slice(axis: 1, start: 1, length: n - 1)
                let heads4 = p.reshaped([b, n - 1, heads, dimHead])
                let turned = Tensor.matmul(p.reshaped([b * (n - 1) * heads, dimHead]), rotary.rotation).reshaped([b, n - 1, heads, dimHead])
                let rotated = (heads4 * rotary.cos + turned * rotary.sin).reshaped([b, n - 1, inner])
                return Tensor.concat([cls, rotated], axis: 1)
            }
            q = rotate(q)
            if context == nil { k = rotate(k) }
        }
        var weights = Tensor.headScores(q, k, heads: heads, scale: Float(1 / Double(dimHead).squareRoot())).softmax()
        if let dropout { weights = dropout(weights) }
        return toOut(Tensor.headWeightedValues(weights, kv[1]))
    }
}

/// RvT's feed-forward: LayerNorm, Linear to 2 hidden, GEGLU (gelu(gates) * x), Linear back; or
/// GELU with a hidden-wide first Linear.
public final class RvTFeedForward: Module {
    public let norm: LayerNorm
    public let hidden: Linear
    public let output: Linear
    let glu: Bool
    let dropout: Dropout?

    init(dim: Int, hiddenDim: Int, glu: Bool, dropout p: Float, initializer: Initializer) {
        self.glu = glu
        norm = LayerNorm(dim)
        hidden = Linear(dim, glu ? 2 * hiddenDim : hiddenDim, initializer: initializer)
        output = Linear(hiddenDim, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["norm": "net.0", "hidden": "net.1", "output": "net.4"] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = hidden(norm(x))
        if glu {
            let halves = h.chunked(2, axis: -1)
            h = halves[1].gelu() * halves[0]
        } else {
            h = h.gelu()
        }
        if let dropout { h = dropout(h) }
        let y = output(h)
        return dropout.map { $0(y) } ?? y
    }
}

/// One RvT block: x + attention, then + feed-forward.
public final class RvTBlock: Module {
    public let attention: RvTAttention
    public let feedForward: RvTFeedForward
    init(attention: RvTAttention, feedForward: RvTFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// RvT's transformer: the rotary embedding (its buffer `pos_emb.scales`) and the blocks.
public final class RvTTransformer: Module {
    public let posEmb: AxialRotaryEmbedding
    public let layers: [RvTBlock]
    init(posEmb: AxialRotaryEmbedding, layers: [RvTBlock]) { (self.posEmb, self.layers) = (posEmb, layers) }
}

/// vit-pytorch 1.7.14's RvT (Chu et al. 2021, "Rethinking and Improving Robustness of Vision
/// Transformers"): a Linear patch embedding and a class token with no position table, 2-D axial
/// rotary positions on queries and keys, queries from a depthwise-separable convolution over the
/// token grid, GEGLU feed-forwards, no final norm, and mlp_head = LayerNorm + Linear on the class
/// token. Its convolutional queries read the full grid, so SimMIM and MPP (which keep the grid)
/// apply, while MAE (a subset of tokens) and MP3 (tokens without positions) do not.
public final class RvT: Module, PatchTokenEncoder {
    public let config: ViTConfig
    public let options: RvTOptions
    public let patchLinear: Linear
    public let clsToken: Parameter
    public let transformer: RvTTransformer
    public let mlpHead: LayerNormLinear

    public init(_ config: ViTConfig, options: RvTOptions = RvTOptions(), initializer: Initializer) {
        precondition(config.problem == nil, "RvT: \(config.problem!)")
        precondition(config.imageHeight / config.patchHeight == config.imageWidth / config.patchWidth, "RvT's rotary positions need a square token grid")
        self.config = config
        self.options = options
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        transformer = RvTTransformer(
            posEmb: AxialRotaryEmbedding(dimHead: config.dimHead, maxFrequency: config.imageHeight),
            layers: (0..<config.depth).map { _ in
                RvTBlock(attention: RvTAttention(dim: config.dim, heads: config.heads, dimHead: config.dimHead, dropout: config.dropout,
                                                 options: options, initializer: initializer),
                         feedForward: RvTFeedForward(dim: config.dim, hiddenDim: config.mlpDim, glu: options.glu, dropout: config.dropout,
                                                     initializer: initializer))
            })
        mlpHead = LayerNormLinear(config.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["patchLinear": "to_patch_embedding.1"] }

    public var patchCount: Int { config.patchCount }
    public var patchDim: Int { config.patchDim }
    public var dim: Int { config.dim }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(images, patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func embedPatches(_ patches: Tensor) -> Tensor { patchLinear(patches) }

    /// RvT has no position table: its positions are rotary, inside attention.
    public func patchPositions() -> Tensor { Tensor.zeros([1, config.patchCount, config.dim]) }

    public func prefixTokens(batch: Int) -> Tensor? { clsToken.value.expanded(to: [batch, 1, config.dim]) }

    /// The blocks over the class token and a full square grid of patch tokens (B, 1 + n, D).
    func blocks(_ x: Tensor, context: Tensor? = nil, each: (Int, Tensor) -> Void = { _, _ in }) -> Tensor {
        let patches = x.shape[1] - 1
        var side = 1
        while (side + 1) * (side + 1) <= patches { side += 1 }
        precondition(side * side == patches, "RvT runs on the class token and a full square grid of patch tokens, got \(patches) patches")
        let rotary = options.rotary ? transformer.posEmb.tables(side: side) : nil
        var h = x
        for (i, layer) in transformer.layers.enumerated() {
            h = layer.attention(h, side: side, rotary: rotary, context: context) + h
            h = layer.feedForward(h) + h
            each(i, h)
        }
        return h
    }

    /// The blocks over tokens with the class token first, or over a grid of patch tokens alone
    /// (SimMIM's), which get the class token put in front for the blocks and taken off after.
    public func encodeTokens(_ tokens: Tensor) -> Tensor { encoding(tokens) { self.blocks($0) } }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor { encoding(tokens) { self.blocks($0, context: context) } }

    func encoding(_ tokens: Tensor, _ run: (Tensor) -> Tensor) -> Tensor {
        let (b, n) = (tokens.shape[0], tokens.shape[1])
        var side = 0
        while (side + 1) * (side + 1) <= n { side += 1 }
        guard side * side == n else { return run(tokens) }
        return run(Tensor.concat([prefixTokens(batch: b)!, tokens], axis: 1)).slice(axis: 1, start: 1, length: n)
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let b = images.shape[0]
        var out: [String: Tensor] = [:]
        let x = Tensor.concat([prefixTokens(batch: b)!, embedPatches(patchify(images))], axis: 1)
        let h = blocks(x) { i, h in if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h } }
        if layers.contains("tokens") { out["tokens"] = h }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = h.slice(axis: 1, start: 0, length: 1).reshaped([b, config.dim])
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = mlpHead(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
