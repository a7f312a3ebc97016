#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An element-wise function and its derivative over eight lanes. Kernels generic over it are
/// specialised per conforming type, so both inline into the loop (a closure would not).
public protocol VectorFunction {
    static func value(_ x: Vec) -> Vec
    static func derivative(_ x: Vec) -> Vec
}

/// PyTorch's exact GELU: 0.5 x (1 + erf(x / sqrt 2)); derivative Phi(x) + x phi(x).
public enum ExactGELU: VectorFunction {
    @inline(__always) public static func value(_ v: Vec) -> Vec { 0.5 * v * (1 + verf(v * GELUKernels.invSqrt2)) }
    @inline(__always) public static func derivative(_ v: Vec) -> Vec {
        let cdf = 0.5 * (1 + verf(v * GELUKernels.invSqrt2))
        let pdf = GELUKernels.invSqrt2Pi * vexp(-0.5 * v * v)
        return vfma(v, pdf, cdf)
    }
}

/// GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
public enum TanhGELU: VectorFunction {
    @inline(__always) public static func value(_ v: Vec) -> Vec {
        0.5 * v * (1 + vtanh(GELUKernels.sqrt2OverPi * (v + 0.044715 * v * v * v)))
    }
    @inline(__always) public static func derivative(_ v: Vec) -> Vec {
        let t = vtanh(GELUKernels.sqrt2OverPi * (v + 0.044715 * v * v * v))
        let du = GELUKernels.sqrt2OverPi * (1 + 3 * 0.044715 * v * v)
        return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du
    }
}

/// GELU kernels, llm.c style: free functions over raw pointers, forward and backward, with the
/// naive libm reference beside them for the tests.
public enum GELUKernels {
    static let invSqrt2: Float = 0.707_106_781_186_547_5
    static let invSqrt2Pi: Float = 0.398_942_280_401_432_7
    static let sqrt2OverPi: Float = 0.797_884_560_802_865_4

    /// out = F(x) over n floats (x and out of length n). Four blocks of eight per iteration, so
    /// that their dependency chains overlap.
    public static func forward<F: VectorFunction>(_ f: F.Type, _ out: UnsafeMutablePointer<Float>,
                                                  _ x: UnsafePointer<Float>, _ n: Int) {
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 32 <= r.upperBound {
                let y0 = F.value(load(x + i)), y1 = F.value(load(x + i + 8))
                let y2 = F.value(load(x + i + 16)), y3 = F.value(load(x + i + 24))
                store(y0, out + i); store(y1, out + i + 8); store(y2, out + i + 16); store(y3, out + i + 24)
                i += 32
            }
            while i + 8 <= r.upperBound { store(F.value(load(x + i)), out + i); i += 8 }
            while i < r.upperBound { out[i] = F.value(Vec(repeating: x[i]))[0]; i += 1 }
        }
    }

    /// dx += dout * F'(x) over n floats; with `overwrite`, dx = dout * F'(x) (a fresh gradient
    /// buffer, not read: no zero-fill pass before it, no read of the zeros).
    public static func backward<F: VectorFunction>(_ f: F.Type, _ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                                   _ dout: UnsafePointer<Float>, _ n: Int, overwrite: Bool = false) {
        // dx at i from the derivative d of eight values: written, or added with one rounding.
        @inline(__always) func put(_ d: Vec, _ i: Int) {
            store(overwrite ? load(dout + i) * d : vfma(load(dout + i), d, load(dx + i)), dx + i)
        }
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 32 <= r.upperBound {
                let d0 = F.derivative(load(x + i)), d1 = F.derivative(load(x + i + 8))
                let d2 = F.derivative(load(x + i + 16)), d3 = F.derivative(load(x + i + 24))
                put(d0, i); put(d1, i + 8); put(d2, i + 16); put(d3, i + 24)
                i += 32
            }
            while i + 8 <= r.upperBound { put(F.derivative(load(x + i)), i); i += 8 }
            while i < r.upperBound {
                let v = dout[i] * F.derivative(Vec(repeating: x[i]))[0]
                if overwrite { dx[i] = v } else { dx[i] += v }
                i += 1
            }
        }
    }

    /// Naive references with libm (erff, tanhf), for the tests.
    public static func referenceForward(_ x: Float, approximateTanh: Bool) -> Float {
        approximateTanh ? 0.5 * x * (1 + tanhf(sqrt2OverPi * (x + 0.044715 * x * x * x)))
                        : 0.5 * x * (1 + erff(x * invSqrt2))
    }
}

