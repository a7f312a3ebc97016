import NN
import TensorCore

/// SepViT's configuration (vit-pytorch 1.7.14's arguments). Stage i embeds by an overlapping
/// convolution (stride 4, then 2), adds a position-encoding convolution (PEG), and runs blocks of
/// depthwise-separable self-attention in windows with window tokens, and convolutional
/// feed-forwards; widths double per stage.
public struct SepViTConfig: Codable, Equatable, Sendable {
    /// What the attention's window and head width come from.
    public enum Legacy: String, Codable, CaseIterable, Sendable {
        /// `window_size` and `dim_head` as given (per stage for the window, as the paper's stages).
        case paper
        /// vit-pytorch 1.7.14: both arguments are ignored; windows are 7 and heads 32 wide always.
        case vitPytorch1714 = "vit-pytorch-1.7.14"
    }

    public var imageSize = 28
    public var channels = 1
    public var numClasses = 10
    public var dim = 96
    public var depth = [3]
    /// Heads of each stage (one number for all, or one per stage).
    public var heads = [3]
    /// Window side of each stage (one number for all, or one per stage).
    public var windowSize = [7]
    public var dimHead = 32
    public var ffMult = 4
    public var dropout: Float = 0
    public var arguments = Legacy.paper
    public init() {}

    public func stageDim(_ i: Int) -> Int { dim << i }
    func perStage(_ v: [Int], _ i: Int) -> Int { v.count == 1 ? v[0] : v[i] }
    public func stageHeads(_ i: Int) -> Int { perStage(heads, i) }
    public func stageWindow(_ i: Int) -> Int { arguments == .paper ? perStage(windowSize, i) : 7 }
    public var headWidth: Int { arguments == .paper ? dimHead : 32 }
    /// The map's side at stage i: an overlapping convolution of stride 4 (kernel 7, padding 3), then stride 2 (kernel 3, padding 1).
    public func stageSide(_ i: Int, imageSide side: Int) -> Int {
        (1...i + 1).reduce(side) { s, k in (s - 1) / (k == 1 ? 4 : 2) + 1 }
    }

    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + depth.indices.map { "stages.\($0)" } }

    public func problem(imageSide side: Int) -> (key: String, problem: String)? {
        if depth.isEmpty || depth.contains(where: { $0 < 1 }) { return ("depth", "give each stage one or more blocks, e.g. [2]") }
        for (key, v) in [("heads", heads), ("window_size", windowSize)] where (v.count != 1 && v.count != depth.count) || v.contains(where: { $0 < 1 }) {
            return (key, "give one positive number, or one per stage (\(depth.count))")
        }
        for i in depth.indices {
            let s = stageSide(i, imageSide: side), w = stageWindow(i)
            if s % w != 0 {
                return (arguments == .paper ? "window_size" : "arguments",
                        "stage \(i)'s \(s)x\(s) map (\(side)-pixel images) does not split into \(w)x\(w) windows\(arguments == .paper ? "; use a window size dividing \(s)" : " (1.7.14 always uses 7)")")
            }
        }
        return nil
    }
}

/// SepViT's depthwise-separable self-attention (DSSA): within each window, attention among its
/// positions and a learned window token; then, when there are several windows, each window's
/// token (normalised per head, GELU, projected to a query and a key) attends over the other
/// windows' tokens, and those weights mix the windows' outputs position by position.
public final class DSSA: Module {
    public let norm: ChannelsLastNorm
    public let toQKV: PointwiseConv1d
    public let windowTokens: Parameter
    public let windowTokenNorm: LayerNorm
    public let windowTokensToQK: PointwiseConv1d
    public let toOut: PointwiseConv
    let heads: Int, dimHead: Int, window: Int
    let attentionDropout: Dropout?
    let windowDropout: Dropout?
    let outputDropout: Dropout?

