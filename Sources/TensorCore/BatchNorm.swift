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
        // Values per channel over the whole batch (every process's share when synchronised).
        var count = Float(per)
        if training {
            // Across processes (SyncBatchNorm), the sums of every process's share of the batch;
            // in one process the same arithmetic as before.
            let synced = Distributed.isMultiProcess
            var sums = [Double](repeating: 0, count: c + 1)
            if spatial == 1 {
                // (N, C), channels-last tokens among them: row by row over contiguous channels,
                // each channel's sum in the same order as below.
                sums.withUnsafeMutableBufferPointer { sp in
                    for b in 0..<batch { let row = x + b * c; for ch in 0..<c { sp[ch] += Double(row[ch]) } }
                }
            } else {
                for ch in 0..<c {
                    var s: Double = 0
                    for b in 0..<batch { s += Double(vsum(x + (b * c + ch) * spatial, spatial)) }
                    sums[ch] = s
                }
            }
            sums[c] = Double(per)
            if synced { sums = Distributed.sum(sums) }
            let total = sums[c]
            precondition(total > 1, "batchNorm in training needs more than one value per channel, got shape \(shape)")
            var squares = [Double](repeating: 0, count: c)
            if spatial == 1 {
                let means = (0..<c).map { sums[$0] / total }
                squares.withUnsafeMutableBufferPointer { sq in
                    means.withUnsafeBufferPointer { mp in
                        for b in 0..<batch {
                            let row = x + b * c
                            for ch in 0..<c { let dlt = Double(row[ch]) - mp[ch]; sq[ch] += dlt * dlt }
                        }
                    }
                }
            } else { for ch in 0..<c {
                let m = sums[ch] / total
                var v: Double = 0
                for b in 0..<batch {
                    let row = x + (b * c + ch) * spatial
                    for i in 0..<spatial { let dlt = Double(row[i]) - m; v += dlt * dlt }
                }
                squares[ch] = v
            } }
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
        for b in 0..<batch {
            for ch in 0..<c {
                let o = (b * c + ch) * spatial
                let w = weight?.base[ch] ?? 1, bb = bias?.base[ch] ?? 0
                let m = mean.base[ch], s = rstd.base[ch]
                for i in 0..<spatial { y[o + i] = (x[o + i] - m) * s * w + bb }
            }
        }
        let input = self
        var inputs = [self]
        if let weight { inputs.append(weight) }
        if let bias { inputs.append(bias) }
        return makeResult(shape: shape, storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                let gx = input.node?.accumulator()
                let gw = weight?.node?.accumulator(), gb = bias?.node?.accumulator()
                // The two sums of the input gradient, summed over processes when synchronised
                // (each process's gradient is of its own share's loss; see Distributed).
                var sums = [Float](repeating: 0, count: 2 * c)
                if spatial == 1 {
                    // Row by row over contiguous channels; each channel's sums in the same order.
                    var sumG = [Float](repeating: 0, count: c), sumGN = [Float](repeating: 0, count: c)
                    sumG.withUnsafeMutableBufferPointer { sg in sumGN.withUnsafeMutableBufferPointer { sn in
                        let m = mean.base, s = rstd.base
                        for b in 0..<batch {
                            let gr = gp + b * c, xr = x + b * c
                            for ch in 0..<c {
                                sg[ch] += gr[ch]
                                sn[ch] += gr[ch] * (xr[ch] - m[ch]) * s[ch]
                            }
                        }
                    } }
                    for ch in 0..<c {
                        gw?[ch] += sumGN[ch]
                        gb?[ch] += sumG[ch]
                        (sums[2 * ch], sums[2 * ch + 1]) = (sumG[ch], sumGN[ch])
                    }
                } else { for ch in 0..<c {
                    let m = mean.base[ch], s = rstd.base[ch]
                    var sumG: Float = 0, sumGN: Float = 0
                    for b in 0..<batch {
                        let o = (b * c + ch) * spatial
                        for i in 0..<spatial {
                            sumG += gp[o + i]
                            sumGN += gp[o + i] * (x[o + i] - m) * s
                        }
                    }
                    gw?[ch] += sumGN
                    gb?[ch] += sumG
                    (sums[2 * ch], sums[2 * ch + 1]) = (sumG, sumGN)
                } }
                guard let gx else { return }
                if training && Distributed.isMultiProcess {
                    sums.withUnsafeMutableBufferPointer { Distributed.world.allreduceSum($0.baseAddress!, count: 2 * c) }
                }
                if spatial == 1 {
                    let wv = (0..<c).map { weight?.base[$0] ?? 1 }
                    sums.withUnsafeBufferPointer { sp in wv.withUnsafeBufferPointer { wp in
                        let m = mean.base, s = rstd.base
                        for b in 0..<batch {
                            let gr = gp + b * c, xr = x + b * c, dr = gx + b * c
                            for ch in 0..<c {
                                if training {
                                    let norm = (xr[ch] - m[ch]) * s[ch]
                                    dr[ch] += wp[ch] * s[ch] * (gr[ch] - sp[2 * ch] / values - norm * sp[2 * ch + 1] / values)
                                } else {
                                    dr[ch] += wp[ch] * s[ch] * gr[ch]
                                }
                            }
                        }
                    } }
                    return
                }
                for ch in 0..<c {
                    let m = mean.base[ch], s = rstd.base[ch], w = weight?.base[ch] ?? 1
                    let (sumG, sumGN) = (sums[2 * ch], sums[2 * ch + 1])
                    for b in 0..<batch {
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
