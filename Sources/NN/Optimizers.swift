import Foundation
import TensorCore

/// Updates parameters from their gradients. State (moments, step count) can be saved as named
/// tensors and restored exactly.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    /// Decoupled (AdamW) or L2 (SGD, LARS) weight decay; schedules may change it between steps.
    var weightDecay: Float { get set }
    /// One update from the current gradients (frozen parameters and those without a gradient are skipped).
    func step()
    /// The state needed to resume exactly, by name ("exp_avg.3", "step", ...).
    func stateTensors() -> [String: Tensor]
    func loadState(_ state: [String: Tensor]) throws
}

extension Optimizer {
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

public enum OptimizerError: Error, CustomStringConvertible {
    case missingState(String)
    public var description: String {
        switch self { case .missingState(let k): return "optimizer state has no entry '\(k)'; the checkpoint does not match this optimizer" }
    }
}

/// Runs `body(p, g, count)` on every trainable parameter with a gradient.
@inline(__always)
func forEachGradient(_ params: [Parameter], _ body: (Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) {
    for (i, p) in params.enumerated() where !p.isFrozen {
        guard let g = p.grad else { continue }
        body(i, p.value.base, g.base, p.value.count)
    }
}

/// AdamW (Loshchilov and Hutter 2019) as torch.optim.AdamW: decoupled weight decay
/// p -= lr * wd * p, then Adam's bias-corrected step. Parameters with `decays == false` get no decay
/// unless `decayAll` (vit-pytorch recipes pass every parameter to one group).
public final class AdamW: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var weightDecay: Float
    public let beta1: Float, beta2: Float, eps: Float
    public let decayAll: Bool
    public private(set) var stepCount = 0
    var expAvg: [Storage]
    var expAvgSq: [Storage]

    public init(_ parameters: [Parameter], learningRate: Float, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8,
                weightDecay: Float = 0.01, decayAll: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        (beta1, beta2) = betas
        self.eps = eps
        self.decayAll = decayAll
        expAvg = parameters.map { Storage(count: $0.value.count) }
        expAvgSq = parameters.map { Storage(count: $0.value.count) }
    }

    public func step() {
        stepCount += 1
        let t = Float(stepCount)
        let correction1 = 1 - Foundation.pow(beta1, t), correction2 = 1 - Foundation.pow(beta2, t)
        let invSqrtCorrection2 = 1 / correction2.squareRoot()
        let (b1, b2, e) = (beta1, beta2, eps)
        forEachGradient(parameters) { i, p, g, n in
            let lr = learningRate * parameters[i].learningRateScale
            let stepSize = lr / correction1
            let decay: Float = decayAll || parameters[i].decays ? 1 - lr * weightDecay : 1
            let m = expAvg[i].base, v = expAvgSq[i].base
            // Eight lanes at a time with the scalar tail's operations in the scalar tail's order
            // (no fused multiply-adds): the same bits as one value at a time.
            let (vb1, vb2, c1, c2) = (Vec(repeating: b1), Vec(repeating: b2), Vec(repeating: 1 - b1), Vec(repeating: 1 - b2))
            let (vc, ve, vd, vs) = (Vec(repeating: invSqrtCorrection2), Vec(repeating: e), Vec(repeating: decay), Vec(repeating: stepSize))
            Parallel.forChunks(n, grain: 16384) { r in
                var k = r.lowerBound
                while k + 8 <= r.upperBound {
                    let gk = load(g + k)
                    let mk = vb1 * load(m + k) + c1 * gk
                    let vk = vb2 * load(v + k) + c2 * gk * gk
                    let denom = vsqrt(vk) * vc + ve
                    store(mk, m + k); store(vk, v + k)
                    store(load(p + k) * vd - vs * mk / denom, p + k)
                    k += 8
                }
                while k < r.upperBound {
                    m[k] = b1 * m[k] + (1 - b1) * g[k]
                    v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
                    let denom = v[k].squareRoot() * invSqrtCorrection2 + e
                    p[k] = p[k] * decay - stepSize * m[k] / denom
                    k += 1
                }
            }
        }
    }

    public func stateTensors() -> [String: Tensor] {
        var d: [String: Tensor] = ["step": Tensor(scalar: Float(stepCount))]
        for (i, p) in parameters.enumerated() {
            d["exp_avg.\(i)"] = Tensor(shape: p.shape, storage: expAvg[i])
            d["exp_avg_sq.\(i)"] = Tensor(shape: p.shape, storage: expAvgSq[i])
        }
        return d
    }

    public func loadState(_ state: [String: Tensor]) throws {
        guard let s = state["step"] else { throw OptimizerError.missingState("step") }
        for i in parameters.indices {
            guard let m = state["exp_avg.\(i)"], let v = state["exp_avg_sq.\(i)"] else { throw OptimizerError.missingState("exp_avg.\(i)") }
            expAvg[i].base.update(from: m.base, count: m.count)
            expAvgSq[i].base.update(from: v.base, count: v.count)
        }
        stepCount = Int(s.item)
    }
}

/// SGD with momentum and optional Nesterov, as torch.optim.SGD (weight decay added to the gradient).
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float, nesterov: Bool
    public var weightDecay: Float
    var buffers: [Storage?]

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        buffers = parameters.map { _ in nil }
    }

    public func step() {
        forEachGradient(parameters) { i, p, g, n in
            let wd: Float = parameters[i].decays ? weightDecay : 0
            let lr = learningRate * parameters[i].learningRateScale
            if momentum == 0 {
                for k in 0..<n { p[k] -= lr * (g[k] + wd * p[k]) }
                return
            }
            let fresh = buffers[i] == nil
            let buf = buffers[i] ?? Storage(count: n)
            buffers[i] = buf
            let b = buf.base
            for k in 0..<n {
                let d = g[k] + wd * p[k]
                b[k] = fresh ? d : momentum * b[k] + d
                p[k] -= lr * (nesterov ? d + momentum * b[k] : b[k])
            }
        }
    }

    public func stateTensors() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (i, b) in buffers.enumerated() { if let b { d["momentum_buffer.\(i)"] = Tensor(shape: parameters[i].shape, storage: b) } }
        return d
    }

    public func loadState(_ state: [String: Tensor]) throws {
        for i in parameters.indices {
            if let b = state["momentum_buffer.\(i)"] { buffers[i] = Storage(copying: b.base, count: b.count) } else { buffers[i] = nil }
        }
    }
}

