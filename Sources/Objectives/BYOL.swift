import Encoders
import Foundation
import NN
import TensorCore

/// BYOL, Bootstrap Your Own Latent (Grill et al. 2020).
///
/// An online network (encoder, projector, predictor) predicts a target network's projection of
/// the other view; the target (encoder, projector) is the online network's EMA, its momentum going
/// from tau (0.99 for short runs, 0.996 for long ones) to 1 on a cosine. Projector and predictor
/// are Linear, BatchNorm, ReLU, Linear. The loss is the symmetric normalised MSE,
/// 2 - 2 cos(q(z_1), z'_2) + 2 - 2 cos(q(z_2), z'_1), averaged over the batch. Both views run
/// through each network as one batch (as byol-pytorch does), so batch-norm statistics span
/// 2B samples. Names follow byol-pytorch's state_dict.
public final class BYOL: Module, Objective {
    public struct Config: Sendable {
        public var hiddenLayer = "pooled"
        public var projectionSize = 256
        public var projectionHiddenSize = 4096
        public var momentum = 0.99
        public var momentumSchedule = MomentumSchedule.cosine
        public init() {}
    }

    public let config: Config
    public let online: any HiddenLayerEncoder
    public let projector: Sequential
    public let predictor: Sequential
    public let target: any HiddenLayerEncoder
    public let targetProjector: Sequential

    static func mlp(_ input: Int, _ hidden: Int, _ output: Int, _ initializer: Initializer) -> Sequential {
        Sequential([Linear(input, hidden, initializer: initializer), BatchNorm(hidden), ReLU(), Linear(hidden, output, initializer: initializer)])
    }

    /// `target` is a second encoder of the online one's architecture; its values are overwritten.
    public init(online: any HiddenLayerEncoder, target: any HiddenLayerEncoder, imageShape: [Int], config: Config, initializer: Initializer) {
        self.config = config
        self.online = online
        self.target = target
        let width = hiddenWidth(online, layer: config.hiddenLayer, imageShape: imageShape)
        projector = Self.mlp(width, config.projectionHiddenSize, config.projectionSize, initializer)
        targetProjector = Self.mlp(width, config.projectionHiddenSize, config.projectionSize, initializer)
        predictor = Self.mlp(config.projectionSize, config.projectionHiddenSize, config.projectionSize, initializer)
        super.init()
        Teacher.initialize(target, from: online)
        Teacher.initialize(targetProjector, from: projector)
    }

    public override var stateNames: [String: String] {
        ["online": "online_encoder.net", "projector": "online_encoder.projector", "predictor": "online_predictor",
         "target": "target_encoder.net", "targetProjector": "target_encoder.projector"]
    }

    public var trainedEncoder: any HiddenLayerEncoder { online }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        preconditionFailure("BYOL trains on two augmented views: call loss(views:)")
    }

    public func loss(views: [Tensor]) -> ObjectiveOutput {
        precondition(views.count == 2, "BYOL takes two views")
        let b = views[0].shape[0]
        let images = Tensor.concat(views, axis: 0)
        let predictions = predictor(projector(flatFeatures(online.hidden(images, layer: config.hiddenLayer))))
        let targets = Autograd.noGrad { targetProjector(flatFeatures(target.hidden(images, layer: config.hiddenLayer))) }
        func distance(_ p: Tensor, _ z: Tensor) -> Tensor { 2 - 2 * Tensor.cosineSimilarity(p, z, eps: 1e-12) }
        let p1 = predictions.slice(axis: 0, start: 0, length: b), p2 = predictions.slice(axis: 0, start: b, length: b)
        let z1 = targets.slice(axis: 0, start: 0, length: b), z2 = targets.slice(axis: 0, start: b, length: b)
        return ObjectiveOutput(loss: (distance(p1, z2) + distance(p2, z1)).mean())
    }

    public func afterStep(_ step: Int, of totalSteps: Int) {
        let m = Float(config.momentumSchedule.value(base: config.momentum, step: step, totalSteps: totalSteps))
        Teacher.update(target, from: online, momentum: m)
        Teacher.update(targetProjector, from: projector, momentum: m)
    }
}
