#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Integer indices with a shape (for gather, scatter, argsort and top-k). Never differentiated.
public struct IndexTensor: Equatable {
    public let shape: [Int]
    public var values: [Int]

    public init(shape: [Int], _ values: [Int]) {
        precondition(product(shape) == values.count, "\(values.count) indices for shape \(shape)")
        self.shape = shape
        self.values = values
    }
}

// MARK: - Views and copies that move elements

extension Tensor {
    /// The same storage read with another shape of the same element count; one dimension may be -1.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let free = s.firstIndex(of: -1) {
            s[free] = 1
            let known = product(s)
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            s[free] = count / known
        }
        precondition(product(s) == count, "cannot reshape \(shape) to \(newShape)")
        if s == shape { return self }
        let input = self
        return makeResult(shape: s, storage: storage, inputs: [self]) {
            { g in handInto(input.node!, g) }
        }
    }

    /// Copies with the axes reordered: result axis i is input axis `order[i]`.
    public func permuted(_ order: [Int]) -> Tensor {
        precondition(order.sorted() == Array(0..<rank), "invalid permutation \(order) for rank \(rank)")
        if order == Array(0..<rank) { return self }
        let outShape = order.map { shape[$0] }
        let out = Storage(uninitializedCount: count)
        Tensor.permuteKernel(src: base, shape: shape, order: order, dst: out.base, accumulate: false)
        var inverse = [Int](repeating: 0, count: rank)
        for (i, o) in order.enumerated() { inverse[o] = i }
        let input = self
        return makeResult(shape: outShape, storage: out, inputs: [self]) {
            { g in
                Tensor.permuteKernel(src: g.base, shape: outShape, order: inverse,
                                     dst: input.node!.accumulator(), accumulate: true)
            }
        }
    }

    /// The permutation with size-1 axes dropped and axes that stay neighbours in order merged:
    /// the input as `shape` and the output's axes as `order` of it. NCHW -> NHWC is (B, C, H*W)
    /// with order [0, 2, 1]; a permutation that moves only size-1 axes is one axis.
    static func coalesced(shape: [Int], order: [Int]) -> (shape: [Int], order: [Int]) {
        let kept = shape.indices.filter { shape[$0] != 1 }
        var rankOf = [Int](repeating: -1, count: shape.count)
        for (i, axis) in kept.enumerated() { rankOf[axis] = i }
        let sequence = order.filter { shape[$0] != 1 }.map { rankOf[$0] }
        // Runs of the output's axes that are consecutive input axes, in output order.
        var runs: [[Int]] = []
        for axis in sequence {
            if let last = runs.last?.last, axis == last + 1 { runs[runs.count - 1].append(axis) } else { runs.append([axis]) }
        }
        let byInput = runs.indices.sorted { runs[$0][0] < runs[$1][0] }
        var position = [Int](repeating: 0, count: runs.count)
        for (i, run) in byInput.enumerated() { position[run] = i }
        return (byInput.map { runs[$0].reduce(1) { $0 * shape[kept[$1]] } }, runs.indices.map { position[$0] })
    }

    /// dst[permuted index] (+)= src[index] for a contiguous src of `shape`.
    static func permuteKernel(src: UnsafeMutablePointer<Float>, shape: [Int], order: [Int],
                              dst: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let (merged, mergedOrder) = coalesced(shape: shape, order: order)
        if merged.count <= 1 {
            // The same order of values (only size-1 axes moved).
            let n = merged.first ?? 1
            Parallel.forChunks(n) { r in
                if accumulate { for i in r { dst[i] += src[i] } } else { (dst + r.lowerBound).update(from: src + r.lowerBound, count: r.count) }
            }
            return
        }
        if mergedOrder == [1, 0] || mergedOrder == [0, 2, 1] {
            // A batch of transposes, (rows, cols) -> (cols, rows), in tiles of 32 rows: each tile
            // reads 32 rows and writes 32 contiguous values of each output row (NCHW <-> NHWC).
            let (batch, rows, cols) = merged.count == 2 ? (1, merged[0], merged[1]) : (merged[0], merged[1], merged[2])
            let tile = 32, tiles = (rows + tile - 1) / tile
            Parallel.forChunks(batch * tiles, grain: Swift.max(1, 16384 / Swift.max(tile * cols, 1))) { r in
                for job in r {
                    let b = job / tiles, r0 = (job % tiles) * tile, r1 = Swift.min(rows, r0 + tile)
                    let s = src + b * rows * cols, d = dst + b * rows * cols
                    for c in 0..<cols {
                        let out = d + c * rows
                        if accumulate { for row in r0..<r1 { out[row] += s[row * cols + c] } } else { for row in r0..<r1 { out[row] = s[row * cols + c] } }
                    }
                }
            }
            return
        }
        let rank = shape.count
        let outShape = order.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        // Strides of the input read in output order.
        let readStrides = order.map { inStrides[$0] }
        Broadcast.forEachRow(outShape, [readStrides]) { row, off in
            let inner = outShape[rank - 1]
            let step = readStrides[rank - 1]
            let s = src + off[0], d = dst + row * inner
            if accumulate {
                for i in 0..<inner { d[i] += s[i * step] }
            } else if step == 1 {
                d.update(from: s, count: inner)
            } else {
                for i in 0..<inner { d[i] = s[i * step] }
            }
        }
    }

    /// Swaps two axes.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var order = Array(0..<rank)
        order.swapAt(axis(a), axis(b))
        return permuted(order)
    }

    /// Broadcasts to `newShape` (a copy); the gradient sums over the stretched axes.
    public func expanded(to newShape: [Int]) -> Tensor {
        precondition(Broadcast.shape(shape, newShape) == newShape, "cannot expand \(shape) to \(newShape)")
        if newShape == shape { return self }
        let out = Storage(uninitializedCount: product(newShape))
        let strides = Broadcast.strides(of: shape, in: newShape)
        let inner = newShape.last ?? 1
        let step = strides.last ?? 0
        let src = base, dst = out.base
        Broadcast.forEachRow(newShape, [strides]) { row, off in
            let s = src + off[0], d = dst + row * inner
            for i in 0..<inner { d[i] = s[i * step] }
        }
        let input = self
        return makeResult(shape: newShape, storage: out, inputs: [self]) {
            { g in addInto(input.node!, Tensor(shape: newShape, storage: g).sumToShape(input.shape)) }
        }
    }

    /// Inserts a dimension of size 1 at `axis`.
    public func unsqueezed(_ a: Int) -> Tensor {
        var s = shape
        s.insert(1, at: a < 0 ? a + rank + 1 : a)
        return reshaped(s)
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    public static func concat(_ parts: [Tensor], axis a: Int) -> Tensor {
        precondition(!parts.isEmpty, "concat of nothing")
        let ax = parts[0].axis(a)
        var outShape = parts[0].shape
        outShape[ax] = parts.reduce(0) { $0 + $1.shape[ax] }
        for p in parts {
            var s = p.shape
            s[ax] = outShape[ax]
            precondition(s == outShape, "concat: shape \(p.shape) does not fit \(outShape) along axis \(ax)")
        }
        let outer = product(outShape[..<ax]), inner = product(outShape[(ax + 1)...])
        let total = outShape[ax] * inner
        let out = Storage(uninitializedCount: product(outShape))
        var start = 0
        var starts: [Int] = []
        for p in parts {
            starts.append(start)
            let block = p.shape[ax] * inner
            let src = p.base, dst = out.base + start
            for o in 0..<outer { (dst + o * total).update(from: src + o * block, count: block) }
            start += block
        }
        return makeResult(shape: outShape, storage: out, inputs: parts) {
            { g in
                for (p, st) in zip(parts, starts) {
                    guard let node = p.node else { continue }
                    let block = p.shape[ax] * inner
                    let gx = node.accumulator()
                    for o in 0..<outer {
                        let s = g.base + o * total + st, d = gx + o * block
                        for i in 0..<block { d[i] += s[i] }
                    }
                }
            }
        }
    }

    /// Elements `start..<start+length` along `axis` (a copy).
    public func slice(axis a: Int, start: Int, length: Int) -> Tensor {
        let ax = axis(a)
        precondition(start >= 0 && length >= 0 && start + length <= shape[ax],
                     "slice \(start)..<\(start + length) out of range for axis \(ax) of \(shape)")
        let (outer, n, inner) = split3(ax)
        var outShape = shape
        outShape[ax] = length
        let out = Storage(uninitializedCount: outer * length * inner)
        let block = length * inner
        for o in 0..<outer { (out.base + o * block).update(from: base + (o * n + start) * inner, count: block) }
        let input = self
        return makeResult(shape: outShape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                for o in 0..<outer {
                    let d = gx + (o * n + start) * inner, s = g.base + o * block
                    for i in 0..<block { d[i] += s[i] }
                }
            }
        }
    }

    /// Splits along `axis` into pieces of the given sizes.
    public func split(sizes: [Int], axis a: Int) -> [Tensor] {
        let ax = axis(a)
        precondition(sizes.reduce(0, +) == shape[ax], "split sizes \(sizes) do not add up to \(shape[ax])")
        var start = 0
        return sizes.map { len in
            defer { start += len }
            return slice(axis: ax, start: start, length: len)
        }
    }

    /// Splits along `axis` into `chunks` equal pieces (as torch.chunk with an even split).
    public func chunked(_ chunks: Int, axis a: Int) -> [Tensor] {
        let ax = axis(a)
        precondition(shape[ax] % chunks == 0, "axis \(ax) of \(shape) does not split into \(chunks)")
        return split(sizes: Array(repeating: shape[ax] / chunks, count: chunks), axis: ax)
    }
}

