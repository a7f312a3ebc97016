/// Depthwise convolution of a channels-last map (B, H, W, C): one k x k filter per channel, in
/// PyTorch's weight shape (C, 1, k, k), stride and zero padding as Conv2d(groups: C). Every tap is
/// a multiply-add of whole channel vectors (contiguous here, unlike in (B, C, H, W)), so token
/// sequences (B, H W, C) are convolved where they are, with no permutes: XCiT's local patch
/// interaction, CvT's convolutional projections, position-encoding generators.
extension Tensor {
    public func depthwiseConv2dChannelsLast(weight: Tensor, bias: Tensor? = nil, stride s: Int = 1, padding p: Int) -> Tensor {
        precondition(rank == 4, "depthwiseConv2dChannelsLast expects (B, H, W, C), got \(shape)")
        let (batch, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
        precondition(weight.shape.count == 4 && weight.shape[0] == c && weight.shape[1] == 1 && weight.shape[2] == weight.shape[3],
                     "depthwiseConv2dChannelsLast: weight \(weight.shape) must be (\(c), 1, k, k)")
        precondition(bias == nil || bias!.shape == [c], "depthwiseConv2dChannelsLast: bias must be (\(c))")
        let k = weight.shape[2]
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        precondition(oh > 0 && ow > 0, "depthwiseConv2dChannelsLast: a \(k)x\(k) kernel does not fit \(h)x\(w) with padding \(p)")
        // The filter as (k k, C): tap t's weights for every channel side by side.
        let taps = Storage(uninitializedCount: k * k * c)
        let wp = weight.base, tp = taps.base
        for ch in 0..<c { for t in 0..<(k * k) { tp[t * c + ch] = wp[ch * k * k + t] } }
        let out = Storage(uninitializedCount: batch * oh * ow * c)
        let x = base, y = out.base, bp = bias?.base
        let rows = batch * oh
        Parallel.forChunks(rows, grain: Swift.max(1, 4096 / Swift.max(1, ow * c * k * k))) { range in
            for row in range {
                let (b, oy) = (row / oh, row % oh)
                for ox in 0..<ow {
                    let o = y + ((b * oh + oy) * ow + ox) * c
                    if let bp { o.update(from: bp, count: c) } else { o.update(repeating: 0, count: c) }
                    for ky in 0..<k {
                        let iy = oy * s - p + ky
                        guard iy >= 0 && iy < h else { continue }
                        for kx in 0..<k {
                            let ix = ox * s - p + kx
                            guard ix >= 0 && ix < w else { continue }
                            let xi = x + ((b * h + iy) * w + ix) * c, wt = tp + (ky * k + kx) * c
                            for ch in 0..<c { o[ch] += xi[ch] * wt[ch] }
                        }
                    }
                }
            }
        }
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        let input = self
        return makeResult(shape: [batch, oh, ow, c], storage: out, inputs: inputs) {
            { g in
                let gp = g.base
                let dx = input.node?.accumulator()
                let needW = weight.node != nil, needB = bias?.node != nil
                // Per-chunk partial filter and bias gradients (over images), added in chunk order.
                let chunks = Parallel.chunkCount(batch, grain: 1)
                let partW = Storage(count: needW ? chunks * k * k * c : 1), partB = Storage(count: needB ? chunks * c : 1)
                let tp = taps.base
                Parallel.forIndexedChunks(batch, grain: 1) { chunk, range in
                    let dwc = partW.base + (needW ? chunk * k * k * c : 0), dbc = partB.base + (needB ? chunk * c : 0)
                    for b in range {
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                let go = gp + ((b * oh + oy) * ow + ox) * c
                                if needB { for ch in 0..<c { dbc[ch] += go[ch] } }
                                for ky in 0..<k {
                                    let iy = oy * s - p + ky
                                    guard iy >= 0 && iy < h else { continue }
                                    for kx in 0..<k {
                                        let ix = ox * s - p + kx
                                        guard ix >= 0 && ix < w else { continue }
                                        let at = ((b * h + iy) * w + ix) * c, t = (ky * k + kx) * c
                                        if let dx {
                                            let di = dx + at, wt = tp + t
                                            for ch in 0..<c { di[ch] += go[ch] * wt[ch] }
                                        }
                                        if needW {
                                            let xi = x + at, dw = dwc + t
                                            for ch in 0..<c { dw[ch] += go[ch] * xi[ch] }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                if needW, let gw = weight.node?.accumulator() {
                    for chunk in 0..<chunks {
                        let part = partW.base + chunk * k * k * c
                        for ch in 0..<c { for t in 0..<(k * k) { gw[ch * k * k + t] += part[t * c + ch] } }
                    }
                }
                if needB, let gb = bias?.node?.accumulator() {
                    for chunk in 0..<chunks {
                        let part = partB.base + chunk * c
                        for ch in 0..<c { gb[ch] += part[ch] }
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// The k x k windows of a channels-last map (B, H, W, C) at stride `s` with zero padding `p`,
    /// as rows (B OH OW, k k C): row (b, oy, ox) holds its taps (ky, kx) in order, each tap's C
    /// channels contiguous, zeros where a tap falls outside the map. A channels-last convolution is
    /// these rows times its weight as (O, k k C). Forward copies channel vectors, spread over the
    /// images' output rows; backward adds each row's taps back into their positions, spread over
    /// images, in the rows' order (b, oy, ox, ky, kx) within each image.
    public func windowsChannelsLast(kernel k: Int, stride s: Int, padding p: Int) -> Tensor {
        precondition(rank == 4, "windowsChannelsLast expects (B, H, W, C), got \(shape)")
        let (batch, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
        let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
        precondition(k > 0 && s > 0 && oh > 0 && ow > 0, "windowsChannelsLast: a \(k)x\(k) kernel does not fit \(h)x\(w) with padding \(p)")
        let rowWidth = k * k * c
        // Output row (b, oy, ox)'s taps in order: each tap's offset in the map, nil outside it.
        @inline(__always) func forEachTap(_ b: Int, _ oy: Int, _ ox: Int, _ body: (Int?) -> Void) {
            for ky in 0..<k {
                let iy = oy * s - p + ky
                for kx in 0..<k {
                    let ix = ox * s - p + kx
                    body(iy >= 0 && iy < h && ix >= 0 && ix < w ? ((b * h + iy) * w + ix) * c : nil)
                }
            }
        }
        let out = Storage(uninitializedCount: batch * oh * ow * rowWidth)
        let x = base, y = out.base
        Parallel.forChunks(batch * oh, grain: Swift.max(1, 8192 / Swift.max(1, ow * rowWidth))) { range in
            for line in range {
                let (b, oy) = (line / oh, line % oh)
                for ox in 0..<ow {
                    var o = y + (line * ow + ox) * rowWidth
                    forEachTap(b, oy, ox) { at in
                        if let at { for ch in 0..<c { o[ch] = x[at + ch] } } else { for ch in 0..<c { o[ch] = 0 } }
                        o += c
                    }
                }
            }
        }
        let input = self
        return makeResult(shape: [batch * oh * ow, rowWidth], storage: out, inputs: [self]) {
            { g in
                guard let node = input.node else { return }
                // Sums start from zero (into the fresh gradient, or a zeroed scratch that is then
                // added to an existing one), so a tap's contributions round as a gather's would.
                let fresh = node.grad == nil
                let scratch = fresh ? nil : Storage(count: input.count)
                let sums = scratch?.base ?? node.accumulator()
                let gp = g.base
                Parallel.forChunks(batch, grain: 1) { range in
                    for b in range {
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                var go = gp + ((b * oh + oy) * ow + ox) * rowWidth
                                forEachTap(b, oy, ox) { at in
                                    if let at { for ch in 0..<c { sums[at + ch] += go[ch] } }
                                    go += c
                                }
                            }
                        }
                    }
                }
                if let scratch {
                    let gx = node.accumulator(), sp = scratch.base
                    Parallel.forChunks(input.count, grain: 65536) { r in for i in r { gx[i] += sp[i] } }
                }
            }
        }
    }
}
