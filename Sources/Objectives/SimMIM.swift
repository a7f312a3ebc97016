import Encoders
import NN
import TensorCore

/// SimMIM (Xie et al. 2021, "SimMIM: a Simple Framework for Masked Image Modeling"): replace the
/// embeddings of a random set of patches by a learned mask token (plus their positions), encode
/// every token, predict the raw pixels of the masked patches with one linear layer, and take the
/// L1 loss on them. Masks are drawn on a grid of `maskPatchSize` squares (official: 32 pixels for
/// 224-pixel images), each covering whole encoder patches. `vitPytorchScale` divides the loss by
/// the number of masked patches once more, as vit-pytorch 1.7.14 does (the parity mode); the
/// official loss is the plain mean over masked pixels.
public final class SimMIM: Module, Objective {
    public struct Config: Codable, Equatable, Sendable {
        public var maskingRatio = 0.6
        /// Side of the mask squares in pixels; nil means the encoder's patch size.
        public var maskPatchSize: Int?
        public var vitPytorchScale = false
        public init() {}
    }

    public let config: Config
    public let encoder: any PatchTokenEncoder
    public let maskToken: Parameter
    public let toPixels: Linear
    let maskStream: RandomStream
    /// Encoder patches per side of the image grid and per mask square.
    let grid: (rows: Int, columns: Int), cell: Int

    public init(encoder: any PatchTokenEncoder, config: Config, patchSize: Int, imageSize: (Int, Int), initializer: Initializer, maskSeed: UInt64) {
        self.config = config
        self.encoder = encoder
        maskToken = Parameter(initializer.embedding([encoder.dim]), decays: false)
        toPixels = Linear(encoder.dim, encoder.patchDim, initializer: initializer)
        maskStream = RandomStream(seed: maskSeed, purpose: "simmim mask")
        grid = (imageSize.0 / patchSize, imageSize.1 / patchSize)
        cell = (config.maskPatchSize ?? patchSize) / patchSize
    }

    public var trainedEncoder: any HiddenLayerEncoder { encoder }
    public var randomStreams: [String: RandomStream] { ["simmim mask": maskStream] }

    /// A random mask: round-down(ratio * squares) mask squares per image, expanded to the encoder
    /// patches they cover.
    public func randomMask(batch: Int, rng: RandomStream) -> PatchMask {
        let squares = (grid.rows / cell, grid.columns / cell)
        let count = squares.0 * squares.1
        let chosen = Int(config.maskingRatio * Double(count))
        let permutations: [[Int]] = (0..<batch).map { _ in
            let order = rng.permutation(count)
            var masked: [Int] = [], isMasked = [Bool](repeating: false, count: grid.rows * grid.columns)
            for square in order.prefix(chosen) {
                let (sr, sc) = (square / squares.1, square % squares.1)
                for dr in 0..<cell { for dc in 0..<cell {
                    let patch = (sr * cell + dr) * grid.columns + sc * cell + dc
                    masked.append(patch)
                    isMasked[patch] = true
                } }
            }
            return masked + (0..<(grid.rows * grid.columns)).filter { !isMasked[$0] }
        }
        return PatchMask(permutations: permutations, maskedCount: chosen * cell * cell)
    }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        ObjectiveOutput(loss: forward(images, mask: PatchMask.forStep(local: images.shape[0]) { randomMask(batch: $0, rng: maskStream) }).loss)
    }

    public func forward(_ images: Tensor, mask: PatchMask) -> (loss: Tensor, predicted: Tensor, target: Tensor) {
        let patches = encoder.patchify(images)
        let positions = encoder.patchPositions()
        let tokens = encoder.embedPatches(patches) + positions
        let maskTokens = maskToken.value + positions
        var flags = [Float](repeating: 0, count: mask.batch * mask.count)
        let m = mask.masked.shape[1]
        for b in 0..<mask.batch { for j in 0..<m { flags[b * mask.count + mask.masked.values[b * m + j]] = 1 } }
        let isMasked = Tensor(shape: [mask.batch, mask.count, 1], flags)
        let encoded = encoder.encodeTokens(Tensor.where(isMasked, maskTokens, tokens))
        let predicted = toPixels(encoded.gather(axis: 1, index: mask.masked))
        let target = patches.gather(axis: 1, index: mask.masked)
        let l1 = predicted.l1Loss(target)
        return (config.vitPytorchScale ? l1 / Float(m) : l1, predicted, target)
    }

    public func reconstructions(_ images: Tensor, rng: RandomStream) -> (masked: Tensor, reconstruction: Tensor)? {
        let mask = randomMask(batch: images.shape[0], rng: rng)
        return reconstructionGrid(images, encoder: encoder, masked: mask.masked, predicted: forward(images, mask: mask).predicted)
    }
}

/// The images with their masked patches blanked (0 in normalised units), and with those patches
/// replaced by the predicted ones (B, m, patchDim).
func reconstructionGrid(_ images: Tensor, encoder: any PatchTokenEncoder, masked: IndexTensor, predicted: Tensor)
    -> (masked: Tensor, reconstruction: Tensor) {
    let patches = encoder.patchify(images)
    return (unpatchify(patches.scatter(axis: 1, index: masked, source: Tensor.zeros(predicted.shape)), like: images, patchDim: encoder.patchDim),
            unpatchify(patches.scatter(axis: 1, index: masked, source: predicted), like: images, patchDim: encoder.patchDim))
}

/// The inverse of patchify for square patches: (B, N, p*p*C) to (B, C, H, W).
func unpatchify(_ patches: Tensor, like images: Tensor, patchDim: Int) -> Tensor {
    let (b, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
    let p = Int(Double(patchDim / c).squareRoot())
    // (B, h/p, w/p, p1, p2, C) -> (B, C, h/p, p1, w/p, p2)
    return patches.reshaped([b, h / p, w / p, p, p, c]).permuted([0, 5, 1, 3, 2, 4]).reshaped([b, c, h, w])
}
