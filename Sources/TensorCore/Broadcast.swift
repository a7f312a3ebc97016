/// NumPy-style broadcasting: shapes are aligned at their trailing dimensions and a dimension of
/// size 1 stretches to match.
public enum Broadcast {
    /// The broadcast shape of `a` and `b`, or nil when they are incompatible.
    public static func shape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = Swift.max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
        }
        return out
    }

    /// Element strides of a contiguous tensor of `shape` read as `outShape` (0 on stretched dims).
    public static func strides(of shape: [Int], in outShape: [Int]) -> [Int] {
        let r = outShape.count
        var strides = [Int](repeating: 0, count: r)
        var step = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            let o = i + (r - shape.count)
            strides[o] = shape[i] == 1 && outShape[o] != 1 ? 0 : step
            step *= shape[i]
        }
        return strides
    }

    /// Visits `outShape` row by row (all dimensions but the last), giving for each row the offset
    /// of the row in the output and in each operand; the inner step of operand k is
    /// `strides[k].last`. Rows are split across threads in fixed chunks.
    @inline(__always)
    static func forEachRow(_ outShape: [Int], _ strides: [[Int]],
                           _ body: (_ row: Int, _ offsets: UnsafeMutableBufferPointer<Int>) -> Void) {
        let rank = outShape.count
        let inner = rank == 0 ? 1 : outShape[rank - 1]
        let rows = inner == 0 ? 0 : product(outShape) / inner
        let operands = strides.count
        Parallel.forChunks(rows, grain: Swift.max(1, 16384 / Swift.max(inner, 1))) { range in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: operands) { offsets in
                for row in range {
                    for k in 0..<operands { offsets[k] = 0 }
                    var rem = row
                    var d = rank - 2
                    while d >= 0 {
                        let idx = rem % outShape[d]
                        rem /= outShape[d]
                        for k in 0..<operands { offsets[k] += idx * strides[k][d] }
                        d -= 1
                    }
                    body(row, offsets)
                }
            }
        }
    }
}

extension Tensor {
    /// Sums `self` over the dimensions along which `shape` was broadcast to `self.shape`
    /// (the backward of broadcasting). Not recorded on the tape.
    func sumToShape(_ target: [Int]) -> Storage {
        if target == shape { return storage }
        let out = Storage(count: product(target))
        let ts = Broadcast.strides(of: target, in: shape)
        let rank = shape.count
        let inner = rank == 0 ? 1 : shape[rank - 1]
        let rows = inner == 0 ? 0 : count / inner
        let innerStride = rank == 0 ? 0 : ts[rank - 1]
        let src = base, dst = out.base
        // Serial: several rows may add into the same target element.
        for row in 0..<rows {
            var rem = row
            var off = 0
            var d = rank - 2
            while d >= 0 {
                off += (rem % shape[d]) * ts[d]
                rem /= shape[d]
                d -= 1
            }
            let s = src + row * inner
            if innerStride == 0 {
                dst[off] += vsum(s, inner)
            } else {
                let t = dst + off
                for i in 0..<inner { t[i] += s[i] }
            }
        }
        return out
    }
}
