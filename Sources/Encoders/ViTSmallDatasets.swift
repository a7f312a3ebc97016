import Foundation
import NN
import TensorCore

/// Locality self-attention (Lee et al. 2021, "Vision Transformer for Small-Size Datasets"): a
/// learned temperature in place of 1/sqrt(d) (its log, starting at log(dim_head^-0.5)), and each
/// token kept from attending to itself (the diagonal masked), so attention looks at the others.
public final class LocalitySelfAttention: Module {
    public let heads: Int, dimHead: Int
    public let norm: LayerNorm
    public let toQKV: Linear
    public let temperature: Parameter
    public let toOut: Linear

    public init(dim: Int, heads: Int, dimHead: Int, initializer: Initializer) {
        (self.heads, self.dimHead) = (heads, dimHead)
        norm = LayerNorm(dim)
        toQKV = Linear(dim, 3 * heads * dimHead, bias: false, initializer: initializer)
        temperature = Parameter(Tensor(shape: [], [Float(Foundation.log(1 / Double(dimHead).squareRoot()))]), decays: false)
        toOut = Linear(heads * dimHead, dim, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["toOut": "to_out.0"] }

    /// x (B, N, D); keys and values from context (B, M, D) when given (no diagonal then).
    public func callAsFunction(_ x: Tensor, context: Tensor? = nil) -> Tensor {
        let n = x.shape[1]
        let inner = heads * dimHead
        let h = norm(x)
        let (q, k, v) = toQKV.queriesKeysValues(h, context: context, norm: norm, inner: inner)
        let m = k.shape[1]
        var dots = Tensor.headScores(q, k, heads: heads, scale: 1) * temperature.value.reshaped([1, 1, 1, 1]).exp()
        if context == nil {
            // masked_fill(eye, -max): the diagonal's probability becomes exactly 0.
            var mask = [Float](repeating: 0, count: n * m)
            for i in 0..<Swift.min(n, m) { mask[i * m + i] = -Float.greatestFiniteMagnitude }
            dots = dots + Tensor(shape: [1, 1, n, m], mask)
        }
        return toOut(Tensor.headWeightedValues(dots.softmax(), v))
    }
}

/// One block of the small-dataset ViT: x + LSA(x), then + feedForward.
public final class LocalityBlock: Module {
    public let attention: LocalitySelfAttention
    public let feedForward: FeedForward
    init(attention: LocalitySelfAttention, feedForward: FeedForward) { (self.attention, self.feedForward) = (attention, feedForward) }
    public override var stateNames: [String: String] { ["attention": "0", "feedForward": "1"] }
}

/// Shifted patch tokenisation's layers (vit-pytorch's SPT.to_patch_tokens: Rearrange, LayerNorm, Linear).
public final class ShiftedPatchTokens: Module {
    public let norm: LayerNorm
    public let linear: Linear
    init(patchDim: Int, dim: Int, initializer: Initializer) {
        norm = LayerNorm(patchDim)
        linear = Linear(patchDim, dim, initializer: initializer)
    }
    public override var stateNames: [String: String] { ["norm": "to_patch_tokens.1", "linear": "to_patch_tokens.2"] }
}

/// vit-pytorch 1.7.14's ViT for small datasets (Lee et al. 2021): shifted patch tokenisation (the
/// image and its four one-pixel shifts, 5C channels, cut into patches, LayerNorm, Linear),
/// locality self-attention, a class token, learned positions, no final norm, mlp_head =
/// LayerNorm + Linear. Its patches read their neighbours' pixels, so the masked objectives, which
/// embed patches alone, do not apply; the view objectives and the evaluation stages do.
public final class SmallDatasetViT: Module, ClassTokenViT {
    public let config: ViTConfig
    public let toPatchEmbedding: ShiftedPatchTokens
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let transformer: BlockList<LocalityBlock>
    public let mlpHead: LayerNormLinear

    public init(_ config: ViTConfig, initializer: Initializer) {
        precondition(config.problem == nil, "SmallDatasetViT: \(config.problem!)")
        self.config = config
        toPatchEmbedding = ShiftedPatchTokens(patchDim: 5 * config.patchDim, dim: config.dim, initializer: initializer)
        posEmbedding = Parameter(initializer.embedding([1, config.patchCount + 1, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        transformer = BlockList((0..<config.depth).map { _ in
            LocalityBlock(attention: LocalitySelfAttention(dim: config.dim, heads: config.heads, dimHead: config.dimHead, initializer: initializer),
                          feedForward: FeedForward(dim: config.dim, hiddenDim: config.mlpDim, initializer: initializer))
        })
        mlpHead = LayerNormLinear(config.dim, config.numClasses, initializer: initializer)
    }

    public var depth: Int { config.depth }
    /// Each patch holds its pixels and those of the four shifted copies.
    public var patchDim: Int { 5 * config.patchDim }

    /// The image and its shifts right, left, down and up by one pixel (zeros shifted in), as
    /// F.pad with (1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1), along the channels.
    public func shifted(_ images: Tensor) -> Tensor {
        let (h, w) = (images.shape[2], images.shape[3])
        func shift(_ n: Int, by d: Int) -> Tensor {
            // out[j] = in[j - d]: the matrix S (n, n) with S[j - d, j] = 1, applied as x S.
            var s = [Float](repeating: 0, count: n * n)
            for j in 0..<n where j - d >= 0 && j - d < n { s[(j - d) * n + j] = 1 }
            return Tensor(shape: [n, n], s)
        }
        let right = Tensor.matmul(images, shift(w, by: 1)), left = Tensor.matmul(images, shift(w, by: -1))
        let columns = images.permuted([0, 1, 3, 2])
        let down = Tensor.matmul(columns, shift(h, by: 1)).permuted([0, 1, 3, 2])
        let up = Tensor.matmul(columns, shift(h, by: -1)).permuted([0, 1, 3, 2])
        return Tensor.concat([images, right, left, down, up], axis: 1)
    }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(shifted(images), patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func embedPatches(_ patches: Tensor) -> Tensor { toPatchEmbedding.linear(toPatchEmbedding.norm(patches)) }

    public func block(_ i: Int, _ x: Tensor, context: Tensor?) -> Tensor {
        let layer = transformer.layers[i]
        let y = layer.attention(x, context: context) + x
        return layer.feedForward(y) + y
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
