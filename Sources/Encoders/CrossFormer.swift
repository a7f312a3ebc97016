import NN
import TensorCore

/// One CrossFormer stage (vit-pytorch 1.7.14's per-stage arguments).
public struct CrossFormerStage: Codable, Equatable, Sendable {
    public var dim: Int
    public var depth: Int
    /// Long-distance attention groups positions `globalWindowSize` apart... over a grid of this side.
    public var globalWindowSize: Int
    /// Short-distance attention within windows of this side.
    public var localWindowSize: Int
    /// The cross-scale embedding's kernels (sorted; each scale gets half the remaining channels).
    public var kernelSizes: [Int]
    public var stride: Int
    public init(dim: Int, depth: Int, globalWindowSize: Int, localWindowSize: Int, kernelSizes: [Int], stride: Int) {
        (self.dim, self.depth, self.globalWindowSize, self.localWindowSize, self.kernelSizes, self.stride) =
            (dim, depth, globalWindowSize, localWindowSize, kernelSizes, stride)
    }
}

/// CrossFormer's configuration. vit-pytorch 1.7.14 has four stages; the list may hold any number.
public struct CrossFormerConfig: Codable, Equatable, Sendable {
    /// How the dynamic position bias is looked up.
    public enum BiasIndex: String, Codable, CaseIterable, Sendable {
        /// The offset (dy, dx) reads the bias computed for (dy, dx).
        case paper
        /// vit-pytorch 1.7.14 computes biases for offsets -w...w ((2w + 1)^2 of them) but indexes
        /// them as a (2w - 1)^2 table: offset (0, 0) reads entry (w - 1) * 2w (84 of 225 at w = 7),
        /// the bias of another offset.
        case vitPytorch1714 = "vit-pytorch-1.7.14"
    }

    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    /// ZOO.md's configuration for 28 px, narrower: maps of 14, 7, 3 and 1.
    public var stages = [CrossFormerStage(dim: 32, depth: 1, globalWindowSize: 2, localWindowSize: 7, kernelSizes: [2, 4, 8], stride: 2),
                         CrossFormerStage(dim: 64, depth: 1, globalWindowSize: 1, localWindowSize: 7, kernelSizes: [2, 4], stride: 2),
                         CrossFormerStage(dim: 128, depth: 2, globalWindowSize: 1, localWindowSize: 3, kernelSizes: [2, 4], stride: 2),
                         CrossFormerStage(dim: 128, depth: 1, globalWindowSize: 1, localWindowSize: 1, kernelSizes: [2, 4], stride: 2)]
    public var dimHead = 32
    public var attentionDropout: Float = 0
    public var ffDropout: Float = 0
    public var biasIndex = BiasIndex.paper
    public init() {}

    /// The map's side after stage i's embedding (every scale's convolution gives the same size).
    public func stageSide(_ i: Int, imageSide side: Int) -> Int {
        (0...i).reduce(side) { s, j in
            let st = stages[j].stride, k = stages[j].kernelSizes.min()!
            return (s + 2 * ((k - st) / 2) - k) / st + 1
        }
    }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + stages.indices.map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if stages.isEmpty { return ("crossformer_stages", "give one or more stages") }
        for (i, stage) in stages.enumerated() {
            if stage.dim % dimHead != 0 { return ("crossformer_stages", "stage \(i)'s dim \(stage.dim) must be a multiple of dim_head \(dimHead) (heads = dim / dim_head)") }
            if stage.dim < 4 { return ("crossformer_stages", "stage \(i)'s dim must be 4 or more (the position-bias network is dim / 4 wide)") }
            if stage.kernelSizes.isEmpty || stage.kernelSizes.contains(where: { ($0 - stage.stride) % 2 != 0 || $0 < stage.stride }) {
                return ("crossformer_stages", "stage \(i)'s kernel sizes must each be at least the stride \(stage.stride) and differ from it by an even number")
            }
            let s = stageSide(i, imageSide: side)
            if s < 1 { return ("crossformer_stages", "stage \(i) shrinks \(side)-pixel images to nothing") }
            for w in [stage.localWindowSize, stage.globalWindowSize] where s % w != 0 {
                return ("crossformer_stages", "stage \(i)'s \(s)x\(s) map (\(side)-pixel images) does not split into windows of \(w)")
            }
        }
        return nil
    }
}

