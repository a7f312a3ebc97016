import Encoders
import NN
import TensorCore

/// Masked position prediction, MP3 (Zhai et al. 2022, "Position Prediction as an Effective
/// Pretraining Strategy"), as vit-pytorch 1.7.14's `MP3`: embed every patch without any position,
/// keep a random 25% of them as the context, run the encoder with queries from all tokens and
/// keys and values from the context only, and classify each token's position among the n patches
/// (LayerNorm, Linear) with cross-entropy.
public final class MP3: Module, Objective {
    public struct Config: Codable, Equatable, Sendable {
        public var maskingRatio = 0.75
        public init() {}
    }

    public let config: Config
    public let encoder: any PatchTokenEncoder
    public let headNorm: LayerNorm
    public let headLinear: Linear
    let maskStream: RandomStream

    public init(encoder: any PatchTokenEncoder, config: Config, initializer: Initializer, maskSeed: UInt64) {
        self.config = config
        self.encoder = encoder
        headNorm = LayerNorm(encoder.dim)
        headLinear = Linear(encoder.dim, encoder.patchCount, initializer: initializer)
        maskStream = RandomStream(seed: maskSeed, purpose: "mp3 mask")
    }

    public override var stateNames: [String: String] { ["headNorm": "mlp_head.0", "headLinear": "mlp_head.1"] }

    public var trainedEncoder: any HiddenLayerEncoder { encoder }
    public var randomStreams: [String: RandomStream] { ["mp3 mask": maskStream] }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        let mask = PatchMask.forStep(local: images.shape[0]) { PatchMask.random(batch: $0, count: encoder.patchCount, ratio: config.maskingRatio, rng: maskStream) }
        let (loss, accuracy) = forward(images, mask: mask)
        return ObjectiveOutput(loss: loss, diagnostics: ["position_accuracy": accuracy])
    }

    /// The loss and the fraction of positions predicted right.
    public func forward(_ images: Tensor, mask: PatchMask) -> (loss: Tensor, accuracy: Double) {
        let tokens = encoder.embedPatches(encoder.patchify(images))
        let context = tokens.gather(axis: 1, index: mask.visible)
        let encoded = encoder.encodeTokens(tokens, context: context)
        let n = encoder.patchCount, b = images.shape[0]
        let logits = headLinear(headNorm(encoded)).reshaped([b * n, n])
        let labels = (0..<(b * n)).map { $0 % n }
        let predicted = Autograd.noGrad { logits.topK(1).indices.values }
        let correct = zip(predicted, labels).filter { $0 == $1 }.count
        return (logits.crossEntropy(.labels(labels)), Double(correct) / Double(b * n))
    }
}
