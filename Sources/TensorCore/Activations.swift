#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// GELU kernels, llm.c style: free functions over raw pointers, forward and backward, with the
/// naive libm references beside them for the tests.
public enum GELUKernels {
    static let invSqrt2: Float = 0.707_106_781_186_547_5
    static let invSqrt2Pi: Float = 0.398_942_280_401_432_7
    static let sqrt2OverPi: Float = 0.797_884_560_802_865_4

    /// out[i] = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's exact GELU), x and out of length n.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { 0.5 * v * (1 + verf(v * invSqrt2)) }
        Parallel.forChunks(n, grain: 16384) { r in
            forEachBlock(r, { i in store(f(load(x + i)), out + i) },
                         tail: { i in out[i] = f(Vec(repeating: x[i]))[0] })
        }
    }

    /// dx[i] += dout[i] * (Phi(x) + x phi(x)).
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ n: Int) {
        @inline(__always) func grad(_ v: Vec) -> Vec {
            let cdf = 0.5 * (1 + verf(v * invSqrt2))
            let pdf = invSqrt2Pi * vexp(-0.5 * v * v)
            return vfma(v, pdf, cdf)
        }
        Parallel.forChunks(n, grain: 16384) { r in
            forEachBlock(r, { i in store(vfma(load(dout + i), grad(load(x + i)), load(dx + i)), dx + i) },
                         tail: { i in dx[i] += dout[i] * grad(Vec(repeating: x[i]))[0] })
        }
    }

    /// The tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    public static func forwardTanh(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        @inline(__always) func f(_ v: Vec) -> Vec { 0.5 * v * (1 + vtanh(sqrt2OverPi * (v + 0.044715 * v * v * v))) }
        Parallel.forChunks(n, grain: 16384) { r in
            forEachBlock(r, { i in store(f(load(x + i)), out + i) },
                         tail: { i in out[i] = f(Vec(repeating: x[i]))[0] })
        }
    }

    public static func backwardTanh(_ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                                    _ dout: UnsafePointer<Float>, _ n: Int) {
        @inline(__always) func grad(_ v: Vec) -> Vec {
            let u = sqrt2OverPi * (v + 0.044715 * v * v * v)
            let t = vtanh(u)
            let du = sqrt2OverPi * (1 + 3 * 0.044715 * v * v)
            return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du
        }
        Parallel.forChunks(n, grain: 16384) { r in
            forEachBlock(r, { i in store(vfma(load(dout + i), grad(load(x + i)), load(dx + i)), dx + i) },
                         tail: { i in dx[i] += dout[i] * grad(Vec(repeating: x[i]))[0] })
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
        if approximateTanh { GELUKernels.forwardTanh(out.base, base, n) } else { GELUKernels.forward(out.base, base, n) }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                if approximateTanh { GELUKernels.backwardTanh(gx, input.base, g.base, n) }
                else { GELUKernels.backward(gx, input.base, g.base, n) }
            }
        }
    }
}
