#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An element-wise function and its derivative over any width of lanes (the kernels run
/// `WideVec`, the tails one lane of `Vec`; each lane is computed alike at every width). Kernels
/// generic over it are specialised per conforming type, so both inline into the loop (a closure
/// would not).
protocol VectorFunction {
    static func value<V: FloatLanes>(_ x: V) -> V
    static func derivative<V: FloatLanes>(_ x: V) -> V
}

/// PyTorch's exact GELU: 0.5 x (1 + erf(x / sqrt 2)); derivative Phi(x) + x phi(x).
enum ExactGELU: VectorFunction {
    @inline(__always) static func value<V: FloatLanes>(_ v: V) -> V { 0.5 * v * (1 + verf(v * GELUKernels.invSqrt2)) }
    @inline(__always) static func derivative<V: FloatLanes>(_ v: V) -> V {
        let cdf = 0.5 * (1 + verf(v * GELUKernels.invSqrt2))
        let pdf = GELUKernels.invSqrt2Pi * vexp(-0.5 * v * v)
        return vfma(v, pdf, cdf)
    }
}

/// GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
enum TanhGELU: VectorFunction {
    @inline(__always) static func value<V: FloatLanes>(_ v: V) -> V {
        0.5 * v * (1 + vtanh(GELUKernels.sqrt2OverPi * (v + 0.044715 * v * v * v)))
    }
    @inline(__always) static func derivative<V: FloatLanes>(_ v: V) -> V {
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

    /// GELU (erf, or with `approximateTanh` its tanh form) of n floats: out = gelu(x).
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int, approximateTanh: Bool) {
        if approximateTanh { forward(TanhGELU.self, out, x, n) } else { forward(ExactGELU.self, out, x, n) }
    }

    /// GELU's backward over n floats: dx += dout * gelu'(x), or with `overwrite` dx = dout * gelu'(x).
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ n: Int,
                                approximateTanh: Bool, overwrite: Bool = false) {
        if approximateTanh { backward(TanhGELU.self, dx, x, dout, n, overwrite: overwrite) }
        else { backward(ExactGELU.self, dx, x, dout, n, overwrite: overwrite) }
    }

    /// out = F(x) over n floats (x and out of length n). Two blocks of `WideVec` per iteration,
    /// so that their dependency chains overlap. Internal, so that every caller is specialised: the
    /// public entry points above name the function (VectorFunction's requirements are generic over
    /// the lanes, and an unspecialised call would run them lane by lane through witness tables).
    static func forward<F: VectorFunction>(_ f: F.Type, _ out: UnsafeMutablePointer<Float>,
                                           _ x: UnsafePointer<Float>, _ n: Int) {
        let w = WideVec.scalarCount
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 2 * w <= r.upperBound {
                let y0 = F.value(loadWide(x + i)), y1 = F.value(loadWide(x + i + w))
                store(y0, out + i); store(y1, out + i + w)
                i += 2 * w
            }
            while i + w <= r.upperBound { store(F.value(loadWide(x + i)), out + i); i += w }
            while i < r.upperBound { out[i] = F.value(Vec(repeating: x[i]))[0]; i += 1 }
        }
    }

    /// dx += dout * F'(x) over n floats; with `overwrite`, dx = dout * F'(x) (a fresh gradient
    /// buffer, not read: no zero-fill pass before it, no read of the zeros).
    static func backward<F: VectorFunction>(_ f: F.Type, _ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                            _ dout: UnsafePointer<Float>, _ n: Int, overwrite: Bool = false) {
        // dx at i from the derivative d of a block of values: written, or added with one rounding.
        @inline(__always) func put(_ d: WideVec, _ i: Int) {
            store(overwrite ? loadWide(dout + i) * d : vfma(loadWide(dout + i), d, loadWide(dx + i)), dx + i)
        }
        let w = WideVec.scalarCount
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 2 * w <= r.upperBound {
                let d0 = F.derivative(loadWide(x + i)), d1 = F.derivative(loadWide(x + i + w))
                put(d0, i); put(d1, i + w)
                i += 2 * w
            }
            while i + w <= r.upperBound { put(F.derivative(loadWide(x + i)), i); i += w }
            while i < r.upperBound {
                // One value as a lane of the loop above (a fused multiply-add when accumulating).
                let d = F.derivative(Vec(repeating: x[i])), g = Vec(repeating: dout[i])
                dx[i] = overwrite ? (g * d)[0] : vfma(g, d, Vec(repeating: dx[i]))[0]
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
        GELUKernels.forward(out.base, base, n, approximateTanh: approximateTanh)
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                let (gx, beta) = input.node!.gemmAccumulator()
                GELUKernels.backward(gx, input.base, g.base, n, approximateTanh: approximateTanh, overwrite: beta == 0)
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
                while i + WideVec.scalarCount <= outF {
                    let v = loadWide(z + i) + loadWide(bp + i)
                    store(v, z + i); store(F.value(v), y + i)
                    i += WideVec.scalarCount
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
                    while i + WideVec.scalarCount <= outF {
                        let v = loadWide(go + i) * F.derivative(loadWide(z + i))
                        store(v, d + i)
                        if let acc { store(loadWide(acc + i) + v, acc + i) }
                        i += WideVec.scalarCount
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
