import NN
import TensorCore

/// One tokens-to-token step: a soft split by nn.Unfold(kernel, stride, padding = stride // 2).
public struct T2TLayer: Codable, Equatable, Sendable {
    public var kernel: Int
    public var stride: Int
    public init(kernel: Int, stride: Int) { (self.kernel, self.stride) = (kernel, stride) }
    public var padding: Int { stride / 2 }
    /// vit-pytorch's conv_output_size.
    public func outputSide(_ side: Int) -> Int { (side - kernel + 2 * padding) / stride + 1 }
}

/// T2T-ViT's configuration: a ViTConfig's transformer (its patch size unused) and the T2T steps.
public struct T2TConfig: Codable, Equatable, Sendable {
    public var vit = ViTConfig()
    /// vit-pytorch's t2t_layers; its default ((7, 4), (3, 2), (3, 2)) leaves 2x2 tokens of a 28 px image.
    public var layers = [T2TLayer(kernel: 7, stride: 4), T2TLayer(kernel: 3, stride: 2), T2TLayer(kernel: 3, stride: 2)]
    public init() {}

    /// The side of the token grid after every step, for a square image of `side` pixels.
    public func gridSide(_ side: Int) -> Int { layers.reduce(side) { $1.outputSide($0) } }
    public var tokenCount: Int { let s = gridSide(vit.imageHeight); return s * s }
    /// The width of the tokens after the last soft split: C k1^2 k2^2 ...
    public var tokenWidth: Int { layers.reduce(vit.channels) { $0 * $1.kernel * $1.kernel } }

    public var problem: String? {
        if layers.isEmpty { return "T2T-ViT needs at least one t2t layer" }
        if vit.imageHeight != vit.imageWidth { return "T2T-ViT's refold ('b (h w) c -> b c h w') needs square images" }
        var side = vit.imageHeight
        for (i, layer) in layers.enumerated() {
            if side + 2 * layer.padding < layer.kernel { return "t2t layer \(i) (kernel \(layer.kernel)) is larger than its \(side)-pixel input" }
            side = layer.outputSide(side)
        }
        return nil
    }
}

/// The tokens-to-token embedding, as vit-pytorch's Sequential: per step (Identity or
/// RearrangeImage, Unfold, Rearrange, a one-head token transformer at the step's width, or
/// Identity after the last), then Linear(width, dim). The transformers sit at indices 4 i + 3.
public final class T2TEmbedding: Module {
    public let steps: [Transformer?]
    public let linear: Linear
    let layers: [T2TLayer]

    init(_ c: T2TConfig, initializer: Initializer) {
        layers = c.layers
        var width = c.vit.channels
        var steps: [Transformer?] = []
        for (i, layer) in c.layers.enumerated() {
            width *= layer.kernel * layer.kernel
            steps += [nil, nil, nil]
            steps.append(i == c.layers.count - 1 ? nil
                         : Transformer(dim: width, depth: 1, heads: 1, dimHead: width, mlpDim: width, dropout: c.vit.dropout, initializer: initializer))
        }
        self.steps = steps
        linear = Linear(width, c.vit.dim, initializer: initializer)
    }

    public override var stateNames: [String: String] { ["steps": "", "linear": "\(4 * layers.count)"] }

    /// Images (B, C, H, W) to tokens (B, n, dim).
    func callAsFunction(_ images: Tensor) -> Tensor {
        var x = images
        for (i, layer) in layers.enumerated() {
            if i > 0 {
                // RearrangeImage: 'b (h w) c -> b c h w', h = sqrt(n).
                let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
                var side = 1
                while (side + 1) * (side + 1) <= n { side += 1 }
                x = x.permuted([0, 2, 1]).reshaped([b, c, side, side])
            }
            x = x.unfold(kernel: layer.kernel, stride: layer.stride, padding: layer.padding).permuted([0, 2, 1])
            if let transformer = steps[4 * i + 3] { x = transformer(x) }
        }
        return linear(x)
    }
}

/// vit-pytorch 1.7.14's T2T-ViT (Yuan et al. 2021, "Tokens-to-Token ViT: Training Vision
/// Transformers from Scratch on ImageNet"): soft splits by overlapping unfolds with small token
/// transformers between them, then ViT's transformer (with its final norm), a class token, learned
/// positions, cls or mean pooling and a Linear head. Every token holds overlapping windows of its
/// neighbours' pixels, so the masked objectives do not apply.
public final class T2TViT: Module, HiddenLayerEncoder {
    public let config: T2TConfig
    public let toPatchEmbedding: T2TEmbedding
    public let posEmbedding: Parameter
    public let clsToken: Parameter
    public let transformer: Transformer
    public let mlpHead: Linear
    let embeddingDropout: Dropout?

    public init(_ config: T2TConfig, initializer: Initializer) {
        precondition(config.problem == nil, "T2TViT: \(config.problem!)")
        self.config = config
        let c = config.vit
        toPatchEmbedding = T2TEmbedding(config, initializer: initializer)
        posEmbedding = Parameter(initializer.embedding([1, config.tokenCount + 1, c.dim]), decays: false)
        clsToken = Parameter(initializer.embedding([1, 1, c.dim]), decays: false)
        embeddingDropout = c.embeddingDropout > 0 ? Dropout(c.embeddingDropout, rng: initializer.dropoutStream) : nil
        transformer = Transformer(dim: c.dim, depth: c.depth, heads: c.heads, dimHead: c.dimHead, mlpDim: c.mlpDim, dropout: c.dropout,
                                  initializer: initializer)
        mlpHead = Linear(c.dim, c.numClasses, initializer: initializer)
    }

    public var hiddenLayerNames: [String] { config.vit.hiddenLayerNames }
    public var classificationHead: Module? { mlpHead }

    public func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor] {
        let c = config.vit
        let b = images.shape[0]
        let tokens = toPatchEmbedding(images)
        var table = posEmbedding.value
        let side = config.gridSide(images.shape[2]), own = config.gridSide(c.imageHeight)
        if side != own {
            // Smaller images (DINO's local crops): the position grid resized bicubically.
            let grid = Tensor.matmul(bicubicResizeMatrix(from: (own, own), to: (side, side)),
                                     posEmbedding.value.slice(axis: 1, start: 1, length: own * own).reshaped([own * own, c.dim]))
            table = Tensor.concat([posEmbedding.value.slice(axis: 1, start: 0, length: 1), grid.reshaped([1, side * side, c.dim])], axis: 1)
        }
        var x = Tensor.concat([clsToken.value.expanded(to: [b, 1, c.dim]), tokens], axis: 1) + table
        if let embeddingDropout { x = embeddingDropout(x) }
        var out: [String: Tensor] = [:]
        let h = transformer(x) { i, h in if layers.contains("blocks.\(i)") { out["blocks.\(i)"] = h } }
        if layers.contains("tokens") { out["tokens"] = h }
        if layers.contains("pooled") || layers.contains("logits") {
            let pooled = c.pool == .mean ? h.mean(axis: 1) : h.slice(axis: 1, start: 0, length: 1).reshaped([b, c.dim])
            out["pooled"] = pooled
            if layers.contains("logits") { out["logits"] = mlpHead(pooled) }
        }
        return out
    }

    public func callAsFunction(_ images: Tensor) -> Tensor { hidden(images, layer: "logits") }
}
