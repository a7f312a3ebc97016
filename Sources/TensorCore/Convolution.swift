/// Geometry of a 2-D convolution or pooling window.
public struct Conv2DGeometry {
    public let channels, height, width, kernelH, kernelW, stride, padding: Int
    public var outH: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outW: Int { (width + 2 * padding - kernelW) / stride + 1 }

    /// Visits every (column entry, image element) pair of the unfolded image: `body(col, image)`
    /// with col indexing (channels * kh * kw, outH * outW) and image indexing (channels, H, W),
    /// or -1 where the window covers padding.
    @inline(__always)
    func forEachTap(_ body: (_ col: Int, _ image: Int) -> Void) {
        let ohw = outH * outW
        for c in 0..<channels {
            for ky in 0..<kernelH {
                for kx in 0..<kernelW {
                    let row = ((c * kernelH + ky) * kernelW + kx) * ohw
                    for oy in 0..<outH {
                        let iy = oy * stride - padding + ky
                        let inRows = iy >= 0 && iy < height
                        for ox in 0..<outW {
                            let ix = ox * stride - padding + kx
                            body(row + oy * outW + ox, inRows && ix >= 0 && ix < width ? (c * height + iy) * width + ix : -1)
                        }
                    }
                }
            }
        }
    }

    /// col (channels * kh * kw, outH * outW) from one image x (channels, H, W); zero padding.
    func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
        forEachTap { k, i in col[k] = i >= 0 ? x[i] : 0 }
    }

    /// dx (channels, H, W) += the columns scattered back (the adjoint of im2col).
    func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>) {
        forEachTap { k, i in if i >= 0 { dx[i] += col[k] } }
    }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as torch.nn.functional.conv2d) of x (N, C, H, W) with
    /// weight (O, C/groups, kh, kw) and optional bias (O). `groups == C == O` is depthwise.
    public func conv2d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, groups: Int = 1) -> Tensor {
        precondition(rank == 4 && weight.rank == 4, "conv2d expects x (N, C, H, W) and weight (O, C/groups, kh, kw)")
        let batch = shape[0], c = shape[1], h = shape[2], w = shape[3]
        let o = weight.shape[0], cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
        precondition(groups > 0 && c % groups == 0 && o % groups == 0 && cg == c / groups,
                     "conv2d: \(c) input channels, weight \(weight.shape) and groups \(groups) do not fit")
        if let bias { precondition(bias.shape == [o], "conv2d: bias must be [\(o)]") }
        let geo = Conv2DGeometry(channels: cg, height: h, width: w, kernelH: kh, kernelW: kw, stride: stride, padding: padding)
        let oh = geo.outH, ow = geo.outW, ohw = oh * ow
        precondition(oh > 0 && ow > 0, "conv2d: kernel \(kh)x\(kw) larger than padded input \(h)x\(w)")
        let og = o / groups, kdim = cg * kh * kw
        let out = Storage(uninitializedCount: batch * o * ohw)
        let x = base, wp = weight.base, y = out.base
        // Each image in its own thread with its own column buffer; BLAS runs inside.
        Parallel.forChunks(batch, grain: 1) { r in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: kdim * ohw) { colBuf in
                let col = colBuf.baseAddress!
                for b in r {
                    for g in 0..<groups {
                        geo.im2col(x + (b * c + g * cg) * h * w, col)
                        // y_g (og, ohw) = W_g (og, kdim) . col (kdim, ohw)
                        sgemm(false, false, og, ohw, kdim, 1, wp + g * og * kdim, kdim, col, ohw, 0,
                              y + (b * o + g * og) * ohw, ohw)
                    }
                    if let bias {
                        for oc in 0..<o {
                            let bv = bias.base[oc], row = y + (b * o + oc) * ohw
                            for i in 0..<ohw { row[i] += bv }
                        }
                    }
                }
            }
        }
        let input = self
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        return makeResult(shape: [batch, o, oh, ow], storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                let gx = input.node?.accumulator()
                let gw = weight.node?.accumulator()
                withUnsafeTemporaryAllocation(of: Float.self, capacity: kdim * ohw) { colBuf in
                    let col = colBuf.baseAddress!
                    for b in 0..<batch {
                        for grp in 0..<groups {
                            let gy = gp + (b * o + grp * og) * ohw
                            if let gw {
                                geo.im2col(x + (b * c + grp * cg) * h * w, col)
                                // dW_g (og, kdim) += dy_g (og, ohw) . col^T
                                sgemm(false, true, og, kdim, ohw, 1, gy, ohw, col, ohw, 1, gw + grp * og * kdim, kdim)
                            }
                            if let gx {
                                // dcol (kdim, ohw) = W_g^T (kdim, og) . dy_g
                                sgemm(true, false, kdim, ohw, og, 1, wp + grp * og * kdim, kdim, gy, ohw, 0, col, ohw)
                                geo.col2im(col, gx + (b * c + grp * cg) * h * w)
                            }
                        }
                    }
                }
                if let bias, let nb = bias.node {
                    let gb = nb.accumulator()
                    for b in 0..<batch { for oc in 0..<o { gb[oc] += vsum(gp + (b * o + oc) * ohw, ohw) } }
                }
            }
        }
    }

    /// Max pooling over (N, C, H, W) windows; padding counts as -infinity.
    public func maxPool2d(kernel: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
        pool2d(kernel: kernel, stride: stride ?? kernel, padding: padding, max: true)
    }

    /// Average pooling over (N, C, H, W) windows; padded zeros count in the divisor (PyTorch's
    /// default count_include_pad).
    public func avgPool2d(kernel: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
        pool2d(kernel: kernel, stride: stride ?? kernel, padding: padding, max: false)
    }

    func pool2d(kernel: Int, stride: Int, padding: Int, max isMax: Bool) -> Tensor {
        precondition(rank == 4, "pooling expects (N, C, H, W), got \(shape)")
        precondition(padding * 2 <= kernel, "pooling: padding must be at most half the kernel")
        let planes = shape[0] * shape[1], h = shape[2], w = shape[3]
        let geo = Conv2DGeometry(channels: 1, height: h, width: w, kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
        let oh = geo.outH, ow = geo.outW
        let out = Storage(uninitializedCount: planes * oh * ow)
        var argmax = [Int32](repeating: -1, count: isMax ? planes * oh * ow : 0)
        let x = base, y = out.base
        let area = Float(kernel * kernel)
        argmax.withUnsafeMutableBufferPointer { ab in
            let am = ab.baseAddress
            Parallel.forChunks(planes, grain: 1) { r in
                for p in r {
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            var best = -Float.infinity, bestIndex: Int32 = -1, total: Float = 0
                            for ky in 0..<kernel {
                                let iy = oy * stride - padding + ky
                                if iy < 0 || iy >= h { continue }
                                for kx in 0..<kernel {
                                    let ix = ox * stride - padding + kx
                                    if ix < 0 || ix >= w { continue }
                                    let v = x[(p * h + iy) * w + ix]
                                    total += v
                                    if v > best || bestIndex < 0 { best = v; bestIndex = Int32(iy * w + ix) }
                                }
                            }
                            let k = (p * oh + oy) * ow + ox
                            if isMax { y[k] = best; am![k] = bestIndex } else { y[k] = total / area }
                        }
                    }
                }
            }
        }
        let input = self
        return makeResult(shape: [shape[0], shape[1], oh, ow], storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator(), gp = g.base
                for p in 0..<planes {
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            let k = (p * oh + oy) * ow + ox
                            if isMax {
                                gx[p * h * w + Int(argmax[k])] += gp[k]
                                continue
                            }
                            for ky in 0..<kernel {
                                let iy = oy * stride - padding + ky
                                if iy < 0 || iy >= h { continue }
                                for kx in 0..<kernel {
                                    let ix = ox * stride - padding + kx
                                    if ix >= 0 && ix < w { gx[(p * h + iy) * w + ix] += gp[k] / area }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
