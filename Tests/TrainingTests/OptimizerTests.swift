import Foundation
import NN
import TensorCore
import XCTest

final class OptimizerTests: XCTestCase {
    /// One parameter with a fixed gradient sequence, stepped by hand-written torch formulas.
    func testAdamWMatchesTorchFormula() {
        let p = Parameter(Tensor(shape: [2, 2], [0.5, -1, 2, 0.1]))
        let bias = Parameter(Tensor(shape: [2], [0.3, -0.3]))
        let opt = AdamW([p, bias], learningRate: 0.01, betas: (0.9, 0.999), eps: 1e-8, weightDecay: 0.1)
        var reference: [Double] = [0.5, -1, 2, 0.1]
        var m = [Double](repeating: 0, count: 4), v = m
        let grads: [[Float]] = [[0.1, -0.2, 0.3, 0.05], [-0.1, 0.4, 0.0, 0.2], [0.3, 0.3, -0.2, -0.1]]
        for (t, g) in grads.enumerated() {
            (p.value * Tensor(shape: [2, 2], g)).sum().backward()
            (bias.value * 2).sum().backward()
            opt.step()
            opt.zeroGrad()
            for k in 0..<4 {
                reference[k] *= 1 - 0.01 * 0.1
                m[k] = 0.9 * m[k] + 0.1 * Double(g[k])
                v[k] = 0.999 * v[k] + 0.001 * Double(g[k]) * Double(g[k])
                let mhat = m[k] / (1 - pow(0.9, Double(t + 1))), vhat = v[k] / (1 - pow(0.999, Double(t + 1)))
                reference[k] -= 0.01 * mhat / (vhat.squareRoot() + 1e-8)
            }
        }
        for k in 0..<4 { XCTAssertEqual(Double(p.value.scalars[k]), reference[k], accuracy: 1e-6) }
        // The bias does not decay: three Adam steps of a constant gradient move it by 3 lr.
        XCTAssertEqual(bias.value.scalars[0], 0.3 - 0.03, accuracy: 1e-5)
        XCTAssertEqual(opt.stepCount, 3)
    }

    func testOptimizerStateRoundTripsExactly() throws {
        func run(_ steps: Int, restoreAt: Int?) -> [Float] {
            let p = Parameter(Tensor(shape: [3], [1, 2, 3]))
            var opt = AdamW([p], learningRate: 0.1, weightDecay: 0.05)
            for s in 0..<steps {
                if s == restoreAt {
                    let saved = opt.stateTensors().mapValues { $0.copy() }
                    opt = AdamW([p], learningRate: 0.1, weightDecay: 0.05)
                    try? opt.loadState(saved)
                }
                (p.value * p.value).sum().backward()
                opt.step()
                opt.zeroGrad()
            }
            return p.value.scalars
        }
        XCTAssertEqual(run(6, restoreAt: 3), run(6, restoreAt: nil))
        XCTAssertThrowsError(try AdamW([Parameter(.zeros([1]))], learningRate: 1).loadState([:]))
    }

    func testSGDMomentumAndNesterov() {
        for nesterov in [false, true] {
            let p = Parameter(Tensor(shape: [1], [1]))
            let opt = SGD([p], learningRate: 0.1, momentum: 0.9, nesterov: nesterov)
            var x = 1.0, buf = 0.0
            for step in 0..<3 {
                (p.value * p.value).sum().backward()
                opt.step()
                opt.zeroGrad()
                let g = 2 * x
                buf = step == 0 ? g : 0.9 * buf + g
                x -= 0.1 * (nesterov ? g + 0.9 * buf : buf)
            }
            XCTAssertEqual(Double(p.value.item), x, accuracy: 1e-6)
        }
    }

    func testLARSScalesByTrustRatio() {
        let w = Parameter(Tensor(shape: [1, 2], [3, 4]))
        let opt = LARS([w], learningRate: 1, momentum: 0, weightDecay: 0, trustCoefficient: 0.001)
        (w.value * Tensor(shape: [1, 2], [0.6, 0.8])).sum().backward()
        opt.step()
        // ||w|| = 5, ||g|| = 1: the update is 0.001 * 5 * g.
        XCTAssertEqual(w.value.scalars[0], 3 - 0.003, accuracy: 1e-6)
        XCTAssertEqual(w.value.scalars[1], 4 - 0.004, accuracy: 1e-6)
    }