extension Tensor {
    /// GELU: PyTorch's exact erf form, or its tanh approximation.
    public func gelu(approximateTanh: Bool = false) -> Tensor {
        let n = count
        let out = Storage(uninitializedCount: n)
        if approximateTanh { GELUKernels.forward(TanhGELU.self, out.base, base, n) } else { GELUKernels.forward(ExactGELU.self, out.base, base, n) }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                let (gx, beta) = input.node!.gemmAccumulator()
                if approximateTanh { GELUKernels.backward(TanhGELU.self, gx, input.base, g.base, n, overwrite: beta == 0) }
                else { GELUKernels.backward(ExactGELU.self, gx, input.base, g.base, n, overwrite: beta == 0) }
            }
        }
    }
}

extension Tensor {
    /// gelu(x W^T + b): a linear layer and its GELU as one op. The bias is added and the GELU
    /// taken in one pass after the product (the separate ops make two); backward computes the
    /// pre-activation's gradient into a fresh buffer and the bias gradient's column sums in the
    /// same pass (the separate ops read it twice). Bit-identical to
    /// `Tensor.linear(x, weight:, bias:).gelu(approximateTanh:)`: the same expressions, and the
    /// bias gradient summed in the same chunks and order as `linear`'s.
    public static func linearGELU(_ x: Tensor, weight: Tensor, bias: Tensor, approximateTanh: Bool = false) -> Tensor {
        approximateTanh ? linearActivation(TanhGELU.self, x, weight: weight, bias: bias)
                        : linearActivation(ExactGELU.self, x, weight: weight, bias: bias)
    }

    static func linearActivation<F: VectorFunction>(_ f: F.Type, _ x: Tensor, weight: Tensor, bias: Tensor) -> Tensor {
        let inF = weight.shape[1], outF = weight.shape[0]
        precondition(weight.rank == 2 && x.shape.last == inF && bias.shape == [outF],
                     "linearGELU: input \(x.shape), weight \(weight.shape) and bias \(bias.shape) do not fit")
        let rows = x.count / Swift.max(inF, 1)
        let pre = Storage(uninitializedCount: rows * outF), out = Storage(uninitializedCount: rows * outF)
        sgemm(false, true, rows, outF, inF, 1, x.base, inF, weight.base, inF, 0, pre.base, outF)
        let (bp, zp, yp) = (UnsafePointer(bias.base), pre.base, out.base)
        Parallel.forChunks(rows, grain: Swift.max(1, 16384 / Swift.max(outF, 1))) { r in
            for row in r {
                let z = zp + row * outF, y = yp + row * outF
                var i = 0
                while i + 8 <= outF {
                    let v = load(z + i) + load(bp + i)
                    store(v, z + i); store(F.value(v), y + i)
                    i += 8
                }
                while i < outF { z[i] += bp[i]; y[i] = F.value(Vec(repeating: z[i]))[0]; i += 1 }
            }
        }
        return makeResult(shape: Array(x.shape.dropLast()) + [outF], storage: out, inputs: [x, weight, bias]) {
            { g in
                // dZ = dY * F'(Z), with the bias gradient's column sums taken on the way (in
                // `columnSums`' chunks and order) when the bias needs one.
                let dz = Storage(uninitializedCount: rows * outF)
                let (gp, dp, pp) = (UnsafePointer(g.base), dz.base, UnsafePointer(pre.base))
                func gradientRow(_ row: Int, _ acc: UnsafeMutablePointer<Float>?) {
                    let z = pp + row * outF, go = gp + row * outF, d = dp + row * outF
                    var i = 0
                    while i + 8 <= outF {
                        let v = load(go + i) * F.derivative(load(z + i))
                        store(v, d + i)
                        if let acc { store(load(acc + i) + v, acc + i) }
                        i += 8
                    }
                    while i < outF {
                        let v = go[i] * F.derivative(Vec(repeating: z[i]))[0]
                        d[i] = v
                        acc?[i] += v
                        i += 1
                    }
                }
                if let nb = bias.node {
                    ColumnSums.run(rows: rows, cols: outF, into: nb.accumulator()) { row, acc in gradientRow(row, acc) }
                } else {
                    Parallel.forChunks(rows, grain: Swift.max(1, 32768 / Swift.max(outF, 1))) { r in for row in r { gradientRow(row, nil) } }
                }
                linearProductGradients(dp, x: x, weight: weight, rows: rows, inF: inF, outF: outF)
            }
        }
    }
}