// MARK: - Gather and scatter

extension Tensor {
    /// Shape checks for gather/scatter; returns (outer, n, inner, m, rowMode).
    /// Torch mode: `index` has the input's rank and matches it except along `axis`.
    /// Row mode: `index` has rank axis+1 and selects whole trailing slices (e.g. tokens of (B, N, D)).
    func gatherLayout(_ ax: Int, _ index: IndexTensor) -> (Int, Int, Int, Int, Bool) {
        let (outer, n, inner) = split3(ax)
        let m = index.shape.count > ax ? index.shape[ax] : 0
        if index.shape.count == rank {
            var s = index.shape
            s[ax] = n
            precondition(s == shape, "gather/scatter: index shape \(index.shape) must match \(shape) except along axis \(ax)")
            return (outer, n, inner, m, false)
        }
        precondition(index.shape.count == ax + 1 && Array(index.shape[..<ax]) == Array(shape[..<ax]),
                     "gather/scatter: index shape \(index.shape) fits neither \(shape) nor its first \(ax + 1) axes")
        return (outer, n, inner, m, true)
    }

    /// out[o, j, i] = self[o, index[o, j, i], i] along `axis` (torch.gather). With an index of
    /// rank axis+1, whole slices are taken: out[o, j, :] = self[o, index[o, j], :].
    public func gather(axis a: Int, index: IndexTensor) -> Tensor {
        let ax = axis(a)
        let (outer, n, inner, m, rowMode) = gatherLayout(ax, index)
        let outShape = rowMode ? index.shape + Array(shape[(ax + 1)...]) : index.shape
        let out = Storage(uninitializedCount: outer * m * inner)
        let x = base, y = out.base
        let idx = index.values
        for o in 0..<outer {
            for j in 0..<m {
                if rowMode {
                    let k = idx[o * m + j]
                    precondition(k >= 0 && k < n, "gather: index \(k) out of range 0..<\(n)")
                    (y + (o * m + j) * inner).update(from: x + (o * n + k) * inner, count: inner)
                } else {
                    for i in 0..<inner {
                        let k = idx[(o * m + j) * inner + i]
                        precondition(k >= 0 && k < n, "gather: index \(k) out of range 0..<\(n)")
                        y[(o * m + j) * inner + i] = x[(o * n + k) * inner + i]
                    }
                }
            }
        }
        let input = self
        return makeResult(shape: outShape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                for o in 0..<outer {
                    for j in 0..<m {
                        for i in 0..<inner {
                            let k = rowMode ? idx[o * m + j] : idx[(o * m + j) * inner + i]
                            gx[(o * n + k) * inner + i] += g.base[(o * m + j) * inner + i]
                        }
                    }
                }
            }
        }
    }

    /// A copy of self with out[o, index[o, j, i], i] = source[o, j, i] along `axis`
    /// (torch.scatter; row mode as in `gather`). Indices should not repeat within a row: the
    /// gradient treats each written position as coming from exactly one source element.
    public func scatter(axis a: Int, index: IndexTensor, source: Tensor) -> Tensor {
        let ax = axis(a)
        let (outer, n, inner, m, rowMode) = gatherLayout(ax, index)
        let expected = rowMode ? index.shape + Array(shape[(ax + 1)...]) : index.shape
        precondition(source.shape == expected, "scatter: source shape \(source.shape) must be \(expected)")
        let out = Storage(copying: base, count: count)
        let idx = index.values
        @inline(__always) func target(_ o: Int, _ j: Int, _ i: Int) -> Int {
            let k = rowMode ? idx[o * m + j] : idx[(o * m + j) * inner + i]
            precondition(k >= 0 && k < n, "scatter: index \(k) out of range 0..<\(n)")
            return (o * n + k) * inner + i
        }
        for o in 0..<outer { for j in 0..<m { for i in 0..<inner {
            out.base[target(o, j, i)] = source.base[(o * m + j) * inner + i]
        } } }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self, source]) {
            { g in
                if let nx = input.node {
                    let masked = Storage(copying: g.base, count: g.count)
                    for o in 0..<outer { for j in 0..<m { for i in 0..<inner { masked.base[target(o, j, i)] = 0 } } }
                    addInto(nx, masked)
                }
                if let ns = source.node {
                    let gs = ns.accumulator()
                    for o in 0..<outer { for j in 0..<m { for i in 0..<inner {
                        gs[(o * m + j) * inner + i] += g.base[target(o, j, i)]
                    } } }
                }
            }
        }
    }
}

