import NN
import TensorCore

/// ScalableViT's configuration (vit-pytorch 1.7.14's arguments; the per-stage ones take one
/// number for all stages or one per stage).
public struct ScalableViTConfig: Codable, Equatable, Sendable {
    /// The order of a block's second half.
    public enum BlockOrder: String, Codable, CaseIterable, Sendable {
        /// The paper's: scalable self-attention, feed-forward, (PEG), interactive windowed
        /// self-attention, feed-forward.
        case paper
        /// vit-pytorch 1.7.14's forward unpacks its ModuleList as (ssa, ff1, peg, iwsa, ff2) while
        /// the list holds (ssa, ff1, peg, ff2, iwsa): the second feed-forward runs before the
        /// windowed attention.
        case vitPytorch1714 = "vit-pytorch-1.7.14"
    }

    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var dim = 64
    public var depth = [2, 2]
    public var heads = [2]
    /// The key and value maps of scalable self-attention come from an r x r, stride-r convolution.
    public var reductionFactor = [2, 1]
    /// Windows of the interactive windowed self-attention (0: the whole map, vit-pytorch's None;
    /// at 28 px the maps are 7x7 and 4x4, so windows would only cut DINO's local crops).
    public var windowSize = [0]
    public var iwsaDimKey = [32]
    public var iwsaDimValue = [32]
    public var ssaDimKey = [32]
    public var ssaDimValue = [32]
    public var ffExpansionFactor = 4
    public var dropout: Float = 0
    public var blockOrder = BlockOrder.paper
    public init() {}

    public func stageDim(_ i: Int) -> Int { dim << i }
    static func at(_ v: [Int], _ i: Int) -> Int { v.count == 1 ? v[0] : v[i] }
    /// The map's side at stage i: the stride-4 embedding (kernel 7, padding 3), then a stride-2 convolution per stage.
    public func stageSide(_ i: Int, imageSide side: Int) -> Int { (0..<i).reduce((side - 1) / 4 + 1) { s, _ in (s - 1) / 2 + 1 } }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + depth.indices.map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if depth.isEmpty || depth.contains(where: { $0 < 1 }) { return ("depth", "give each stage one or more blocks, e.g. [2, 2]") }
        let lists = [("heads", heads), ("reduction_factor", reductionFactor), ("iwsa_dim_key", iwsaDimKey), ("iwsa_dim_value", iwsaDimValue),
                     ("ssa_dim_key", ssaDimKey), ("ssa_dim_value", ssaDimValue)]
        for (key, v) in lists where (v.count != 1 && v.count != depth.count) || v.contains(where: { $0 < 1 }) {
            return (key, "give one positive number, or one per stage (\(depth.count))")
        }
        if (windowSize.count != 1 && windowSize.count != depth.count) || windowSize.contains(where: { $0 < 0 }) {
            return ("window_size", "give one number (0 for the whole map), or one per stage (\(depth.count))")
        }
        for i in depth.indices {
            let s = stageSide(i, imageSide: side), w = Self.at(windowSize, i), r = Self.at(reductionFactor, i)
            if w > 0 && s % w != 0 {
                return ("window_size", "stage \(i)'s \(s)x\(s) map (\(side)-pixel images) does not split into \(w)x\(w) windows; use a divisor of \(s), or 0 for the whole map")
            }
            if r > s { return ("reduction_factor", "stage \(i)'s \(s)x\(s) map is smaller than its reduction factor \(r) (\(side)-pixel images)") }
        }
        return nil
    }
}

/// Scalable self-attention: queries at every position, keys and values from r x r, stride-r
/// convolutions of the normalised map.
public final class ScalableSelfAttention: Module {
    public let norm: ChannelsLastNorm
    public let toQ: PointwiseConv
    public let toK: Conv2d
    public let toV: Conv2d
    public let toOut: PointwiseConv
    let heads: Int, dimKey: Int, r: Int
    let attentionDropout: Dropout?, outputDropout: Dropout?

