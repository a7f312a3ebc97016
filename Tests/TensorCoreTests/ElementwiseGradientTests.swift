import Foundation
import TensorCore
import TestSupport
import XCTest

/// Finite-difference gradient checks (Double) for element-wise, broadcasting and scalar ops.
final class ElementwiseGradientTests: XCTestCase {
    func unaryCheck(_ name: String, low: Float = -2, high: Float = 2, _ op: @escaping (Tensor) -> Tensor,
                    _ ref: @escaping (Double) -> Double, file: StaticString = #filePath, line: UInt = #line) {
        checkGradients(name, inputs: [randomTensor([3, 7], seed: 11, low: low, high: high)],
                       engine: { op($0[0]) }, reference: { $0[0].map(ref) }, file: file, line: line)
    }

    func testUnaryMath() {
        unaryCheck("neg", { -$0 }, { -$0 })
        unaryCheck("exp", { $0.exp() }, { Foundation.exp($0) })
        unaryCheck("log", low: 0.2, high: 3, { $0.log() }, { Foundation.log($0) })
        unaryCheck("sqrt", low: 0.2, high: 3, { $0.sqrt() }, { $0.squareRoot() })
        unaryCheck("rsqrt", low: 0.2, high: 3, { $0.rsqrt() }, { 1 / $0.squareRoot() })
        unaryCheck("pow 3", { $0.pow(3) }, { Foundation.pow($0, 3) })
        unaryCheck("pow 0.5", low: 0.2, high: 3, { $0.pow(0.5) }, { Foundation.pow($0, 0.5) })
        unaryCheck("abs", { $0.abs() }, { Swift.abs($0) })
        unaryCheck("tanh", { $0.tanh() }, { Foundation.tanh($0) })
        unaryCheck("sigmoid", { $0.sigmoid() }, { 1 / (1 + Foundation.exp(-$0)) })
        unaryCheck("relu", { $0.relu() }, { Swift.max($0, 0) })
        unaryCheck("silu", low: -4, high: 4, { $0.silu() }, { $0 / (1 + Foundation.exp(-$0)) })
        unaryCheck("hardswish", low: -5, high: 5, { $0.hardswish() }, { $0 * Swift.min(Swift.max($0 + 3, 0), 6) / 6 })
        unaryCheck("square", { $0.square() }, { $0 * $0 })
        unaryCheck("clamp", { $0.clamp(min: -0.5, max: 0.7) }, { Swift.min(Swift.max($0, -0.5), 0.7) })
    }

