import Foundation
import TensorCore

/// How a model's parameters start.
public enum InitScheme: String, Codable, Sendable {
    /// PyTorch's defaults, as vit-pytorch gets them: Linear weight and bias U(-1/sqrt(fan_in),
    /// 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt 5), LayerNorm 1 and 0, position embedding and
    /// class token N(0, 1).
    case pytorch
    /// The official MAE/DINO scheme: Linear weights xavier-uniform, biases 0, LayerNorm 1 and 0,
    /// position embedding and class token truncated normal with std 0.02.
    case official
}

/// Draws initial values; one stream ("init") per model seed.
public struct Initializer {
    public let scheme: InitScheme
    public let rng: RandomStream
    /// The stream every dropout layer of the model draws its masks from.
    public let dropoutStream: RandomStream

    public init(scheme: InitScheme = .pytorch, seed: UInt64) {
        self.scheme = scheme
        rng = RandomStream(seed: seed, purpose: "init")
        dropoutStream = RandomStream(seed: seed, purpose: "dropout")
    }

    /// Linear weight (out, in) and bias (out).
    public func linear(inFeatures: Int, outFeatures: Int) -> (weight: Tensor, bias: Tensor) {
        switch scheme {
        case .pytorch:
            let bound = 1 / Float(inFeatures).squareRoot()
            return (Tensor.uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: rng),
                    Tensor.uniform([outFeatures], low: -bound, high: bound, rng: rng))
        case .official:
            let bound = (6 / Float(inFeatures + outFeatures)).squareRoot()
            return (Tensor.uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: rng), Tensor.zeros([outFeatures]))
        }
    }

    /// Position embeddings and class tokens.
    public func embedding(_ shape: [Int]) -> Tensor {
        switch scheme {
        case .pytorch: return Tensor.randn(shape, rng: rng)
        case .official: return truncatedNormal(shape, std: 0.02)
        }
    }

    /// N(0, std) redrawn outside [-2 std, 2 std] (timm's trunc_normal_ with a = -2 std, b = 2 std).
    public func truncatedNormal(_ shape: [Int], std: Float) -> Tensor {
        let n = shape.reduce(1, *)
        let s = Storage(uninitializedCount: n)
        for i in 0..<n {
            var v = rng.nextNormal()
            while Swift.abs(v) > 2 { v = rng.nextNormal() }
            s.base[i] = v * std
        }
        return Tensor(shape: shape, storage: s)
    }
}
