import Foundation
import TensorCore
import TestSupport
import XCTest

/// Gradient checks for reductions and ops that move elements.
final class ShapeGradientTests: XCTestCase {
    func testSumMeanOverAxes() {
        let x = randomTensor([2, 3, 4], seed: 1)
        for axes in [[0], [1], [2], [0, 2], [1, 2], [0, 1, 2]] {
            checkGradients("sum \(axes)", inputs: [x], engine: { $0[0].sum(axes: axes) },
                           reference: { xs in
                               let s = xs[0].sum(axes: axes)
                               return s.reshaped(xs[0].shape.enumerated().filter { !axes.contains($0.offset) }.map { $0.element })
                           })
            checkGradients("mean keepDims \(axes)", inputs: [x], engine: { $0[0].mean(axes: axes, keepDims: true) },
                           reference: { xs in
                               let n = Double(axes.reduce(1) { $0 * xs[0].shape[$1] })
                               return xs[0].sum(axes: axes).map { $0 / n }
                           })
        }
        checkGradients("sum all", inputs: [x], engine: { $0[0].sum() },
                       reference: { DArray(shape: [], [$0[0].data.reduce(0, +)]) })
    }

    func testVarianceBiasedAndUnbiased() {
        let x = randomTensor([3, 5], seed: 2)
        for unbiased in [true, false] {
            checkGradients("variance unbiased=\(unbiased)", inputs: [x], engine: { $0[0].variance(axes: [1], unbiased: unbiased) },
                           reference: { xs in
                               DArray(shape: [3], (0..<3).map { r in
                                   let row = Array(xs[0].data[(r * 5)..<(r * 5 + 5)])
                                   let m = row.reduce(0, +) / 5
                                   return row.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(unbiased ? 4 : 5)
                               })
                           })
        }
    }

    func testMaxOverAxis() {
        let x = randomTensor([3, 4, 5], seed: 3)
        for ax in 0..<3 {
            checkGradients("max axis \(ax)", inputs: [x], engine: { $0[0].max(axis: ax) }, reference: { xs in
                var outShape = xs[0].shape
                outShape.remove(at: ax)
                var out = DArray(shape: outShape, [Double](repeating: -.infinity, count: outShape.reduce(1, *)))
                for i in 0..<xs[0].count {
                    var idx = xs[0].index(of: i)
                    let v = xs[0].data[i]
                    idx.remove(at: ax)
                    out[idx] = Swift.max(out[idx], v)
                }
                return out
            })
        }
    }

    func testReshapePermuteTransposeExpand() {
        let x = randomTensor([2, 3, 4], seed: 4)
        checkGradients("reshape", inputs: [x], engine: { $0[0].reshaped([4, -1]) * 2 }, reference: { $0[0].reshaped([4, 6]).map { $0 * 2 } })
        for order in [[2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]] {
            checkGradients("permute \(order)", inputs: [x], engine: { $0[0].permuted(order) }, reference: { $0[0].permuted(order) })
        }
        checkGradients("transpose", inputs: [x], engine: { $0[0].transposed(0, 2) }, reference: { $0[0].permuted([2, 1, 0]) })
        let y = randomTensor([3, 1], seed: 5)
        checkGradients("expand", inputs: [y], engine: { $0[0].expanded(to: [2, 3, 4]) }, reference: { $0[0].expanded(to: [2, 3, 4]) })
        checkGradients("unsqueeze", inputs: [y], engine: { $0[0].unsqueezed(0) * 3 }, reference: { $0[0].reshaped([1, 3, 1]).map { $0 * 3 } })
    }

