import Foundation
import TensorCore
import XCTest

/// Central finite differences in Double on the naive reference, against the engine's analytic
/// Float32 backward.
///
/// The engine computes `engine(inputs)`; its output is reduced to a scalar with fixed random
/// weights w (loss = sum(out * w)) and back-propagated. The reference computes the same function
/// in Double; its gradient is (L(x + h e_j) - L(x - h e_j)) / 2h for every input element j.
/// Forward values must agree within `forwardTolerance`, gradients within `gradientTolerance`,
/// both relative to the largest magnitude of the compared quantity (plus a per-element term).
public func checkGradients(_ name: String, inputs: [Tensor], differentiable: [Bool]? = nil,
                    forwardTolerance: Double = 2e-5, gradientTolerance: Double = 1e-3, step: Double = 1e-6,
                    engine: ([Tensor]) -> Tensor, reference: ([DArray]) -> DArray,
                    file: StaticString = #filePath, line: UInt = #line) {
    let wrt = differentiable ?? inputs.map { _ in true }
    let leaves = zip(inputs, wrt).map { $1 ? $0.copy().requiringGrad() : $0.copy() }
    let out = engine(leaves)
    let rng = RandomStream(seed: 99, purpose: "gradcheck weights")
    let weights = Tensor.uniform(out.shape, low: -1, high: 1, rng: rng)
    let loss = (out * weights).sum()
    loss.backward()

    let dInputs = inputs.map(DArray.init)
    let dWeights = DArray(weights)
    let refOut = reference(dInputs)
    XCTAssertEqual(out.shape, refOut.shape, "\(name): output shape", file: file, line: line)
    guard out.shape == refOut.shape else { return }
    assertClose("\(name) forward", DArray(out).data, refOut.data, tolerance: forwardTolerance, file: file, line: line)

    func lossAt(_ xs: [DArray]) -> Double {
        let o = reference(xs)
        return zip(o.data, dWeights.data).reduce(0) { $0 + $1.0 * $1.1 }
    }
    for (i, input) in dInputs.enumerated() where wrt[i] {
        var numeric = [Double](repeating: 0, count: input.count)
        var xs = dInputs
        for j in 0..<input.count {
            let x0 = input.data[j]
            let h = step * Swift.max(1, Swift.abs(x0))
            xs[i].data[j] = x0 + h
            let lp = lossAt(xs)
            xs[i].data[j] = x0 - h
            let lm = lossAt(xs)
            xs[i].data[j] = x0
            numeric[j] = (lp - lm) / (2 * h)
        }
        guard let g = leaves[i].grad else {
            XCTFail("\(name): input \(i) received no gradient", file: file, line: line)
            continue
        }
        assertClose("\(name) d/dinput\(i)", g.scalars.map(Double.init), numeric, tolerance: gradientTolerance, file: file, line: line)
    }
}

/// |actual - expected| <= tolerance * (|expected| + max|expected|) element by element.
public func assertClose(_ what: String, _ actual: [Double], _ expected: [Double], tolerance: Double,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(what): sizes", file: file, line: line)
    let scale = expected.map { Swift.abs($0) }.filter { $0.isFinite }.max() ?? 0
    var worst = 0.0, worstIndex = -1
    for (k, (a, e)) in zip(actual, expected).enumerated() {
        if a == e { continue }  // also equal infinities
        let err = Swift.abs(a - e) / (Swift.abs(e) + Swift.max(scale, 1e-12))
        if !(err <= worst) { worst = err; worstIndex = k }
        if !err.isFinite { worst = .infinity; worstIndex = k; break }
    }
    if worst > tolerance {
        XCTFail("\(what): relative error \(worst) at \(worstIndex) (got \(actual[worstIndex]), expected \(expected[worstIndex])) exceeds \(tolerance)",
                file: file, line: line)
    }
}

public func randomTensor(_ shape: [Int], seed: UInt64, low: Float = -1, high: Float = 1) -> Tensor {
    Tensor.uniform(shape, low: low, high: high, rng: RandomStream(seed: seed, purpose: "test input"))
}