// MARK: - Selection

extension Tensor {
    /// Element-wise choice: `a` where `mask` is non-zero, `b` elsewhere (all three broadcast).
    /// The mask is a constant (0/1) tensor; infinities in the unchosen operand do not leak.
    public static func `where`(_ mask: Tensor, _ a: Tensor, _ b: Tensor) -> Tensor {
        guard let ab = Broadcast.shape(a.shape, b.shape), let outShape = Broadcast.shape(ab, mask.shape) else {
            preconditionFailure("where: cannot broadcast \(mask.shape), \(a.shape), \(b.shape)")
        }
        let sm = Broadcast.strides(of: mask.shape, in: outShape)
        let sa = Broadcast.strides(of: a.shape, in: outShape)
        let sb = Broadcast.strides(of: b.shape, in: outShape)
        let inner = outShape.last ?? 1
        let out = Storage(uninitializedCount: product(outShape))
        let mp = mask.base, ap = a.base, bp = b.base, yp = out.base
        Broadcast.forEachRow(outShape, [sm, sa, sb]) { row, off in
            let im = sm.last ?? 0, ia = sa.last ?? 0, ib = sb.last ?? 0
            for i in 0..<inner {
                yp[row * inner + i] = mp[off[0] + i * im] != 0 ? ap[off[1] + i * ia] : bp[off[2] + i * ib]
            }
        }
        return makeResult(shape: outShape, storage: out, inputs: [a, b]) {
            { g in
                let ga = Storage(count: g.count), gb = Storage(count: g.count)
                let mp = mask.base  // `mask` is captured, so its storage outlives the tape entry
                Broadcast.forEachRow(outShape, [sm]) { row, off in
                    let im = sm.last ?? 0
                    for i in 0..<inner {
                        let k = row * inner + i
                        if mp[off[0] + i * im] != 0 { ga.base[k] = g.base[k] } else { gb.base[k] = g.base[k] }
                    }
                }
                if let na = a.node { addInto(na, Tensor(shape: outShape, storage: ga).sumToShape(a.shape)) }
                if let nb = b.node { addInto(nb, Tensor(shape: outShape, storage: gb).sumToShape(b.shape)) }
            }
        }
    }

