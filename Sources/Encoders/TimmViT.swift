import NN
import TensorCore

/// Hyperparameters of timm's VisionTransformer (timm 1.0's argument names in comments).
public struct TimmViTConfig: Codable, Equatable, Sendable {
    public var imageSize = 224                 // img_size
    public var patchSize = 16                  // patch_size
    public var channels = 3                    // in_chans
    public var dim = 768                       // embed_dim
    public var depth = 12
    public var heads = 12                      // num_heads
    public var mlpDim = 3072                   // embed_dim * mlp_ratio
    public var numClasses = 1000               // num_classes
    public var pool: Pool = .token             // global_pool
    public var qkvBias = true                  // qkv_bias
    public var eps: Float = 1e-6               // LayerNorm's eps in timm's ViTs

    /// `token`: the class token after the final norm; `avg`: the mean of the patch tokens, then
    /// fc_norm (timm's default for avg pooling: the final norm moves after the pooling).
    public enum Pool: String, Codable, CaseIterable, Sendable { case token, avg }

    public init() {}

    public var grid: Int { imageSize / patchSize }
    public var patchCount: Int { grid * grid }
    public var patchDim: Int { channels * patchSize * patchSize }
    /// The hidden layers a TimmViT of this configuration exposes.
    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + (0..<depth).map { "blocks.\($0)" } }
}

/// timm's Attention: packed qkv with a bias, softmax(q k^T / sqrt(head_dim)) v, then proj. The
/// norm is the block's (norm1), outside.
final class TimmAttention: Module {
    let heads: Int
    let qkv: Linear
    let proj: Linear

    init(dim: Int, heads: Int, qkvBias: Bool, initializer: Initializer) {
        self.heads = heads
        qkv = Linear(dim, 3 * dim, bias: qkvBias, initializer: initializer)
        proj = Linear(dim, dim, initializer: initializer)
    }

    /// x (B, N, D), already normed; with a context (B, M, D), queries from x and keys and values
    /// from the context through the same packed weights (MP3).
    func callAsFunction(_ x: Tensor, context: Tensor? = nil, returnProbabilities: Bool = false) -> (Tensor, Tensor?) {
        guard let context else {
            let (merged, probs) = Tensor.multiHeadSelfAttention(packedQKV: qkv(x), heads: heads, returnProbabilities: returnProbabilities)
            return (proj(merged), probs)
        }
        let dim = x.shape[2], dimHead = dim / heads
        let w = qkv.weight.value, b = qkv.bias?.value
        let q = Tensor.linear(x, weight: w.slice(axis: 0, start: 0, length: dim), bias: b?.slice(axis: 0, start: 0, length: dim))
        let kv = Tensor.linear(context, weight: w.slice(axis: 0, start: dim, length: 2 * dim), bias: b?.slice(axis: 0, start: dim, length: 2 * dim))
            .chunked(2, axis: -1)
        func split(_ t: Tensor) -> Tensor { t.reshaped([t.shape[0], t.shape[1], heads, dimHead]).permuted([0, 2, 1, 3]) }
        let (o, p) = Tensor.scaledDotProductAttention(query: split(q), key: split(kv[0]), value: split(kv[1]), returnProbabilities: returnProbabilities)
        return (proj(o.permuted([0, 2, 1, 3]).reshaped([x.shape[0], x.shape[1], dim])), p)
    }
}

/// timm's Mlp: fc1, exact GELU, fc2.
final class TimmMlp: Module {
    let fc1: Linear
    let fc2: Linear
    init(dim: Int, hidden: Int, initializer: Initializer) {
        fc1 = Linear(dim, hidden, initializer: initializer)
        fc2 = Linear(hidden, dim, initializer: initializer)
    }
    func callAsFunction(_ x: Tensor) -> Tensor { fc2(fc1.gelu(x)) }
}

/// timm's Block: x + attn(norm1(x)), then + mlp(norm2(x)).
final class TimmBlock: Module {
    let norm1: LayerNorm
    let attn: TimmAttention
    let norm2: LayerNorm
    let mlp: TimmMlp

    init(_ c: TimmViTConfig, initializer: Initializer) {
        norm1 = LayerNorm(c.dim, eps: c.eps)
        attn = TimmAttention(dim: c.dim, heads: c.heads, qkvBias: c.qkvBias, initializer: initializer)
        norm2 = LayerNorm(c.dim, eps: c.eps)
        mlp = TimmMlp(dim: c.dim, hidden: c.mlpDim, initializer: initializer)
    }

    func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let y = x + attn(norm1(x), context: context.map { norm1($0) }).0
        return y + mlp(norm2(y))
    }
}

/// timm's PatchEmbed: a convolution of kernel and stride patch_size (weight (D, C, p, p)),
/// computed as a product over flattened patches.
public final class TimmPatchEmbed: Module {
    let proj: Conv2d
    init(_ c: TimmViTConfig, initializer: Initializer) {
        proj = Conv2d(c.channels, c.dim, kernel: c.patchSize, stride: c.patchSize, initializer: initializer)
    }
}

