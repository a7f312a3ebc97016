/// Geometry of a 2-D convolution or pooling window.
public struct Conv2DGeometry {
    public let channels, height, width, kernelH, kernelW, stride, padding: Int
    public var outH: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outW: Int { (width + 2 * padding - kernelW) / stride + 1 }

    /// Every in-image tap of every output position, for one-channel windows.
    func tapList() -> TapList { TapList(self) }

    /// The output columns `ox` whose tap at kernel column `kx` reads inside the image.
    @inline(__always)
    func validColumns(_ kx: Int) -> Range<Int> {
        // ix = ox * stride - padding + kx must lie in 0..<width.
        let lo = Swift.max(0, (padding - kx + stride - 1) / stride)
        let last = width - 1 + padding - kx
        let hi = last < 0 ? 0 : Swift.min(outW, last / stride + 1)
        return lo..<Swift.max(lo, hi)
    }

    /// Visits every row of the unfolded image: `body(row, c, ky, kx)` with row = (c * kh + ky) * kw + kx.
    @inline(__always)
    func forEachRow(_ body: (_ row: Int, _ c: Int, _ ky: Int, _ kx: Int) -> Void) {
        for c in 0..<channels { for ky in 0..<kernelH { for kx in 0..<kernelW { body((c * kernelH + ky) * kernelW + kx, c, ky, kx) } } }
    }

    /// Writes one image x (channels, H, W) unfolded into col: row r = (c, ky, kx) at col + r * ld,
    /// position oy * outW + ox within it; zero where the window covers padding.
    func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, ld: Int) {
        let oh = outH, ow = outW
        if kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 {
            for c in 0..<channels { (col + c * ld).update(from: x + c * height * width, count: height * width) }
            return
        }
        forEachRow { row, c, ky, kx in
            let dst = col + row * ld, cols = validColumns(kx), plane = x + c * height * width
            for oy in 0..<oh {
                let d = dst + oy * ow, iy = oy * stride - padding + ky
                guard iy >= 0 && iy < height, !cols.isEmpty else {
                    d.update(repeating: 0, count: ow)
                    continue
                }
                for ox in 0..<cols.lowerBound { d[ox] = 0 }
                let src = plane + iy * width - padding + kx
                if stride == 1 {
                    (d + cols.lowerBound).update(from: src + cols.lowerBound, count: cols.count)
                } else {
                    for ox in cols { d[ox] = src[ox * stride] }
                }
                for ox in cols.upperBound..<ow { d[ox] = 0 }
            }
        }
    }

    /// dx (channels, H, W) += the columns of one image scattered back (the adjoint of im2col).
    func col2im(_ col: UnsafePointer<Float>, ld: Int, _ dx: UnsafeMutablePointer<Float>) {
        let oh = outH, ow = outW
        if kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 {
            for c in 0..<channels {
                let s = col + c * ld, d = dx + c * height * width
                for i in 0..<height * width { d[i] += s[i] }
            }
            return
        }
        forEachRow { row, c, ky, kx in
            let s = col + row * ld, cols = validColumns(kx), plane = dx + c * height * width
            for oy in 0..<oh {
                let iy = oy * stride - padding + ky
                guard iy >= 0 && iy < height else { continue }
                let dst = plane + iy * width - padding + kx, srow = s + oy * ow
                for ox in cols { dst[ox * stride] += srow[ox] }
            }
        }
    }
}

/// A window's in-image taps, built once per call and read through raw pointers: output o's taps
/// are entries first[o] ..< first[o + 1], each a filter tap (ky * kW + kx) and an input position
/// (iy * W + ix). Padding taps are left out (they read zeros, or never win a max).
final class TapList {
    let first: UnsafeMutablePointer<Int32>, tap: UnsafeMutablePointer<Int32>, input: UnsafeMutablePointer<Int32>

    init(_ geo: Conv2DGeometry) {
        let outputs = geo.outH * geo.outW, most = outputs * geo.kernelH * geo.kernelW
        first = .allocate(capacity: outputs + 1)
        tap = .allocate(capacity: Swift.max(most, 1))
        input = .allocate(capacity: Swift.max(most, 1))
        var count = 0
        for oy in 0..<geo.outH {
            for ox in 0..<geo.outW {
                first[oy * geo.outW + ox] = Int32(count)
                for ky in 0..<geo.kernelH {
                    let iy = oy * geo.stride - geo.padding + ky
                    if iy < 0 || iy >= geo.height { continue }
                    for kx in 0..<geo.kernelW {
                        let ix = ox * geo.stride - geo.padding + kx
                        if ix < 0 || ix >= geo.width { continue }
                        tap[count] = Int32(ky * geo.kernelW + kx)
                        input[count] = Int32(iy * geo.width + ix)
                        count += 1
                    }
                }
            }
        }
        first[outputs] = Int32(count)
    }

