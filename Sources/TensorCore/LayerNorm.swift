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
        // Per-chunk partial sums of dweight and dbias, then the weight (ones when absent).
        let scratch = Storage(count: chunks * 2 * c + (weight == nil ? c : 0))
        let w = weight ?? UnsafePointer(scratch.base + chunks * 2 * c)
        if weight == nil { (scratch.base + chunks * 2 * c).update(repeating: 1, count: c) }
        Parallel.forIndexedChunks(rows, grain: grain) { chunk, r in
            let pw = scratch.base + chunk * 2 * c, pb = pw + c
            for row in r {
                let xr = x + row * c, gr = dout + row * c
                let m = mean[row], s = rstd[row]
                let mv = Vec(repeating: m), sv = Vec(repeating: s)
                // Pass 1: sum(dnorm), sum(dnorm * norm), and the parameter-gradient partials.
                var a0 = Vec(), a1 = Vec(), b0 = Vec(), b1 = Vec()
                var i = 0
                while i + 16 <= c {
                    let g0 = load(gr + i), g1 = load(gr + i + 8)
                    let n0 = (load(xr + i) - mv) * sv, n1 = (load(xr + i + 8) - mv) * sv
                    let d0 = g0 * load(w + i), d1 = g1 * load(w + i + 8)
                    a0 += d0; a1 += d1
                    b0 = vfma(d0, n0, b0); b1 = vfma(d1, n1, b1)
                    store(vfma(g0, n0, load(pw + i)), pw + i); store(vfma(g1, n1, load(pw + i + 8)), pw + i + 8)
                    store(load(pb + i) + g0, pb + i); store(load(pb + i + 8) + g1, pb + i + 8)
                    i += 16
                }
                var sumA = (a0 + a1).sum(), sumB = (b0 + b1).sum()
                while i < c {
                    let g = gr[i], norm = (xr[i] - m) * s, dn = g * w[i]
                    sumA += dn; sumB += dn * norm
                    pw[i] += g * norm; pb[i] += g
                    i += 1
                }
                guard let dx else { continue }
                // Pass 2: dx += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
                let meanA = Vec(repeating: sumA / Float(c)), meanB = Vec(repeating: sumB / Float(c))
                let d = dx + row * c
                i = 0
                while i + 8 <= c {
                    let norm = (load(xr + i) - mv) * sv
                    let dn = load(gr + i) * load(w + i)
                    store(vfma(sv, dn - meanA - norm * meanB, load(d + i)), d + i)
                    i += 8
                }
                while i < c {
                    let norm = (xr[i] - m) * s
                    d[i] += s * (gr[i] * w[i] - meanA[0] - norm * meanB[0])
                    i += 1
                }
            }
        }
        for chunk in 0..<chunks {
            let pw = scratch.base + chunk * 2 * c, pb = pw + c
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

extension Tensor {
    /// Layer normalisation over the channel axis of (N, C, ...) at every position, with weight and
    /// bias (C): vit-pytorch CvT's LayerNorm, done in place on the channel-first layout (no
    /// transposes). Statistics per (image, position); images in parallel.
    public func channelLayerNorm(weight: Tensor, bias: Tensor, eps: Float = 1e-5) -> Tensor {
        precondition(rank >= 2, "channelLayerNorm expects (N, C, ...), got \(shape)")
        let batch = shape[0], c = shape[1], s = product(shape[2...])
        precondition(weight.count == c && bias.count == c, "channelLayerNorm: weight and bias must have \(c) values")
        let out = Storage(uninitializedCount: count)
        let meanStorage = Storage(uninitializedCount: batch * s), rstdStorage = Storage(uninitializedCount: batch * s)
        let x = base, y = out.base, wp = weight.base, bp = bias.base, mean = meanStorage.base, rstd = rstdStorage.base
        let grain = Swift.max(1, 8192 / Swift.max(1, c * s)), fc = Float(c)
        Parallel.forChunks(batch, grain: grain) { r in
            for b in r {
                let xb = x + b * c * s, yb = y + b * c * s, m = mean + b * s, v = rstd + b * s
                m.update(repeating: 0, count: s)
                v.update(repeating: 0, count: s)
                for ch in 0..<c { let row = xb + ch * s; for i in 0..<s { m[i] += row[i] } }
                for i in 0..<s { m[i] /= fc }
                for ch in 0..<c { let row = xb + ch * s; for i in 0..<s { let d = row[i] - m[i]; v[i] += d * d } }
                for i in 0..<s { v[i] = 1 / (v[i] / fc + eps).squareRoot() }
                for ch in 0..<c {
                    let row = xb + ch * s, dst = yb + ch * s, g = wp[ch], bb = bp[ch]
                    for i in 0..<s { dst[i] = (row[i] - m[i]) * v[i] * g + bb }
                }
            }
        }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self, weight, bias]) {
            { g in
                let gp = g.base, mean = meanStorage.base, rstd = rstdStorage.base
                if let gx = input.node?.accumulator() {
                    Parallel.forChunks(batch, grain: grain) { r in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * s) { tmp in
                            let sumA = tmp.baseAddress!, sumB = sumA + s
                            for b in r {
                                let xb = x + b * c * s, gb = gp + b * c * s, dxb = gx + b * c * s, m = mean + b * s, v = rstd + b * s
                                sumA.update(repeating: 0, count: 2 * s)
                                for ch in 0..<c {
                                    let row = xb + ch * s, gr = gb + ch * s, w = wp[ch]
                                    for i in 0..<s {
                                        let dn = gr[i] * w
                                        sumA[i] += dn
                                        sumB[i] += dn * (row[i] - m[i]) * v[i]
                                    }
                                }
                                for i in 0..<s { sumA[i] /= fc; sumB[i] /= fc }
                                for ch in 0..<c {
                                    let row = xb + ch * s, gr = gb + ch * s, d = dxb + ch * s, w = wp[ch]
                                    for i in 0..<s {
                                        let norm = (row[i] - m[i]) * v[i]
                                        d[i] += v[i] * (gr[i] * w - sumA[i] - norm * sumB[i])
                                    }
                                }
                            }
                        }
                    }
                }
                let gw = weight.node?.accumulator(), gbias = bias.node?.accumulator()
                if gw == nil && gbias == nil { return }
                // Per channel over every image and position: each channel's sum in one task.
                Parallel.forChunks(c, grain: Swift.max(1, 8192 / Swift.max(1, batch * s))) { r in
                    for ch in r {
                        var sw: Float = 0, sb: Float = 0
                        for b in 0..<batch {
                            let row = x + (b * c + ch) * s, gr = gp + (b * c + ch) * s, m = mean + b * s, v = rstd + b * s
                            for i in 0..<s { sw += gr[i] * (row[i] - m[i]) * v[i]; sb += gr[i] }
                        }
                        gw?[ch] += sw
                        gbias?[ch] += sb
                    }
                }
            }
        }
    }
}