/// timm's VisionTransformer (Dosovitskiy et al. 2020, as timm 1.0 builds vit_*_patch*_*): a
/// convolutional patch embedding, a class token, learned positions added after it, pre-norm
/// blocks with a qkv bias and LayerNorm eps 1e-6, then the class token after the final norm, or
/// the patch tokens' mean through fc_norm. Parameter names are timm's state_dict keys, so timm and
/// Google checkpoints load unchanged. A PatchTokenEncoder: the masked objectives can continue
/// pretraining it.
public final class TimmViT: Module, PatchTokenEncoder {
    public let config: TimmViTConfig
    public let patchEmbed: TimmPatchEmbed
    public let clsToken: Parameter
    public let posEmbed: Parameter
    let blocks: [TimmBlock]
    /// The final norm (token pooling), or nil when fc_norm takes its place (avg pooling).
    public let norm: LayerNorm?
    public let fcNorm: LayerNorm?
    public let head: Linear

    public init(_ config: TimmViTConfig, initializer: Initializer) {
        precondition(config.imageSize % config.patchSize == 0 && config.dim % config.heads == 0, "TimmViT: sizes do not fit")
        self.config = config
        patchEmbed = TimmPatchEmbed(config, initializer: initializer)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        posEmbed = Parameter(initializer.embedding([1, config.patchCount + 1, config.dim]), decays: false)
        blocks = (0..<config.depth).map { _ in TimmBlock(config, initializer: initializer) }
        norm = config.pool == .token ? LayerNorm(config.dim, eps: config.eps) : nil
        fcNorm = config.pool == .avg ? LayerNorm(config.dim, eps: config.eps) : nil
        head = Linear(config.dim, config.numClasses, initializer: initializer)
    }

    public var patchCount: Int { config.patchCount }
    public var patchDim: Int { config.patchDim }
    public var dim: Int { config.dim }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func patchify(_ images: Tensor) -> Tensor { Encoders.patchify(images, patchHeight: config.patchSize, patchWidth: config.patchSize) }

    /// Patches in patchify's (p1 p2 c) order through the convolution's weight, reordered to match.
    public func embedPatches(_ patches: Tensor) -> Tensor {
        let (d, p, c) = (config.dim, config.patchSize, config.channels)
        let weight = patchEmbed.proj.weight.value.permuted([0, 2, 3, 1]).reshaped([d, p * p * c])
        return Tensor.linear(patches, weight: weight, bias: patchEmbed.proj.bias?.value)
    }

    public func patchPositions() -> Tensor { posEmbed.value.slice(axis: 1, start: 1, length: config.patchCount) }

    public func prefixTokens(batch: Int) -> Tensor? {
        (clsToken.value + posEmbed.value.slice(axis: 1, start: 0, length: 1)).expanded(to: [batch, 1, config.dim])
    }

    public func encodeTokens(_ tokens: Tensor) -> Tensor {
        let x = blocks.reduce(tokens) { $1($0) }
        return norm.map { $0(x) } ?? x
    }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor {
        let x = blocks.reduce(tokens) { $1($0, context: context) }
        return norm.map { $0(x) } ?? x
    }

    /// The class token and the patches with their positions (the grid resized bicubically for
    /// images of another size, as DINO's local crops need).
    func inputTokens(_ images: Tensor) -> Tensor {
        let b = images.shape[0]
        var positions = patchPositions()
        let side = images.shape[2] / config.patchSize
        if images.shape[2] != config.imageSize || images.shape[3] != config.imageSize {
            precondition(images.shape[2] % config.patchSize == 0 && images.shape[3] == images.shape[2], "TimmViT: square images of whole patches")
            let resize = bicubicResizeMatrix(from: (config.grid, config.grid), to: (side, side))
            positions = Tensor.matmul(resize, positions.reshaped([config.patchCount, config.dim])).reshaped([1, side * side, config.dim])
        }
        let patches = embedPatches(patchify(images)) + positions
        return Tensor.concat([prefixTokens(batch: b)!, patches], axis: 1)
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        var x = inputTokens(images)
        for (i, block) in blocks.enumerated() {
            x = block(x)
            if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = x }
        }
        if let norm { x = norm(x) }
        if layers.contains("tokens") { out["tokens"] = x }
        if layers.contains("pooled") || layers.contains("logits") {
            let (b, n) = (x.shape[0], x.shape[1])
            let pooled = config.pool == .token ? x.slice(axis: 1, start: 0, length: 1).reshaped([b, config.dim])
                : fcNorm!(x.slice(axis: 1, start: 1, length: n - 1).mean(axis: 1))
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = head(pooled) }
        }
        return out
    }

    /// Class logits (B, numClasses).
    public func callAsFunction(_ images: Tensor) -> Tensor { hiddenOutputs(images, layers: ["logits"])["logits"]! }
}