    init(dim: Int, heads: Int, dimKey: Int, dimValue: Int, reduction r: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimKey, self.r) = (heads, dimKey, r)
        norm = ChannelsLastNorm(dim)
        toQ = PointwiseConv(dim, dimKey * heads, bias: false, initializer: initializer)
        toK = Conv2d(dim, dimKey * heads, kernel: r, stride: r, bias: false, initializer: initializer)
        toV = Conv2d(dim, dimValue * heads, kernel: r, stride: r, bias: false, initializer: initializer)
        toOut = PointwiseConv(dimValue * heads, dim, initializer: initializer)
        attentionDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    /// x (B, H, W, C) channels-last.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let y = norm(x)
        let q = toQ(y).reshaped([b, h * w, toQ.weight.shape[0]])
        let k = stridedPatchConv(y, weight: toK.weight.value, k: r), v = stridedPatchConv(y, weight: toV.weight.value, k: r)
        var weights = Tensor.headScores(q, k, heads: heads, scale: 1 / Float(dimKey).squareRoot()).softmax()
        if let attentionDropout { weights = attentionDropout(weights) }
        let out = toOut(Tensor.headWeightedValues(weights, v).reshaped([b, h, w, toV.weight.shape[0]]))
        return outputDropout.map { $0(out) } ?? out
    }
}

/// Interactive windowed self-attention: attention within windows, plus the local interactive
/// module (a 3x3 convolution of the values over the whole map) added before the output projection.
public final class InteractiveWindowedSelfAttention: Module {
    public let norm: ChannelsLastNorm
    public let localInteractiveModule: Conv2d
    public let toQ: PointwiseConv
    public let toK: PointwiseConv
    public let toV: PointwiseConv
    public let toOut: PointwiseConv
    let heads: Int, dimKey: Int, window: Int
    let attentionDropout: Dropout?, outputDropout: Dropout?

    init(dim: Int, window: Int, heads: Int, dimKey: Int, dimValue: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimKey, self.window) = (heads, dimKey, window)
        norm = ChannelsLastNorm(dim)
        localInteractiveModule = Conv2d(dimValue * heads, dimValue * heads, kernel: 3, padding: 1, initializer: initializer)
        toQ = PointwiseConv(dim, dimKey * heads, bias: false, initializer: initializer)
        toK = PointwiseConv(dim, dimKey * heads, bias: false, initializer: initializer)
        toV = PointwiseConv(dim, dimValue * heads, bias: false, initializer: initializer)
        toOut = PointwiseConv(dimValue * heads, dim, initializer: initializer)
        attentionDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        let (h, w) = (x.shape[1], x.shape[2])
        let y = norm(x)
        let (q, k, v) = (toQ(y), toK(y), toV(y))
        let local = channelsLastConv(v, localInteractiveModule)
        let (wh, ww) = window > 0 ? (window, window) : (h, w)
        var weights = Tensor.headScores(q.windows(wh, ww), k.windows(wh, ww), heads: heads, scale: 1 / Float(dimKey).squareRoot()).softmax()
        if let attentionDropout { weights = attentionDropout(weights) }
        let out = Tensor.headWeightedValues(weights, v.windows(wh, ww)).mergingWindows(height: h, width: w, wh, ww)
        let y2 = toOut(out + local)
        return outputDropout.map { $0(y2) } ?? y2
    }
}

/// One ScalableViT block, as vit-pytorch's ModuleList (ssa, ff1, peg or None, ff2, iwsa).
public final class ScalableViTBlock: Module {
    public let ssa: ScalableSelfAttention
    public let ff1: ConvFeedForward
    public let peg: Conv2d?
    public let ff2: ConvFeedForward
    public let iwsa: InteractiveWindowedSelfAttention
    let paperOrder: Bool