    func testLearningRateScalePerParameter() {
        let a = Parameter(Tensor(shape: [1], [1])), b = Parameter(Tensor(shape: [1], [1]))
        b.learningRateScale = 0.5
        let opt = SGD([a, b], learningRate: 0.1)
        (a.value + b.value).sum().backward()
        opt.step()
        XCTAssertEqual(a.value.item, 0.9, accuracy: 1e-7)
        XCTAssertEqual(b.value.item, 0.95, accuracy: 1e-7)
    }

    func testGradientClipping() {
        let p = Parameter(Tensor(shape: [2], [0, 0]))
        (p.value * Tensor(shape: [2], [3, 4])).sum().backward()
        XCTAssertEqual(clipGradientNorm([p], maxNorm: 1), 5, accuracy: 1e-5)
        XCTAssertEqual(p.grad!.scalars[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(clipGradientNorm([p], maxNorm: 10), 1, accuracy: 1e-5)
        XCTAssertEqual(p.grad!.scalars[1], 0.8, accuracy: 1e-5)
    }

    func testCosineScheduleWithWarmup() {
        let s = CosineSchedule(base: 1e-3, final: 0, totalSteps: 100, warmupSteps: 10)
        XCTAssertEqual(s.value(at: 0), 1e-4, accuracy: 1e-12)
        XCTAssertEqual(s.value(at: 9), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(s.value(at: 10), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(s.value(at: 55), 0.5e-3, accuracy: 1e-12)
        XCTAssertEqual(s.value(at: 100), 0, accuracy: 1e-12)
        let ema = CosineSchedule(base: 0.996, final: 1, totalSteps: 10)
        XCTAssertEqual(ema.value(at: 0), 0.996, accuracy: 1e-12)
        XCTAssertEqual(ema.value(at: 10), 1, accuracy: 1e-12)
    }

    func testModuleLoadReportsMissingAndMismatchedWeights() {
        let layer = Linear(3, 2, initializer: Initializer(seed: 0))
        XCTAssertEqual(layer.namedParameters().map(\.0), ["weight", "bias"])
        XCTAssertThrowsError(try layer.load(["weight": .zeros([2, 3])])) { XCTAssertTrue("\($0)".contains("'bias'")) }
        XCTAssertThrowsError(try layer.load(["weight": .zeros([3, 2]), "bias": .zeros([2])])) { XCTAssertTrue("\($0)".contains("[3, 2]")) }
        let unused = try? layer.load(["weight": .ones([2, 3]), "bias": .zeros([2]), "extra": .zeros([1])])
        XCTAssertEqual(unused, ["extra"])
        XCTAssertEqual(layer.weight.value.scalars, [Float](repeating: 1, count: 6))
    }

    func testInitSchemes() {
        let torchStyle = Initializer(scheme: .pytorch, seed: 0).linear(inFeatures: 100, outFeatures: 50)
        XCTAssertLessThanOrEqual(torchStyle.weight.scalars.map(Swift.abs).max()!, 0.1)
        let official = Initializer(scheme: .official, seed: 0)
        let xavier = official.linear(inFeatures: 100, outFeatures: 50)
        XCTAssertLessThanOrEqual(xavier.weight.scalars.map(Swift.abs).max()!, (6.0 / 150).squareRoot())
        XCTAssertEqual(xavier.bias.scalars, [Float](repeating: 0, count: 50))
        let tn = official.truncatedNormal([10000], std: 0.02).scalars
        XCTAssertLessThanOrEqual(tn.map(Swift.abs).max()!, 0.04)
        let std = (tn.map { Double($0 * $0) }.reduce(0, +) / 10000).squareRoot()
        XCTAssertEqual(std, 0.0176, accuracy: 0.001, "a normal truncated at 2 sigma has std 0.88 sigma")
    }
}
