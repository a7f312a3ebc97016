import Foundation
import TensorCore
import TestSupport
import XCTest

/// Gradient checks for products, fused kernels, losses, convolution, pooling and attention,
/// each against a naive Double reference.
final class KernelGradientTests: XCTestCase {
    func testMatmulWithTransposes() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = randomTensor(ta ? [2, 4, 3] : [2, 3, 4], seed: 1)
            let b = randomTensor(tb ? [2, 5, 4] : [2, 4, 5], seed: 2)
            checkGradients("bmm ta=\(ta) tb=\(tb)", inputs: [a, b],
                           engine: { Tensor.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) },
                           reference: { DArray.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) })
            let shared = randomTensor(tb ? [5, 4] : [4, 5], seed: 3)
            checkGradients("bmm shared B ta=\(ta) tb=\(tb)", inputs: [a, shared],
                           engine: { Tensor.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) },
                           reference: { DArray.matmul($0[0], $0[1], transposeA: ta, transposeB: tb) })
        }
        checkGradients("2-D matmul", inputs: [randomTensor([3, 4], seed: 4), randomTensor([4, 2], seed: 5)],
                       engine: { Tensor.matmul($0[0], $0[1]) }, reference: { DArray.matmul($0[0], $0[1]) })
    }

    func testMixingHeads() {
        let maps = randomTensor([2, 3, 4, 5], seed: 1), w = randomTensor([3, 2], seed: 2)
        checkGradients("mixingHeads", inputs: [maps, w], engine: { Tensor.mixingHeads($0[0], $0[1]) },
                       reference: { xs in
                           // (b, h, i, j) -> (b, i, j, h) x (h, g) -> (b, g, i, j)
                           DArray.matmul(xs[0].permuted([0, 2, 3, 1]).reshaped([40, 3]), xs[1]).reshaped([2, 4, 5, 2]).permuted([0, 3, 1, 2])
                       })
    }

    /// Per-head scores and weighted values read from and written to heads side by side.
    func testHeadScoresAndWeightedValues() {
        func split(_ t: DArray, _ n: Int) -> DArray { t.reshaped([2, n, 3, 2]).permuted([0, 2, 1, 3]) }
        let q = randomTensor([2, 4, 6], seed: 1), k = randomTensor([2, 5, 6], seed: 2)
        checkGradients("headScores", inputs: [q, k], engine: { Tensor.headScores($0[0], $0[1], heads: 3, scale: 0.7) },
                       reference: { xs in DArray.matmul(split(xs[0], 4), split(xs[1], 5), transposeB: true) * DArray(shape: [1], [0.7]) })
        let w = randomTensor([2, 3, 4, 5], seed: 3), v = randomTensor([2, 5, 6], seed: 4)
        checkGradients("headWeightedValues", inputs: [w, v], engine: { Tensor.headWeightedValues($0[0], $0[1]) },
                       reference: { xs in DArray.matmul(xs[0], split(xs[1], 5)).permuted([0, 2, 1, 3]).reshaped([2, 4, 6]) })
    }

    /// Cross-covariance attention (XCiT) read from a packed projection: q and k normalised along
    /// the tokens, their per-head (d, d) Gram, and weights applied to v's channels.
    func testCrossCovarianceKernels() {
        // qkv (2, 5 tokens, 3 * 2 heads * 3), weights (2, 2 heads, 3, 3).
        let qkv = randomTensor([2, 5, 18], seed: 7), w = randomTensor([2, 2, 3, 3], seed: 8)
        func channels(_ t: DArray, _ part: Int) -> DArray {
            // The part's (B, N, heads * d) columns as (B, heads, d, N).
            DArray(shape: [2, 5, 6], (0..<60).map { i in t.data[(i / 6) * 18 + part * 6 + i % 6] }).reshaped([2, 5, 2, 3]).permuted([0, 2, 3, 1])
        }
        func normalize(_ row: [Double]) -> [Double] {
            let norm = Swift.max(row.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            return row.map { $0 / norm }
        }
        checkGradients("crossCovarianceLogits", inputs: [qkv], engine: { Tensor.crossCovarianceLogits(packedQKV: $0[0], heads: 2) },
                       reference: { xs in DArray.matmul(channels(xs[0], 0).mapRows(normalize), channels(xs[0], 1).mapRows(normalize), transposeB: true) })
        checkGradients("crossCovarianceValues", inputs: [w, qkv], engine: { Tensor.crossCovarianceValues($0[0], packedQKV: $0[1]) },
                       reference: { xs in DArray.matmul(xs[0], channels(xs[1], 2)).permuted([0, 3, 1, 2]).reshaped([2, 5, 6]) })
    }

    /// Self-attention with a per-head additive bias (relative positions), gradients to the packed
    /// projection and to the bias.
    func testBiasedSelfAttention() {
        // qkv (2, 4, 3 * 2 heads * 3), bias (2 heads, 4, 4).
        let qkv = randomTensor([2, 4, 18], seed: 5), bias = randomTensor([2, 4, 4], seed: 6)
        func heads(_ t: DArray, _ part: Int) -> DArray {
            // The part's (B, N, heads * d) columns as (B, heads, N, d).
            DArray(shape: [2, 4, 6], (0..<48).map { i in t.data[(i / 6) * 18 + part * 6 + i % 6] }).reshaped([2, 4, 2, 3]).permuted([0, 2, 1, 3])
        }
        checkGradients("biasedSelfAttention", inputs: [qkv, bias], engine: { Tensor.biasedSelfAttention(packedQKV: $0[0], heads: 2, bias: $0[1]) },
                       reference: { xs in
                           let logits = DArray.matmul(heads(xs[0], 0), heads(xs[0], 1), transposeB: true) * DArray(shape: [1], [1 / 3.0.squareRoot()])
                               + xs[1].reshaped([1, 2, 4, 4])
                           return DArray.matmul(logits.mapRows(DArray.softmaxRow), heads(xs[0], 2)).permuted([0, 2, 1, 3]).reshaped([2, 4, 6])
                       })
    }

    func testLinear() {
        let x = randomTensor([2, 3, 6], seed: 1), w = randomTensor([5, 6], seed: 2), b = randomTensor([5], seed: 3)
        checkGradients("linear", inputs: [x, w, b], engine: { Tensor.linear($0[0], weight: $0[1], bias: $0[2]) },
                       reference: { DArray.matmul($0[0], $0[1], transposeB: true) + $0[2] })
        checkGradients("linear without bias", inputs: [x, w], engine: { Tensor.linear($0[0], weight: $0[1]) },
                       reference: { DArray.matmul($0[0], $0[1], transposeB: true) })
    }

    func testSoftmaxAndLogSoftmax() {
        for n in [5, 8, 19] {
            let x = randomTensor([3, n], seed: UInt64(n), low: -4, high: 4)
            checkGradients("softmax n=\(n)", inputs: [x], engine: { $0[0].softmax() }, reference: { $0[0].mapRows(DArray.softmaxRow) })
            checkGradients("logSoftmax n=\(n)", inputs: [x], engine: { $0[0].logSoftmax() }, reference: { $0[0].mapRows(DArray.logSoftmaxRow) })
        }
    }

    func testLayerNorm() {
        for c in [7, 16, 20] {
            let x = randomTensor([2, 3, c], seed: UInt64(c), low: -2, high: 3)
            let w = randomTensor([c], seed: 2, low: 0.5, high: 1.5), b = randomTensor([c], seed: 3)
            checkGradients("layerNorm c=\(c)", inputs: [x, w, b], engine: { $0[0].layerNorm(weight: $0[1], bias: $0[2]) },
                           reference: { xs in xs[0].mapRows(DArray.standardizedRow) * xs[1] + xs[2] })
        }
    }

    func testChannelLayerNorm() {
        // (N, C, H, W) normalised over C at each position; 3 images so the split is uneven.
        for (c, h, w) in [(5, 2, 3), (16, 1, 1), (3, 3, 3)] {
            let x = randomTensor([3, c, h, w], seed: UInt64(c), low: -2, high: 3)
            let g = randomTensor([c], seed: 2, low: 0.5, high: 1.5), b = randomTensor([c], seed: 3)
            checkGradients("channelLayerNorm c=\(c) \(h)x\(w)", inputs: [x, g, b], engine: { $0[0].channelLayerNorm(weight: $0[1], bias: $0[2]) },
                           reference: { xs in
                               var out = xs[0]
                               let s = h * w
                               for n in 0..<3 {
                                   for p in 0..<s {
                                       let idx = (0..<c).map { (n * c + $0) * s + p }
                                       let m = idx.map { xs[0].data[$0] }.reduce(0, +) / Double(c)
                                       let v = idx.map { (xs[0].data[$0] - m) * (xs[0].data[$0] - m) }.reduce(0, +) / Double(c)
                                       for (ch, i) in idx.enumerated() {
                                           out.data[i] = (xs[0].data[i] - m) / (v + 1e-5).squareRoot() * xs[1].data[ch] + xs[2].data[ch]
                                       }
                                   }
                               }
                               return out
                           })
        }
    }

    func referenceBatchNorm(_ x: DArray, _ w: DArray, _ b: DArray, mean: [Double]?, variance: [Double]?) -> DArray {
        let c = x.shape[1]
        var out = x
        for ch in 0..<c {
            let members = (0..<x.count).filter { x.index(of: $0)[1] == ch }
            let m = mean?[ch] ?? members.map { x.data[$0] }.reduce(0, +) / Double(members.count)
            let v = variance?[ch] ?? members.map { (x.data[$0] - m) * (x.data[$0] - m) }.reduce(0, +) / Double(members.count)
            for i in members { out.data[i] = (x.data[i] - m) / (v + 1e-5).squareRoot() * w.data[ch] + b.data[ch] }
        }
        return out
    }

    func testBatchNorm1dAnd2dTrainAndEval() {
        // (rows, 21): channels-last rows, whose sums run eight channels at a time per thread, then the rest.
        for shape in [[6, 4], [3, 4, 5], [2, 4, 3, 3], [5, 21]] {
            let c = shape[1]
            let x = randomTensor(shape, seed: 1, low: -1, high: 2)
            let w = randomTensor([c], seed: 2, low: 0.5, high: 1.5), b = randomTensor([c], seed: 3)
            checkGradients("batchNorm train \(shape)", inputs: [x, w, b], engine: {
                $0[0].batchNorm(weight: $0[1], bias: $0[2], state: BatchNormState(channels: c), training: true)
            }, reference: { self.referenceBatchNorm($0[0], $0[1], $0[2], mean: nil, variance: nil) })
            let state = BatchNormState(channels: c)
            _ = x.batchNorm(weight: w, bias: b, state: state, training: true)
            // Running statistics: 0.9 * initial + 0.1 * batch statistics (unbiased variance).
            let dx = DArray(x)
            for ch in 0..<c {
                let members = (0..<dx.count).filter { dx.index(of: $0)[1] == ch }.map { dx.data[$0] }
                let m = members.reduce(0, +) / Double(members.count)
                let v = members.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(members.count - 1)
                XCTAssertEqual(Double(state.runningMean.scalars[ch]), 0.1 * m, accuracy: 1e-6)
                XCTAssertEqual(Double(state.runningVar.scalars[ch]), 0.9 + 0.1 * v, accuracy: 1e-6)
            }
            let rm = state.runningMean.scalars.map(Double.init), rv = state.runningVar.scalars.map(Double.init)
            checkGradients("batchNorm eval \(shape)", inputs: [x, w, b], engine: {
                $0[0].batchNorm(weight: $0[1], bias: $0[2], state: state, training: false)
            }, reference: { self.referenceBatchNorm($0[0], $0[1], $0[2], mean: rm, variance: rv) })
        }
    }

    func referenceCrossEntropy(_ x: DArray, target: (Int, Int) -> Double) -> DArray {
        let n = x.shape[1]
        let lp = x.mapRows(DArray.logSoftmaxRow)
        var total = 0.0
        for r in 0..<x.shape[0] { for c in 0..<n { total -= target(r, c) * lp.data[r * n + c] } }
        return DArray(shape: [], [total / Double(x.shape[0])])
    }

    func testCrossEntropyLabelsSmoothingAndSoftTargets() {
        let x = randomTensor([4, 6], seed: 1, low: -3, high: 3)
        let labels = [2, 0, 5, 3]
        checkGradients("crossEntropy labels", inputs: [x], engine: { $0[0].crossEntropy(.labels(labels)) },
                       reference: { self.referenceCrossEntropy($0[0]) { r, c in labels[r] == c ? 1 : 0 } })
        checkGradients("crossEntropy smoothing 0.1", inputs: [x], engine: { $0[0].crossEntropy(.labels(labels), labelSmoothing: 0.1) },
                       reference: { self.referenceCrossEntropy($0[0]) { r, c in (labels[r] == c ? 0.9 : 0) + 0.1 / 6 } })
        let p = randomTensor([4, 6], seed: 2, low: 0, high: 1).softmax().detached()
        checkGradients("crossEntropy soft targets", inputs: [x, p], engine: { $0[0].crossEntropy(.probabilities($0[1]), labelSmoothing: 0.2) },
                       reference: { xs in self.referenceCrossEntropy(xs[0]) { r, c in 0.8 * xs[1].data[r * 6 + c] + 0.2 / 6 } })
    }

    func testRegressionLosses() {
        let a = randomTensor([3, 5], seed: 1, low: -3, high: 3), b = randomTensor([3, 5], seed: 2, low: -3, high: 3)
        func mean(_ d: DArray) -> DArray { DArray(shape: [], [d.data.reduce(0, +) / Double(d.count)]) }
        checkGradients("mse", inputs: [a, b], engine: { $0[0].mseLoss($0[1]) }, reference: { mean(($0[0] - $0[1]).map { $0 * $0 }) })
        checkGradients("l1", inputs: [a, b], engine: { $0[0].l1Loss($0[1]) }, reference: { mean(($0[0] - $0[1]).map(Swift.abs)) })
        checkGradients("smoothL1", inputs: [a, b], engine: { $0[0].smoothL1Loss($0[1], beta: 0.8) }, reference: {
            mean(($0[0] - $0[1]).map { d in Swift.abs(d) < 0.8 ? 0.5 * d * d / 0.8 : Swift.abs(d) - 0.4 })
        })
    }

    func testL2NormalizeAndCosineSimilarity() {
        let a = randomTensor([3, 7], seed: 1), b = randomTensor([3, 7], seed: 2)
        func normalize(_ row: [Double]) -> [Double] {
            let n = Swift.max(row.map { $0 * $0 }.reduce(0, +).squareRoot(), 1e-12)
            return row.map { $0 / n }
        }
        checkGradients("l2Normalize", inputs: [a], engine: { $0[0].l2Normalized() }, reference: { $0[0].mapRows(normalize) })
        checkGradients("cosineSimilarity", inputs: [a, b], engine: { Tensor.cosineSimilarity($0[0], $0[1]) }, reference: { xs in
            let p = xs[0].mapRows(normalize) * xs[1].mapRows(normalize)
            return p.sum(axes: [1]).reshaped([3])
        })
    }

    func referenceConv(_ x: DArray, _ w: DArray, _ b: DArray?, stride: Int, padding: Int, groups: Int) -> DArray {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (wd + 2 * padding - kw) / stride + 1
        var out = DArray.zeros([n, o, oh, ow])
        for bi in 0..<n { for oc in 0..<o { for y in 0..<oh { for xx in 0..<ow {
            let g = oc / (o / groups)
            var s = b?.data[oc] ?? 0
            for ic in 0..<cg { for ky in 0..<kh { for kx in 0..<kw {
                let iy = y * stride - padding + ky, ix = xx * stride - padding + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < wd { s += x[[bi, g * cg + ic, iy, ix]] * w[[oc, ic, ky, kx]] }
            } } }
            out[[bi, oc, y, xx]] = s
            _ = c
        } } } }
        return out
    }

    func testConv2dStridePaddingGroups() {
        let cases: [(c: Int, o: Int, k: Int, stride: Int, padding: Int, groups: Int)] =
            [(2, 3, 3, 1, 0, 1), (2, 4, 3, 2, 1, 1), (4, 4, 3, 1, 1, 4), (4, 4, 3, 2, 1, 4), (3, 3, 7, 2, 3, 3), (2, 3, 7, 3, 3, 1),
             (4, 6, 2, 2, 0, 2), (3, 2, 1, 1, 0, 1)]
        for t in cases {
            // 3 images: the batch is split over the cores unevenly.
            let x = randomTensor([3, t.c, 5, 6], seed: 1)
            let w = randomTensor([t.o, t.c / t.groups, t.k, t.k], seed: 2), b = randomTensor([t.o], seed: 3)
            checkGradients("conv2d \(t)", inputs: [x, w, b], engine: {
                $0[0].conv2d(weight: $0[1], bias: $0[2], stride: t.stride, padding: t.padding, groups: t.groups)
            }, reference: { self.referenceConv($0[0], $0[1], $0[2], stride: t.stride, padding: t.padding, groups: t.groups) })
        }
    }

    /// nn.Unfold's columns (N, C k k, L), row (c, ky, kx), against a naive Double reference.
    func testUnfold() {
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 1), (7, 4, 2), (2, 2, 0)] {
            let x = randomTensor([3, 2, 7, 7], seed: 4)
            checkGradients("unfold k\(k) s\(stride) p\(padding)", inputs: [x], engine: { $0[0].unfold(kernel: k, stride: stride, padding: padding) },
                           reference: { xs in
                               let x = xs[0]
                               let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
                               let oh = (h + 2 * padding - k) / stride + 1, ow = (w + 2 * padding - k) / stride + 1
                               var out = DArray.zeros([n, c * k * k, oh * ow])
                               for b in 0..<n { for ch in 0..<c { for ky in 0..<k { for kx in 0..<k { for oy in 0..<oh { for ox in 0..<ow {
                                   let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                                   if iy >= 0 && iy < h && ix >= 0 && ix < w { out[[b, (ch * k + ky) * k + kx, oy * ow + ox]] = x[[b, ch, iy, ix]] }
                               } } } } } }
                               return out
                           })
        }
    }

    /// Depthwise maps at least 16 wide take the row-by-row path (narrower ones the tap list above).
    func testDepthwiseConv2dWideMaps() {
        for (k, stride, padding) in [(3, 1, 1), (3, 2, 1), (5, 2, 2)] {
            let x = randomTensor([2, 3, 4, 33], seed: 4)
            let w = randomTensor([3, 1, k, k], seed: 5), b = randomTensor([3], seed: 6)
            checkGradients("depthwise conv2d wide k\(k) s\(stride)", inputs: [x, w, b], engine: {
                $0[0].conv2d(weight: $0[1], bias: $0[2], stride: stride, padding: padding, groups: 3)
            }, reference: { self.referenceConv($0[0], $0[1], $0[2], stride: stride, padding: padding, groups: 3) })
        }
    }

    /// The channels-last depthwise convolution against the (B, C, H, W) reference, permuted.
    func testDepthwiseConv2dChannelsLast() {
        for (k, stride, padding, h, w) in [(3, 1, 1, 5, 4), (3, 2, 1, 5, 6), (5, 2, 2, 6, 5), (3, 1, 0, 4, 4)] {
            let x = randomTensor([2, h, w, 3], seed: 7), wt = randomTensor([3, 1, k, k], seed: 8), b = randomTensor([3], seed: 9)
            checkGradients("depthwise conv2d channels-last k\(k) s\(stride) p\(padding)", inputs: [x, wt, b], engine: {
                $0[0].depthwiseConv2dChannelsLast(weight: $0[1], bias: $0[2], stride: stride, padding: padding)
            }, reference: {
                self.referenceConv($0[0].permuted([0, 3, 1, 2]), $0[1], $0[2], stride: stride, padding: padding, groups: 3).permuted([0, 2, 3, 1])
            })
            checkGradients("depthwise conv2d channels-last, no bias", inputs: [x, wt], engine: {
                $0[0].depthwiseConv2dChannelsLast(weight: $0[1], stride: stride, padding: padding)
            }, reference: {
                self.referenceConv($0[0].permuted([0, 3, 1, 2]), $0[1], nil, stride: stride, padding: padding, groups: 3).permuted([0, 2, 3, 1])
            })
        }
    }

    /// The k x k windows of a channels-last map as rows (zeros outside the map): values and the
    /// scatter-add of their gradients, into a fresh gradient and into one the map already has (the
    /// map also read directly).
    func testWindowsChannelsLast() {
        func reference(_ x: DArray, _ k: Int, _ s: Int, _ p: Int) -> DArray {
            let (b, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
            let oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1
            var out = DArray.zeros([b * oh * ow, k * k * c])
            for n in 0..<b { for oy in 0..<oh { for ox in 0..<ow { for ky in 0..<k { for kx in 0..<k { for ch in 0..<c {
                let iy = oy * s - p + ky, ix = ox * s - p + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < w { out[[(n * oh + oy) * ow + ox, (ky * k + kx) * c + ch]] = x[[n, iy, ix, ch]] }
            } } } } } }
            return out
        }
        for (k, stride, padding, h, w, c) in [(3, 2, 1, 5, 4, 3), (7, 4, 2, 9, 8, 1), (3, 1, 0, 4, 5, 2), (2, 2, 0, 4, 4, 17)] {
            let x = randomTensor([2, h, w, c], seed: 12)
            checkGradients("windows channels-last k\(k) s\(stride) p\(padding) c\(c)", inputs: [x], engine: {
                $0[0].windowsChannelsLast(kernel: k, stride: stride, padding: padding)
            }, reference: { reference($0[0], k, stride, padding) })
            checkGradients("windows channels-last, map read twice", inputs: [x], engine: {
                Tensor.concat([$0[0].windowsChannelsLast(kernel: k, stride: stride, padding: padding).reshaped([-1]), $0[0].reshaped([-1])], axis: 0)
            }, reference: { xs in
                let r = reference(xs[0], k, stride, padding)
                return DArray(shape: [r.count + xs[0].count], r.data + xs[0].data)
            })
        }
    }

    func referencePool(_ x: DArray, kernel: Int, stride: Int, padding: Int, max: Bool) -> DArray {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1
        var out = DArray.zeros([n, c, oh, ow])
        for i in 0..<out.count {
            let o = out.index(of: i)
            var best = -Double.infinity, total = 0.0
            for ky in 0..<kernel { for kx in 0..<kernel {
                let iy = o[2] * stride - padding + ky, ix = o[3] * stride - padding + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < w { let v = x[[o[0], o[1], iy, ix]]; best = Swift.max(best, v); total += v }
            } }
            out.data[i] = max ? best : total / Double(kernel * kernel)
        }
        return out
    }

    func testPooling() {
        let x = randomTensor([2, 3, 6, 5], seed: 1)
        for (k, s, p) in [(2, 2, 0), (3, 1, 1), (3, 2, 1)] {
            checkGradients("maxPool k\(k) s\(s) p\(p)", inputs: [x], engine: { $0[0].maxPool2d(kernel: k, stride: s, padding: p) },
                           reference: { self.referencePool($0[0], kernel: k, stride: s, padding: p, max: true) })
            checkGradients("avgPool k\(k) s\(s) p\(p)", inputs: [x], engine: { $0[0].avgPool2d(kernel: k, stride: s, padding: p) },
                           reference: { self.referencePool($0[0], kernel: k, stride: s, padding: p, max: false) })
        }
    }

    /// softmax(q k^T * scale, masked) v per batch-head, naively.
    static func referenceAttention(_ q: DArray, _ k: DArray, _ v: DArray, mask: DArray?) -> DArray {
        let d = q.shape.last!
        var s = DArray.matmul(q, k, transposeB: true).map { $0 / Double(d).squareRoot() }
        if let mask {
            let mm = mask.expanded(to: s.shape)
            for i in 0..<s.count where mm.data[i] == 0 { s.data[i] = -.infinity }
        }
        return DArray.matmul(s.mapRows(DArray.softmaxRow), v)
    }

    /// Packed multi-head attention in Double: chunk(3), 'b n (h d) -> b h n d', attention, 'b h n d -> b n (h d)'.
    static func referencePackedAttention(_ qkv: DArray, heads: Int) -> DArray {
        let (b, n, dh) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / (3 * heads))
        func part(_ c: Int) -> DArray {
            var out = DArray.zeros([b, heads, n, dh])
            for i in 0..<out.count {
                let o = out.index(of: i)
                out.data[i] = qkv[[o[0], o[2], c * heads * dh + o[1] * dh + o[3]]]
            }
            return out
        }
        return referenceAttention(part(0), part(1), part(2), mask: nil).permuted([0, 2, 1, 3]).reshaped([b, n, heads * dh])
    }

    func testMultiHeadSelfAttentionFromPackedProjection() {
        let (b, n, heads, dh) = (2, 5, 3, 4)
        let qkv = randomTensor([b, n, 3 * heads * dh], seed: 7, low: -2, high: 2)
        checkGradients("packed multi-head attention", inputs: [qkv], engine: {
            Tensor.multiHeadSelfAttention(packedQKV: $0[0], heads: heads).output
        }, reference: { Self.referencePackedAttention($0[0], heads: heads) })
        let (_, probs) = Tensor.multiHeadSelfAttention(packedQKV: qkv, heads: heads, returnProbabilities: true)
        XCTAssertEqual(probs?.shape, [b, heads, n, n])
    }

    /// Queries (B, N, h d) over keys and values packed (B, M, 2 h d), in Double.
    static func referenceQueriesOverPackedKV(_ q: DArray, _ kv: DArray, heads: Int) -> DArray {
        let (b, n, m, inner) = (q.shape[0], q.shape[1], kv.shape[1], q.shape[2])
        let dh = inner / heads
        func part(_ x: DArray, rows: Int, offset: Int) -> DArray {
            var out = DArray.zeros([b, heads, rows, dh])
            for i in 0..<out.count {
                let o = out.index(of: i)
                out.data[i] = x[[o[0], o[2], offset + o[1] * dh + o[3]]]
            }
            return out
        }
        return referenceAttention(part(q, rows: n, offset: 0), part(kv, rows: m, offset: 0), part(kv, rows: m, offset: inner), mask: nil)
            .permuted([0, 2, 1, 3]).reshaped([b, n, inner])
    }

    func testMultiHeadAttentionOverPackedKeysValues() {
        let (b, n, m, heads, dh) = (2, 4, 6, 3, 4)
        let q = randomTensor([b, n, heads * dh], seed: 5, low: -2, high: 2)
        let kv = randomTensor([b, m, 2 * heads * dh], seed: 6, low: -2, high: 2)
        checkGradients("queries over packed keys-values", inputs: [q, kv], engine: {
            Tensor.multiHeadAttention(queries: $0[0], packedKV: $0[1], heads: heads).output
        }, reference: { Self.referenceQueriesOverPackedKV($0[0], $0[1], heads: heads) })
        // Both inputs also feed a later op, whose backward runs first: the kernel adds to their gradients.
        checkGradients("queries over packed keys-values, added to", inputs: [q, kv], engine: {
            Tensor.multiHeadAttention(queries: $0[0], packedKV: $0[1], heads: heads).output.sum() + ($0[0] * $0[0]).sum() + ($0[1] * $0[1]).sum()
        }, reference: { xs in
            let a = Self.referenceQueriesOverPackedKV(xs[0], xs[1], heads: heads).data.reduce(0, +)
            return DArray(shape: [], [a + xs[0].data.reduce(0) { $0 + $1 * $1 } + xs[1].data.reduce(0) { $0 + $1 * $1 }])
        })
        let (_, probs) = Tensor.multiHeadAttention(queries: q, packedKV: kv, heads: heads, returnProbabilities: true)
        XCTAssertEqual(probs?.shape, [b, heads, n, m])
    }

    func testScaledDotProductAttention() {
        let q = randomTensor([2, 2, 5, 4], seed: 1, low: -2, high: 2)
        let k = randomTensor([2, 2, 6, 4], seed: 2, low: -2, high: 2)
        let v = randomTensor([2, 2, 6, 3], seed: 3)
        checkGradients("attention", inputs: [q, k, v], engine: { Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2]).output },
                       reference: { Self.referenceAttention($0[0], $0[1], $0[2], mask: nil) })
        // A key-padding mask broadcast over heads and queries, with one query row fully masked out.
        var maskValues = [Float](repeating: 1, count: 2 * 1 * 5 * 6)
        for j in 4..<6 { for i in 0..<5 { maskValues[i * 6 + j] = 0 } }
        for j in 0..<6 { maskValues[30 + 2 * 6 + j] = 0 }
        let mask = Tensor(shape: [2, 1, 5, 6], maskValues)
        checkGradients("attention masked", inputs: [q, k, v], engine: {
            Tensor.scaledDotProductAttention(query: $0[0], key: $0[1], value: $0[2], mask: mask).output
        }, reference: { Self.referenceAttention($0[0], $0[1], $0[2], mask: DArray(mask)) })
        // Self-attention with q = k = v: gradients from the three roles add up.
        let x = randomTensor([1, 2, 4, 4], seed: 4)
        checkGradients("attention q=k=v", inputs: [x], engine: {
            Tensor.scaledDotProductAttention(query: $0[0], key: $0[0], value: $0[0]).output
        }, reference: { Self.referenceAttention($0[0], $0[0], $0[0], mask: nil) })
        let (_, probs) = Tensor.scaledDotProductAttention(query: q, key: k, value: v, returnProbabilities: true)
        let refProbs = DArray.matmul(DArray(q), DArray(k), transposeB: true).map { $0 / 2 }.mapRows(DArray.softmaxRow)
        XCTAssertEqual(probs?.shape, [2, 2, 5, 6])
        assertClose("attention probabilities", probs!.scalars.map(Double.init), refProbs.data, tolerance: 1e-5)
    }

    /// Kernels write a fresh input gradient instead of zero-filling and adding to it (GELU, packed
    /// attention, BatchNorm); the checks above take that path (the inputs are leaves). Here the
    /// input also feeds a later op, whose backward runs first: the kernels must add to its gradient.
    func testGradientsAddedToAnExistingGradient() {
        let x = randomTensor([3, 7], seed: 11, low: -4, high: 4)
        checkGradients("gelu(x) + x", inputs: [x], engine: { $0[0].gelu() + $0[0] },
                       reference: { $0[0].map { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) + $0 } })
        checkGradients("gelu tanh(x) + x", inputs: [x], engine: { $0[0].gelu(approximateTanh: true) + $0[0] },
                       reference: { $0[0].map { x in 0.5 * x * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) + x } })
        let (b, n, heads, dh) = (2, 5, 3, 4)
        let qkv = randomTensor([b, n, 3 * heads * dh], seed: 7, low: -2, high: 2)
        checkGradients("packed attention(qkv) + qkv . qkv", inputs: [qkv], engine: {
            Tensor.multiHeadSelfAttention(packedQKV: $0[0], heads: heads).output.sum() + ($0[0] * $0[0]).sum()
        }, reference: { xs in
            let a = Self.referencePackedAttention(xs[0], heads: heads).data.reduce(0, +)
            return DArray(shape: [], [a + xs[0].data.reduce(0) { $0 + $1 * $1 }])
        })
        for shape in [[6, 4], [2, 4, 3, 3]] {
            let x = randomTensor(shape, seed: 1, low: -1, high: 2)
            let w = randomTensor([4], seed: 2, low: 0.5, high: 1.5), bias = randomTensor([4], seed: 3)
            checkGradients("batchNorm(x) + x \(shape)", inputs: [x, w, bias], engine: {
                $0[0].batchNorm(weight: $0[1], bias: $0[2], state: BatchNormState(channels: 4), training: true) + $0[0]
            }, reference: { self.referenceBatchNorm($0[0], $0[1], $0[2], mean: nil, variance: nil) + $0[0] })
            let state = BatchNormState(channels: 4)
            _ = x.batchNorm(weight: w, bias: bias, state: state, training: true)
            let rm = state.runningMean.scalars.map(Double.init), rv = state.runningVar.scalars.map(Double.init)
            checkGradients("batchNorm eval(x) + x \(shape)", inputs: [x, w, bias], engine: {
                $0[0].batchNorm(weight: $0[1], bias: $0[2], state: state, training: false) + $0[0]
            }, reference: { self.referenceBatchNorm($0[0], $0[1], $0[2], mean: rm, variance: rv) + $0[0] })
        }
    }

    /// gelu(x W^T + b) as one op: gradients (fresh, and added to an existing one), and the same
    /// bits as `linear` then `gelu`, forward and every gradient, on sizes with 8-lane blocks and tails.
    func testLinearGELU() {
        let x = randomTensor([6, 12], seed: 21), w = randomTensor([20, 12], seed: 22), b = randomTensor([20], seed: 23)
        for tanh in [false, true] {
            func gelu(_ v: Double) -> Double {
                tanh ? 0.5 * v * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
                     : 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
            }
            func reference(_ xs: [DArray]) -> DArray {
                var z = DArray.matmul(xs[0], xs[1], transposeB: true)
                for i in 0..<z.count { z.data[i] = gelu(z.data[i] + xs[2].data[i % 20]) }
                return z
            }
            checkGradients("linearGELU tanh \(tanh)", inputs: [x, w, b], engine: {
                Tensor.linearGELU($0[0], weight: $0[1], bias: $0[2], approximateTanh: tanh)
            }, reference: reference)
            checkGradients("linearGELU tanh \(tanh), added to", inputs: [x, w, b], engine: {
                Tensor.linearGELU($0[0], weight: $0[1], bias: $0[2], approximateTanh: tanh).sum() + ($0[0] * $0[0]).sum()
                    + ($0[1] * $0[1]).sum() + ($0[2] * $0[2]).sum()
            }, reference: { xs in
                DArray(shape: [], [reference(xs).data.reduce(0, +) + xs.map { $0.data.reduce(0) { $0 + $1 * $1 } }.reduce(0, +)])
            })
            let big = randomTensor([2, 37, 12], seed: 24, low: -3, high: 3)
            let fused = [big, w, b].map { $0.copy().requiringGrad() }, separate = [big, w, b].map { $0.copy().requiringGrad() }
            let weights = randomTensor([2, 37, 20], seed: 25)
            // One graph at a time: backward walks (and then releases) the whole tape.
            let yf = Tensor.linearGELU(fused[0], weight: fused[1], bias: fused[2], approximateTanh: tanh)
            (yf * weights).sum().backward()
            let ys = Tensor.linear(separate[0], weight: separate[1], bias: separate[2]).gelu(approximateTanh: tanh)
            (ys * weights).sum().backward()
            XCTAssertEqual(yf.shape, [2, 37, 20])
            XCTAssertEqual(yf.scalars, ys.scalars, "linearGELU forward, tanh \(tanh)")
            for (f, sep) in zip(fused, separate) { XCTAssertEqual(f.grad?.scalars, sep.grad?.scalars, "linearGELU gradient, tanh \(tanh)") }
        }
    }
}