    init(dim: Int, stage i: Int, first: Bool, config c: ScalableViTConfig, initializer: Initializer) {
        let at = ScalableViTConfig.at
        ssa = ScalableSelfAttention(dim: dim, heads: at(c.heads, i), dimKey: at(c.ssaDimKey, i), dimValue: at(c.ssaDimValue, i),
                                    reduction: at(c.reductionFactor, i), dropout: c.dropout, initializer: initializer)
        ff1 = ConvFeedForward(dim: dim, mult: c.ffExpansionFactor, dropout: c.dropout, initializer: initializer)
        peg = first ? Conv2d(dim, dim, kernel: 3, padding: 1, groups: dim, initializer: initializer) : nil
        ff2 = ConvFeedForward(dim: dim, mult: c.ffExpansionFactor, dropout: c.dropout, initializer: initializer)
        iwsa = InteractiveWindowedSelfAttention(dim: dim, window: at(c.windowSize, i), heads: at(c.heads, i), dimKey: at(c.iwsaDimKey, i),
                                                dimValue: at(c.iwsaDimValue, i), dropout: c.dropout, initializer: initializer)
        paperOrder = c.blockOrder == .paper
    }

    public override var stateNames: [String: String] { ["ssa": "0", "ff1": "1", "peg": "2.proj", "ff2": "3", "iwsa": "4"] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = ssa(x) + x
        h = ff1(h) + h
        if let peg { h = channelsLastConv(h, peg) + h }
        if paperOrder {
            h = iwsa(h) + h
            return ff2(h) + h
        }
        h = ff2(h) + h
        return iwsa(h) + h
    }
}

/// One stage: its blocks, a channel LayerNorm (but after the last stage), and the stride-2
/// downsampling convolution to the next stage.
public final class ScalableViTStage: Module {
    public let blocks: [ScalableViTBlock]
    public let norm: ChannelsLastNorm?
    public let downsample: Conv2d?

    init(stage i: Int, last: Bool, config c: ScalableViTConfig, initializer: Initializer) {
        let dim = c.stageDim(i)
        blocks = (0..<c.depth[i]).map { ScalableViTBlock(dim: dim, stage: i, first: $0 == 0, config: c, initializer: initializer) }
        norm = last ? nil : ChannelsLastNorm(dim)
        downsample = last ? nil : Conv2d(dim, 2 * dim, kernel: 3, stride: 2, padding: 1, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["blocks": "0.layers", "norm": "0.norm", "downsample": "1.conv"] }
}

/// vit-pytorch 1.7.14's ScalableViT (Yang et al. 2022, "ScalableViT: Rethinking the
/// Context-oriented Generalization of Vision Transformer"): a stride-4 convolutional embedding,
/// then stages of blocks of scalable self-attention (keys and values from reduced maps), a
/// feed-forward, a position-encoding convolution in each stage's first block, interactive windowed
/// self-attention (windows plus a 3x3 convolution of the values) and a feed-forward; stride-2
/// convolutions between stages; the head averages the last map, normalises and classifies.
/// Computed channels-last. Hidden layers: "stages.i" (B, C_i, H_i, W_i), "tokens" (B, H * W, C),
/// "pooled" (B, C) the mean of the last map, "logits".
public final class ScalableViT: Module, HiddenLayerEncoder {
    public let config: ScalableViTConfig
    public let toPatches: Conv2d
    public let layers: [ScalableViTStage]
    public let mlpHead: LayerNormLinear

    public init(_ config: ScalableViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "ScalableViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        toPatches = Conv2d(config.channels, config.dim, kernel: 7, stride: 4, padding: 3, initializer: initializer)
        layers = config.depth.indices.map { ScalableViTStage(stage: $0, last: $0 == config.depth.count - 1, config: config, initializer: initializer) }
        mlpHead = LayerNormLinear(config.stageDim(config.depth.count - 1), config.numClasses, firstIndex: 1, initializer: initializer)
    }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers names: Set<String>) -> [String: Tensor] {
        var x = toPatches(images).permuted([0, 2, 3, 1])
        var out: [String: Tensor] = [:]
        for (i, stage) in layers.enumerated() {
            for block in stage.blocks { x = block(x) }
            if let norm = stage.norm { x = norm(x) }
            if names.contains("stages.\(i)") { out["stages.\(i)"] = x.permuted([0, 3, 1, 2]) }
            if let downsample = stage.downsample { x = channelsLastConv(x, downsample) }
        }
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let tokens = x.reshaped([b, h * w, c])
        meanPooledOutputs(tokens, head: { mlpHead($0) }, layers: names, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
