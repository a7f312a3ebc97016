import NN
import TensorCore

/// One Twins-SVT stage (vit-pytorch's s1_... s4_ arguments without the prefix).
public struct TwinsStage: Codable, Equatable, Sendable {
    public var embDim: Int
    /// Patch merging: the side of the patches folded into one token.
    public var patchSize: Int
    /// The side of the windows of locally-grouped attention (the last stage has none).
    public var localPatchSize: Int
    /// Keys and values of global sub-sampled attention come from a k x k, stride-k convolution.
    public var globalK: Int
    /// Blocks after the PEG (one block before it).
    public var depth: Int
    public init(embDim: Int, patchSize: Int, localPatchSize: Int, globalK: Int, depth: Int) {
        (self.embDim, self.patchSize, self.localPatchSize, self.globalK, self.depth) = (embDim, patchSize, localPatchSize, globalK, depth)
    }
}

/// Twins-SVT's configuration. vit-pytorch 1.7.14 fixes the attention at 8 heads of 64 and the
/// feed-forward at 4x, and always has four stages; here they are settings with those defaults,
/// and the stages a list (the last has no local attention, as s4).
public struct TwinsConfig: Codable, Equatable, Sendable {
    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    /// Sized for 28 px: 14x14 (2x2 windows of 7, keys from 2x2 patches), 7x7 (one window, keys at
    /// every position), then 1x1 twice.
    public var stages = [TwinsStage(embDim: 32, patchSize: 2, localPatchSize: 7, globalK: 2, depth: 1),
                         TwinsStage(embDim: 64, patchSize: 2, localPatchSize: 7, globalK: 1, depth: 1),
                         TwinsStage(embDim: 96, patchSize: 7, localPatchSize: 1, globalK: 1, depth: 1),
                         TwinsStage(embDim: 96, patchSize: 1, localPatchSize: 1, globalK: 1, depth: 1)]
    public var heads = 2
    public var dimHead = 32
    public var mlpMult = 4
    public var pegKernelSize = 3
    public var dropout: Float = 0
    public init() {}

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + stages.indices.map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if stages.isEmpty { return ("twins_stages", "give one or more stages") }
        var s = side
        for (i, stage) in stages.enumerated() {
            guard s % stage.patchSize == 0 else {
                return ("twins_stages", "stage \(i)'s \(s)x\(s) input does not split into \(stage.patchSize)x\(stage.patchSize) patches (\(side)-pixel images)")
            }
            s /= stage.patchSize
            if i < stages.count - 1 && s % stage.localPatchSize != 0 {
                return ("twins_stages", "stage \(i)'s \(s)x\(s) map does not split into \(stage.localPatchSize)x\(stage.localPatchSize) local windows (\(side)-pixel images)")
            }
            if s < stage.globalK {
                return ("twins_stages", "stage \(i)'s \(s)x\(s) map is smaller than its global_k \(stage.globalK) (\(side)-pixel images)")
            }
        }
        if pegKernelSize % 2 == 0 { return ("peg_kernel_size", "must be odd (it pads by half)") }
        return nil
    }
}

/// Twins' attention over windows (`local`: locally-grouped attention within p x p windows) or
/// over the map with keys and values from a k x k, stride-k convolution (`global`: sub-sampled).
public final class TwinsAttention: Module {
    public let norm: ChannelsLastNorm
    public let toQ: PointwiseConv
    /// Local: a 1x1 convolution; global: k x k with stride k (`stridedPatchConv`).
    public let toKV: Conv2d
    public let toOut: PointwiseConv
    let heads: Int, dimHead: Int, window: Int, k: Int, local: Bool
    let attentionDropout: Dropout?
    let outputDropout: Dropout?

