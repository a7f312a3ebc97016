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
        if overwrite {
            Parallel.forChunks(n, grain: 16384) { r in
                var i = r.lowerBound
                while i + 32 <= r.upperBound {
                    let d0 = F.derivative(load(x + i)), d1 = F.derivative(load(x + i + 8))
                    let d2 = F.derivative(load(x + i + 16)), d3 = F.derivative(load(x + i + 24))
                    store(load(dout + i) * d0, dx + i); store(load(dout + i + 8) * d1, dx + i + 8)
                    store(load(dout + i + 16) * d2, dx + i + 16); store(load(dout + i + 24) * d3, dx + i + 24)
                    i += 32
                }
                while i + 8 <= r.upperBound { store(load(dout + i) * F.derivative(load(x + i)), dx + i); i += 8 }
                while i < r.upperBound { dx[i] = dout[i] * F.derivative(Vec(repeating: x[i]))[0]; i += 1 }
            }
            return
        }
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 32 <= r.upperBound {
                let d0 = F.derivative(load(x + i)), d1 = F.derivative(load(x + i + 8))
                let d2 = F.derivative(load(x + i + 16)), d3 = F.derivative(load(x + i + 24))
                store(vfma(load(dout + i), d0, load(dx + i)), dx + i)
                store(vfma(load(dout + i + 8), d1, load(dx + i + 8)), dx + i + 8)
                store(vfma(load(dout + i + 16), d2, load(dx + i + 16)), dx + i + 16)
                store(vfma(load(dout + i + 24), d3, load(dx + i + 24)), dx + i + 24)
                i += 32
            }
            while i + 8 <= r.upperBound { store(vfma(load(dout + i), F.derivative(load(x + i)), load(dx + i)), dx + i); i += 8 }
            while i < r.upperBound { dx[i] += dout[i] * F.derivative(Vec(repeating: x[i]))[0]; i += 1 }
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
