/// Softmax and log-softmax over the last axis, llm.c style.
public enum SoftmaxKernels {
    /// out (rows, n) = softmax of x (rows, n) along each row.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, n: Int) {
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
            for row in r { softmaxRow(out + row * n, x + row * n, n) }
        }
    }

    /// One row: max, exponentials, normalisation.
    @inline(__always)
    public static func softmaxRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        let m = vmax(x, n)
        if m == -.infinity {  // every entry masked: a uniform row, as no finite value is preferred
            for i in 0..<n { y[i] = 1 / Float(n) }
            return
        }
        let mv = Vec(repeating: m)
        var a0 = Vec(), a1 = Vec()
        var i = 0
        while i + 16 <= n {
            let e0 = vexp(load(x + i) - mv), e1 = vexp(load(x + i + 8) - mv)
            store(e0, y + i); store(e1, y + i + 8)
            a0 += e0; a1 += e1
            i += 16
        }
        var total = (a0 + a1).sum()
        while i < n { y[i] = sexp(x[i] - m); total += y[i]; i += 1 }
        let inv = 1 / total
        let iv = Vec(repeating: inv)
        i = 0
        while i + 8 <= n { store(load(y + i) * iv, y + i); i += 8 }
        while i < n { y[i] *= inv; i += 1 }
    }

    /// dx += y * (dy - sum(dy * y)) per row.
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>,
                                _ dy: UnsafePointer<Float>, rows: Int, n: Int) {
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
            for row in r {
                let yr = y + row * n, gr = dy + row * n, d = dx + row * n
                let dot = vdot(yr, gr, n)
                var i = 0
                while i + 8 <= n { store(load(d + i) + load(yr + i) * (load(gr + i) - dot), d + i); i += 8 }
                while i < n { d[i] += yr[i] * (gr[i] - dot); i += 1 }
            }
        }
    }

    /// out = x - max - log(sum(exp(x - max))) per row.
    public static func logForward(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, n: Int) {
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
            for row in r {
                let xr = x + row * n, y = out + row * n
                let m = vmax(xr, n)
                var acc = Vec()
                var i = 0
                while i + 8 <= n { acc += vexp(load(xr + i) - m); i += 8 }
                var s = acc.sum()
                while i < n { s += sexp(xr[i] - m); i += 1 }
                let shift = m + libmLog(s)
                for j in 0..<n { y[j] = xr[j] - shift }
            }
        }
    }

    /// dx += dy - exp(y) * sum(dy) per row (y is the log-softmax output).
    public static func logBackward(_ dx: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>,
                                   _ dy: UnsafePointer<Float>, rows: Int, n: Int) {
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
            for row in r {
                let yr = y + row * n, gr = dy + row * n, d = dx + row * n
                let s = vsum(gr, n)
                var i = 0
                while i + 8 <= n { store(load(d + i) + load(gr + i) - vexp(load(yr + i)) * s, d + i); i += 8 }
                while i < n { d[i] += gr[i] - sexp(yr[i]) * s; i += 1 }
            }
        }
    }
}

extension Tensor {
    /// Softmax over the last axis.
    public func softmax() -> Tensor { rowwise(SoftmaxKernels.forward, SoftmaxKernels.backward) }

    /// Log-softmax over the last axis.
    public func logSoftmax() -> Tensor { rowwise(SoftmaxKernels.logForward, SoftmaxKernels.logBackward) }

    /// A last-axis op whose backward needs only its output: forward(out, x, rows, n) and
    /// backward(dx, out, dout, rows, n).
    @inline(__always)
    func rowwise(_ forward: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int, Int) -> Void,
                 _ backward: @escaping (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int) -> Void) -> Tensor {
        let n = shape.last ?? 1, rows = n == 0 ? 0 : count / n
        let out = Storage(uninitializedCount: count)
        forward(out.base, base, rows, n)
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in backward(input.node!.accumulator(), out.base, g.base, rows, n) }
        }
    }
}