    /// Windows of a channels-last map, of neighbouring positions and strided, and their merge,
    /// against an element-by-element reference.
    /// Permutes by every path of the kernel: batches of transposes after merging neighbouring
    /// axes (NCHW <-> NHWC, size-1 axes), a copy where only size-1 axes move, and the general
    /// walk; values and the accumulated gradient against index arithmetic.
    func testPermuteKernelPaths() {
        let cases: [([Int], [Int])] = [([2, 3, 5, 7], [0, 2, 3, 1]), ([2, 35, 3], [0, 2, 1]), ([2, 1, 4, 3], [0, 2, 3, 1]),
                                       ([3, 1, 4], [1, 0, 2]), ([40, 33], [1, 0]), ([2, 3, 4, 5], [0, 2, 1, 3]), ([2, 3, 4, 5], [3, 1, 0, 2])]
        for (shape, order) in cases {
            let count = shape.reduce(1, *)
            let x = Tensor(shape: shape, (0..<count).map { Float($0) }, requiresGrad: true)
            let y = x.permuted(order)
            let outShape = order.map { shape[$0] }
            XCTAssertEqual(y.shape, outShape)
            // Output position -> input flat index.
            var expected = [Float](repeating: 0, count: count)
            for flat in 0..<count {
                var rem = flat, idx = [Int](repeating: 0, count: shape.count)
                for d in stride(from: outShape.count - 1, through: 0, by: -1) { idx[order[d]] = rem % outShape[d]; rem /= outShape[d] }
                expected[flat] = Float(idx.enumerated().reduce(0) { $0 * shape[$1.offset] + $1.element })
            }
            XCTAssertEqual(y.scalars, expected, "\(shape) \(order)")
            // The gradient of sum(y * w) is w permuted back; twice, so the second accumulates.
            let w = Tensor(shape: outShape, (0..<count).map { Float($0 % 7) - 3 })
            for _ in 0..<2 { (x.permuted(order) * w).sum().backward() }
            var grad = [Float](repeating: 0, count: count)
            for (flat, source) in expected.enumerated() { grad[Int(source)] = 2 * w.scalars[flat] }
            XCTAssertEqual(x.grad?.scalars, grad, "\(shape) \(order) gradient")
        }
    }

    func testWindowsAndTheirMerge() {
        let (b, h, w, c, wh, ww) = (2, 4, 6, 3, 2, 3)
        let (gx, gy) = (h / wh, w / ww)
        let x = randomTensor([b, h, w, c], seed: 9)
        for strided in [false, true] {
            func source(_ bi: Int, _ xi: Int, _ yi: Int, _ w1: Int, _ w2: Int) -> (Int, Int) {
                strided ? (w1 * gx + xi, w2 * gy + yi) : (xi * wh + w1, yi * ww + w2)
            }
            checkGradients("windows strided=\(strided)", inputs: [x], engine: { $0[0].windows(wh, ww, strided: strided) },
                           reference: { xs in
                               var out = DArray.zeros([b * gx * gy, wh * ww, c])
                               for bi in 0..<b { for xi in 0..<gx { for yi in 0..<gy { for w1 in 0..<wh { for w2 in 0..<ww { for ci in 0..<c {
                                   let (r, col) = source(bi, xi, yi, w1, w2)
                                   out.data[((bi * gx + xi) * gy + yi) * wh * ww * c + (w1 * ww + w2) * c + ci] = xs[0].data[((bi * h + r) * w + col) * c + ci]
                               } } } } } }
                               return out
                           })
            let windows = randomTensor([b * gx * gy, wh * ww, c], seed: 10)
            checkGradients("mergingWindows strided=\(strided)", inputs: [windows],
                           engine: { $0[0].mergingWindows(height: h, width: w, wh, ww, strided: strided) },
                           reference: { xs in
                               var out = DArray.zeros([b, h, w, c])
                               for bi in 0..<b { for xi in 0..<gx { for yi in 0..<gy { for w1 in 0..<wh { for w2 in 0..<ww { for ci in 0..<c {
                                   let (r, col) = source(bi, xi, yi, w1, w2)
                                   out.data[((bi * h + r) * w + col) * c + ci] = xs[0].data[((bi * gx + xi) * gy + yi) * wh * ww * c + (w1 * ww + w2) * c + ci]
                               } } } } } }
                               return out
                           })
        }
    }

    func testConcatSliceSplit() {
        let a = randomTensor([2, 3, 2], seed: 6), b = randomTensor([2, 1, 2], seed: 7)
        checkGradients("concat axis 1", inputs: [a, b], engine: { Tensor.concat($0, axis: 1) }, reference: { xs in
            var out = DArray.zeros([2, 4, 2])
            for i in 0..<out.count {
                let idx = out.index(of: i)
                out.data[i] = idx[1] < 3 ? xs[0][idx] : xs[1][[idx[0], idx[1] - 3, idx[2]]]
            }
            return out
        })
        checkGradients("slice", inputs: [a], engine: { $0[0].slice(axis: 1, start: 1, length: 2) }, reference: { xs in
            var out = DArray.zeros([2, 2, 2])
            for i in 0..<out.count { var idx = out.index(of: i); idx[1] += 1; out.data[i] = xs[0][idx] }
            return out
        })
        checkGradients("split then recombine", inputs: [a], engine: { xs in
            let parts = xs[0].split(sizes: [1, 2], axis: -2)
            return parts[0] * 2 + parts[1].sum(axis: 1, keepDims: true)
        }, reference: { xs in
            var out = DArray.zeros([2, 1, 2])
            for i in 0..<2 { for k in 0..<2 {
                out[[i, 0, k]] = 2 * xs[0][[i, 0, k]] + xs[0][[i, 1, k]] + xs[0][[i, 2, k]]
            } }
            return out
        })
        let chunks = a.chunked(3, axis: 1)
        XCTAssertEqual(chunks.map(\.shape), [[2, 1, 2], [2, 1, 2], [2, 1, 2]])
    }