/// The cross-scale embedding: convolutions of several kernel sizes at one stride, concatenated.
public final class CrossEmbedLayer: Module {
    public let convs: [Conv2d]
    init(dimIn: Int, dimOut: Int, kernelSizes: [Int], stride: Int, initializer: Initializer) {
        let kernels = kernelSizes.sorted()
        var scales = (1..<kernels.count).map { dimOut >> $0 }
        scales.append(dimOut - scales.reduce(0, +))
        convs = zip(kernels, scales).map { k, d in Conv2d(dimIn, d, kernel: k, stride: stride, padding: (k - stride) / 2, initializer: initializer) }
    }
    /// x (B, C, H, W).
    func callAsFunction(_ x: Tensor) -> Tensor { convs.count == 1 ? convs[0](x) : Tensor.concat(convs.map { $0(x) }, axis: 1) }
}

/// The dynamic position bias: an MLP from a relative position (dy, dx) to one bias (Linear,
/// LayerNorm, ReLU three times, then Linear to 1), as vit-pytorch's Sequential.
public final class DynamicPositionBias: Module {
    public let linear0: Linear, norm0: LayerNorm
    public let linear1: Linear, norm1: LayerNorm
    public let linear2: Linear, norm2: LayerNorm
    public let linear3: Linear
    init(dim: Int, initializer: Initializer) {
        (linear0, norm0) = (Linear(2, dim, initializer: initializer), LayerNorm(dim))
        (linear1, norm1) = (Linear(dim, dim, initializer: initializer), LayerNorm(dim))
        (linear2, norm2) = (Linear(dim, dim, initializer: initializer), LayerNorm(dim))
        linear3 = Linear(dim, 1, initializer: initializer)
    }
    /// The Sequential's indices (the ReLUs at 2, 5 and 8).
    public override var stateNames: [String: String] {
        ["linear0": "0", "norm0": "1", "linear1": "3", "norm1": "4", "linear2": "6", "norm2": "7", "linear3": "9"]
    }
    /// Positions (n, 2) to biases (n).
    func callAsFunction(_ positions: Tensor) -> Tensor {
        var h = norm0(linear0(positions)).relu()
        h = norm1(linear1(h)).relu()
        h = norm2(linear2(h)).relu()
        return linear3(h).reshaped([positions.shape[0]])
    }
}

/// CrossFormer's short- or long-distance attention: within w x w windows of neighbouring positions
/// (short) or over a w x w grid spread across the map (long), with the dynamic position bias.
public final class CrossFormerAttention: Module {
    public let norm: ChannelsLastNorm
    public let toQKV: PointwiseConv
    public let toOut: PointwiseConv
    public let dpb: DynamicPositionBias
    let heads: Int, dimHead: Int, window: Int, long: Bool, legacyIndex: Bool
    let dropout: Dropout?

    init(dim: Int, long: Bool, window: Int, dimHead: Int, dropout p: Float, legacyIndex: Bool, initializer: Initializer) {
        (self.heads, self.dimHead, self.window, self.long, self.legacyIndex) = (dim / dimHead, dimHead, window, long, legacyIndex)
        norm = ChannelsLastNorm(dim)
        toQKV = PointwiseConv(dim, 3 * dim, bias: false, initializer: initializer)
        toOut = PointwiseConv(dim, dim, initializer: initializer)
        dpb = DynamicPositionBias(dim: dim / 4, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    /// The bias of every (query, key) pair of a window, (n, n), from the biases of the offsets
    /// -w...w in both axes.
    func pairBias() -> Tensor {
        let w = window, side = 2 * w + 1
        var positions: [Float] = []
        for dy in -w...w { for dx in -w...w { positions += [Float(dy), Float(dx)] } }
        let biases = dpb(Tensor(shape: [side * side, 2], positions))
        var index: [Int] = []
        for i in 0..<(w * w) {
            for j in 0..<(w * w) {
                let (dy, dx) = (i / w - j / w, i % w - j % w)
                index.append(legacyIndex ? (dy + w - 1) * (2 * w - 1) + (dx + w - 1) : (dy + w) * side + (dx + w))
            }
        }
        return biases.reshaped([side * side, 1]).gather(axis: 0, index: IndexTensor(shape: [index.count], index)).reshaped([w * w, w * w])
    }

    /// x (B, H, W, C) channels-last.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (h, wd, w) = (x.shape[1], x.shape[2], window)
        let y = norm(x)
        // short: 'b d (h s1) (w s2) -> (b h w) (s1 s2) d'; long: 'b d (l1 h) (l2 w) -> (b h w) (l1 l2) d'.
        let t = y.windows(w, w, strided: long)
        let bias = pairBias().reshaped([1, w * w, w * w]).expanded(to: [heads, w * w, w * w])
        let merged = Tensor.biasedSelfAttention(packedQKV: toQKV(t), heads: heads, bias: bias, dropout: dropout.map { d in { d($0) } })
        let out = toOut(merged)
        return out.mergingWindows(height: h, width: wd, w, w, strided: long)
    }
}

/// One CrossFormer block: short-distance attention, feed-forward, long-distance attention,
/// feed-forward, each residual.
public final class CrossFormerBlock: Module {
    public let shortAttention: CrossFormerAttention
    public let shortFeedForward: ConvFeedForward
    public let longAttention: CrossFormerAttention
    public let longFeedForward: ConvFeedForward

