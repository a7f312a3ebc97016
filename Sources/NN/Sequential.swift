import TensorCore

/// A module that maps one tensor to one tensor, so that it can sit in a `Sequential`.
public protocol Layer: Module {
    func callAsFunction(_ x: Tensor) -> Tensor
}

extension Linear: Layer {}
extension LayerNorm: Layer {}
extension BatchNorm: Layer {}
extension Dropout: Layer {}
extension GELU: Layer {}

/// ReLU as a layer.
public final class ReLU: Module, Layer {
    public override init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x.relu() }
}

/// Divides each vector along `axis` by its L2 norm, floored at `eps` (torch's
/// F.normalize(x, dim=axis, eps=eps); the last axis by default).
public final class L2Norm: Module, Layer {
    public let eps: Float
    public let axis: Int
    public init(eps: Float = 1e-12, axis: Int = -1) { (self.eps, self.axis) = (eps, axis) }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let a = x.axis(axis)
        return a == x.rank - 1 ? x.l2Normalized(eps: eps) : x.transposed(a, -1).l2Normalized(eps: eps).transposed(a, -1)
    }
}

/// Layers applied in order, named by position as torch's nn.Sequential ("0.weight", "2.bias", ...),
/// so parameter-free layers keep the indices PyTorch gives them.
public final class Sequential: Module, Layer {
    public let layers: [any Layer]
    public init(_ layers: [any Layer]) { self.layers = layers }
    public override var stateNames: [String: String] { ["layers": ""] }
    public func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// A bias-free linear layer with weight normalisation (Salimans and Kingma 2016), as torch's
/// `weight_norm(nn.Linear(...))`: weight = g * v / ||v|| per output row. DINO fixes g at 1
/// (`norm_last_layer`), so only the direction is learned.
public final class WeightNormLinear: Module, Layer {
    public let weightG: Parameter
    public let weightV: Parameter
    /// Cut from the tape while true (DINO freezes its last layer for the first epoch).
    public var gradientsStopped = false

    public init(_ inFeatures: Int, _ outFeatures: Int, trainableNorm: Bool, initializer: Initializer) {
        weightV = Parameter(initializer.linear(inFeatures: inFeatures, outFeatures: outFeatures).weight)
        weightG = Parameter(.ones([outFeatures, 1]))
        weightG.isFrozen = !trainableNorm
    }

    public override var stateNames: [String: String] { ["weightG": "weight_g", "weightV": "weight_v"] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let v = gradientsStopped ? weightV.value.detached() : weightV.value
        let g = gradientsStopped ? weightG.value.detached() : weightG.value
        let weight = v / v.square().sum(axis: 1, keepDims: true).sqrt() * g
        return Tensor.linear(x, weight: weight)
    }
}