    func testGatherAndScatter() {
        let x = randomTensor([2, 5, 3], seed: 8)
        // Torch-style index (same rank), axis 1.
        let idx = IndexTensor(shape: [2, 2, 3], [4, 0, 1, 2, 2, 3, 0, 1, 4, 3, 3, 0])
        checkGradients("gather torch-style", inputs: [x], engine: { $0[0].gather(axis: 1, index: idx) }, reference: { xs in
            var out = DArray.zeros([2, 2, 3])
            for i in 0..<out.count {
                let o = out.index(of: i)
                out.data[i] = xs[0][[o[0], idx.values[i], o[2]]]
            }
            return out
        })
        // Row mode: pick whole tokens (as MAE keeps visible patches).
        let keep = IndexTensor(shape: [2, 3], [4, 1, 2, 0, 3, 1])
        checkGradients("gather rows", inputs: [x], engine: { $0[0].gather(axis: 1, index: keep) }, reference: { xs in
            var out = DArray.zeros([2, 3, 3])
            for i in 0..<out.count {
                let o = out.index(of: i)
                out.data[i] = xs[0][[o[0], keep.values[o[0] * 3 + o[1]], o[2]]]
            }
            return out
        })
        let src = randomTensor([2, 3, 3], seed: 9)
        checkGradients("scatter rows", inputs: [x, src], engine: { $0[0].scatter(axis: 1, index: keep, source: $0[1]) }, reference: { xs in
            var out = xs[0]
            for i in 0..<xs[1].count {
                let s = xs[1].index(of: i)
                out[[s[0], keep.values[s[0] * 3 + s[1]], s[2]]] = xs[1].data[i]
            }
            return out
        })
        let unique = IndexTensor(shape: [2, 1, 3], [4, 0, 2, 1, 3, 0])
        let src2 = randomTensor([2, 1, 3], seed: 10)
        checkGradients("scatter torch-style", inputs: [x, src2], engine: { $0[0].scatter(axis: 1, index: unique, source: $0[1]) },
                       reference: { xs in
                           var out = xs[0]
                           for i in 0..<xs[1].count {
                               let s = xs[1].index(of: i)
                               out[[s[0], unique.values[i], s[2]]] = xs[1].data[i]
                           }
                           return out
                       })
    }

    func testWhereAndMaskedFill() {
        let a = randomTensor([3, 4], seed: 11), b = randomTensor([4], seed: 12)
        let mask = Tensor(shape: [3, 1], [1, 0, 1])
        checkGradients("where", inputs: [a, b], engine: { Tensor.where(mask, $0[0], $0[1]) }, reference: { xs in
            var out = DArray.zeros([3, 4])
            for i in 0..<12 { let idx = out.index(of: i); out.data[i] = idx[0] != 1 ? xs[0][idx] : xs[1][[idx[1]]] }
            return out
        })
        let m2 = Tensor(shape: [3, 4], (0..<12).map { Float($0 % 3 == 0 ? 1 : 0) })
        checkGradients("maskedFill", inputs: [a], engine: { $0[0].maskedFill(m2, -7) }, reference: { xs in
            var out = xs[0]
            for i in 0..<12 where i % 3 == 0 { out.data[i] = -7 }
            return out
        })
        let inf = Tensor.zeros([3, 4]).maskedFill(m2, -.infinity)
        XCTAssertEqual(inf.scalars.filter { $0 == -.infinity }.count, 4)
    }

    func testArgsortAndTopK() {
        let x = Tensor(shape: [2, 5], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3])
        XCTAssertEqual(x.argsort().values, [1, 3, 0, 2, 4, 1, 4, 3, 2, 0])
        XCTAssertEqual(x.argsort(descending: true).values, [4, 2, 0, 1, 3, 0, 2, 3, 4, 1])
        let (v, i) = x.topK(2)
        XCTAssertEqual(v.scalars, [5, 4, 9, 6])
        XCTAssertEqual(i.values, [4, 2, 0, 2])
        XCTAssertEqual(i.shape, [2, 2])
        let (vs, _) = x.topK(3, largest: false)
        XCTAssertEqual(vs.scalars, [1, 1, 3, 2, 3, 5])
        XCTAssertFalse(v.requiresGrad)
    }
}