    init(dim: Int, heads: Int, dimHead: Int, local: Bool, window: Int, k: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimHead, self.window, self.k, self.local) = (heads, dimHead, window, k, local)
        let inner = heads * dimHead
        norm = ChannelsLastNorm(dim)
        toQ = PointwiseConv(dim, inner, bias: false, initializer: initializer)
        toKV = Conv2d(dim, 2 * inner, kernel: local ? 1 : k, stride: local ? 1 : k, bias: false, initializer: initializer)
        toOut = PointwiseConv(inner, dim, initializer: initializer)
        // 1.7.14's local attention applies no dropout to its weights; the global one does.
        attentionDropout = p > 0 && !local ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    /// x (B, H, W, C) channels-last, to the same shape.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let inner = heads * dimHead
        let y = norm(x)
        let merged: Tensor
        if local {
            // 'b c (x p1) (y p2) -> (b x y) c p1 p2': attention within each window.
            let p = window
            let t = y.windows(p, p)
            let kv = Tensor.linear(t, weight: toKV.weight.value.reshaped([2 * inner, c]))
            var weights = Tensor.headScores(toQ(t), kv.slice(axis: 2, start: 0, length: inner), heads: heads, scale: 1 / Float(dimHead).squareRoot()).softmax()
            if let attentionDropout { weights = attentionDropout(weights) }
            let out = Tensor.headWeightedValues(weights, kv.slice(axis: 2, start: inner, length: inner))
            merged = out.mergingWindows(height: h, width: w, p, p)
        } else {
            let q = toQ(y).reshaped([b, h * w, inner])
            let kv = stridedPatchConv(y, weight: toKV.weight.value, k: k)
            var weights = Tensor.headScores(q, kv.slice(axis: 2, start: 0, length: inner), heads: heads, scale: 1 / Float(dimHead).squareRoot()).softmax()
            if let attentionDropout { weights = attentionDropout(weights) }
            merged = Tensor.headWeightedValues(weights, kv.slice(axis: 2, start: inner, length: inner)).reshaped([b, h, w, inner])
        }
        let out = toOut(merged)
        return outputDropout.map { $0(out) } ?? out
    }
}

/// One Twins block: (locally-grouped attention, feed-forward) unless it is the last stage's, then
/// (global sub-sampled attention, feed-forward), each residual. Named as vit-pytorch's
/// ModuleList of Residuals (0.fn, 1.fn, 2.fn, 3.fn).
public final class TwinsBlock: Module {
    public let localAttention: TwinsAttention?
    public let localFeedForward: ConvFeedForward?
    public let globalAttention: TwinsAttention
    public let globalFeedForward: ConvFeedForward

    init(dim: Int, stage: TwinsStage, hasLocal: Bool, config c: TwinsConfig, initializer: Initializer) {
        localAttention = hasLocal ? TwinsAttention(dim: dim, heads: c.heads, dimHead: c.dimHead, local: true, window: stage.localPatchSize, k: 1,
                                                   dropout: c.dropout, initializer: initializer) : nil
        localFeedForward = hasLocal ? ConvFeedForward(dim: dim, mult: c.mlpMult, dropout: c.dropout, initializer: initializer) : nil
        globalAttention = TwinsAttention(dim: dim, heads: c.heads, dimHead: c.dimHead, local: false, window: 1, k: stage.globalK,
                                         dropout: c.dropout, initializer: initializer)
        globalFeedForward = ConvFeedForward(dim: dim, mult: c.mlpMult, dropout: c.dropout, initializer: initializer)
    }

    public override var stateNames: [String: String] {
        ["localAttention": "0.fn", "localFeedForward": "1.fn", "globalAttention": "2.fn", "globalFeedForward": "3.fn"]
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        if let localAttention, let localFeedForward {
            h = localAttention(h) + h
            h = localFeedForward(h) + h
        }
        h = globalAttention(h) + h
        return globalFeedForward(h) + h
    }
}