    /// Replaces elements where `mask` is non-zero with `value` (torch.masked_fill).
    public func maskedFill(_ mask: Tensor, _ value: Float) -> Tensor {
        Tensor.where(mask, Tensor(scalar: value), self)
    }

    /// Indices that sort each row (last axis), stable; no gradient.
    public func argsort(descending: Bool = false) -> IndexTensor {
        let n = shape.last ?? 1
        let rows = n == 0 ? 0 : count / n
        var result = [Int](repeating: 0, count: count)
        let x = base
        for r in 0..<rows {
            let row = x + r * n
            let order = (0..<n).sorted { i, j in
                let a = row[i], b = row[j]
                if a == b { return i < j }
                return descending ? a > b : a < b
            }
            for (k, v) in order.enumerated() { result[r * n + k] = v }
        }
        return IndexTensor(shape: shape, result)
    }

    /// The k largest (or smallest) values of each row (last axis) and their indices, sorted;
    /// no gradient.
    public func topK(_ k: Int, largest: Bool = true) -> (values: Tensor, indices: IndexTensor) {
        let n = shape.last ?? 1
        precondition(k >= 0 && k <= n, "topK: k = \(k) out of range for last axis \(n)")
        let order = argsort(descending: largest)
        let rows = n == 0 ? 0 : count / n
        var outShape = shape
        outShape[rank - 1] = k
        var idx = [Int](repeating: 0, count: rows * k)
        let vals = Storage(uninitializedCount: rows * k)
        for r in 0..<rows {
            for j in 0..<k {
                let i = order.values[r * n + j]
                idx[r * k + j] = i
                vals.base[r * k + j] = base[r * n + i]
            }
        }
        return (Tensor(shape: outShape, storage: vals), IndexTensor(shape: outShape, idx))
    }
}

