import Foundation
import NN
import TensorCore

/// An encoder that maps images (B, C, H, W) to named hidden outputs. BYOL, DINO, EsViT, the
/// linear probe, kNN and extraction use only this protocol; a recipe names the layer
/// (`hidden_layer: pooled`) as vit-pytorch's `hidden_layer` does.
public protocol HiddenLayerEncoder: Module {
    /// The names `hiddenOutputs` can return, e.g. "tokens", "pooled", "blocks.3", "logits".
    var hiddenLayerNames: [String] { get }
    /// Runs the encoder and returns the requested outputs (every name must be in `hiddenLayerNames`).
    func hiddenOutputs(_ images: Tensor, layers: Set<String>) -> [String: Tensor]
    /// The layer that makes "logits" from "pooled" (what a recipe may leave out when it loads
    /// weights trained for other classes), or nil.
    var classificationHead: Module? { get }
}

extension HiddenLayerEncoder {
    /// One hidden output.
    public func hidden(_ images: Tensor, layer: String) -> Tensor {
        precondition(hiddenLayerNames.contains(layer), "unknown hidden layer '\(layer)'; available: \(hiddenLayerNames.joined(separator: ", "))")
        return hiddenOutputs(images, layers: [layer])[layer]!
    }
}

/// A patch-based encoder, for the masked objectives: MAE encodes only visible patches, SimMIM
/// swaps in mask tokens, MPP corrupts patches, MP3 drops positions. Shapes: images (B, C, H, W),
/// patches (B, N, patchDim), tokens (B, n, dim).
public protocol PatchTokenEncoder: HiddenLayerEncoder {
    var patchCount: Int { get }
    var patchDim: Int { get }
    var dim: Int { get }
    /// Cuts images into flattened patches, as einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'.
    func patchify(_ images: Tensor) -> Tensor
    /// Embeds flattened patches (B, n, patchDim) into tokens (B, n, dim), without positions.
    func embedPatches(_ patches: Tensor) -> Tensor
    /// The position embedding of each patch (1, N, dim), in patch order.
    func patchPositions() -> Tensor
    /// Runs the transformer (and its final norm) over any set of tokens (B, n, dim).
    func encodeTokens(_ tokens: Tensor) -> Tensor
    /// Runs the transformer with queries from `tokens` (B, n, dim) and, in every block, keys and
    /// values from the fixed `context` (B, m, dim), then the final norm (MP3's encoder).
    func encodeTokens(_ tokens: Tensor, context: Tensor) -> Tensor
    /// Tokens that precede the patches, with their positions (the class token: (B, 1, dim)), or
    /// nil when the encoder has none.
    func prefixTokens(batch: Int) -> Tensor?
}

extension PatchTokenEncoder {
    public func prefixTokens(batch: Int) -> Tensor? { nil }
}

/// einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)': images (B, C, H, W) to (B, N, p1 * p2 * C).
public func patchify(_ images: Tensor, patchHeight: Int, patchWidth: Int) -> Tensor {
    let (b, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
    let (gh, gw) = (h / patchHeight, w / patchWidth)
    return images.reshaped([b, c, gh, patchHeight, gw, patchWidth])
        .permuted([0, 2, 4, 3, 5, 1])
        .reshaped([b, gh * gw, patchHeight * patchWidth * c])
}

/// SimpleViT's fixed 2-D sin-cos position embedding (h * w, dim), as vit-pytorch's posemb_sincos_2d:
/// per position [sin(x w), cos(x w), sin(y w), cos(y w)] with w_k = 10000^(-k / (dim/4 - 1)).
public func sinCosPositionEmbedding2D(height: Int, width: Int, dim: Int, temperature: Double = 10000) -> Tensor {
    precondition(dim % 4 == 0, "the sin-cos embedding needs a dimension divisible by 4, got \(dim)")
    let quarter = dim / 4
    var values = [Float](repeating: 0, count: height * width * dim)
    for y in 0..<height {
        for x in 0..<width {
            let row = (y * width + x) * dim
            for k in 0..<quarter {
                let omega = 1 / Foundation.pow(temperature, Double(k) / Double(max(quarter - 1, 1)))
                values[row + k] = Float(Foundation.sin(Double(x) * omega))
                values[row + quarter + k] = Float(Foundation.cos(Double(x) * omega))
                values[row + 2 * quarter + k] = Float(Foundation.sin(Double(y) * omega))
                values[row + 3 * quarter + k] = Float(Foundation.cos(Double(y) * omega))
            }
        }
    }
    return Tensor(shape: [height * width, dim], values)
}

/// A patch-position table (1, N, dim) for images of `height` x `width`: the table itself at the
/// configured size, else its grid resized bicubically (DINO's smaller local crops).
public func resizedPositionGrid(_ table: Tensor, config: ViTConfig, height: Int, width: Int) -> Tensor {
    precondition(height % config.patchHeight == 0 && width % config.patchWidth == 0,
                 "\(height)x\(width) images do not split into \(config.patchHeight)x\(config.patchWidth) patches")
    let grid = (config.imageHeight / config.patchHeight, config.imageWidth / config.patchWidth)
    let out = (height / config.patchHeight, width / config.patchWidth)
    if out == grid { return table }
    let resize = bicubicResizeMatrix(from: grid, to: out)
    return Tensor.matmul(resize, table.reshaped([grid.0 * grid.1, config.dim])).reshaped([1, out.0 * out.1, config.dim])
}

/// The matrix (outH * outW, inH * inW) that resizes a grid of position embeddings as torch's
/// `interpolate(mode='bicubic', align_corners=False, size=(outH, outW))` does (cubic convolution
/// with a = -0.75, border taps clamped): how DINO feeds crops smaller than the training size
/// through a ViT with learned positions. Applied as a product, so gradients reach the table.
public func bicubicResizeMatrix(from input: (Int, Int), to output: (Int, Int)) -> Tensor {
    func axis(_ n: Int, _ m: Int) -> [[Double]] {
        let scale = Double(n) / Double(m), a = -0.75
        func near(_ x: Double) -> Double { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Double) -> Double { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        return (0..<m).map { i in
            let real = scale * (Double(i) + 0.5) - 0.5
            let base = Int(real.rounded(.down))
            let t = real - Double(base)
            let weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
            var row = [Double](repeating: 0, count: n)
            for (k, w) in weights.enumerated() { row[Swift.min(Swift.max(base - 1 + k, 0), n - 1)] += w }
            return row
        }
    }
    let wy = axis(input.0, output.0), wx = axis(input.1, output.1)
    var values = [Float](repeating: 0, count: output.0 * output.1 * input.0 * input.1)
    let columns = input.0 * input.1
    for oy in 0..<output.0 {
        for ox in 0..<output.1 {
            for iy in 0..<input.0 where wy[oy][iy] != 0 {
                for ix in 0..<input.1 { values[(oy * output.1 + ox) * columns + iy * input.1 + ix] = Float(wy[oy][iy] * wx[ox][ix]) }
            }
        }
    }
    return Tensor(shape: [output.0 * output.1, columns], values)
}

/// The last hidden outputs of an encoder that ends in a map: "tokens" (B, N, C) as given, "pooled"
/// their mean over the positions, "logits" the head of it, each only when asked for.
public func meanPooledOutputs(_ tokens: Tensor, head: (Tensor) -> Tensor, layers: Set<String>, into out: inout [String: Tensor]) {
    if layers.contains("tokens") { out["tokens"] = tokens }
    guard layers.contains("pooled") || layers.contains("logits") else { return }
    let pooled = tokens.mean(axis: 1)
    out["pooled"] = pooled
    if layers.contains("logits") { out["logits"] = head(pooled) }
}
