import NN
import TensorCore

/// LeViT's configuration (vit-pytorch 1.7.14's arguments; dims, depths and heads per stage, the
/// last value repeated when a list is shorter than `stages`).
public struct LeViTConfig: Codable, Equatable, Sendable {
    /// Which grid the attention biases are sized for.
    public enum BiasGrid: String, Codable, CaseIterable, Sendable {
        /// The maps the stem and the downsampling actually make (ceil(side / 2) per stride-2 step).
        case exact
        /// vit-pytorch 1.7.14: image_size // 16, then ceil halves; at 28 px a 1x1 table for a 2x2
        /// map, broadcast so that every pair of positions gets the same bias (no effect).
        case vitPytorch1714 = "vit-pytorch-1.7.14"
    }

    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var stages = 2
    public var dims = [64, 128]
    public var depths = [2, 2]
    public var heads = [2, 4]
    public var mlpMult = 2
    public var dimKey = 16
    public var dimValue = 32
    /// Where the attention output's BatchNorm scale starts.
    public enum OutNormInit: String, Codable, CaseIterable, Sendable {
        /// The official code's: 0 in the residual attention, 1 in the downsampling attention
        /// (Linear_BN's default in AttentionSubsample).
        case paper
        /// vit-pytorch 1.7.14: 0 in both, so at the start the downsampling attention outputs
        /// zeros and everything after it is the same for every image.
        case vitPytorch1714 = "vit-pytorch-1.7.14"
    }

    public var dropout: Float = 0
    public var biasGrid = BiasGrid.exact
    public var outNormInit = OutNormInit.paper
    public init() {}

    /// `list` stretched to `stages` by repeating its last value (vit-pytorch's cast_tuple).
    func perStage(_ list: [Int]) -> [Int] { list + Array(repeating: list.last ?? 0, count: Swift.max(0, stages - list.count)) }
    public var stageDims: [Int] { perStage(dims) }
    public var stageDepths: [Int] { perStage(depths) }
    public var stageHeads: [Int] { perStage(heads) }

    /// The side of the map the four stride-2 stem convolutions make of `side` pixels.
    public static func stemSide(_ side: Int) -> Int { (0..<4).reduce(side) { s, _ in (s - 1) / 2 + 1 } }
    /// The side of the grid stage 0's bias table is made for.
    public var tableSide: Int { biasGrid == .exact ? Self.stemSide(imageSize) : imageSize / 16 }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + (0..<stages).map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if stages < 1 { return ("stages", "give 1 or more stages") }
        for (key, list) in [("dim", dims), ("depth", depths), ("heads", heads)] where list.isEmpty || list.count > stages || list.contains(where: { $0 < 1 }) {
            return (key, "give one positive value, or up to one per stage (\(stages))")
        }
        if side < 16 && biasGrid == .vitPytorch1714 { return ("bias_grid", "vit-pytorch 1.7.14's table (image_size // 16) is empty below 16 pixels") }
        if biasGrid == .vitPytorch1714 && tableSide != Self.stemSide(side) && tableSide != 1 {
            return ("bias_grid", "1.7.14's \(tableSide)x\(tableSide) bias table does not fit the \(Self.stemSide(side))x\(Self.stemSide(side)) map of \(side)-pixel images; use bias_grid: exact")
        }
        if Self.stemSide(side) > tableSide && biasGrid == .exact {
            return ("bias_grid", "\(side)-pixel images make a \(Self.stemSide(side))x\(Self.stemSide(side)) map, larger than the \(tableSide)x\(tableSide) one the bias tables are made for (image_size \(imageSize))")
        }
        return nil
    }
}

/// LeViT's attention on channels-last tokens: q, k, v by bias-free 1x1 convolutions with
/// BatchNorm (q from every other row and column when downsampling), softmax attention with a
/// learned bias per head for each absolute offset (|dy|, |dx|) between positions, then GELU, a
/// 1x1 convolution and a BatchNorm whose scale starts at zero.
public final class LeViTAttention: Module {
    public let toQ: PointwiseConv
    public let qNorm: BatchNorm
    public let toK: PointwiseConv
    public let kNorm: BatchNorm
    public let toV: PointwiseConv
    public let vNorm: BatchNorm
    public let toOut: PointwiseConv
    public let outNorm: BatchNorm
    public let posBias: Embedding
    /// vit-pytorch's persistent buffer of bias indices, kept so that state_dicts match.
    public let posIndices: Buffer
    let heads: Int, dimKey: Int, tableSide: Int, downsample: Bool, legacy: Bool
    let dropout: Dropout?

