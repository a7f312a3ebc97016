import Encoders
import NN
import TensorCore

/// Masked autoencoders (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"), as
/// vit-pytorch 1.7.14's `MAE`: mask a random 75% of the patches per image, encode only the
/// visible ones (with their positions), project to the decoder width, put a shared learned mask
/// token (plus the decoder's own position embedding) at every masked position, run a small
/// Transformer decoder, project the masked tokens to pixels, and take the mean squared error on
/// the masked patches only. `normPixLoss` is the official code's per-patch normalised target
/// ((x - mean) / sqrt(var + 1e-6), unbiased variance), off in vit-pytorch.
public final class MAE: Module, Objective {
    public struct Config: Codable, Equatable, Sendable {
        public var maskingRatio = 0.75
        public var decoderDim = 128
        public var decoderDepth = 2
        public var decoderHeads = 4
        public var decoderDimHead = 32
        public var normPixLoss = false
        public init() {}
    }

    public let config: Config
    public let encoder: any PatchTokenEncoder
    /// nn.Linear(encoder dim, decoder dim), or nothing when they are equal (nn.Identity).
    public let encToDec: Linear?
    public let maskToken: Parameter
    public let decoder: Transformer
    /// The decoder's positions: num_patches + 1 rows, because vit-pytorch sizes the table from the
    /// encoder's pos_embedding (which has the class token's row); the last row is never used.
    public let decoderPosEmb: Embedding
    public let toPixels: Linear
    let maskStream: RandomStream

    public init(encoder: any PatchTokenEncoder, config: Config, initializer: Initializer, maskSeed: UInt64) {
        self.config = config
        self.encoder = encoder
        encToDec = encoder.dim == config.decoderDim ? nil : Linear(encoder.dim, config.decoderDim, initializer: initializer)
        maskToken = Parameter(initializer.embedding([config.decoderDim]), decays: false)
        decoder = Transformer(dim: config.decoderDim, depth: config.decoderDepth, heads: config.decoderHeads,
                              dimHead: config.decoderDimHead, mlpDim: config.decoderDim * 4, initializer: initializer)
        decoderPosEmb = Embedding(encoder.patchCount + 1, config.decoderDim, initializer: initializer)
        toPixels = Linear(config.decoderDim, encoder.patchDim, initializer: initializer)
        maskStream = RandomStream(seed: maskSeed, purpose: "mae mask")
    }

    public var trainedEncoder: any HiddenLayerEncoder { encoder }
    public var randomStreams: [String: RandomStream] { ["mae mask": maskStream] }

    /// Blanks the masked patches (0 in normalised units), and fills them with the prediction.
    /// With norm_pix_loss the prediction is in per-patch normalised units and is shown as it is
    /// (each masked patch's own mean and spread are not known to the model).
    public func reconstructions(_ images: Tensor, rng: RandomStream) -> (masked: Tensor, reconstruction: Tensor)? {
        let mask = PatchMask.random(batch: images.shape[0], count: encoder.patchCount, ratio: config.maskingRatio, rng: rng)
        return reconstructionGrid(images, encoder: encoder, masked: mask.masked, predicted: forward(images, mask: mask).predicted)
    }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        let mask = PatchMask.forStep(local: images.shape[0]) { PatchMask.random(batch: $0, count: encoder.patchCount, ratio: config.maskingRatio, rng: maskStream) }
        return ObjectiveOutput(loss: forward(images, mask: mask).loss)
    }

    /// The loss with a given mask, and the predicted pixels of the masked patches (B, m, patchDim).
    public func forward(_ images: Tensor, mask: PatchMask) -> (loss: Tensor, predicted: Tensor, target: Tensor) {
        let patches = encoder.patchify(images)
        let tokens = encoder.embedPatches(patches) + encoder.patchPositions()
        let visible = tokens.gather(axis: 1, index: mask.visible)
        let encoded = encoder.encodeTokens(visible)
        let decoderTokens = encToDec.map { $0(encoded) } ?? encoded
        let positions = decoderPosEmb.weight.value
        let visibleDecoder = decoderTokens + embeddingLookup(positions, mask.visible)
        let maskTokens = maskToken.value + embeddingLookup(positions, mask.masked)
        let all = Tensor.zeros([mask.batch, mask.count, config.decoderDim])
            .scatter(axis: 1, index: mask.visible, source: visibleDecoder)
            .scatter(axis: 1, index: mask.masked, source: maskTokens)
        let decoded = decoder(all)
        let predicted = toPixels(decoded.gather(axis: 1, index: mask.masked))
        var target = patches.gather(axis: 1, index: mask.masked)
        if config.normPixLoss {
            let mean = target.mean(axes: [-1], keepDims: true)
            let variance = (target - mean).square().sum(axes: [-1], keepDims: true) / Float(target.shape[2] - 1)
            target = ((target - mean) * (variance + 1e-6).rsqrt()).detached()
        }
        return (predicted.mseLoss(target), predicted, target)
    }
}
