import NN
import TensorCore

/// Hyperparameters of a ViT (vit-pytorch's argument names in comments).
public struct ViTConfig: Codable, Equatable, Sendable {
    public var imageHeight = 28, imageWidth = 28       // image_size
    public var patchHeight = 4, patchWidth = 4         // patch_size
    public var channels = 1
    public var dim = 128
    public var depth = 4
    public var heads = 4
    public var dimHead = 32                            // dim_head
    public var mlpDim = 256                            // mlp_dim
    public var numClasses = 10                         // num_classes
    public var pool: Pooling = .cls
    public var dropout: Float = 0
    public var embeddingDropout: Float = 0             // emb_dropout

    public enum Pooling: String, Codable, CaseIterable, Sendable { case cls, mean }

    public init() {}

    public var patchCount: Int { (imageHeight / patchHeight) * (imageWidth / patchWidth) }
    public var patchDim: Int { channels * patchHeight * patchWidth }

    /// The hidden layers a ViT or SimpleViT of this configuration exposes.
    public var hiddenLayerNames: [String] { ["tokens", "pooled", "logits"] + (0..<depth).map { "blocks.\($0)" } }

    /// Why this configuration cannot be built, or nil.
    public var problem: String? {
        if imageHeight % patchHeight != 0 || imageWidth % patchWidth != 0 {
            return "image \(imageHeight)x\(imageWidth) is not divisible by patch \(patchHeight)x\(patchWidth)"
        }
        if [imageHeight, imageWidth, patchHeight, patchWidth, channels, dim, depth, heads, dimHead, mlpDim, numClasses].contains(where: { $0 <= 0 }) {
            return "every size must be positive"
        }
        return nil
    }
}

/// What ViT and SimpleViT share: patch embedding (LayerNorm, Linear, LayerNorm), a Transformer
/// with its final norm, and a pooled linear head.
public protocol PatchTransformer: PatchTokenEncoder {
    var config: ViTConfig { get }
    var patchNorm: LayerNorm { get }
    var patchLinear: Linear { get }
    var tokenNorm: LayerNorm { get }
    var transformer: Transformer { get }
    var head: Linear { get }
    /// The sequence the transformer reads: embedded patches with positions (and the class token).
    func inputTokens(_ images: Tensor) -> Tensor
}

/// vit-pytorch's names for the patch embedding, a Sequential(Rearrange, LayerNorm, Linear, LayerNorm).
let patchEmbeddingStateNames = ["patchNorm": "to_patch_embedding.1", "patchLinear": "to_patch_embedding.2",
                                "tokenNorm": "to_patch_embedding.3"]

extension PatchTransformer {
    public var patchCount: Int { config.patchCount }
    public var patchDim: Int { config.patchDim }
    public var dim: Int { config.dim }

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }
    public var classificationHead: Module? { head }

    public func patchify(_ images: Tensor) -> Tensor {
        Encoders.patchify(images, patchHeight: config.patchHeight, patchWidth: config.patchWidth)
    }

    public func embedPatches(_ patches: Tensor) -> Tensor { tokenNorm(patchLinear(patchNorm(patches))) }

    public func encodeTokens(_ tokens: Tensor) -> Tensor { transformer(tokens) }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor { transformer(tokens, context: context) }

    /// Runs the transformer over embedded tokens x (B, n, D) and collects the requested outputs;
    /// `pool` turns the final tokens into (B, D).
    func outputs(from x: Tensor, layers: Set<String>, pool: (Tensor) -> Tensor) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let tokens = transformer(x) { i, h in if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h } }
        if layers.contains("tokens") { out["tokens"] = tokens }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = pool(tokens)
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = head(pooled) }
        }
        return out
    }

    /// The patch positions `table` (1, N, dim) for images of `height` x `width`.
    func resizedPositions(_ table: Tensor, height: Int, width: Int) -> Tensor {
        resizedPositionGrid(table, config: config, height: height, width: width)
    }

    /// Every block's attention probabilities (B, heads, N, N) for `images` (the class token, if
    /// any, is token 0).
    public func attentionMaps(_ images: Tensor) -> [Tensor] { transformer.attentionMaps(inputTokens(images)) }

    /// Class logits (B, numClasses).
    public func callAsFunction(_ images: Tensor) -> Tensor { hiddenOutputs(images, layers: ["logits"])["logits"]! }
}