    init(stage: CrossFormerStage, config c: CrossFormerConfig, initializer: Initializer) {
        let legacy = c.biasIndex == .vitPytorch1714
        shortAttention = CrossFormerAttention(dim: stage.dim, long: false, window: stage.localWindowSize, dimHead: c.dimHead, dropout: c.attentionDropout,
                                              legacyIndex: legacy, initializer: initializer)
        shortFeedForward = ConvFeedForward(dim: stage.dim, mult: 4, dropout: c.ffDropout, prefix: "", outputDropout: false, initializer: initializer)
        longAttention = CrossFormerAttention(dim: stage.dim, long: true, window: stage.globalWindowSize, dimHead: c.dimHead, dropout: c.attentionDropout,
                                             legacyIndex: legacy, initializer: initializer)
        longFeedForward = ConvFeedForward(dim: stage.dim, mult: 4, dropout: c.ffDropout, prefix: "", outputDropout: false, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["shortAttention": "0", "shortFeedForward": "1", "longAttention": "2", "longFeedForward": "3"] }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = shortAttention(x) + x
        h = shortFeedForward(h) + h
        h = longAttention(h) + h
        return longFeedForward(h) + h
    }
}

public final class CrossFormerStageModule: Module {
    public let embedding: CrossEmbedLayer
    public let blocks: [CrossFormerBlock]
    init(dimIn: Int, stage: CrossFormerStage, config c: CrossFormerConfig, initializer: Initializer) {
        embedding = CrossEmbedLayer(dimIn: dimIn, dimOut: stage.dim, kernelSizes: stage.kernelSizes, stride: stage.stride, initializer: initializer)
        blocks = (0..<stage.depth).map { _ in CrossFormerBlock(stage: stage, config: c, initializer: initializer) }
    }
    public override var stateNames: [String: String] { ["embedding": "0", "blocks": "1.layers"] }
}

/// vit-pytorch 1.7.14's CrossFormer (Wang et al. 2021, "CrossFormer: A Versatile Vision
/// Transformer Hinging on Cross-scale Attention"): stages of a cross-scale embedding (convolutions
/// of several kernel sizes, concatenated) and blocks of short-distance attention (within windows)
/// and long-distance attention (across the map at a fixed stride), each with a dynamic position
/// bias (an MLP of the relative position) and a convolutional feed-forward; the head averages the
/// last map. Computed channels-last. Hidden layers: "stages.i" (B, C_i, H_i, W_i), "tokens"
/// (B, H * W, C), "pooled" (B, C) the mean, "logits".
public final class CrossFormer: Module, HiddenLayerEncoder {
    public let config: CrossFormerConfig
    public let layers: [CrossFormerStageModule]
    public let head: Linear

    public init(_ config: CrossFormerConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "CrossFormer: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        var dim = config.channels
        layers = config.stages.map { stage in
            defer { dim = stage.dim }
            return CrossFormerStageModule(dimIn: dim, stage: stage, config: config, initializer: initializer)
        }
        head = Linear(config.stages.last!.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["head": "to_logits.1"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func hiddenOutputs(_ images: Tensor, layers names: Set<String>) -> [String: Tensor] {
        var x = images
        var out: [String: Tensor] = [:]
        for (i, stage) in layers.enumerated() {
            var t = stage.embedding(x).permuted([0, 2, 3, 1])
            for block in stage.blocks { t = block(t) }
            x = t.permuted([0, 3, 1, 2])
            if names.contains("stages.\(i)") { out["stages.\(i)"] = x }
        }
        let (b, c, n) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let tokens = x.reshaped([b, c, n]).permuted([0, 2, 1])
        meanPooledOutputs(tokens, head: { head($0) }, layers: names, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
