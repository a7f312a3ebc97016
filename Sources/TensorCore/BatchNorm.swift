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
        if training {
            precondition(per > 1, "batchNorm in training needs more than one value per channel, got shape \(shape)")
            for ch in 0..<c {
                var s: Double = 0
                for b in 0..<batch { s += Double(vsum(x + (b * c + ch) * spatial, spatial)) }
                let m = s / Double(per)
                var v: Double = 0
                for b in 0..<batch {
                    let row = x + (b * c + ch) * spatial
                    for i in 0..<spatial { let dlt = Double(row[i]) - m; v += dlt * dlt }
                }
                mean.base[ch] = Float(m)
                rstd.base[ch] = Float(1 / (v / Double(per) + Double(state.eps)).squareRoot())
                let rm = state.runningMean.base, rv = state.runningVar.base
                rm[ch] = (1 - state.momentum) * rm[ch] + state.momentum * Float(m)
                rv[ch] = (1 - state.momentum) * rv[ch] + state.momentum * Float(v / Double(per - 1))
            }
        } else {
            for ch in 0..<c {
                mean.base[ch] = state.runningMean.base[ch]
                rstd.base[ch] = 1 / (state.runningVar.base[ch] + state.eps).squareRoot()
            }
        }
        let out = Storage(uninitializedCount: count)
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
                for ch in 0..<c {
                    let m = mean.base[ch], s = rstd.base[ch], w = weight?.base[ch] ?? 1
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
                    guard let gx else { continue }
                    for b in 0..<batch {
                        let o = (b * c + ch) * spatial
                        for i in 0..<spatial {
                            if training {
                                let norm = (x[o + i] - m) * s
                                gx[o + i] += w * s * (gp[o + i] - sumG / Float(per) - norm * sumGN / Float(per))
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
