import NN
import TensorCore

/// RegionViT's configuration (vit-pytorch 1.7.14's arguments; `heads` and `dimHead`, which 1.7.14
/// fixes at 4 and 32, are settings with those defaults).
public struct RegionViTConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    /// Widths and depths per stage (vit-pytorch: four stages).
    public var dims = [32, 64, 128, 128]
    public var depths = [1, 1, 2, 1]
    /// Local tokens per region side: a region covers local_patch_size * window_size pixels.
    public var windowSize = 7
    public var localPatchSize = 4
    public var tokenizeLocal3Conv = false
    public var usePEG = false
    public var heads = 4
    public var dimHead = 32
    public var attentionDropout: Float = 0
    public var ffDropout: Float = 0
    public init() {}

    public var regionPatchSize: Int { localPatchSize * windowSize }
    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + dims.indices.map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if dims.isEmpty || dims.count != depths.count || dims.contains(where: { $0 < 1 }) || depths.contains(where: { $0 < 1 }) {
            return ("dim", "give dim and depth with one positive value per stage")
        }
        if localPatchSize != 4 { return ("local_patch_size", "vit-pytorch's local encoder is a stride-4 convolution (or three convolutions of strides 2, 2, 1), so local patches are 4 pixels") }
        if side % regionPatchSize != 0 {
            return ("window_size", "\(side)-pixel images do not split into regions of local_patch_size * window_size = \(regionPatchSize) pixels")
        }
        return nil
    }
}

/// RegionViT's attention: LayerNorm, bias-free q/k/v, softmax attention (with the local
/// relative-position bias for regional-to-local attention), output projection.
public final class RegionAttention: Module {
    public let norm: LayerNorm
    public let toQKV: Linear
    public let toOut: Linear
    let heads: Int
    let attentionDropout: Dropout?, outputDropout: Dropout?
    init(dim: Int, heads: Int, dimHead: Int, dropout p: Float, initializer: Initializer) {
        self.heads = heads
        norm = LayerNorm(dim)
        toQKV = Linear(dim, 3 * heads * dimHead, bias: false, initializer: initializer)
        toOut = Linear(heads * dimHead, dim, initializer: initializer)
        attentionDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }
    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }
    /// x (B, n, dim); bias (heads, n, n) or nil.
    func callAsFunction(_ x: Tensor, bias: Tensor? = nil) -> Tensor {
        let qkv = toQKV(norm(x))
        let n = x.shape[1]
        let merged = Tensor.biasedSelfAttention(packedQKV: qkv, heads: heads, bias: bias ?? Tensor.zeros([heads, n, n]),
                                                dropout: attentionDropout.map { d in { d($0) } })
        let y = toOut(merged)
        return outputDropout.map { $0(y) } ?? y
    }
}

/// RegionViT's feed-forward, a bare Sequential (LayerNorm, Linear, GELU, Dropout, Linear).
public final class RegionFeedForward: Module {
    public let norm: LayerNorm
    public let hidden: Linear
    public let output: Linear
    let dropout: Dropout?
    init(dim: Int, dropout p: Float, initializer: Initializer) {
        norm = LayerNorm(dim)
        hidden = Linear(dim, 4 * dim, initializer: initializer)
        output = Linear(4 * dim, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }
    public override var stateNames: [String: String] { ["norm": "0", "hidden": "1", "output": "4"] }
    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = hidden.gelu(norm(x))
        if let dropout { h = dropout(h) }
        return output(h)
    }
}

