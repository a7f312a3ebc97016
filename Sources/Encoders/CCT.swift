import Foundation
import NN
import TensorCore

/// The hyperparameters of a Compact Convolutional Transformer (vit-pytorch's argument names in
/// comments; the named sizes are `CCTConfig.named`).
public struct CCTConfig: Codable, Equatable, Sendable {
    public var imageHeight = 28, imageWidth = 28        // img_size
    public var channels = 1                             // n_input_channels
    public var numClasses = 10                          // num_classes
    public var dim = 128                                // embedding_dim
    public var depth = 2                                // num_layers
    public var heads = 2                                // num_heads
    public var mlpRatio = 1.0                           // mlp_ratio
    public var convLayers = 1                           // n_conv_layers
    public var kernelSize = 3                           // kernel_size
    public var stride: Int?                             // stride (nil: max(1, kernel_size // 2 - 1))
    public var padding: Int?                            // padding (nil: max(1, kernel_size // 2))
    public var inPlanes = 64                            // the tokeniser's inner width (Tokenizer's in_planes)
    public var poolingKernel = 3, poolingStride = 2, poolingPadding = 1
    public var positions = Positions.sine               // positional_embedding
    public var dropout: Float = 0                       // dropout_rate
    public var attentionDropout: Float = 0.1            // attention_dropout
    public var stochasticDepth: Float = 0.1             // stochastic_depth_rate

    public enum Positions: String, Codable, CaseIterable, Sendable { case sine, learnable, none }

    public init() {}

    /// vit-pytorch's cct_2 ... cct_16: (num_layers, num_heads, mlp_ratio, embedding_dim).
    public static let named: [(name: String, depth: Int, heads: Int, mlpRatio: Double, dim: Int)] = [
        ("cct_2", 2, 2, 1, 128), ("cct_4", 4, 2, 1, 128), ("cct_6", 6, 4, 2, 256), ("cct_7", 7, 4, 2, 256),
        ("cct_8", 8, 4, 2, 256), ("cct_14", 14, 6, 3, 384), ("cct_16", 16, 6, 3, 384),
    ]

    public var convStride: Int { stride ?? Swift.max(1, kernelSize / 2 - 1) }
    public var convPadding: Int { padding ?? Swift.max(1, kernelSize / 2) }
    public var feedForwardDim: Int { Int(Double(dim) * mlpRatio) }

    /// The token grid the tokeniser leaves of an image of `height` x `width` (each conv, then its max-pool).
    public func grid(height: Int, width: Int) -> (Int, Int) {
        func side(_ n: Int) -> Int {
            var s = n
            for _ in 0..<convLayers {
                s = (s + 2 * convPadding - kernelSize) / convStride + 1
                s = (s + 2 * poolingPadding - poolingKernel) / poolingStride + 1
            }
            return s
        }
        return (side(height), side(width))
    }

    public var tokenCount: Int { let g = grid(height: imageHeight, width: imageWidth); return g.0 * g.1 }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + (0..<depth).map { "blocks.\($0)" } }

    /// Why this configuration cannot be built, or nil.
    public var problem: String? {
        if dim % heads != 0 { return "embedding dim \(dim) is not divisible by \(heads) heads" }
        if 2 * poolingPadding > poolingKernel { return "pooling padding \(poolingPadding) exceeds half the pooling kernel \(poolingKernel)" }
        let g = grid(height: imageHeight, width: imageWidth)
        if g.0 < 1 || g.1 < 1 { return "the tokeniser leaves no tokens of \(imageHeight)x\(imageWidth) images (\(convLayers) conv and pooling layers)" }
        return nil
    }
}

/// vit-pytorch's CCT sinusoidal_embedding(n, dim): position p, channel i holds p / 10000^(2 (i // 2)
/// / dim), sine on even channels and cosine on odd ones (in float32, as torch builds it).
public func cctSinusoidalEmbedding(count: Int, dim: Int) -> Tensor {
    var values = [Float](repeating: 0, count: count * dim)
    for p in 0..<count {
        for i in 0..<dim {
            let angle = Float(Double(p) / Foundation.pow(10000, Double(2 * (i / 2)) / Double(dim)))
            values[p * dim + i] = Float(i % 2 == 0 ? Foundation.sin(Double(angle)) : Foundation.cos(Double(angle)))
        }
    }
    return Tensor(shape: [1, count, dim], values)
}