/// The Vision Transformer of vit-pytorch 1.7.14 (Dosovitskiy et al. 2020, "An Image is Worth
/// 16x16 Words"): patch embedding (LayerNorm, Linear, LayerNorm), a class token, learned
/// positions, pre-norm Transformer with a final LayerNorm, cls or mean pooling, linear head.
/// Parameter names equal vit-pytorch's state_dict keys.
public final class ViT: Module, PatchTransformer {
    public let config: ViTConfig
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let transformer: Transformer
    public let mlpHead: Linear
    let embeddingDropout: Dropout?

    public init(_ config: ViTConfig, initializer: Initializer) {
        precondition(config.problem == nil, "ViT: \(config.problem!)")
        self.config = config
        patchNorm = LayerNorm(config.patchDim)
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        tokenNorm = LayerNorm(config.dim)
        posEmbedding = Parameter(initializer.embedding([1, config.patchCount + 1, config.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, config.dim]), decays: false)
        embeddingDropout = config.embeddingDropout > 0 ? Dropout(config.embeddingDropout, rng: initializer.dropoutStream) : nil
        transformer = Transformer(dim: config.dim, depth: config.depth, heads: config.heads, dimHead: config.dimHead,
                                  mlpDim: config.mlpDim, dropout: config.dropout, initializer: initializer)
        mlpHead = Linear(config.dim, config.numClasses, initializer: initializer)
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }

    public var head: Linear { mlpHead }

    public func patchPositions() -> Tensor { posEmbedding.value.slice(axis: 1, start: 1, length: config.patchCount) }

    /// The class token plus its position (vit-pytorch's pos_embedding[:, 0]).
    public func prefixTokens(batch: Int) -> Tensor? {
        (clsToken.value + posEmbedding.value.slice(axis: 1, start: 0, length: 1)).expanded(to: [batch, 1, config.dim])
    }

    public func inputTokens(_ images: Tensor) -> Tensor {
        let cls = clsToken.value.expanded(to: [images.shape[0], 1, config.dim])
        var table = posEmbedding.value
        if images.shape[2] != config.imageHeight || images.shape[3] != config.imageWidth {
            let grid = resizedPositions(patchPositions(), height: images.shape[2], width: images.shape[3])
            table = Tensor.concat([posEmbedding.value.slice(axis: 1, start: 0, length: 1), grid], axis: 1)
        }
        let x = Tensor.concat([cls, embedPatches(patchify(images))], axis: 1) + table
        return embeddingDropout.map { $0(x) } ?? x
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let b = images.shape[0]
        return outputs(from: inputTokens(images), layers: layers) { tokens in
            config.pool == .mean ? tokens.mean(axis: 1) : tokens.slice(axis: 1, start: 0, length: 1).reshaped([b, config.dim])
        }
    }
}

/// SimpleViT's variants in vit-pytorch 1.7.14, each a file there and an option here.
public struct SimpleViTOptions: Codable, Equatable, Sendable {
    /// Register tokens (Darcet et al. 2023, "Vision Transformers Need Registers",
    /// simple_vit_with_register_tokens.py): learned tokens without positions appended to the
    /// patches for the transformer and dropped after it.
    public var registerTokens = 0
    /// Query-key RMS normalisation (Dehghani et al. 2023, ViT-22B; simple_vit_with_qk_norm.py).
    public var qkNorm = false
    /// Patch dropout (Liu et al. 2022, "PatchDropout"; simple_vit_with_patch_dropout.py): in
    /// training, each image keeps a random max(1, int(n (1 - p))) of its patch tokens.
    public var patchDropout: Float = 0
    public init() {}
}