    init(dim: Int, heads: Int, dimHead: Int, window: Int, dropout p: Float, initializer: Initializer) {
        (self.heads, self.dimHead, self.window) = (heads, dimHead, window)
        let inner = heads * dimHead
        norm = ChannelsLastNorm(dim)
        toQKV = PointwiseConv1d(dim, 3 * inner, bias: false, initializer: initializer)
        windowTokens = Parameter(initializer.embedding([dim]), decays: false)
        windowTokenNorm = LayerNorm(dimHead)
        windowTokensToQK = PointwiseConv1d(inner, 2 * inner, initializer: initializer)
        toOut = PointwiseConv(inner, dim, initializer: initializer)
        attentionDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        windowDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outputDropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
    }

    public override var stateNames: [String: String] {
        ["windowTokenNorm": "window_tokens_to_qk.0", "windowTokensToQK": "window_tokens_to_qk.3", "toOut": "to_out.0"]
    }

    /// x (B, H, W, C) channels-last.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (gx, gy, n, inner) = (h / window, w / window, window * window, heads * dimHead)
        let windows = gx * gy
        // 'b c (h w1) (w w2) -> (b h w) (w1 w2) c', each window led by the window token.
        let t = norm(x).windows(window, window)
        let tokens = Tensor.concat([windowTokens.value.reshaped([1, 1, c]).expanded(to: [b * windows, 1, c]), t], axis: 1)
        let qkv = toQKV(tokens)
        let scale = 1 / Float(dimHead).squareRoot()
        let q = qkv.slice(axis: 2, start: 0, length: inner), k = qkv.slice(axis: 2, start: inner, length: inner)
        let v = qkv.slice(axis: 2, start: 2 * inner, length: inner)
        var weights = Tensor.headScores(q, k, heads: heads, scale: scale).softmax()
        if let attentionDropout { weights = attentionDropout(weights) }
        let out = Tensor.headWeightedValues(weights, v)                                  // (B windows, 1 + n, inner)
        var maps = out.slice(axis: 1, start: 1, length: n)                               // (B windows, n, inner)
        if windows > 1 {
            // Window tokens per head: (B, windows, heads, d), normalised over d, GELU, then to q and k.
            let wt = out.slice(axis: 1, start: 0, length: 1).reshaped([b, windows, heads, dimHead])
            let qk = windowTokensToQK(windowTokenNorm(wt).gelu().reshaped([b, windows, inner])).reshaped([b, windows, heads, 2 * dimHead])
            let wq = qk.slice(axis: 3, start: 0, length: dimHead).permuted([0, 2, 1, 3]).reshaped([b * heads, windows, dimHead])
            let wk = qk.slice(axis: 3, start: dimHead, length: dimHead).permuted([0, 2, 1, 3]).reshaped([b * heads, windows, dimHead])
            var mix = (Tensor.matmul(wq, wk, transposeB: true) * scale).softmax()           // (B heads, windows, windows)
            if let windowDropout { mix = windowDropout(mix) }
            // einsum('b h i j, b h j w d -> b h i w d') with the windows' outputs per head.
            let perHead = maps.reshaped([b, windows, n, heads, dimHead]).permuted([0, 3, 1, 2, 4]).reshaped([b * heads, windows, n * dimHead])
            maps = Tensor.matmul(mix, perHead).reshaped([b, heads, windows, n, dimHead]).permuted([0, 2, 3, 1, 4]).reshaped([b * windows, n, inner])
        }
        let merged = maps.mergingWindows(height: h, width: w, window, window)
        let y = toOut(merged)
        return outputDropout.map { $0(y) } ?? y
    }
}