/// One tokeniser layer: Conv2d (no bias), ReLU, MaxPool2d, as vit-pytorch's Sequential (conv at 0).
public final class CCTConvLayer: Module {
    public let conv: Conv2d
    let pooling: (kernel: Int, stride: Int, padding: Int)
    init(conv: Conv2d, pooling: (Int, Int, Int)) { (self.conv, self.pooling) = (conv, pooling) }
    public override var stateNames: [String: String] { ["conv": "0"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        conv(x).relu().maxPool2d(kernel: pooling.kernel, stride: pooling.stride, padding: pooling.padding)
    }
}

/// The convolutional tokeniser: conv layers, then 'b c h w -> b (h w) c'.
public final class CCTTokenizer: Module {
    public let convLayers: [CCTConvLayer]
    init(_ layers: [CCTConvLayer]) { convLayers = layers }
}

/// CCT's self-attention (timm's): a packed bias-free qkv, heads of dim / heads, dropout on the
/// attention weights, and a projection.
public final class CCTAttention: Module {
    public let heads: Int
    public let qkv: Linear
    public let proj: Linear
    let attentionDropout: Dropout?
    let projectionDropout: Dropout?

    init(dim: Int, heads: Int, attentionDropout: Float, projectionDropout: Float, make: (Int, Int, Bool) -> Linear, rng: RandomStream) {
        self.heads = heads
        qkv = make(dim, 3 * dim, false)
        proj = make(dim, dim, true)
        self.attentionDropout = attentionDropout > 0 ? Dropout(attentionDropout, rng: rng) : nil
        self.projectionDropout = projectionDropout > 0 ? Dropout(projectionDropout, rng: rng) : nil
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let packed = qkv(x)
        let merged: Tensor
        if let attentionDropout, isTraining {
            let (q, k, v) = { let c = packed.chunked(3, axis: -1); return (c[0], c[1], c[2]) }()
            let d = x.shape[2] / heads
            let weights = Tensor.headScores(q, k, heads: heads, scale: Float(1 / Double(d).squareRoot())).softmax()
            merged = Tensor.headWeightedValues(attentionDropout(weights), v)
        } else {
            merged = Tensor.multiHeadSelfAttention(packedQKV: packed, heads: heads).output
        }
        let out = proj(merged)
        return projectionDropout.map { $0(out) } ?? out
    }
}

/// Stochastic depth (Huang et al. 2016): in training, a residual branch is dropped for a whole
/// image with probability p and scaled by 1 / (1 - p) otherwise (vit-pytorch's DropPath).
public final class DropPath: Module {
    public let probability: Float
    let rng: RandomStream
    public init(_ probability: Float, rng: RandomStream) { (self.probability, self.rng) = (probability, rng) }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining, probability > 0 else { return x }
        let b = x.shape[0]
        let keep = 1 - probability
        let mask = (0..<b).map { _ in rng.nextFloat() < keep ? 1 / keep : 0 }
        return x * Tensor(shape: [b] + Array(repeating: 1, count: x.rank - 1), mask)
    }
}

/// One CCT encoder layer (torch's TransformerEncoderLayer as CCT writes it): x + attention(norm(x)),
/// then the LayerNorm norm1 replaces x, then x + linear2(gelu(linear1(x))), with drop-path on both
/// branches.
public final class CCTBlock: Module {
    public let preNorm: LayerNorm
    public let selfAttn: CCTAttention
    public let linear1: Linear
    public let norm1: LayerNorm
    public let linear2: Linear
    let dropout: Dropout?
    let dropPath: DropPath

    init(_ c: CCTConfig, dropPath rate: Float, make: (Int, Int, Bool) -> Linear, rng: RandomStream) {
        preNorm = LayerNorm(c.dim)
        selfAttn = CCTAttention(dim: c.dim, heads: c.heads, attentionDropout: c.attentionDropout, projectionDropout: c.dropout, make: make, rng: rng)
        linear1 = make(c.dim, c.feedForwardDim, true)
        norm1 = LayerNorm(c.dim)
        linear2 = make(c.feedForwardDim, c.dim, true)
        dropout = c.dropout > 0 ? Dropout(c.dropout, rng: rng) : nil
        dropPath = DropPath(rate, rng: rng)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let y = norm1(x + dropPath(selfAttn(preNorm(x))))
        var h = linear1.gelu(y)
        if let dropout { h = dropout(h) }
        var f = linear2(h)
        if let dropout { f = dropout(f) }
        return y + dropPath(f)
    }
}

/// CCT's transformer classifier: positions, the layers, a final LayerNorm, sequence pooling (a
/// softmax over a Linear(dim, 1) score of each token weights the tokens' average) and `fc`.
public final class CCTClassifier: Module {
    public let learnedPositions: Parameter?
    public let sinePositions: Buffer?
    public let attentionPool: Linear
    public let blocks: [CCTBlock]
    public let norm: LayerNorm
    public let fc: Linear
    let dropout: Dropout?