/// LARS (You et al. 2017) as the official MAE linear probe uses it: for parameters that decay
/// (rank >= 2), weight decay and the trust ratio ||p|| / ||g + wd p|| scale the update; biases and
/// norms get plain momentum SGD.
public final class LARS: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float, trustCoefficient: Float
    public var weightDecay: Float
    var buffers: [Storage]

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0,
                trustCoefficient: Float = 0.001) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.trustCoefficient = trustCoefficient
        buffers = parameters.map { Storage(count: $0.value.count) }
    }

    public func step() {
        forEachGradient(parameters) { i, p, g, n in
            let adapt = parameters[i].decays
            var scale: Float = 1
            let wd: Float = adapt ? weightDecay : 0
            if adapt {
                var pn: Double = 0, un: Double = 0
                for k in 0..<n { pn += Double(p[k] * p[k]); let u = g[k] + wd * p[k]; un += Double(u * u) }
                if pn > 0 && un > 0 { scale = trustCoefficient * Float((pn / un).squareRoot()) }
            }
            let b = buffers[i].base
            let lr = learningRate * parameters[i].learningRateScale
            for k in 0..<n {
                b[k] = momentum * b[k] + (g[k] + wd * p[k]) * scale
                p[k] -= lr * b[k]
            }
        }
    }

    public func stateTensors() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: buffers.enumerated().map { ("mu.\($0.offset)", Tensor(shape: parameters[$0.offset].shape, storage: $0.element)) })
    }

    public func loadState(_ state: [String: Tensor]) throws {
        for i in parameters.indices {
            guard let b = state["mu.\(i)"] else { throw OptimizerError.missingState("mu.\(i)") }
            buffers[i].base.update(from: b.base, count: b.count)
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm` (torch's
/// clip_grad_norm_); returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var total: Double = 0
    for p in parameters where !p.isFrozen {
        guard let g = p.grad else { continue }
        total += Double(vdot(g.base, g.base, g.count))
    }
    let norm = Float(total.squareRoot())
    let scale = maxNorm / (norm + 1e-6)
    if scale < 1 {
        for p in parameters where !p.isFrozen {
            guard let g = p.grad else { continue }
            for k in 0..<g.count { g.base[k] *= scale }
        }
    }
    return norm
}

/// Linear warmup from `warmupStart` to `base` over `warmupSteps`, then a half cosine from `base`
/// to `final` by `totalSteps`, evaluated per iteration. Also serves EMA momentum (0.996 -> 1) and
/// weight-decay schedules.
public struct CosineSchedule: Codable, Equatable, Sendable {
    public var base: Double
    public var final: Double
    public var totalSteps: Int
    public var warmupSteps: Int
    public var warmupStart: Double

    public init(base: Double, final: Double = 0, totalSteps: Int, warmupSteps: Int = 0, warmupStart: Double = 0) {
        self.base = base
        self.final = final
        self.totalSteps = totalSteps
        self.warmupSteps = warmupSteps
        self.warmupStart = warmupStart
    }

    /// The value at iteration `step` (0-based). Warmup reaches `base` at its last step, as
    /// `base * (step + 1) / warmup` in the reference scripts.
    public func value(at step: Int) -> Double {
        if step < warmupSteps {
            return warmupStart + (base - warmupStart) * Double(step + 1) / Double(warmupSteps)
        }
        let progress = Double(step - warmupSteps) / Double(Swift.max(1, totalSteps - warmupSteps))
        return final + (base - final) * 0.5 * (1 + cos(Double.pi * Swift.min(progress, 1)))
    }
}