public final class SepViTBlock: Module {
    public let attention: DSSA
    public let feedForward: ConvFeedForward
    init(attention: DSSA, feedForward: ConvFeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// One SepViT stage: the overlapping patch embedding, the PEG (a residual depthwise 3x3
/// convolution), the blocks and, but in the last stage, a channel LayerNorm.
public final class SepViTStage: Module {
    public let embedding: Conv2d
    public let peg: Conv2d
    public let blocks: [SepViTBlock]
    public let norm: ChannelsLastNorm?

    init(dimIn: Int, dim: Int, stride: Int, depth: Int, heads: Int, dimHead: Int, window: Int, ffMult: Int, dropout: Float, last: Bool,
         initializer: Initializer) {
        embedding = Conv2d(dimIn, dim, kernel: 2 * stride - 1, stride: stride, padding: stride - 1, initializer: initializer)
        peg = Conv2d(dim, dim, kernel: 3, padding: 1, groups: dim, initializer: initializer)
        blocks = (0..<depth).map { _ in
            SepViTBlock(attention: DSSA(dim: dim, heads: heads, dimHead: dimHead, window: window, dropout: dropout, initializer: initializer),
                        feedForward: ConvFeedForward(dim: dim, mult: ffMult, dropout: dropout, initializer: initializer))
        }
        norm = last ? nil : ChannelsLastNorm(dim)
    }

    public override var stateNames: [String: String] { ["embedding": "0.conv", "peg": "1.proj", "blocks": "2.layers", "norm": "2.norm"] }

    /// x (B, C, H, W) to (B, C', H', W').
    func callAsFunction(_ x: Tensor) -> Tensor {
        let e = embedding(x)
        let m = peg(e) + e
        let (b, c, h, w) = (m.shape[0], m.shape[1], m.shape[2], m.shape[3])
        var t = m.permuted([0, 2, 3, 1])
        for block in blocks {
            t = block.attention(t) + t
            t = block.feedForward(t.reshaped([b, h * w, c])).reshaped([b, h, w, c]) + t
        }
        if let norm { t = norm(t) }
        return t.permuted([0, 3, 1, 2])
    }
}

/// vit-pytorch 1.7.14's SepViT (Li et al. 2022, "SepViT: Separable Vision Transformer"): stages
/// of overlapping convolutional embedding, a position-encoding convolution and depthwise-separable
/// self-attention (attention within windows with a window token, then attention among the window
/// tokens that mixes the windows), with convolutional feed-forwards; the head averages the last
/// map, normalises it and classifies. Hidden layers: "stages.i" (B, C_i, H_i, W_i), "tokens"
/// (B, H * W, C) the last map flattened, "pooled" (B, C) its mean, "logits".
public final class SepViT: Module, HiddenLayerEncoder {
    public let config: SepViTConfig
    public let layers: [SepViTStage]
    public let mlpHead: LayerNormLinear

    public init(_ config: SepViTConfig, initializer: Initializer) {
        precondition(config.problem(imageSide: config.imageSize) == nil, "SepViT: \(config.problem(imageSide: config.imageSize)!.problem)")
        self.config = config
        layers = config.depth.indices.map { i in
            SepViTStage(dimIn: i == 0 ? config.channels : config.stageDim(i - 1), dim: config.stageDim(i), stride: i == 0 ? 4 : 2,
                        depth: config.depth[i], heads: config.stageHeads(i), dimHead: config.headWidth, window: config.stageWindow(i),
                        ffMult: config.ffMult, dropout: config.dropout, last: i == config.depth.count - 1, initializer: initializer)
        }
        mlpHead = LayerNormLinear(config.stageDim(config.depth.count - 1), config.numClasses, firstIndex: 1, initializer: initializer)
    }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers names: Set<String>) -> [String: Tensor] {
        var x = images
        var out: [String: Tensor] = [:]
        for (i, stage) in layers.enumerated() {
            x = stage(x)
            if names.contains("stages.\(i)") { out["stages.\(i)"] = x }
        }
        let (b, c, n) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let tokens = x.reshaped([b, c, n]).permuted([0, 2, 1])
        meanPooledOutputs(tokens, head: { mlpHead($0) }, layers: names, into: &out)
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
