import TensorCore

/// y = x W^T + b over the last axis. Weight (out, in), bias (out).
public final class Linear: Module {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias hasBias: Bool = true, initializer: Initializer) {
        let (w, b) = initializer.linear(inFeatures: inFeatures, outFeatures: outFeatures)
        weight = Parameter(w)
        bias = hasBias ? Parameter(b) : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { Tensor.linear(x, weight: weight.value, bias: bias?.value) }

    /// gelu(self(x)) (PyTorch's exact erf form) as one op (`Tensor.linearGELU`), bit-identical to
    /// the two.
    public func gelu(_ x: Tensor) -> Tensor {
        guard let bias else { return self(x).gelu() }
        return Tensor.linearGELU(x, weight: weight.value, bias: bias.value)
    }
}

/// A table of learned vectors (nn.Embedding): weight (count, dim), N(0, 1) under PyTorch's
/// defaults. Rows are picked with `weight.value.gather(axis: 0, ...)`.
public final class Embedding: Module {
    public let weight: Parameter

    public init(_ count: Int, _ dim: Int, initializer: Initializer) {
        weight = Parameter(initializer.embedding([count, dim]))
    }
}

/// Layer normalisation over the last axis with learned scale and shift (weight 1, bias 0).
public final class LayerNorm: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let eps: Float

    public init(_ dim: Int, eps: Float = 1e-5) {
        weight = Parameter(.ones([dim]))
        bias = Parameter(.zeros([dim]))
        self.eps = eps
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.layerNorm(weight: weight.value, bias: bias.value, eps: eps) }
}

/// Batch normalisation over channel axis 1 of (N, C) or (N, C, ...), as torch's BatchNorm1d/2d.
public final class BatchNorm: Module {
    public let weight: Parameter
    public let bias: Parameter
    public let runningMean: Buffer
    public let runningVar: Buffer
    let state: BatchNormState

    public init(_ channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        weight = Parameter(.ones([channels]))
        bias = Parameter(.zeros([channels]))
        state = BatchNormState(channels: channels, momentum: momentum, eps: eps)
        runningMean = Buffer(state.runningMean)
        runningVar = Buffer(state.runningVar)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        x.batchNorm(weight: weight.value, bias: bias.value, state: state, training: isTraining)
    }
}

/// Zeroes activations with probability p in training (scaled by 1/(1-p)); identity in evaluation.
public final class Dropout: Module {
    public let probability: Float
    let rng: RandomStream

    public init(_ probability: Float, rng: RandomStream) {
        self.probability = probability
        self.rng = rng
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.dropout(probability, training: isTraining, rng: rng) }
}

/// GELU as a layer (PyTorch's exact erf form, or the tanh approximation).
public final class GELU: Module {
    public let approximateTanh: Bool
    public init(approximateTanh: Bool = false) { self.approximateTanh = approximateTanh }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.gelu(approximateTanh: approximateTanh) }
}

/// vit-pytorch's FeedForward: LayerNorm, Linear, GELU, Dropout, Linear, Dropout (pre-norm MLP).
public final class FeedForward: Module {
    public let norm: LayerNorm
    public let hidden: Linear
    public let output: Linear
    let dropout: Dropout?
    let outputIndex: Int

    /// `outputIndex` is the output Linear's position in PyTorch's Sequential: 4 in ViT (with
    /// dropouts), 3 in SimpleViT.
    /// The hidden activation: GELU (ViT) or SiLU (MobileViT).
    public enum Activation: Sendable { case gelu, silu }
    let activation: Activation

    public init(dim: Int, hiddenDim: Int, dropout p: Float = 0, outputIndex: Int = 4, activation: Activation = .gelu, initializer: Initializer) {
        self.activation = activation
        norm = LayerNorm(dim)
        hidden = Linear(dim, hiddenDim, initializer: initializer)
        output = Linear(hiddenDim, dim, initializer: initializer)
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        self.outputIndex = outputIndex
    }

    public override var stateNames: [String: String] { ["norm": "net.0", "hidden": "net.1", "output": "net.\(outputIndex)"] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = activation == .gelu ? hidden.gelu(norm(x)) : hidden(norm(x)).silu()
        if let dropout { h = dropout(h) }
        let y = output(h)
        return dropout.map { $0(y) } ?? y
    }
}

/// Multi-head attention as vit-pytorch: pre-norm, bias-free projections to queries, keys and
/// values, softmax(q k^T / sqrt(dim_head)) v, then an output projection (omitted when one head of
/// width dim needs none). With `crossAttention`, keys and values come from a context sequence
/// (projections `to_q` and `to_kv`, as vit-pytorch's CaiT and MP3).
public final class Attention: Module {
    public let heads: Int
    public let dimHead: Int
    public let norm: LayerNorm
    public let toQKV: Linear?
    public let toQ: Linear?
    public let toKV: Linear?
    public let toOut: Linear?
    /// Query-key normalisation (vit-pytorch's SimpleViT with qk_norm, from ViT-22B): q and k
    /// L2-normalised, times sqrt(dim_head) and a learned per-head gain, and no 1/sqrt(d) scale.
    public let qNorm: HeadRMSNorm?
    public let kNorm: HeadRMSNorm?
    let dropout: Dropout?
    let outName: String