/// vit-pytorch 1.7.14's SimpleViT (Beyer et al. 2022, "Better plain ViT baselines"): fixed 2-D
/// sin-cos positions, no class token, mean pooling, no dropout, bias-free attention output; with
/// `options`, its register-token, QK-norm and patch-dropout variants.
public final class SimpleViT: Module, PatchTransformer {
    public let config: ViTConfig
    public let options: SimpleViTOptions
    public let patchNorm: LayerNorm
    public let patchLinear: Linear
    public let tokenNorm: LayerNorm
    public let transformer: Transformer
    public let linearHead: Linear
    public let registerTokens: Parameter?
    let positions: Tensor
    let dropoutStream: RandomStream

    public init(_ config: ViTConfig, options: SimpleViTOptions = SimpleViTOptions(), initializer: Initializer) {
        precondition(config.problem == nil, "SimpleViT: \(config.problem!)")
        self.config = config
        self.options = options
        patchNorm = LayerNorm(config.patchDim)
        patchLinear = Linear(config.patchDim, config.dim, initializer: initializer)
        tokenNorm = LayerNorm(config.dim)
        registerTokens = options.registerTokens > 0 ? Parameter(initializer.embedding([options.registerTokens, config.dim]), decays: false) : nil
        transformer = Transformer(dim: config.dim, depth: config.depth, heads: config.heads, dimHead: config.dimHead,
                                  mlpDim: config.mlpDim, simple: true, qkNorm: options.qkNorm, initializer: initializer)
        linearHead = Linear(config.dim, config.numClasses, initializer: initializer)
        positions = sinCosPositionEmbedding2D(height: config.imageHeight / config.patchHeight,
                                              width: config.imageWidth / config.patchWidth, dim: config.dim)
            .reshaped([1, config.patchCount, config.dim])
        dropoutStream = initializer.dropoutStream
    }

    public override var stateNames: [String: String] { patchEmbeddingStateNames }

    public var head: Linear { linearHead }

    public func patchPositions() -> Tensor { positions }

    public func inputTokens(_ images: Tensor) -> Tensor {
        embedPatches(patchify(images)) + resizedPositions(positions, height: images.shape[2], width: images.shape[3])
    }

    /// The transformer over tokens (B, n, D), the register tokens appended for it and dropped after.
    public func encodeTokens(_ tokens: Tensor) -> Tensor {
        guard let registerTokens else { return transformer(tokens) }
        let (b, n) = (tokens.shape[0], tokens.shape[1])
        let r = registerTokens.value.reshaped([1, options.registerTokens, config.dim]).expanded(to: [b, options.registerTokens, config.dim])
        return transformer(Tensor.concat([tokens, r], axis: 1)).slice(axis: 1, start: 0, length: n)
    }

    public func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor { transformer(tokens, context: context) }

    /// Patch dropout in training: each image keeps a random subset of its tokens, in their order.
    func droppingPatches(_ x: Tensor) -> Tensor {
        guard isTraining, options.patchDropout > 0 else { return x }
        let (b, n) = (x.shape[0], x.shape[1])
        let keep = Swift.max(1, Int(Double(n) * (1 - Double(options.patchDropout))))
        var kept: [Int] = []
        for _ in 0..<b { kept += dropoutStream.permutation(n).prefix(keep).sorted() }
        return x.gather(axis: 1, index: IndexTensor(shape: [b, keep], kept))
    }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let x = droppingPatches(inputTokens(images))
        guard let registerTokens else { return outputs(from: x, layers: layers) { $0.mean(axis: 1) } }
        // With registers: the blocks see them, the outputs do not.
        let (b, n) = (x.shape[0], x.shape[1])
        let r = registerTokens.value.reshaped([1, options.registerTokens, config.dim]).expanded(to: [b, options.registerTokens, config.dim])
        var out = outputs(from: Tensor.concat([x, r], axis: 1), layers: layers.union(["tokens"])) { $0.slice(axis: 1, start: 0, length: n).mean(axis: 1) }
        for key in Array(out.keys) where key == "tokens" || key.hasPrefix("blocks.") { out[key] = out[key]!.slice(axis: 1, start: 0, length: n) }
        if !layers.contains("tokens") { out["tokens"] = nil }
        return out
    }
}