/// One Twins stage: patch merging (channel LayerNorm, 1x1 convolution, channel LayerNorm), one
/// block, the PEG (a residual depthwise convolution), then `depth` blocks.
public final class TwinsStageModule: Module {
    public let mergeNorm: ChannelsLastNorm
    public let mergeConv: PointwiseConv
    public let embeddingNorm: ChannelsLastNorm
    public let first: [TwinsBlock]
    public let peg: Conv2d
    public let blocks: [TwinsBlock]
    let patch: Int

    init(dimIn: Int, stage: TwinsStage, last: Bool, config c: TwinsConfig, initializer: Initializer) {
        patch = stage.patchSize
        let merged = dimIn * stage.patchSize * stage.patchSize
        mergeNorm = ChannelsLastNorm(merged)
        mergeConv = PointwiseConv(merged, stage.embDim, initializer: initializer)
        embeddingNorm = ChannelsLastNorm(stage.embDim)
        first = [TwinsBlock(dim: stage.embDim, stage: stage, hasLocal: !last, config: c, initializer: initializer)]
        peg = Conv2d(stage.embDim, stage.embDim, kernel: c.pegKernelSize, padding: c.pegKernelSize / 2, groups: stage.embDim, initializer: initializer)
        blocks = (0..<stage.depth).map { _ in TwinsBlock(dim: stage.embDim, stage: stage, hasLocal: !last, config: c, initializer: initializer) }
    }

    public override var stateNames: [String: String] {
        ["mergeNorm": "0.proj.0", "mergeConv": "0.proj.1", "embeddingNorm": "0.proj.2", "first": "1.layers", "peg": "2.proj.fn", "blocks": "3.layers"]
    }

    /// x (B, C, H, W) to (B, C', H / p, W / p).
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (gh, gw, p) = (h / patch, w / patch, patch)
        // 'b c (h p1) (w p2) -> b (c p1 p2) h w', channels-last.
        let merged = x.reshaped([b, c, gh, p, gw, p]).permuted([0, 2, 4, 1, 3, 5]).reshaped([b, gh, gw, c * p * p])
        var t = embeddingNorm(mergeConv(mergeNorm(merged)))
        for block in first { t = block(t) }
        let map = t.permuted([0, 3, 1, 2])
        t = (peg(map) + map).permuted([0, 2, 3, 1])
        for block in blocks { t = block(t) }
        return t.permuted([0, 3, 1, 2])
    }
}

/// vit-pytorch 1.7.14's Twins-SVT (Chu et al. 2021, "Twins: Revisiting the Design of Spatial
/// Attention in Vision Transformers"): stages of patch merging, blocks that alternate
/// locally-grouped attention within windows and global sub-sampled attention (keys and values
/// from a strided convolution), with a position-encoding convolution (PEG) after each stage's
/// first block; the head averages the last map and classifies. Computed channels-last.
/// Hidden layers: "stages.i" (B, C_i, H_i, W_i), "tokens" (B, H * W, C), "pooled" (B, C) the mean,
/// "logits".
public final class TwinsSVT: Module, HiddenLayerEncoder {
    public let config: TwinsConfig
    public let stages: [TwinsStageModule]
    public let head: Linear

    public init(_ config: TwinsConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "TwinsSVT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        var dim = config.channels
        stages = config.stages.enumerated().map { i, stage in
            defer { dim = stage.embDim }
            return TwinsStageModule(dimIn: dim, stage: stage, last: i == config.stages.count - 1, config: config, initializer: initializer)
        }
        head = Linear(config.stages.last!.embDim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["stages": "layers", "head": "layers.\(config.stages.count + 2)"] }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var x = images
        var out: [String: Tensor] = [:]
        for (i, stage) in stages.enumerated() {
            x = stage(x)
            if layers.contains("stages.\(i)") { out["stages.\(i)"] = x }
        }
        let (b, c, n) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let tokens = x.reshaped([b, c, n]).permuted([0, 2, 1])
        meanPooledOutputs(tokens, head: { head($0) }, layers: layers, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