// MARK: - Windows of a channels-last map

extension Tensor {
    /// A channels-last map (B, H, W, C) cut into windows (B * H/wh * W/ww, wh * ww, C), window by
    /// window in row-major order. `strided: false`: each window holds neighbouring positions
    /// (einops 'b (x w1) (y w2) c -> (b x y) (w1 w2) c': Swin's, MaxViT's block, CrossFormer's
    /// short-distance, Twins' locally-grouped attention); `strided: true`: each window holds
    /// positions H/wh apart, a wh x ww grid spread over the map ('b (w1 x) (w2 y) c -> (b x y) (w1 w2)
    /// c': MaxViT's grid, CrossFormer's long-distance attention). Gradients flow through.
    public func windows(_ wh: Int, _ ww: Int, strided: Bool = false) -> Tensor {
        precondition(rank == 4 && shape[1] % wh == 0 && shape[2] % ww == 0, "windows: (B, H, W, C) \(shape) does not split into \(wh)x\(ww) windows")
        let (b, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
        let (gx, gy) = (h / wh, w / ww)
        let cut = strided ? reshaped([b, wh, gx, ww, gy, c]).permuted([0, 2, 4, 1, 3, 5]) : reshaped([b, gx, wh, gy, ww, c]).permuted([0, 1, 3, 2, 4, 5])
        return cut.reshaped([b * gx * gy, wh * ww, c])
    }

    /// The inverse of `windows`: windows (B * H/wh * W/ww, wh * ww, C) back to the map (B, H, W, C).
    public func mergingWindows(height h: Int, width w: Int, _ wh: Int, _ ww: Int, strided: Bool = false) -> Tensor {
        let (gx, gy, c) = (h / wh, w / ww, shape[2])
        precondition(rank == 3 && shape[1] == wh * ww && shape[0] % (gx * gy) == 0, "mergingWindows: \(shape) are not \(wh)x\(ww) windows of a \(h)x\(w) map")
        let b = shape[0] / (gx * gy)
        let parts = reshaped([b, gx, gy, wh, ww, c])
        return (strided ? parts.permuted([0, 3, 1, 4, 2, 5]) : parts.permuted([0, 1, 3, 2, 4, 5])).reshaped([b, h, w, c])
    }
}