    init(dim: Int, dimOut: Int, tableSide: Int, heads: Int, dimKey: Int, dimValue: Int, downsample: Bool, legacy: Bool, zeroOutNorm: Bool,
         dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimKey, self.tableSide, self.downsample, self.legacy) = (heads, dimKey, tableSide, downsample, legacy)
        toQ = PointwiseConv(dim, heads * dimKey, bias: false, initializer: initializer)
        qNorm = BatchNorm(heads * dimKey)
        toK = PointwiseConv(dim, heads * dimKey, bias: false, initializer: initializer)
        kNorm = BatchNorm(heads * dimKey)
        toV = PointwiseConv(dim, heads * dimValue, bias: false, initializer: initializer)
        vNorm = BatchNorm(heads * dimValue)
        toOut = PointwiseConv(heads * dimValue, dimOut, initializer: initializer)
        outNorm = BatchNorm(dimOut)
        if zeroOutNorm { outNorm.weight.assign(.zeros([dimOut])) }
        posBias = Embedding(tableSide * tableSide, heads, initializer: initializer)
        let (q, k) = Self.offsets(side: tableSide, downsample: downsample)
        posIndices = Buffer(Tensor(shape: [q.count, k.count], q.flatMap { a in k.map { b in Float(Swift.abs(a.0 - b.0) * tableSide + Swift.abs(a.1 - b.1)) } }))
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    /// The query positions (every other row and column when downsampling) and key positions of a side x side grid.
    static func offsets(side: Int, downsample: Bool) -> ([(Int, Int)], [(Int, Int)]) {
        let step = downsample ? 2 : 1
        let q = stride(from: 0, to: side, by: step).flatMap { i in stride(from: 0, to: side, by: step).map { (i, $0) } }
        let k = (0..<side).flatMap { i in (0..<side).map { (i, $0) } }
        return (q, k)
    }

    public override var stateNames: [String: String] {
        ["toQ": "to_q.0", "qNorm": "to_q.1", "toK": "to_k.0", "kNorm": "to_k.1", "toV": "to_v.0", "vNorm": "to_v.1",
         "toOut": "to_out.1", "outNorm": "to_out.2"]
    }

    /// BatchNorm over the channels of channels-last tokens (the statistics of BatchNorm2d).
    static func norm(_ bn: BatchNorm, _ x: Tensor) -> Tensor {
        let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
        return bn(x.reshaped([b * n, c])).reshaped([b, n, c])
    }

    /// x (B, side * side, C) to (B, side' * side', dimOut).
    func callAsFunction(_ x: Tensor, side: Int) -> Tensor {
        let b = x.shape[0]
        var qInput = x
        var qSide = side
        if downsample {
            // A stride-2 1x1 convolution reads every other row and column.
            qSide = (side - 1) / 2 + 1
            let kept = (0..<qSide).flatMap { i in (0..<qSide).map { j in 2 * i * side + 2 * j } }
            qInput = x.gather(axis: 1, index: IndexTensor(shape: [b, kept.count], Array((0..<b).map { _ in kept }.joined())))
        }
        let q = Self.norm(qNorm, toQ(qInput)), k = Self.norm(kNorm, toK(x)), v = Self.norm(vNorm, toV(x))
        let scale = 1 / Float(dimKey).squareRoot()
        // The bias of each (query, key) offset, divided by the scale as 1.7.14 adds it.
        let bias: Tensor
        if legacy && tableSide != side {
            // 1.7.14's 1x1 table broadcast over every pair: one value per head.
            bias = posBias.weight.value.reshaped([1, heads, 1, 1]).expanded(to: [1, heads, qSide * qSide, side * side])
        } else {
            let (qs, ks) = Self.offsets(side: side, downsample: downsample)
            let index = qs.flatMap { a in ks.map { c in Swift.abs(a.0 - c.0) * tableSide + Swift.abs(a.1 - c.1) } }
            bias = posBias.weight.value.gather(axis: 0, index: IndexTensor(shape: [index.count], index))
                .reshaped([qs.count, ks.count, heads]).permuted([2, 0, 1]).reshaped([1, heads, qs.count, ks.count])
        }
        let logits = Tensor.headScores(q, k, heads: heads, scale: scale) + bias * (1 / scale)
        var weights = logits.softmax()
        if let dropout { weights = dropout(weights) }
        let y = Self.norm(outNorm, toOut(Tensor.headWeightedValues(weights, v).gelu()))
        return dropout.map { $0(y) } ?? y
    }
}