    public init(dim: Int, heads: Int, dimHead: Int, dropout p: Float = 0, crossAttention: Bool = false,
                outputBias: Bool = true, outputInSequential: Bool = true, qkNorm: Bool = false, initializer: Initializer) {
        qNorm = qkNorm ? HeadRMSNorm(heads: heads, dim: dimHead) : nil
        kNorm = qkNorm ? HeadRMSNorm(heads: heads, dim: dimHead) : nil
        self.heads = heads
        self.dimHead = dimHead
        let inner = heads * dimHead
        norm = LayerNorm(dim)
        toQKV = crossAttention ? nil : Linear(dim, 3 * inner, bias: false, initializer: initializer)
        toQ = crossAttention ? Linear(dim, inner, bias: false, initializer: initializer) : nil
        toKV = crossAttention ? Linear(dim, 2 * inner, bias: false, initializer: initializer) : nil
        let projectOut = !(heads == 1 && dimHead == dim)
        toOut = projectOut ? Linear(inner, dim, bias: outputBias, initializer: initializer) : nil
        dropout = p > 0 ? Dropout(p, rng: initializer.dropoutStream) : nil
        outName = outputInSequential ? "to_out.0" : "to_out"
    }

    public override var stateNames: [String: String] { ["toOut": outName] }

    /// x (B, N, D); context (B, M, D) for cross-attention. Returns (B, N, D) and, when asked,
    /// the attention probabilities (B, heads, N, M).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, returnProbabilities: Bool = false) -> (Tensor, Tensor?) {
        let (b, n) = (x.shape[0], x.shape[1])
        let inner = heads * dimHead
        let h = norm(x)
        var merged: Tensor, probs: Tensor?
        if let toQKV, context == nil, qNorm == nil {
            // Heads are read from and written to the packed layouts directly, with no copies.
            (merged, probs) = Tensor.multiHeadSelfAttention(packedQKV: toQKV(h), heads: heads, returnProbabilities: returnProbabilities)
        } else if qNorm == nil {
            // Queries, and keys and values packed side by side, also read in place: cross-attention
            // with a self-attention layer's weights (MP3) or with to_q and to_kv (CaiT).
            let q: Tensor, kv: Tensor
            if let toQKV, let context {
                (q, kv) = toQKV.queriesAndPackedKeysValues(h, context: context, norm: norm, inner: inner)
            } else {
                q = toQ!(h)
                kv = toKV!(norm(context ?? x))
            }
            (merged, probs) = Tensor.multiHeadAttention(queries: q, packedKV: kv, heads: heads, returnProbabilities: returnProbabilities)
        } else {
            let q: Tensor, kv: [Tensor]
            if let toQKV {
                // Self-attention with normalised queries and keys (qk_norm), or cross-attention
                // with a self-attention layer's weights and qk_norm.
                let (pq, pk, pv) = toQKV.queriesKeysValues(h, context: context, norm: norm, inner: inner)
                (q, kv) = (pq, [pk, pv])
            } else {
                q = toQ!(h)
                kv = toKV!(norm(context ?? x)).chunked(2, axis: -1)
            }
            func split(_ t: Tensor) -> Tensor { t.reshaped([b, t.shape[1], heads, dimHead]).permuted([0, 2, 1, 3]) }
            var (qh, kh) = (split(q), split(kv[0]))
            if let qNorm, let kNorm { (qh, kh) = (qNorm(qh), kNorm(kh)) }
            let (o, p) = Tensor.scaledDotProductAttention(query: qh, key: kh, value: split(kv[1]), scale: qNorm == nil ? nil : 1,
                                                          returnProbabilities: returnProbabilities)
            (merged, probs) = (o.permuted([0, 2, 1, 3]).reshaped([b, n, inner]), p)
        }
        if let toOut { merged = toOut(merged) }
        if let dropout { merged = dropout(merged) }
        return (merged, probs)
    }
}

extension Linear {
    /// Queries, keys and values from a packed `to_qkv` projection of width 3 * inner: all three
    /// of `h` for self-attention, or, with a context, the queries of `h` by the projection's first
    /// third and the keys and values of norm(context) by the rest (MP3's cross-attention).
    public func queriesKeysValues(_ h: Tensor, context: Tensor?, norm: LayerNorm, inner: Int) -> (q: Tensor, k: Tensor, v: Tensor) {
        guard let context else {
            let qkv = self(h).chunked(3, axis: -1)
            return (qkv[0], qkv[1], qkv[2])
        }
        let (q, kv) = queriesAndPackedKeysValues(h, context: context, norm: norm, inner: inner)
        let parts = kv.chunked(2, axis: -1)
        return (q, parts[0], parts[1])
    }