public final class R2LBlock: Module {
    public let attention: RegionAttention
    public let feedForward: RegionFeedForward
    init(attention: RegionAttention, feedForward: RegionFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// The regional-to-local transformer: per block, the regional tokens attend to each other, then
/// each regional token and its window of local tokens attend together (with a learned bias per
/// head for each local offset; none for the regional token), then the feed-forward.
public final class R2LTransformer: Module {
    public let localRelPosBias: Embedding
    public let layers: [R2LBlock]
    let window: Int, heads: Int

    init(dim: Int, depth: Int, window: Int, config c: RegionViTConfig, initializer: Initializer) {
        (self.window, heads) = (window, c.heads)
        localRelPosBias = Embedding((2 * window - 1) * (2 * window - 1), c.heads, initializer: initializer)
        layers = (0..<depth).map { _ in
            R2LBlock(attention: RegionAttention(dim: dim, heads: c.heads, dimHead: c.dimHead, dropout: c.attentionDropout, initializer: initializer),
                     feedForward: RegionFeedForward(dim: dim, dropout: c.ffDropout, initializer: initializer))
        }
    }

    /// The bias (heads, 1 + n, 1 + n) of a wh x ww window led by its regional token (zeros there).
    func bias(_ wh: Int, _ ww: Int) -> Tensor {
        let n = wh * ww
        // 1.7.14's indices: (row offset + w - 1) + (column offset + w - 1) * (2w - 1).
        var index: [Int] = []
        for i in 0..<n { for j in 0..<n { index.append((i / ww - j / ww + window - 1) + (i % ww - j % ww + window - 1) * (2 * window - 1)) } }
        let local = localRelPosBias.weight.value.gather(axis: 0, index: IndexTensor(shape: [n * n], index)).reshaped([n, n, heads]).permuted([2, 0, 1])
        // F.pad(bias, (1, 0, 1, 0)): a zero row and column for the regional token.
        let withColumn = Tensor.concat([Tensor.zeros([heads, n, 1]), local], axis: 2)
        return Tensor.concat([Tensor.zeros([heads, 1, n + 1]), withColumn], axis: 1)
    }

    /// local (B, lh, lw, C) and region (B, rh, rw, C), channels-last.
    func callAsFunction(local: Tensor, region: Tensor) -> (Tensor, Tensor) {
        let (b, lh, lw, c) = (local.shape[0], local.shape[1], local.shape[2], local.shape[3])
        let (rh, rw) = (region.shape[1], region.shape[2])
        let (wh, ww) = (lh / rh, lw / rw)
        let bias = self.bias(wh, ww)
        var r = region.reshaped([b, rh * rw, c])
        // 'b (h p1) (w p2) d -> (b h w) (p1 p2) d'
        var l = local.windows(wh, ww)
        for block in layers {
            r = block.attention(r) + r
            var joint = Tensor.concat([r.reshaped([b * rh * rw, 1, c]), l], axis: 1)
            joint = block.attention(joint, bias: bias) + joint
            joint = block.feedForward(joint) + joint
            r = joint.slice(axis: 1, start: 0, length: 1).reshaped([b, rh * rw, c])
            l = joint.slice(axis: 1, start: 1, length: wh * ww)
        }
        let localOut = l.mergingWindows(height: lh, width: lw, wh, ww)
        return (localOut, r.reshaped([b, rh, rw, c]))
    }
}

/// One RegionViT stage: a stride-2 convolution shared by the local and regional maps (but in the
/// first stage), the optional PEG on the local map, and the regional-to-local transformer.
public final class RegionViTStage: Module {
    public let downsample: Conv2d?
    public let peg: Conv2d?
    public let transformer: R2LTransformer
    init(dimIn: Int, dim: Int, depth: Int, first: Bool, config c: RegionViTConfig, initializer: Initializer) {
        downsample = first ? nil : Conv2d(dimIn, dim, kernel: 3, stride: 2, padding: 1, initializer: initializer)
        peg = !first && c.usePEG ? Conv2d(dim, dim, kernel: 3, padding: 1, groups: dim, initializer: initializer) : nil
        transformer = R2LTransformer(dim: dim, depth: depth, window: c.windowSize, config: c, initializer: initializer)
    }
    public override var stateNames: [String: String] { ["downsample": "0.conv", "peg": "1.proj", "transformer": "2"] }
}

/// The three-convolution local tokeniser (strides 2, 2, 1, channel LayerNorms and GELUs between), as
/// vit-pytorch's Sequential (indices 0, 1, 3, 4, 6).
public final class LocalTokenizer: Module {
    public let conv0: Conv2d, norm0: ChannelLayerNorm
    public let conv1: Conv2d, norm1: ChannelLayerNorm
    public let conv2: Conv2d
    init(channels: Int, dim: Int, initializer: Initializer) {
        (conv0, norm0) = (Conv2d(channels, dim, kernel: 3, stride: 2, padding: 1, initializer: initializer), ChannelLayerNorm(dim))
        (conv1, norm1) = (Conv2d(dim, dim, kernel: 3, stride: 2, padding: 1, initializer: initializer), ChannelLayerNorm(dim))
        conv2 = Conv2d(dim, dim, kernel: 3, padding: 1, initializer: initializer)
    }
    public override var stateNames: [String: String] { ["conv0": "0", "norm0": "1", "conv1": "3", "norm1": "4", "conv2": "6"] }
    func callAsFunction(_ x: Tensor) -> Tensor { conv2(norm1(conv1(norm0(conv0(x)).gelu())).gelu()) }
}

/// vit-pytorch 1.7.14's RegionViT (Chen et al. 2022, "RegionViT: Regional-to-Local Attention for
/// Vision Transformers"): local tokens from a stride-4 convolution (or three convolutions) and
/// regional tokens, one per local_patch_size * window_size region, from a 1x1 convolution of the
/// region's pixels; stages of regional self-attention followed by attention of each regional token
/// with its window of local tokens (with a local relative-position bias), the same attention
/// weights for both; a shared stride-2 convolution of both maps between stages; the head reads the
/// regional tokens' mean. Hidden layers: "stages.i" (B, C_i, H_i, W_i) the local map after stage
/// i, "tokens" (B, H * W, C) the last local map flattened, "pooled" (B, C) the regional tokens'
/// mean, "logits".
public final class RegionViT: Module, HiddenLayerEncoder {
    public let config: RegionViTConfig
    /// The local tokeniser: one stride-4 convolution, or (tokenize_local_3_conv) three.
    public let localEncoder: Conv2d?
    public let localEncoder3: LocalTokenizer?
    public let regionEncoder: Conv2d
    public let layers: [RegionViTStage]
    public let toLogits: LayerNormLinear

    public init(_ config: RegionViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "RegionViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        let d0 = config.dims[0]
        localEncoder = config.tokenizeLocal3Conv ? nil : Conv2d(config.channels, d0, kernel: 8, stride: 4, padding: 3, initializer: initializer)
        localEncoder3 = config.tokenizeLocal3Conv ? LocalTokenizer(channels: config.channels, dim: d0, initializer: initializer) : nil
        let p = config.regionPatchSize
        regionEncoder = Conv2d(p * p * config.channels, d0, kernel: 1, initializer: initializer)
        var dimIn = d0
        layers = config.dims.indices.map { i in
            defer { dimIn = config.dims[i] }
            return RegionViTStage(dimIn: dimIn, dim: config.dims[i], depth: config.depths[i], first: i == 0, config: config, initializer: initializer)
        }
        toLogits = LayerNormLinear(config.dims.last!, config.numClasses, firstIndex: 1, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["localEncoder": "local_encoder", "localEncoder3": "local_encoder", "regionEncoder": "region_encoder.1"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { toLogits }

    func localTokens(_ x: Tensor) -> Tensor { localEncoder.map { $0(x) } ?? localEncoder3!(x) }

    public func hiddenOutputs(_ images: Tensor, layers names: Set<String>) -> [String: Tensor] {
        let (b, c, side) = (images.shape[0], images.shape[1], images.shape[2])
        let p = config.regionPatchSize, g = side / p
        var local = localTokens(images)
        // 'b c (h p1) (w p2) -> b (c p1 p2) h w', then the 1x1 convolution.
        let patches = images.reshaped([b, c, g, p, g, p]).permuted([0, 1, 3, 5, 2, 4]).reshaped([b, c * p * p, g, g])
        var region = regionEncoder(patches)
        var out: [String: Tensor] = [:]
        for (i, stage) in layers.enumerated() {
            if let down = stage.downsample { (local, region) = (down(local), down(region)) }
            if let peg = stage.peg { local = peg(local) + local }
            let (l, r) = stage.transformer(local: local.permuted([0, 2, 3, 1]), region: region.permuted([0, 2, 3, 1]))
            (local, region) = (l.permuted([0, 3, 1, 2]), r.permuted([0, 3, 1, 2]))
            if names.contains("stages.\(i)") { out["stages.\(i)"] = local }
        }
        let d = local.shape[1]
        if names.contains("tokens") { out["tokens"] = local.reshaped([b, d, local.shape[2] * local.shape[3]]).permuted([0, 2, 1]) }
        if names.contains("pooled") || names.contains("logits") {
            let pooled = region.reshaped([b, d, region.shape[2] * region.shape[3]]).mean(axis: 2)
            out["pooled"] = pooled
            if names.contains("logits") { out["logits"] = toLogits(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