/// LeViT's feed-forward: 1x1 convolution to mult x dim, Hardswish, 1x1 convolution back.
public final class LeViTFeedForward: Module {
    public let hidden: PointwiseConv
    public let output: PointwiseConv
    let dropout: Dropout?
    init(dim: Int, mult: Int, dropout p: Float, initializer: Initializer) {
        hidden = PointwiseConv(dim, dim * mult, initializer: initializer)
        output = PointwiseConv(dim * mult, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }
    public override var stateNames: [String: String] { ["hidden": "net.0", "output": "net.3"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = hidden(x).hardswish()
        if let dropout { h = dropout(h) }
        let y = output(h)
        return dropout.map { $0(y) } ?? y
    }
}

public final class LeViTBlock: Module {
    public let attention: LeViTAttention
    public let feedForward: LeViTFeedForward
    init(attention: LeViTAttention, feedForward: LeViTFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// A LeViT transformer: blocks of attention (residual unless it downsamples or changes the width)
/// and feed-forward (residual).
public final class LeViTTransformer: Module {
    public let layers: [LeViTBlock]
    let attentionResidual: Bool
    init(dim: Int, dimOut: Int, tableSide: Int, depth: Int, heads: Int, config c: LeViTConfig, downsample: Bool, initializer: Initializer) {
        attentionResidual = !downsample && dim == dimOut
        // vit-pytorch builds the downsampling transformers with its defaults: mlp_mult 2, no dropout.
        let (mult, dropout) = downsample ? (2, Float(0)) : (c.mlpMult, c.dropout)
        layers = (0..<depth).map { _ in
            LeViTBlock(attention: LeViTAttention(dim: dim, dimOut: dimOut, tableSide: tableSide, heads: heads, dimKey: c.dimKey, dimValue: c.dimValue,
                                                 downsample: downsample, legacy: c.biasGrid == .vitPytorch1714,
                                                 zeroOutNorm: !downsample || c.outNormInit == .vitPytorch1714, dropout: dropout, initializer: initializer),
                       feedForward: LeViTFeedForward(dim: dimOut, mult: mult, dropout: dropout, initializer: initializer))
        }
    }
    func callAsFunction(_ x: Tensor, side: inout Int) -> Tensor {
        var h = x
        for block in layers {
            let a = block.attention(h, side: side)
            if block.attention.downsample { side = (side - 1) / 2 + 1 }
            h = attentionResidual ? a + h : a
            h = block.feedForward(h) + h
        }
        return h
    }
}

/// vit-pytorch 1.7.14's LeViT (Graham et al. 2021, "LeViT: a Vision Transformer in ConvNet's
/// Clothing for Faster Inference"): a stem of four stride-2 3x3 convolutions, then stages of
/// attention with BatchNormed 1x1-convolution projections, a learned bias per head for each
/// offset between positions, and Hardswish feed-forwards; between stages an attention block whose
/// queries come from every other position halves the map. The head averages the last map.
/// Computed channels-last. Hidden layers: "stages.i" (B, C_i, H_i, W_i) each stage's map,
/// "tokens" (B, H * W, C) the last one flattened, "pooled" (B, C) its mean, "logits".
public final class LeViT: Module, HiddenLayerEncoder {
    public let config: LeViTConfig
    public let stem: [Conv2d]
    /// vit-pytorch's `backbone` Sequential: stage i's transformer, then (but after the last) its downsampling transformer.
    public let backbone: [LeViTTransformer]
    public let mlpHead: Linear

    public init(_ config: LeViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "LeViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        let widths = [config.channels, 32, 64, 128, config.stageDims[0]]
        stem = (0..<4).map { Conv2d(widths[$0], widths[$0 + 1], kernel: 3, stride: 2, padding: 1, initializer: initializer) }
        var backbone: [LeViTTransformer] = []
        var side = config.tableSide
        for i in 0..<config.stages {
            let dim = config.stageDims[i]
            backbone.append(LeViTTransformer(dim: dim, dimOut: dim, tableSide: side, depth: config.stageDepths[i], heads: config.stageHeads[i],
                                             config: config, downsample: false, initializer: initializer))
            if i < config.stages - 1 {
                backbone.append(LeViTTransformer(dim: dim, dimOut: config.stageDims[i + 1], tableSide: side, depth: 1, heads: 2 * config.stageHeads[i],
                                                 config: config, downsample: true, initializer: initializer))
                side = (side - 1) / 2 + 1
            }
        }
        self.backbone = backbone
        mlpHead = Linear(config.stageDims[config.stages - 1], config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["stem": "conv_embedding"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let map = stem.reduce(images) { $1($0) }
        let (b, c) = (map.shape[0], map.shape[1])
        var side = map.shape[2]
        var x = map.reshaped([b, c, side * side]).permuted([0, 2, 1])
        var out: [String: Tensor] = [:]
        for (k, transformer) in backbone.enumerated() {
            x = transformer(x, side: &side)
            if k % 2 == 0, layers.contains("stages.\(k / 2)") {
                out["stages.\(k / 2)"] = x.permuted([0, 2, 1]).reshaped([b, x.shape[2], side, side])
            }
        }
        meanPooledOutputs(x, head: { mlpHead($0) }, layers: layers, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