    /// MP3's cross-attention inputs from a packed `to_qkv` projection: the queries of `h` (B, N,
    /// inner) by the projection's first third, and the keys and values of norm(context) by the
    /// rest, left packed (B, M, 2 * inner) for `Tensor.multiHeadAttention`.
    public func queriesAndPackedKeysValues(_ h: Tensor, context: Tensor, norm: LayerNorm, inner: Int) -> (q: Tensor, kv: Tensor) {
        let w = weight.value
        return (Tensor.linear(h, weight: w.slice(axis: 0, start: 0, length: inner)),
                Tensor.linear(norm(context), weight: w.slice(axis: 0, start: inner, length: 2 * inner)))
    }
}

/// vit-pytorch's RMSNorm of SimpleViT's qk_norm: F.normalize(x, dim=-1) * sqrt(dim) * gamma, with
/// gamma (heads, 1, dim) starting at 1 / sqrt(dim), on (B, heads, N, dim).
public final class HeadRMSNorm: Module {
    public let gamma: Parameter
    let scale: Float
    public init(heads: Int, dim: Int) {
        scale = Float(Double(dim).squareRoot())
        gamma = Parameter(Tensor.full([heads, 1, dim], 1 / scale))
    }
    public func callAsFunction(_ x: Tensor) -> Tensor { x.l2Normalized() * scale * gamma.value }
}

/// One pre-norm residual block: x + attention(x), then + feedForward.
public final class TransformerBlock: Module {
    public let attention: Attention
    public let feedForward: FeedForward

    public init(attention: Attention, feedForward: FeedForward) {
        self.attention = attention
        self.feedForward = feedForward
    }

    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }

    /// With a context, the attention's keys and values come from it (cross-attention).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let y = attention(x, context: context).0 + x
        return feedForward(y) + y
    }

    /// The block's output and its attention probabilities (B, heads, N, N).
    public func recordingAttention(_ x: Tensor) -> (Tensor, Tensor) {
        let (a, probabilities) = attention(x, returnProbabilities: true)
        let y = a + x
        return (feedForward(y) + y, probabilities!)
    }
}

/// vit-pytorch's Transformer: `depth` pre-norm blocks, then a final LayerNorm.
public final class Transformer: Module {
    public let layers: [TransformerBlock]
    public let norm: LayerNorm

    public init(dim: Int, depth: Int, heads: Int, dimHead: Int, mlpDim: Int, dropout: Float = 0,
                simple: Bool = false, qkNorm: Bool = false, initializer: Initializer) {
        layers = (0..<depth).map { _ in
            TransformerBlock(
                attention: Attention(dim: dim, heads: heads, dimHead: dimHead, dropout: dropout,
                                     outputBias: !simple, outputInSequential: !simple, qkNorm: qkNorm, initializer: initializer),
                feedForward: FeedForward(dim: dim, hiddenDim: mlpDim, dropout: dropout, outputIndex: simple ? 3 : 4,
                                         initializer: initializer))
        }
        norm = LayerNorm(dim)
    }

    /// The final normed tokens; `blockOutputs`, if given, receives each block's output (before the
    /// norm). With a context, every block attends from x to that same context (MP3).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil, blockOutputs: ((Int, Tensor) -> Void)? = nil) -> Tensor {
        var h = x
        for (i, block) in layers.enumerated() {
            h = block(h, context: context)
            blockOutputs?(i, h)
        }
        return norm(h)
    }

    /// Every block's attention probabilities (B, heads, N, N), as vit-pytorch's Recorder gives them.
    public func attentionMaps(_ x: Tensor) -> [Tensor] {
        var h = x
        return layers.map { block in
            let (next, probabilities) = block.recordingAttention(h)
            h = next
            return probabilities
        }
    }
}

/// Squeeze-and-excitation (Hu et al. 2018) with SiLU, as MBConv and timm use it: the channels'
/// means (B, C) through a bias-free Linear to `hidden`, SiLU, a bias-free Linear back, a sigmoid,
/// and the map (B, C, H, W) scaled per channel. Named as vit-pytorch's `gate` Sequential (Reduce,
/// Linear, SiLU, Linear, Sigmoid, Rearrange).
public final class SqueezeExcitation: Module {
    public let squeeze: Linear
    public let excite: Linear
    public init(channels: Int, hidden: Int, initializer: Initializer) {
        squeeze = Linear(channels, hidden, bias: false, initializer: initializer)
        excite = Linear(hidden, channels, bias: false, initializer: initializer)
    }
    public override var stateNames: [String: String] { ["squeeze": "gate.1", "excite": "gate.3"] }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let (b, c) = (x.shape[0], x.shape[1])
        return x * excite(squeeze(x.mean(axes: [2, 3])).silu()).sigmoid().reshaped([b, c, 1, 1])
    }

    /// The same on a channels-last map (B, H, W, C).
    public func channelsLast(_ x: Tensor) -> Tensor {
        let (b, c) = (x.shape[0], x.shape[3])
        return x * excite(squeeze(x.mean(axes: [1, 2])).silu()).sigmoid().reshaped([b, 1, 1, c])
    }
}
