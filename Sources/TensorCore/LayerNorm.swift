/// Layer normalisation over the last axis, llm.c style.
public enum LayerNormKernels {
    /// out (rows, c) = (x - mean) * rstd * weight + bias; saves mean and rstd (rows) for backward.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ mean: UnsafeMutablePointer<Float>,
                               _ rstd: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                               _ weight: UnsafePointer<Float>?, _ bias: UnsafePointer<Float>?,
                               rows: Int, c: Int, eps: Float) {
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(c, 1))) { r in
            for row in r {
                let xr = x + row * c, y = out + row * c
                let m = vsum(xr, c) / Float(c)
                var acc = Vec()
                var i = 0
                while i + 8 <= c { let d = load(xr + i) - m; acc += d * d; i += 8 }
                var v = acc.sum()
                while i < c { let d = xr[i] - m; v += d * d; i += 1 }
                let s = 1 / (v / Float(c) + eps).squareRoot()
                i = 0
                if let weight, let bias {
                    while i + 8 <= c { store((load(xr + i) - m) * s * load(weight + i) + load(bias + i), y + i); i += 8 }
                    while i < c { y[i] = (xr[i] - m) * s * weight[i] + bias[i]; i += 1 }
                } else {
                    while i + 8 <= c { store((load(xr + i) - m) * s, y + i); i += 8 }
                    while i < c { y[i] = (xr[i] - m) * s; i += 1 }
                }
                mean[row] = m
                rstd[row] = s
            }
        }
    }

    /// dx += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) with dnorm = dout * weight;
    /// dweight += sum(dout * norm), dbias += sum(dout) over rows (per-chunk partials, fixed order).
    public static func backward(_ dx: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                                _ dbias: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                                _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>?,
                                _ mean: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>, rows: Int, c: Int) {
        let grain = Swift.max(1, 8192 / Swift.max(c, 1))
        let chunks = Parallel.chunkCount(rows, grain: grain)
        let partial = Storage(count: chunks * 2 * c)
        Parallel.forIndexedChunks(rows, grain: grain) { chunk, r in
            let pw = partial.base + chunk * 2 * c, pb = pw + c
            withUnsafeTemporaryAllocation(of: Float.self, capacity: c) { scratch in
                let dnorm = scratch.baseAddress!
                for row in r {
                    let xr = x + row * c, gr = dout + row * c
                    let m = mean[row], s = rstd[row]
                    var accA = Vec(), accB = Vec()
                    var i = 0
                    while i + 8 <= c {
                        let g = load(gr + i)
                        let norm = (load(xr + i) - m) * s
                        let dn = weight.map { g * load($0 + i) } ?? g
                        store(dn, dnorm + i)
                        accA += dn
                        accB += dn * norm
                        store(load(pw + i) + g * norm, pw + i)
                        store(load(pb + i) + g, pb + i)
                        i += 8
                    }
                    var sumA = accA.sum(), sumB = accB.sum()
                    while i < c {
                        let g = gr[i]
                        let norm = (xr[i] - m) * s
                        let dn = weight.map { g * $0[i] } ?? g
                        dnorm[i] = dn
                        sumA += dn
                        sumB += dn * norm
                        pw[i] += g * norm
                        pb[i] += g
                        i += 1
                    }
                    guard let dx else { continue }
                    let meanA = sumA / Float(c), meanB = sumB / Float(c)
                    let d = dx + row * c
                    i = 0
                    while i + 8 <= c {
                        let norm = (load(xr + i) - m) * s
                        store(load(d + i) + s * (load(dnorm + i) - meanA - norm * meanB), d + i)
                        i += 8
                    }
                    while i < c {
                        let norm = (xr[i] - m) * s
                        d[i] += s * (dnorm[i] - meanA - norm * meanB)
                        i += 1
                    }
                }
            }
        }
        for chunk in 0..<chunks {
            let pw = partial.base + chunk * 2 * c, pb = pw + c
            if let dweight { for i in 0..<c { dweight[i] += pw[i] } }
            if let dbias { for i in 0..<c { dbias[i] += pb[i] } }
        }
    }
}

extension Tensor {
    /// Layer normalisation over the last axis with optional affine weight and bias (each (C)).
    public func layerNorm(weight: Tensor?, bias: Tensor?, eps: Float = 1e-5) -> Tensor {
        let c = shape.last ?? 1, rows = c == 0 ? 0 : count / c
        precondition((weight == nil) == (bias == nil), "layerNorm: pass both weight and bias, or neither")
        if let weight { precondition(weight.shape == [c] && bias!.shape == [c], "layerNorm: weight/bias must be [\(c)]") }
        let out = Storage(uninitializedCount: count)
        let mean = Storage(uninitializedCount: rows), rstd = Storage(uninitializedCount: rows)
        LayerNormKernels.forward(out.base, mean.base, rstd.base, base, weight?.base, bias?.base, rows: rows, c: c, eps: eps)
        let input = self
        var inputs = [self]
        if let weight, let bias { inputs += [weight, bias] }
        return makeResult(shape: shape, storage: out, inputs: inputs) {
            { g in
                LayerNormKernels.backward(input.node?.accumulator(), weight?.node?.accumulator(), bias?.node?.accumulator(),
                                          g.base, input.base, weight?.base, mean.base, rstd.base, rows: rows, c: c)
            }
        }
    }
}