    func testGELUExactAndTanh() {
        unaryCheck("gelu erf", low: -4, high: 4, { $0.gelu() }, { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) })
        unaryCheck("gelu tanh", low: -4, high: 4, { $0.gelu(approximateTanh: true) }, { x in
            0.5 * x * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
        })
    }

    func testScalarOps() {
        unaryCheck("x + s", { $0 + 1.5 }, { $0 + 1.5 })
        unaryCheck("s - x", { 2 - $0 }, { 2 - $0 })
        unaryCheck("x - s", { $0 - 2 }, { $0 - 2 })
        unaryCheck("x * s", { $0 * -3 }, { $0 * -3 })
        unaryCheck("x / s", { $0 / 4 }, { $0 / 4 })
        unaryCheck("s / x", low: 0.3, high: 2, { 2 / $0 }, { 2 / $0 })
    }

    func testBroadcastingBinaryOps() {
        let shapes: [([Int], [Int])] = [([2, 3, 4], [2, 3, 4]), ([2, 3, 4], [4]), ([2, 1, 4], [3, 1]),
                                         ([3, 1], [1, 5]), ([2, 3, 4], [1]), ([4], [2, 3, 4]), ([2, 3, 4], [2, 1, 4])]
        for (sa, sb) in shapes {
            let a = randomTensor(sa, seed: 1), b = randomTensor(sb, seed: 2, low: 0.5, high: 2)
            checkGradients("add \(sa) \(sb)", inputs: [a, b], engine: { $0[0] + $0[1] }, reference: { $0[0] + $0[1] })
            checkGradients("sub \(sa) \(sb)", inputs: [a, b], engine: { $0[0] - $0[1] }, reference: { $0[0] - $0[1] })
            checkGradients("mul \(sa) \(sb)", inputs: [a, b], engine: { $0[0] * $0[1] }, reference: { $0[0] * $0[1] })
            checkGradients("div \(sa) \(sb)", inputs: [a, b], engine: { $0[0] / $0[1] }, reference: { $0[0] / $0[1] })
        }
    }

    func testSameTensorOnBothSides() {
        checkGradients("x * x + x", inputs: [randomTensor([5], seed: 3)],
                       engine: { $0[0] * $0[0] + $0[0] }, reference: { $0[0] * $0[0] + $0[0] })
    }

    func testDropoutUsesItsStreamAndScales() {
        let x = randomTensor([4, 16], seed: 5)
        let p: Float = 0.25
        checkGradients("dropout", inputs: [x], engine: {
            $0[0].dropout(p, training: true, rng: RandomStream(seed: 7, purpose: "dropout"))
        }, reference: { xs in
            let rng = RandomStream(seed: 7, purpose: "dropout")
            return xs[0].map { v in rng.nextFloat() < p ? 0 : v / (1 - Double(p)) }
        })
        XCTAssertEqual(x.dropout(p, training: false, rng: RandomStream(seed: 7)).scalars, x.scalars)
    }

    func testSIMDMathAgainstLibm() {
        var worstExp: Float = 0, worstErf: Float = 0, worstTanh: Float = 0
        var v: Float = -20
        while v < 20 {
            let e = vexp(Vec(repeating: v))[0], ref = Float(Foundation.exp(Double(v)))
            worstExp = Swift.max(worstExp, Swift.abs(e - ref) / ref)
            worstErf = Swift.max(worstErf, Swift.abs(verf(Vec(repeating: v))[0] - Float(erf(Double(v)))))
            worstTanh = Swift.max(worstTanh, Swift.abs(vtanh(Vec(repeating: v))[0] - Float(Foundation.tanh(Double(v)))))
            v += 0.0137
        }
        XCTAssertLessThan(worstExp, 3e-7, "vexp relative error")
        XCTAssertLessThan(worstErf, 3e-7, "verf absolute error")
        XCTAssertLessThan(worstTanh, 3e-7, "vtanh absolute error")
        XCTAssertEqual(vexp(Vec(repeating: -.infinity))[0], 0)
        // vlog over positive normal floats, 1.2e-38 to 3e38, both sides of sqrt(1/2) and of 1.
        var worstLog: Float = 0
        var x: Float = .leastNormalMagnitude
        while x < 3e38 {
            for y in [x, x * 0.7071, x * 0.70711, x * 1.0001, x * 0.9999] where y >= .leastNormalMagnitude {
                let ref = Foundation.log(Double(y)), got = Double(vlog(Vec(repeating: y))[0])
                worstLog = Swift.max(worstLog, Float(Swift.abs(got - ref) / Swift.max(Swift.abs(ref), 1e-3)))
            }
            x *= 1.37
        }
        for y: Float in [1, 0.5, 2, 0.7071068, 0.70710677, 1e-7, 0.999_999_9, 1.000_000_1] {
            let ref = Foundation.log(Double(y)), got = Double(vlog(Vec(repeating: y))[0])
            XCTAssertLessThan(Swift.abs(got - ref), 2e-7 * Swift.max(Swift.abs(ref), 1), "vlog(\(y))")
        }
        XCTAssertLessThan(worstLog, 3e-7, "vlog relative error")
        XCTAssertEqual(vlog(Vec(repeating: 1))[0], 0)
    }

    /// The scalar operations, negation, exp and log run as loops of their own (sixteen or eight lanes
    /// at a time for the arithmetic ones): each value, in the vector loop and in the tail, has the
    /// bits of the same arithmetic done one Float at a time, forward and backward (including the
    /// sign of zero: -x of +0 is -0).
    func testScalarOpsMatchOneValueAtATimeBitForBit() {
        let n = 16 * 5 + 7
        var xs = randomTensor([n], seed: 21, low: -3, high: 3).scalars
        xs[0] = 0; xs[1] = -0.0; xs[17] = 0; xs[n - 1] = -0.0
        let ws = randomTensor([n], seed: 22).scalars
        let s: Float = 0.37
        let cases: [(String, (Tensor) -> Tensor, (Float) -> Float, (Float, Float) -> Float)] = [
            ("x + s", { $0 + s }, { $0 + s }, { _, _ in 1 }),
            ("x - s", { $0 - s }, { $0 - s }, { _, _ in 1 }),
            ("s - x", { s - $0 }, { s - $0 }, { _, _ in -1 }),
            ("x * s", { $0 * s }, { $0 * s }, { _, _ in s }),
            ("x / s", { $0 / s }, { $0 * (1 / s) }, { _, _ in 1 / s }),
            ("-x", { -$0 }, { -$0 }, { _, _ in -1 }),
            ("exp", { $0.exp() }, { Foundation.exp($0) }, { _, y in y }),
            ("log", { $0.log() }, { Foundation.log($0) }, { x, _ in 1 / x }),
        ]
        for (name, op, value, slope) in cases {
            let x = Tensor(shape: [n], xs, requiresGrad: true)
            let y = op(x)
            (y * Tensor(shape: [n], ws)).sum().backward()
            let grad = x.grad!.scalars
            for i in 0..<n {
                let v = value(xs[i])
                XCTAssertEqual(y.scalars[i].bitPattern, v.bitPattern, "\(name) forward at \(i) (x = \(xs[i]))")
                let g = Float(0) + ws[i] * slope(xs[i], v)
                XCTAssertEqual(grad[i].bitPattern, g.bitPattern, "\(name) backward at \(i) (x = \(xs[i]))")
            }
        }
    }

    /// The mean row entropy against a Double computation: rows of softmaxes with zeros, negatives
    /// and values below the smallest normal (which add nothing), rows whose length is not a
    /// multiple of eight, and NaN.
    func testMeanRowEntropy() {
        for k in [1, 7, 8, 29, 1024] {
            let rows = 37
            var p = softmaxRows(randomTensor([rows, k], seed: UInt64(k), low: -8, high: 8).scalars, k)
            p[0] = 0
            if k > 3 { p[k + 1] = -0.25; p[2 * k + 2] = Float.leastNormalMagnitude / 4 }
            var reference = 0.0
            for v in p where v >= Float.leastNormalMagnitude { reference -= Double(v) * Foundation.log(Double(v)) }
            reference /= Double(rows)
            let got = Tensor(shape: [rows, k], p).meanRowEntropy()
            XCTAssertEqual(got, reference, accuracy: 1e-6 * Swift.max(reference, 1), "k \(k)")
        }
        XCTAssertEqual(Tensor(shape: [2, 4], [0.25, 0.25, 0.25, 0.25, 1, 0, 0, 0]).meanRowEntropy(), Foundation.log(4.0) / 2, accuracy: 1e-7)
        XCTAssertTrue(Tensor(shape: [1, 9], [0.5, .nan, 0.5, 0, 0, 0, 0, 0, 0]).meanRowEntropy().isNaN)
        XCTAssertTrue(Tensor(shape: [1, 9], [0.5, 0, 0, 0, 0, 0, 0, 0, .nan]).meanRowEntropy().isNaN)
        XCTAssertEqual(Tensor(shape: [0, 4], []).meanRowEntropy(), 0)
    }

    private func softmaxRows(_ x: [Float], _ k: Int) -> [Float] {
        var out = x
        for r in 0..<(x.count / k) {
            let row = x[r * k..<(r + 1) * k], m = row.max()!
            let e = row.map { Foundation.exp(Double($0 - m)) }, s = e.reduce(0, +)
            for j in 0..<k { out[r * k + j] = Float(e[j] / s) }
        }
        return out
    }

    /// The vector math computes each lane alike at eight and sixteen lanes (WideVec is sixteen on
    /// AVX-512 builds), so a kernel's bits do not depend on the width it runs.
    func testSixteenLanesMatchEightBitForBit() {
        var values: [Float] = [0, -0, .infinity, -.infinity, 88.5, -87.5, -87.33654, 1e-30, -1e-30, 4, -4, 7.9053, -7.9053, 100, -100]
        var v: Float = -20
        while v < 20 { values.append(v); v += 0.0371 }
        while values.count % 16 != 0 { values.append(Float(values.count) * 0.01) }
        for start in stride(from: 0, to: values.count, by: 16) {
            let wide = SIMD16<Float>(values[start..<start + 16])
            let low = SIMD8<Float>(values[start..<start + 8]), high = SIMD8<Float>(values[start + 8..<start + 16])
            let positive = values[start..<start + 16].map { Swift.abs($0) + 1e-3 }
            let (pw, pl, ph) = (SIMD16<Float>(positive), SIMD8<Float>(positive[0..<8]), SIMD8<Float>(positive[8..<16]))
            for (name, w, l, h) in [("vexp", vexp(wide), vexp(low), vexp(high)), ("verf", verf(wide), verf(low), verf(high)),
                                    ("vtanh", vtanh(wide), vtanh(low), vtanh(high)), ("vlog", vlog(pw), vlog(pl), vlog(ph))] {
                for i in 0..<16 {
                    let eight = i < 8 ? l[i] : h[i - 8]
                    XCTAssertEqual(w[i].bitPattern, eight.bitPattern, "\(name)(\(values[start + i])) at sixteen lanes")
                }
            }
        }
    }

    /// GELU's kernels give each value the same bits in their vector loop as in their one-value
    /// tail (forward, and backward both writing and accumulating), whatever the width.
    func testGELUKernelLoopsMatchTheirTails() {
        let n = 16 * 5 + 7
        let x = randomTensor([n], seed: 9, low: -6, high: 6).scalars, dout = randomTensor([n], seed: 10).scalars
        let start = randomTensor([n], seed: 11).scalars
        for tanhForm in [false, true] {
            var all = [Float](repeating: 0, count: n), one = [Float](repeating: 0, count: 1)
            GELUKernels.forward(&all, x, n, approximateTanh: tanhForm)
            for i in 0..<n {
                GELUKernels.forward(&one, [x[i]], 1, approximateTanh: tanhForm)
                XCTAssertEqual(all[i].bitPattern, one[0].bitPattern, "gelu forward (tanh \(tanhForm)) at \(i)")
            }
            for overwrite in [false, true] {
                var dx = start
                GELUKernels.backward(&dx, x, dout, n, approximateTanh: tanhForm, overwrite: overwrite)
                for i in 0..<n {
                    var d1 = [start[i]]
                    GELUKernels.backward(&d1, [x[i]], [dout[i]], 1, approximateTanh: tanhForm, overwrite: overwrite)
                    XCTAssertEqual(dx[i].bitPattern, d1[0].bitPattern, "gelu backward (tanh \(tanhForm), overwrite \(overwrite)) at \(i)")
                }
            }
        }
    }

    func testGELUKernelMatchesNaiveReference() {
        let x = randomTensor([1000], seed: 8, low: -6, high: 6)
        for tanhForm in [false, true] {
            let y = x.gelu(approximateTanh: tanhForm).scalars
            let ref = x.scalars.map { GELUKernels.referenceForward($0, approximateTanh: tanhForm) }
            assertClose("gelu kernel vs libm (tanh \(tanhForm))", y.map(Double.init), ref.map(Double.init), tolerance: 1e-6)
        }
    }
}