    deinit { first.deallocate(); tap.deallocate(); input.deallocate() }

    /// The entries of output `o`.
    @inline(__always) func entries(_ o: Int) -> Range<Int> { Int(first[o])..<Int(first[o + 1]) }
}

extension Tensor {
    /// 2-D convolution (cross-correlation, as torch.nn.functional.conv2d) of x (N, C, H, W) with
    /// weight (O, C/groups, kh, kw) and optional bias (O). `groups == C == O` is depthwise.
    public func conv2d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, groups: Int = 1) -> Tensor {
        precondition(rank == 4 && weight.rank == 4, "conv2d expects x (N, C, H, W) and weight (O, C/groups, kh, kw)")
        let c = shape[1], h = shape[2], w = shape[3]
        let o = weight.shape[0], cg = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3]
        precondition(groups > 0 && c % groups == 0 && o % groups == 0 && cg == c / groups,
                     "conv2d: \(c) input channels, weight \(weight.shape) and groups \(groups) do not fit")
        if let bias { precondition(bias.shape == [o], "conv2d: bias must be [\(o)]") }
        let geo = Conv2DGeometry(channels: cg, height: h, width: w, kernelH: kh, kernelW: kw, stride: stride, padding: padding)
        precondition(geo.outH > 0 && geo.outW > 0, "conv2d: kernel \(kh)x\(kw) larger than padded input \(h)x\(w)")
        if groups == c && o == c { return depthwiseConv2d(weight: weight, bias: bias, geometry: geo) }
        return unfoldedConv2d(weight: weight, bias: bias, geometry: geo, groups: groups)
    }

    /// Convolution as products over the whole batch: each group's columns (kdim, N * outH * outW)
    /// hold every image side by side, so one product per group does the batch, split over the
    /// cores by `sgemm`. The columns are rebuilt in backward rather than kept on the tape.
    func unfoldedConv2d(weight: Tensor, bias: Tensor?, geometry geo: Conv2DGeometry, groups: Int) -> Tensor {
        let batch = shape[0], c = shape[1], h = shape[2], w = shape[3], o = weight.shape[0]
        let cg = geo.channels, og = o / groups, kdim = cg * geo.kernelH * geo.kernelW
        let ohw = geo.outH * geo.outW, n = batch * ohw, grain = Swift.max(1, 4096 / Swift.max(1, kdim * ohw))
        let x = base, wp = weight.base, bp = bias?.base
        let colStorage = Storage(uninitializedCount: kdim * n), ytStorage = Storage(uninitializedCount: og * n)
        let col = colStorage.base, yt = ytStorage.base
        let out = Storage(uninitializedCount: batch * o * ohw)
        let y = out.base
        for g in 0..<groups {
            Parallel.forChunks(batch, grain: grain) { r in
                for b in r { geo.im2col(x + (b * c + g * cg) * h * w, col + b * ohw, ld: n) }
            }
            // Y_g (og, N) = W_g (og, kdim) . col_g (kdim, N), then each image's block to (og, ohw) in y.
            sgemm(false, false, og, n, kdim, 1, wp + g * og * kdim, kdim, col, n, 0, yt, n)
            Parallel.forChunks(batch, grain: Swift.max(1, 4096 / Swift.max(1, og * ohw))) { r in
                for b in r {
                    for oc in 0..<og {
                        let dst = y + (b * o + g * og + oc) * ohw, src = yt + oc * n + b * ohw
                        if let bp {
                            let bv = bp[g * og + oc]
                            for i in 0..<ohw { dst[i] = src[i] + bv }
                        } else {
                            dst.update(from: src, count: ohw)
                        }
                    }
                }
            }
        }
        withExtendedLifetime((colStorage, ytStorage)) {}
        let input = self
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        return makeResult(shape: [batch, o, geo.outH, geo.outW], storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                let gx = input.node?.accumulator()
                let gw = weight.node?.accumulator()
                let gb = bias?.node?.accumulator()
                let colStorage = Storage(uninitializedCount: kdim * n), gytStorage = Storage(uninitializedCount: og * n)
                let cols = colStorage.base, gyt = gytStorage.base
                for grp in 0..<groups {
                    // dY_g (og, N) gathered from the images' (og, ohw) blocks.
                    Parallel.forChunks(batch, grain: Swift.max(1, 4096 / Swift.max(1, og * ohw))) { r in
                        for b in r {
                            for oc in 0..<og {
                                (gyt + oc * n + b * ohw).update(from: gp + (b * o + grp * og + oc) * ohw, count: ohw)
                            }
                        }
                    }
                    if let gb { for oc in 0..<og { gb[grp * og + oc] += vsum(gyt + oc * n, n) } }
                    if let gw {
                        Parallel.forChunks(batch, grain: grain) { r in
                            for b in r { geo.im2col(x + (b * c + grp * cg) * h * w, cols + b * ohw, ld: n) }
                        }
                        // dW_g (og, kdim) += dY_g (og, N) . col_g^T
                        sgemm(false, true, og, kdim, n, 1, gyt, n, cols, n, 1, gw + grp * og * kdim, kdim)
                    }
                    if let gx {
                        // dcol (kdim, N) = W_g^T (kdim, og) . dY_g, scattered back image by image.
                        sgemm(true, false, kdim, n, og, 1, wp + grp * og * kdim, kdim, gyt, n, 0, cols, n)
                        Parallel.forChunks(batch, grain: grain) { r in
                            for b in r { geo.col2im(cols + b * ohw, ld: n, gx + (b * c + grp * cg) * h * w) }
                        }
                    }
                }
                withExtendedLifetime((colStorage, gytStorage)) {}
            }
        }
    }

    /// Depthwise convolution (one k x k filter per channel): direct loops, each (image, channel)
    /// plane on its own; the filter gradient sums over the batch inside one channel's task, so the
    /// result does not depend on the split. Narrow maps (a CvT's 7x7 down to 1x1) go through a
    /// tap list built once per call, (output, filter tap, input) for every in-image tap, so the
    /// per-plane loops carry no bounds logic; wide maps run tap by tap over whole output rows.
    func depthwiseConv2d(weight: Tensor, bias: Tensor?, geometry geo: Conv2DGeometry) -> Tensor {
        let batch = shape[0], c = shape[1], h = geo.height, w = geo.width
        let kh = geo.kernelH, kw = geo.kernelW, s = geo.stride, p = geo.padding
        let oh = geo.outH, ow = geo.outW, ohw = oh * ow, hw = h * w, kk = kh * kw
        let planes = batch * c, grain = Swift.max(1, 2048 / Swift.max(1, ohw * kk))
        let out = Storage(uninitializedCount: planes * ohw)
        let x = base, wp = weight.base, y = out.base, bp = bias?.base
        /// Calls body(outputRow, inputRow, kernelTap, valid ox) for every in-image row pair.
        @inline(__always) func taps(_ body: (Int, Int, Int, Range<Int>) -> Void) {
            for ky in 0..<kh {
                for kx in 0..<kw {
                    let cols = geo.validColumns(kx)
                    if cols.isEmpty { continue }
                    for oy in 0..<oh {
                        let iy = oy * s - p + ky
                        if iy < 0 || iy >= h { continue }
                        body(oy * ow, iy * w - p + kx, ky * kw + kx, cols)
                    }
                }
            }
        }
        // Narrow maps read their taps from a list; wide ones go row by row.
        let list = ow < 16 ? geo.tapList() : nil
        Parallel.forChunks(planes, grain: grain) { r in
            for plane in r {
                let ch = plane % c, dst = y + plane * ohw, src = x + plane * hw, f = wp + ch * kk
                let b0 = bp?[ch] ?? 0
                if let list {
                    let tap = list.tap, input = list.input
                    for o in 0..<ohw {
                        var acc = b0
                        for e in list.entries(o) { acc += f[Int(tap[e])] * src[Int(input[e])] }
                        dst[o] = acc
                    }
                    continue
                }
                dst.update(repeating: b0, count: ohw)
                taps { yo, xo, k, cols in
                    let wv = f[k], d = dst + yo, sx = src + xo
                    for ox in cols { d[ox] += wv * sx[ox * s] }
                }
            }
        }
        let input = self
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        return makeResult(shape: [batch, c, oh, ow], storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                if let gx = input.node?.accumulator() {
                    Parallel.forChunks(planes, grain: grain) { r in
                        for plane in r {
                            let gy = gp + plane * ohw, dx = gx + plane * hw, f = wp + (plane % c) * kk
                            if let list {
                                let tap = list.tap, input = list.input
                                for o in 0..<ohw {
                                    let gv = gy[o]
                                    for e in list.entries(o) { dx[Int(input[e])] += f[Int(tap[e])] * gv }
                                }
                                continue
                            }
                            taps { yo, xo, k, cols in
                                let wv = f[k], gyr = gy + yo, d = dx + xo
                                for ox in cols { d[ox * s] += wv * gyr[ox] }
                            }
                        }
                    }
                }
                let gw = weight.node?.accumulator(), gb = bias?.node?.accumulator()
                if gw == nil && gb == nil { return }
                Parallel.forChunks(c, grain: Swift.max(1, grain / Swift.max(1, batch))) { r in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: kk) { accBuffer in
                        let acc = accBuffer.baseAddress!
                        for ch in r {
                            acc.update(repeating: 0, count: kk)
                            var biasSum: Float = 0
                            for b in 0..<batch {
                                let plane = b * c + ch, gy = gp + plane * ohw, src = x + plane * hw
                                if gb != nil { biasSum += vsum(gy, ohw) }
                                guard gw != nil else { continue }
                                if let list {
                                    let tap = list.tap, input = list.input
                                    for o in 0..<ohw {
                                        let gv = gy[o]
                                        for e in list.entries(o) { acc[Int(tap[e])] += gv * src[Int(input[e])] }
                                    }
                                    continue
                                }
                                taps { yo, xo, k, cols in
                                    let gyr = gy + yo, sx = src + xo
                                    var t: Float = 0
                                    for ox in cols { t += gyr[ox] * sx[ox * s] }
                                    acc[k] += t
                                }
                            }
                            if let gb { gb[ch] += biasSum }
                            if let gw { for k in 0..<kk { gw[ch * kk + k] += acc[k] } }
                        }
                    }
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
        let area = Float(kernel * kernel), ohw = oh * ow, hw = h * w
        // Each output's in-image taps (padding never wins a max and adds 0 to an average).
        let list = geo.tapList()
        argmax.withUnsafeMutableBufferPointer { ab in
            let am = ab.baseAddress, input = list.input
            Parallel.forChunks(planes, grain: 1) { r in
                for p in r {
                    let src = x + p * hw
                    for o in 0..<ohw {
                        var best = -Float.infinity, bestIndex: Int32 = -1, total: Float = 0
                        for e in list.entries(o) {
                            let v = src[Int(input[e])]
                            total += v
                            if v > best || bestIndex < 0 { best = v; bestIndex = input[e] }
                        }
                        let k = p * ohw + o
                        if isMax { y[k] = best; am![k] = bestIndex } else { y[k] = total / area }
                    }
                }
            }
        }
        let input = self
        return makeResult(shape: [shape[0], shape[1], oh, ow], storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator(), gp = g.base
                argmax.withUnsafeBufferPointer { ab in
                    let am = ab.baseAddress, input = list.input
                    for p in 0..<planes {
                        let dx = gx + p * hw
                        for o in 0..<ohw {
                            let k = p * ohw + o
                            if isMax {
                                dx[Int(am![k])] += gp[k]
                                continue
                            }
                            let share = gp[k] / area
                            for e in list.entries(o) { dx[Int(input[e])] += share }
                        }
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// torch.nn.functional.unfold: the sliding kernel x kernel windows of x (N, C, H, W), zero
    /// padded, as columns (N, C * kernel * kernel, L), row (c, ky, kx), L = outH * outW positions
    /// in row-major order. Its gradient folds the columns back, summing where windows overlap.
    public func unfold(kernel: Int, stride: Int = 1, padding: Int = 0) -> Tensor {
        precondition(rank == 4, "unfold expects (N, C, H, W), got \(shape)")
        let (batch, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
        let geo = Conv2DGeometry(channels: c, height: h, width: w, kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
        precondition(geo.outH > 0 && geo.outW > 0, "unfold: kernel \(kernel) larger than padded input \(h)x\(w)")
        let rows = c * kernel * kernel, l = geo.outH * geo.outW
        let out = Storage(uninitializedCount: batch * rows * l)
        let (x, o) = (base, out.base)
        let grain = Swift.max(1, 65536 / Swift.max(1, rows * l))
        Parallel.forChunks(batch, grain: grain) { r in
            for b in r { geo.im2col(x + b * c * h * w, o + b * rows * l, ld: l) }
        }
        let input = self
        return makeResult(shape: [batch, rows, l], storage: out, inputs: [self]) {
            { g in
                guard let gx = input.node?.accumulator() else { return }
                let gp = g.base
                Parallel.forChunks(batch, grain: grain) { r in
                    for b in r { geo.col2im(gp + b * rows * l, ld: l, gx + b * c * h * w) }
                }
            }
        }
    }
}
