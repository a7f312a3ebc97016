import CSpin

/// Running statistics of a batch-norm layer, updated in place during training.
public final class BatchNormState {
    public let runningMean: Tensor
    public let runningVar: Tensor
    public let momentum: Float
    public let eps: Float

    public init(channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        runningMean = .zeros([channels])
        runningVar = .ones([channels])
        self.momentum = momentum
        self.eps = eps
    }
}

extension Tensor {
    /// Batch normalisation of (N, C), (N, C, L) or (N, C, H, W) per channel, as torch's
    /// BatchNorm1d/2d: training uses the batch's biased variance to normalise and updates the
    /// running statistics (unbiased variance) with `momentum`; evaluation uses the running ones.
    public func batchNorm(weight: Tensor?, bias: Tensor?, state: BatchNormState, training: Bool) -> Tensor {
        precondition(rank >= 2, "batchNorm expects (N, C, ...), got \(shape)")
        let batch = shape[0], c = shape[1], spatial = product(shape[2...])
        precondition(state.runningMean.count == c, "batchNorm: state has \(state.runningMean.count) channels, input \(c)")
        let per = batch * spatial
        let x = base
        let mean = Storage(uninitializedCount: c), rstd = Storage(uninitializedCount: c)
        // (rows, C) inputs split their per-channel sums over the pool by channels: each channel's
        // sum still runs over the rows in order, so results do not depend on the thread count.
        let channelGrain = Swift.max(8, c / Swift.max(Parallel.threads, 1))
        // Values per channel over the whole batch (every process's share when synchronised).
        var count = Float(per)
        if training {
            // Across processes (SyncBatchNorm), the sums of every process's share of the batch;
            // in one process the same arithmetic as before.
            let synced = Distributed.isMultiProcess
            // Row by row (image, then channel); each channel's sums run over the images in order
            // whatever the layout: (N, C) rows of contiguous channels, or (N, C, H, W) planes.
            var sums = [Double](repeating: 0, count: c + 1)
            sums.withUnsafeMutableBufferPointer { sp in
                if spatial == 1 {
                    // (rows, C), channels-last maps: the same sums in the same order, channels innermost.
                    let s = sp.baseAddress!
                    Parallel.forChunks(c, grain: channelGrain) { r in
                        // Eight channels at a time in registers, each summed over the rows in order.
                        var ch = r.lowerBound
                        while ch + 8 <= r.upperBound {
                            var acc = SIMD8<Double>()
                            for b in 0..<batch { acc += cvec_widen8(load(x + b * c + ch)) }
                            for l in 0..<8 { s[ch + l] += acc[l] }
                            ch += 8
                        }
                        for b in 0..<batch { let row = x + b * c; for ch in ch..<r.upperBound { s[ch] += Double(row[ch]) } }
                    }
                    return
                }
                for b in 0..<batch { for ch in 0..<c { sp[ch] += Double(vsum(x + (b * c + ch) * spatial, spatial)) } }
            }
            sums[c] = Double(per)
            if synced { sums = Distributed.sum(sums) }
            let total = sums[c]
            precondition(total > 1, "batchNorm in training needs more than one value per channel, got shape \(shape)")
            var squares = [Double](repeating: 0, count: c)
            let means = (0..<c).map { sums[$0] / total }
            squares.withUnsafeMutableBufferPointer { sq in
                means.withUnsafeBufferPointer { mp in
                    if spatial == 1 {
                        let q = sq.baseAddress!, mb = mp.baseAddress!
                        Parallel.forChunks(c, grain: channelGrain) { r in
                            var ch = r.lowerBound
                            while ch + 8 <= r.upperBound {
                                var acc = SIMD8<Double>()
                                let m8 = UnsafeRawPointer(mb + ch).loadUnaligned(as: SIMD8<Double>.self)
                                for b in 0..<batch { let dlt = cvec_widen8(load(x + b * c + ch)) - m8; acc += dlt * dlt }
                                for l in 0..<8 { q[ch + l] += acc[l] }
                                ch += 8
                            }
                            for b in 0..<batch {
                                let row = x + b * c
                                for ch in ch..<r.upperBound { let dlt = Double(row[ch]) - mb[ch]; q[ch] += dlt * dlt }
                            }
                        }
                        return
                    }
                    for b in 0..<batch {
                        for ch in 0..<c {
                            let row = x + (b * c + ch) * spatial, m = mp[ch]
                            var v = sq[ch]
                            for i in 0..<spatial { let dlt = Double(row[i]) - m; v += dlt * dlt }
                            sq[ch] = v
                        }
                    }
                }
            }
            if synced { squares = Distributed.sum(squares) }
            for ch in 0..<c {
                let m = sums[ch] / total, v = squares[ch]
                mean.base[ch] = Float(m)
                rstd.base[ch] = Float(1 / (v / total + Double(state.eps)).squareRoot())
                let rm = state.runningMean.base, rv = state.runningVar.base
                rm[ch] = (1 - state.momentum) * rm[ch] + state.momentum * Float(m)
                rv[ch] = (1 - state.momentum) * rv[ch] + state.momentum * Float(v / (total - 1))
            }
            count = Float(total)
        } else {
            for ch in 0..<c {
                mean.base[ch] = state.runningMean.base[ch]
                rstd.base[ch] = 1 / (state.runningVar.base[ch] + state.eps).squareRoot()
            }
        }
        let values = count
        let out = Storage(uninitializedCount: self.count)
        let y = out.base
        if spatial == 1 {
            let ones = weight == nil ? [Float](repeating: 1, count: c) : []
            let zeros = bias == nil ? [Float](repeating: 0, count: c) : []
            ones.withUnsafeBufferPointer { one in zeros.withUnsafeBufferPointer { zero in
                let w = weight?.base ?? UnsafeMutablePointer(mutating: one.baseAddress!), bb = bias?.base ?? UnsafeMutablePointer(mutating: zero.baseAddress!)
                let m = mean.base, sd = rstd.base
                Parallel.forChunks(batch, grain: Swift.max(1, 16384 / Swift.max(c, 1))) { r in
                    for b in r {
                        let xr = x + b * c, yr = y + b * c
                        for ch in 0..<c { yr[ch] = (xr[ch] - m[ch]) * sd[ch] * w[ch] + bb[ch] }
                    }
                }
            } }
        } else {
            for b in 0..<batch {
                for ch in 0..<c {
                    let o = (b * c + ch) * spatial
                    let w = weight?.base[ch] ?? 1, bb = bias?.base[ch] ?? 0
                    let m = mean.base[ch], s = rstd.base[ch]
                    for i in 0..<spatial { y[o + i] = (x[o + i] - m) * s * w + bb }
                }
            }
        }
        let input = self
        var inputs = [self]
        if let weight { inputs.append(weight) }
        if let bias { inputs.append(bias) }
        return makeResult(shape: shape, storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                // A fresh input gradient (the usual case: a convolution's output feeds only this)
                // is written, not zero-filled and added to.
                let (gx, fresh) = input.node.map { n -> (UnsafeMutablePointer<Float>?, Bool) in let (p, beta) = n.gemmAccumulator(); return (p, beta == 0) } ?? (nil, false)
                let gw = weight?.node?.accumulator(), gb = bias?.node?.accumulator()
                // The two sums of the input gradient, summed over processes when synchronised
                // (each process's gradient is of its own share's loss; see Distributed).
                // Row by row; each channel's sums run over the images in order, as in forward.
                var sumG = [Float](repeating: 0, count: c), sumGN = [Float](repeating: 0, count: c)
                sumG.withUnsafeMutableBufferPointer { sg in sumGN.withUnsafeMutableBufferPointer { sn in
                    let m = mean.base, s = rstd.base
                    if spatial == 1 {
                        let g1 = sg.baseAddress!, g2 = sn.baseAddress!
                        Parallel.forChunks(c, grain: channelGrain) { r in
                            var ch = r.lowerBound
                            while ch + 8 <= r.upperBound {
                                var a1 = Vec(), a2 = Vec()
                                let m8 = load(m + ch), s8 = load(s + ch)
                                for b in 0..<batch {
                                    let o = b * c + ch, g = load(gp + o)
                                    a1 += g
                                    a2 += g * (load(x + o) - m8) * s8
                                }
                                for l in 0..<8 { g1[ch + l] += a1[l]; g2[ch + l] += a2[l] }
                                ch += 8
                            }
                            for b in 0..<batch {
                                let o = b * c
                                for ch in ch..<r.upperBound {
                                    g1[ch] += gp[o + ch]
                                    g2[ch] += gp[o + ch] * (x[o + ch] - m[ch]) * s[ch]
                                }
                            }
                        }
                        return
                    }
                    for b in 0..<batch {
                        for ch in 0..<c {
                            let o = (b * c + ch) * spatial
                            var (g1, g2) = (sg[ch], sn[ch])
                            for i in 0..<spatial {
                                g1 += gp[o + i]
                                g2 += gp[o + i] * (x[o + i] - m[ch]) * s[ch]
                            }
                            (sg[ch], sn[ch]) = (g1, g2)
                        }
                    }
                } }
                var sums = [Float](repeating: 0, count: 2 * c)
                for ch in 0..<c {
                    gw?[ch] += sumGN[ch]
                    gb?[ch] += sumG[ch]
                    (sums[2 * ch], sums[2 * ch + 1]) = (sumG[ch], sumGN[ch])
                }
                guard let gx else { return }
                if training && Distributed.isMultiProcess {
                    sums.withUnsafeMutableBufferPointer { Distributed.world.allreduceSum($0.baseAddress!, count: 2 * c) }
                }
                if spatial == 1 {
                    // Element by element the same expressions as below, channels innermost.
                    var scale = [Float](repeating: 0, count: c), shiftG = [Float](repeating: 0, count: c), shiftN = [Float](repeating: 0, count: c)
                    for ch in 0..<c {
                        scale[ch] = (weight?.base[ch] ?? 1) * rstd.base[ch]
                        (shiftG[ch], shiftN[ch]) = (sums[2 * ch] / values, sums[2 * ch + 1])
                    }
                    scale.withUnsafeBufferPointer { ws in shiftG.withUnsafeBufferPointer { sgp in shiftN.withUnsafeBufferPointer { snp in
                        let ws = ws.baseAddress!, sgp = sgp.baseAddress!, snp = snp.baseAddress!, m = mean.base, sd = rstd.base
                        Parallel.forChunks(batch, grain: Swift.max(1, 16384 / Swift.max(c, 1))) { r in
                            for b in r {
                                let o = b * c
                                if training && fresh {
                                    for ch in 0..<c {
                                        let norm = (x[o + ch] - m[ch]) * sd[ch]
                                        gx[o + ch] = ws[ch] * (gp[o + ch] - sgp[ch] - norm * snp[ch] / values)
                                    }
                                } else if training {
                                    for ch in 0..<c {
                                        let norm = (x[o + ch] - m[ch]) * sd[ch]
                                        gx[o + ch] += ws[ch] * (gp[o + ch] - sgp[ch] - norm * snp[ch] / values)
                                    }
                                } else if fresh {
                                    for ch in 0..<c { gx[o + ch] = ws[ch] * gp[o + ch] }
                                } else {
                                    for ch in 0..<c { gx[o + ch] += ws[ch] * gp[o + ch] }
                                }
                            }
                        }
                    } } }
                    return
                }
                if fresh { gx.update(repeating: 0, count: input.count) }
                for b in 0..<batch {
                    for ch in 0..<c {
                        let m = mean.base[ch], s = rstd.base[ch], w = weight?.base[ch] ?? 1
                        let (sumG, sumGN) = (sums[2 * ch], sums[2 * ch + 1])
                        let o = (b * c + ch) * spatial
                        for i in 0..<spatial {
                            if training {
                                let norm = (x[o + i] - m) * s
                                gx[o + i] += w * s * (gp[o + i] - sumG / values - norm * sumGN / values)
                            } else {
                                gx[o + i] += w * s * gp[o + i]
                            }
                        }
                    }
                }
            }
        }
    }
}
