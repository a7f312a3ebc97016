// MARK: - Reductions over axes

extension Tensor {
    /// Splits the shape around `axis` into (outer, n, inner).
    @inline(__always)
    func split3(_ axis: Int) -> (outer: Int, n: Int, inner: Int) {
        (product(shape[..<axis]), shape[axis], product(shape[(axis + 1)...]))
    }

    /// Sum over one axis, keeping it with size 1.
    func sumAxisKeep(_ axis: Int) -> Tensor {
        let (outer, n, inner) = split3(axis)
        var outShape = shape
        outShape[axis] = 1
        let out = Storage(uninitializedCount: outer * inner)
        let x = base, y = out.base
        if inner == 1 {
            Parallel.forChunks(outer, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
                for o in r { y[o] = vsum(x + o * n, n) }
            }
        } else {
            Parallel.forChunks(outer, grain: Swift.max(1, 8192 / Swift.max(n * inner, 1))) { r in
                for o in r {
                    let dst = y + o * inner
                    let src = x + o * n * inner
                    for i in 0..<inner { dst[i] = src[i] }
                    for k in 1..<Swift.max(n, 1) {
                        let s = src + k * inner
                        for i in 0..<inner { dst[i] += s[i] }
                    }
                    if n == 0 { for i in 0..<inner { dst[i] = 0 } }
                }
            }
        }
        let input = self
        return makeResult(shape: outShape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                let gp = g.base
                Parallel.forChunks(outer, grain: Swift.max(1, 8192 / Swift.max(n * inner, 1))) { r in
                    for o in r {
                        for k in 0..<n {
                            let d = gx + (o * n + k) * inner
                            let s = gp + o * inner
                            for i in 0..<inner { d[i] += s[i] }
                        }
                    }
                }
            }
        }
    }

    /// The mean over rows of each row's entropy, -sum p log p in nats, of probabilities along the
    /// last axis, off the tape (a diagnostic). Values below Float's smallest normal (zero among
    /// them) add nothing; NaN makes the result NaN. Rows are spread over the pool, each summed in
    /// eight Float lanes (`vlog`) and then in Double, and the rows are added in order, so the value
    /// does not depend on the thread count or the build's vector width.
    public func meanRowEntropy() -> Double {
        let k = shape.last ?? 1
        guard count > 0, k > 0 else { return 0 }
        let rows = count / k, p = base
        let perRow = [Double](unsafeUninitializedCapacity: rows) { buffer, initialized in
            let out = buffer.baseAddress!
            Parallel.forChunks(rows, grain: Swift.max(1, 16384 / k)) { r in
                for row in r { out[row] = Tensor.entropy(p + row * k, k) }
            }
            initialized = rows
        }
        return perRow.reduce(0, +) / Double(rows)
    }

    /// -sum p log p over p[0..<n], in eight lanes whose partial sums are added in lane order.
    static func entropy(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
        let smallest = Float.leastNormalMagnitude
        var acc = Vec()
        var i = 0
        while i + 8 <= n {
            let v = load(p + i)
            acc += Vec.zero(v * vlog(v), whereBelow: smallest, v)
            i += 8
        }
        var total = 0.0
        for lane in 0..<8 { total -= Double(acc[lane]) }
        while i < n {
            let v = p[i]
            if !(v < smallest) { total -= Double(v * vlog(Vec(repeating: v))[0]) }
            i += 1
        }
        return total
    }

    /// Sum over `axes` (all axes when nil). `keepDims` keeps reduced axes with size 1.
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let normalized = Set((axes ?? Array(0..<rank)).map { axis($0) })
        var result = self
        for a in normalized.sorted(by: >) { result = result.sumAxisKeep(a) }
        if keepDims { return result }
        return result.reshaped(shape.enumerated().filter { !normalized.contains($0.offset) }.map { $0.element })
    }

    public func sum(axis a: Int, keepDims: Bool = false) -> Tensor { sum(axes: [a], keepDims: keepDims) }

    /// Mean over `axes` (all axes when nil).
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let normalized = Set((axes ?? Array(0..<rank)).map { axis($0) })
        let n = normalized.reduce(1) { $0 * shape[$1] }
        return sum(axes: Array(normalized), keepDims: keepDims) * (1 / Float(n))
    }

    public func mean(axis a: Int, keepDims: Bool = false) -> Tensor { mean(axes: [a], keepDims: keepDims) }

    /// Variance over `axes` (all when nil); `unbiased` divides by n - 1 as torch.var does by default.
    public func variance(axes: [Int]? = nil, keepDims: Bool = false, unbiased: Bool = true) -> Tensor {
        let normalized = Set((axes ?? Array(0..<rank)).map { axis($0) })
        let n = normalized.reduce(1) { $0 * shape[$1] }
        let centered = self - mean(axes: Array(normalized), keepDims: true)
        let ss = centered.square().sum(axes: Array(normalized), keepDims: keepDims)
        return ss * (1 / Float(unbiased ? n - 1 : n))
    }

    /// Maximum over one axis; the gradient flows to the first maximal element.
    public func max(axis a: Int, keepDims: Bool = false) -> Tensor {
        let ax = axis(a)
        let (outer, n, inner) = split3(ax)
        precondition(n > 0, "max over an empty axis")
        var outShape = shape
        outShape[ax] = 1
        let out = Storage(uninitializedCount: outer * inner)
        var arg = [Int32](repeating: 0, count: outer * inner)
        let x = base, y = out.base
        arg.withUnsafeMutableBufferPointer { ap in
            let argp = ap.baseAddress!
            Parallel.forChunks(outer, grain: Swift.max(1, 8192 / Swift.max(n * inner, 1))) { r in
                for o in r {
                    for i in 0..<inner {
                        var best = x[o * n * inner + i]
                        var bi: Int32 = 0
                        for k in 1..<n where x[(o * n + k) * inner + i] > best || (best.isNaN == false && x[(o * n + k) * inner + i].isNaN) {
                            best = x[(o * n + k) * inner + i]
                            bi = Int32(k)
                        }
                        y[o * inner + i] = best
                        argp[o * inner + i] = bi
                    }
                }
            }
        }
        let input = self
        let result = makeResult(shape: outShape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                for o in 0..<outer {
                    for i in 0..<inner {
                        gx[(o * n + Int(arg[o * inner + i])) * inner + i] += g.base[o * inner + i]
                    }
                }
            }
        }
        if keepDims { return result }
        var squeezed = shape
        squeezed.remove(at: ax)
        return result.reshaped(squeezed)
    }

    /// Maximum over all elements.
    public func max() -> Tensor { reshaped([count]).max(axis: 0) }
}