    init(_ c: CCTConfig, make: (Int, Int, Bool) -> Linear, initializer: Initializer) {
        let n = c.tokenCount
        learnedPositions = c.positions == .learnable ? Parameter(Tensor.randn([1, n, c.dim], std: 0.2, rng: initializer.rng), decays: false) : nil
        sinePositions = c.positions == .sine ? Buffer(cctSinusoidalEmbedding(count: n, dim: c.dim)) : nil
        attentionPool = make(c.dim, 1, true)
        blocks = (0..<c.depth).map { i in
            // torch.linspace(0, stochastic_depth_rate, num_layers)
            let rate = c.depth > 1 ? c.stochasticDepth * Float(i) / Float(c.depth - 1) : 0
            return CCTBlock(c, dropPath: rate, make: make, rng: initializer.dropoutStream)
        }
        norm = LayerNorm(c.dim)
        fc = make(c.dim, c.numClasses, true)
        dropout = c.dropout > 0 ? Dropout(c.dropout, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["learnedPositions": "positional_emb", "sinePositions": "positional_emb"] }
}

/// vit-pytorch 1.7.14's CCT (Hassani et al. 2021, "Escaping the Big Data Paradigm with Compact
/// Transformers"): a convolutional tokeniser (conv, ReLU, max-pool per layer), sine or learned
/// positions, post-attention-norm transformer layers with stochastic depth, a final LayerNorm and
/// sequence pooling. Its tokens come from overlapping receptive fields (each conv and pool reads
/// its neighbours), so a token cannot be embedded or hidden alone: the masked objectives do not
/// apply; the view objectives and the evaluation stages do.
public final class CCT: Module, HiddenLayerEncoder {
    public let config: CCTConfig
    public let tokenizer: CCTTokenizer
    public let classifier: CCTClassifier

    public init(_ config: CCTConfig, initializer: Initializer) {
        precondition(config.problem == nil, "CCT: \(config.problem!)")
        self.config = config
        // CCT's own initialisation: Linear weights N(0, 0.02) (trunc_normal_ at +-2, which never
        // cuts at this std), biases 0; convolutions kaiming_normal_ (std sqrt(2 / fan_in)).
        let rng = initializer.rng
        func make(_ i: Int, _ o: Int, _ bias: Bool) -> Linear {
            let l = Linear(i, o, bias: bias, initializer: initializer)
            l.weight.assign(Tensor.randn([o, i], std: 0.02, rng: rng))
            if let b = l.bias { b.assign(Tensor.zeros([o])) }
            return l
        }
        let widths = [config.channels] + Array(repeating: config.inPlanes, count: config.convLayers - 1) + [config.dim]
        tokenizer = CCTTokenizer((0..<config.convLayers).map { i in
            let conv = Conv2d(widths[i], widths[i + 1], kernel: config.kernelSize, stride: config.convStride, padding: config.convPadding,
                              bias: false, initializer: initializer)
            let fanIn = widths[i] * config.kernelSize * config.kernelSize
            conv.weight.assign(Tensor.randn(conv.weight.shape, std: Float((2 / Double(fanIn)).squareRoot()), rng: rng))
            return CCTConvLayer(conv: conv, pooling: (config.poolingKernel, config.poolingStride, config.poolingPadding))
        })
        classifier = CCTClassifier(config, make: make, initializer: initializer)
    }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { classifier.fc }

    /// The tokeniser's output (B, h w, dim) and its grid.
    func tokens(_ images: Tensor) -> (Tensor, (Int, Int)) {
        var x = images
        for layer in tokenizer.convLayers { x = layer(x) }
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return (x.reshaped([b, c, h * w]).permuted([0, 2, 1]), (h, w))
    }

    /// The position table for a token grid: the table itself at the configured size, else its
    /// grid resized bicubically (DINO's smaller local crops).
    func positions(for grid: (Int, Int)) -> Tensor? {
        guard let table = classifier.learnedPositions?.value ?? classifier.sinePositions?.value else { return nil }
        let own = config.grid(height: config.imageHeight, width: config.imageWidth)
        if grid == own { return table }
        return Tensor.matmul(bicubicResizeMatrix(from: own, to: grid), table.reshaped([own.0 * own.1, config.dim]))
            .reshaped([1, grid.0 * grid.1, config.dim])
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        var (x, grid) = tokens(images)
        if let table = positions(for: grid) { x = x + table }
        if let dropout = classifier.dropout { x = dropout(x) }
        for (i, block) in classifier.blocks.enumerated() {
            x = block(x)
            if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = x }
        }
        x = classifier.norm(x)
        if layers.contains("tokens") { out["tokens"] = x }
        if layers.contains("pooled") || layers.contains("logits") {
            let (b, n) = (x.shape[0], x.shape[1])
            let weights = classifier.attentionPool(x).reshaped([b, 1, n]).softmax()
            let pooled = Tensor.matmul(weights, x).reshaped([b, config.dim])
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = classifier.fc(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
