import Foundation
import TensorCore

/// A naive Double-precision n-d array: the reference every op is checked against. Written for
/// obviousness, not speed: plain loops over multi-indices.
public struct DArray {
    public var shape: [Int]
    public var data: [Double]

    public init(shape: [Int], _ data: [Double]) {
        precondition(shape.reduce(1, *) == data.count, "DArray: \(data.count) values for \(shape)")
        self.shape = shape
        self.data = data
    }

    public init(_ t: Tensor) { self.init(shape: t.shape, t.scalars.map(Double.init)) }

    public static func zeros(_ shape: [Int]) -> DArray { DArray(shape: shape, [Double](repeating: 0, count: shape.reduce(1, *))) }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    public var strides: [Int] {
        var s = [Int](repeating: 1, count: rank)
        if rank > 1 { for i in stride(from: rank - 2, through: 0, by: -1) { s[i] = s[i + 1] * shape[i + 1] } }
        return s
    }

    public func index(of flat: Int) -> [Int] {
        var rem = flat
        var idx = [Int](repeating: 0, count: rank)
        for d in stride(from: rank - 1, through: 0, by: -1) { idx[d] = rem % shape[d]; rem /= shape[d] }
        return idx
    }

    public func flat(_ idx: [Int]) -> Int { Swift.zip(idx, strides).reduce(0) { $0 + $1.0 * $1.1 } }

    public subscript(_ idx: [Int]) -> Double {
        get { data[flat(idx)] }
        set { data[flat(idx)] = newValue }
    }

    public func map(_ f: (Double) -> Double) -> DArray { DArray(shape: shape, data.map(f)) }

    /// Value at `outIdx` of this array broadcast to a larger shape.
    public func broadcastValue(_ outIdx: [Int]) -> Double {
        let lead = outIdx.count - rank
        var idx = [Int](repeating: 0, count: rank)
        for d in 0..<rank { idx[d] = shape[d] == 1 ? 0 : outIdx[d + lead] }
        return self[idx]
    }

    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
        let r = Swift.max(a.count, b.count)
        return (0..<r).map { i in
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            return Swift.max(da, db)
        }
    }

    public static func zip(_ a: DArray, _ b: DArray, _ f: (Double, Double) -> Double) -> DArray {
        let shape = broadcastShape(a.shape, b.shape)
        var out = DArray.zeros(shape)
        for i in 0..<out.count {
            let idx = out.index(of: i)
            out.data[i] = f(a.broadcastValue(idx), b.broadcastValue(idx))
        }
        return out
    }

    public static func + (a: DArray, b: DArray) -> DArray { zip(a, b, +) }
    public static func - (a: DArray, b: DArray) -> DArray { zip(a, b, -) }
    public static func * (a: DArray, b: DArray) -> DArray { zip(a, b, *) }
    public static func / (a: DArray, b: DArray) -> DArray { zip(a, b, /) }

    public func expanded(to s: [Int]) -> DArray {
        var out = DArray.zeros(s)
        for i in 0..<out.count { out.data[i] = broadcastValue(out.index(of: i)) }
        return out
    }

    /// Sum over `axes`, keeping them with size 1.
    public func sum(axes: [Int]) -> DArray {
        let ax = Set(axes.map { $0 < 0 ? $0 + rank : $0 })
        let outShape = shape.enumerated().map { ax.contains($0.offset) ? 1 : $0.element }
        var out = DArray.zeros(outShape)
        for i in 0..<count {
            var idx = index(of: i)
            for a in ax { idx[a] = 0 }
            out[idx] += data[i]
        }
        return out
    }

    public func reshaped(_ s: [Int]) -> DArray { DArray(shape: s, data) }

    public func permuted(_ order: [Int]) -> DArray {
        var out = DArray.zeros(order.map { shape[$0] })
        for i in 0..<out.count {
            let oi = out.index(of: i)
            var src = [Int](repeating: 0, count: rank)
            for (k, o) in order.enumerated() { src[o] = oi[k] }
            out.data[i] = self[src]
        }
        return out
    }

    /// Rows of the last axis.
    public var rows: Int { count / (shape.last ?? 1) }

    public func mapRows(_ f: ([Double]) -> [Double]) -> DArray {
        let n = shape.last ?? 1
        var out = self
        for r in 0..<rows {
            let res = f(Array(data[(r * n)..<((r + 1) * n)]))
            out.data.replaceSubrange((r * n)..<((r + 1) * n), with: res)
        }
        return out
    }

    /// Batched matrix product over the last two axes; b may be 2-D (shared).
    public static func matmul(_ a: DArray, _ b: DArray, transposeA: Bool = false, transposeB: Bool = false) -> DArray {
        let aa = transposeA ? a.permuted(Array(0..<(a.rank - 2)) + [a.rank - 1, a.rank - 2]) : a
        let bb = transposeB ? b.permuted(Array(0..<(b.rank - 2)) + [b.rank - 1, b.rank - 2]) : b
        let m = aa.shape[aa.rank - 2], k = aa.shape[aa.rank - 1], n = bb.shape[bb.rank - 1]
        let batch = Array(aa.shape.dropLast(2))
        let batches = batch.reduce(1, *)
        var out = DArray.zeros(batch + [m, n])
        for bi in 0..<batches {
            let bo = bb.rank == 2 ? 0 : bi * k * n
            for i in 0..<m { for j in 0..<n {
                var s = 0.0
                for t in 0..<k { s += aa.data[bi * m * k + i * k + t] * bb.data[bo + t * n + j] }
                out.data[bi * m * n + i * n + j] = s
            } }
        }
        return out
    }

    public static func softmaxRow(_ x: [Double]) -> [Double] {
        let m = x.max() ?? 0
        if m == -.infinity { return x.map { _ in 1 / Double(x.count) } }
        let e = x.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    /// (x - mean) / sqrt(var + eps) over the row, the biased variance: LayerNorm before its affine.
    public static func standardizedRow(_ x: [Double]) -> [Double] {
        let m = x.reduce(0, +) / Double(x.count)
        let v = x.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(x.count)
        return x.map { ($0 - m) / (v + 1e-5).squareRoot() }
    }

    public static func logSoftmaxRow(_ x: [Double]) -> [Double] {
        let m = x.max() ?? 0
        let lse = m + Foundation.log(x.map { Foundation.exp($0 - m) }.reduce(0, +))
        return x.map { $0 - lse }
    }
}
