import Data
import Encoders
import Foundation
import NN
import TensorCore

/// Features of a hidden layer for every image of `dataset`, in order (encoder in evaluation
/// mode, no tape): (N, ...) as the layer gives them. Spread over processes, each extracts its
/// contiguous share of the images and every process receives all of them (MPI_Allgatherv).
public func extractFeatures(_ encoder: some HiddenLayerEncoder, layer: String, dataset: Dataset, mean: [Float], std: [Float],
                            batchSize: Int = 1000) throws -> Tensor {
    let wasTraining = encoder.isTraining
    encoder.eval()
    defer { encoder.train(wasTraining) }
    let (rows, rowShape) = try sharedHidden(encoder, layer: layer, dataset: dataset, range: 0 ..< dataset.count, mean: mean, std: std,
                                            batchSize: batchSize)
    return Tensor(shape: [dataset.count] + rowShape, rows)
}

/// The `layer` outputs (no tape; the caller sets the encoder's mode) of the images `range` of
/// `dataset`, in order, with the shape of one row. Spread over processes, each process runs its
/// contiguous share of the range in batches of `batchSize` and every process receives all the
/// rows (MPI_Allgatherv); a process with no images learns the row shape from one image.
public func sharedHidden(_ encoder: some HiddenLayerEncoder, layer: String, dataset: Dataset, range: Range<Int>, mean: [Float], std: [Float],
                         batchSize: Int) throws -> (rows: [Float], rowShape: [Int]) {
    let spread = Distributed.isMultiProcess
    let share = spread ? Distributed.share(of: range.count) : 0 ..< range.count
    let first = range.lowerBound + share.lowerBound
    let images: Dataset = share.count == dataset.count ? dataset : Subset(indices: Array(first ..< (first + share.count)), of: dataset)
    var rows: [Float] = []
    var rowShape: [Int] = []
    if !share.isEmpty {
        let batches = DataLoader(images, batchSize: batchSize, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0).batches()
        while let batch = try batches.next() {
            let out = Autograd.noGrad { encoder.hidden(batch.images, layer: layer) }
            rowShape = Array(out.shape.dropFirst())
            rows += UnsafeBufferPointer(start: out.base, count: out.count)
        }
    }
    guard spread else { return (rows, rowShape) }
    if share.isEmpty {
        let one = try DataLoader(Subset(first: 1, of: dataset), batchSize: 1, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
            .allBatches()[0]
        rowShape = Array(Autograd.noGrad { encoder.hidden(one.images, layer: layer) }.shape.dropFirst())
    }
    let width = rowShape.reduce(1, *)
    let counts = (0..<Distributed.size).map { Distributed.share(of: range.count, rank: $0).count * width }
    var all = [Float](repeating: 0, count: range.count * width)
    let send = rows.isEmpty ? [0] : rows
    send.withUnsafeBufferPointer { sp in
        all.withUnsafeMutableBufferPointer { Distributed.world.allgather(sp.baseAddress!, count: rows.count, into: $0.baseAddress!, counts: counts) }
    }
    return (all, rowShape)
}

/// DINO's weighted k-nearest-neighbour classifier (Wu et al. 2018, as DINO's eval_knn): features
/// L2-normalised, the k most cosine-similar training images vote for their labels with weight
/// exp(similarity / temperature), and the class with the largest vote wins.
public func knnClassify(train: Tensor, trainLabels: [Int], test: Tensor, classes: Int, k: Int = 20, temperature: Double = 0.07) -> Tensor {
    let trainN = Autograd.noGrad { train.reshaped([train.shape[0], -1]).l2Normalized() }
    let testN = Autograd.noGrad { test.reshaped([test.shape[0], -1]).l2Normalized() }
    let n = trainN.shape[0], m = testN.shape[0], d = trainN.shape[1]
    let k = Swift.min(k, n)
    let votes = Storage(count: m * classes)
    let chunk = 256
    for first in stride(from: 0, to: m, by: chunk) {
        let rows = Swift.min(chunk, m - first)
        let block = Tensor(shape: [rows, d], Array(UnsafeBufferPointer(start: testN.base + first * d, count: rows * d)))
        let similarity = Autograd.noGrad { Tensor.matmul(block, trainN, transposeB: true) }  // (rows, n)
        let s = similarity.base
        Parallel.forChunks(rows, grain: 8) { range in
            var bestValue = [Float](repeating: -.infinity, count: k)
            var bestIndex = [Int](repeating: 0, count: k)
            for r in range {
                for j in 0..<k { bestValue[j] = -.infinity; bestIndex[j] = 0 }
                let row = s + r * n
                for j in 0..<n where row[j] > bestValue[k - 1] {
                    var p = k - 1
                    while p > 0 && bestValue[p - 1] < row[j] { bestValue[p] = bestValue[p - 1]; bestIndex[p] = bestIndex[p - 1]; p -= 1 }
                    bestValue[p] = row[j]
                    bestIndex[p] = j
                }
                let out = votes.base + (first + r) * classes
                for j in 0..<k { out[trainLabels[bestIndex[j]]] += Float(exp(Double(bestValue[j]) / temperature)) }
            }
        }
    }
    return Tensor(shape: [m, classes], storage: votes)
}

/// Standardises features with the training split's mean and (unbiased) standard deviation.
public func standardize(train: Tensor, test: Tensor) -> (train: Tensor, test: Tensor) {
    let trainFlat = train.reshaped([train.shape[0], -1]), testFlat = test.reshaped([test.shape[0], -1])
    let n = trainFlat.shape[0], d = trainFlat.shape[1]
    var mean = [Double](repeating: 0, count: d), variance = [Double](repeating: 0, count: d)
    let x = trainFlat.base
    for i in 0..<n { for j in 0..<d { mean[j] += Double(x[i * d + j]) } }
    for j in 0..<d { mean[j] /= Double(n) }
    for i in 0..<n { for j in 0..<d { let c = Double(x[i * d + j]) - mean[j]; variance[j] += c * c } }
    let scale = variance.map { 1 / Swift.max(($0 / Double(Swift.max(n - 1, 1))).squareRoot(), 1e-8) }
    func apply(_ t: Tensor) -> Tensor {
        let rows = t.shape[0]
        var out = [Float](repeating: 0, count: rows * d)
        for i in 0..<rows { for j in 0..<d { out[i * d + j] = Float((Double(t.base[i * d + j]) - mean[j]) * scale[j]) } }
        return Tensor(shape: [rows, d], out)
    }
    return (apply(trainFlat), apply(testFlat))
}

/// Multinomial logistic regression fitted full-batch with L-BFGS and a strong-Wolfe line search,
/// a port of torch.optim.LBFGS(lr=1, max_iter, history_size, line_search_fn='strong_wolfe') as
/// the reference linear probe uses it: W and b start at zero, no weight decay.
public struct LogisticRegression {
    public let weight: Tensor
    public let bias: Tensor
    public let loss: Double
    public let iterations: Int
    public let evaluations: Int

    public func scores(_ features: Tensor) -> Tensor {
        Autograd.noGrad { Tensor.linear(features, weight: weight, bias: bias) }
    }

    public static func fit(_ features: Tensor, labels: [Int], classes: Int, maxIterations: Int = 100, historySize: Int = 20) -> LogisticRegression {
        let d = features.shape[1]
        let count = classes * d + classes
        func evaluate(_ x: [Float]) -> (Double, [Float]) {
            let w = Tensor(shape: [classes, d], Array(x[0..<(classes * d)]), requiresGrad: true)
            let b = Tensor(shape: [classes], Array(x[(classes * d)...]), requiresGrad: true)
            let loss = Tensor.linear(features, weight: w, bias: b).crossEntropy(.labels(labels))
            loss.backward()
            return (Double(loss.item), w.grad!.scalars + b.grad!.scalars)
        }
        var lbfgs = LBFGS(maxIterations: maxIterations, historySize: historySize)
        let (x, loss) = lbfgs.minimize([Float](repeating: 0, count: count), evaluate)
        return LogisticRegression(weight: Tensor(shape: [classes, d], Array(x[0..<(classes * d)])),
                                  bias: Tensor(shape: [classes], Array(x[(classes * d)...])), loss: loss,
                                  iterations: lbfgs.iterations, evaluations: lbfgs.evaluations)
    }
}

/// torch.optim.LBFGS with line_search_fn='strong_wolfe' over a flat Float32 vector (scalars in
/// Double): the same two-loop recursion, first step min(1, 1/|g|_1), stopping rules and
/// cubic-interpolation zoom.
public struct LBFGS {
    public var maxIterations: Int
    public var maxEvaluations: Int
    public var historySize: Int
    public var toleranceGrad = 1e-7
    public var toleranceChange = 1e-9
    public private(set) var iterations = 0
    public private(set) var evaluations = 0

    public init(maxIterations: Int = 100, historySize: Int = 20) {
        self.maxIterations = maxIterations
        maxEvaluations = maxIterations * 5 / 4
        self.historySize = historySize
    }

    static func dot(_ a: [Float], _ b: [Float]) -> Double {
        var s: Float = 0
        for i in a.indices { s += a[i] * b[i] }
        return Double(s)
    }

    public mutating func minimize(_ start: [Float], _ f: ([Float]) -> (Double, [Float])) -> ([Float], Double) {
        var x = start
        var (loss, g) = f(x)
        evaluations = 1
        if g.map({ abs($0) }).max() ?? 0 <= Float(toleranceGrad) { return (x, loss) }
        var d = [Float](), t = 0.0
        var oldDirs: [[Float]] = [], oldSteps: [[Float]] = [], ro: [Double] = []
        var hDiag = 1.0
        var previousGrad = g, previousLoss = loss
        while iterations < maxIterations {
            iterations += 1
            if iterations == 1 {
                d = g.map { -$0 }
                hDiag = 1
            } else {
                let y = zip(g, previousGrad).map { $0 - $1 }
                let s = d.map { $0 * Float(t) }
                let ys = Self.dot(y, s)
                if ys > 1e-10 {
                    if oldDirs.count == historySize { oldDirs.removeFirst(); oldSteps.removeFirst(); ro.removeFirst() }
                    oldDirs.append(y)
                    oldSteps.append(s)
                    ro.append(1 / ys)
                    hDiag = ys / Self.dot(y, y)
                }
                var q = g.map { -$0 }
                var al = [Double](repeating: 0, count: oldDirs.count)
                for i in stride(from: oldDirs.count - 1, through: 0, by: -1) {
                    al[i] = Self.dot(oldSteps[i], q) * ro[i]
                    for j in q.indices { q[j] -= Float(al[i]) * oldDirs[i][j] }
                }
                var r = q.map { $0 * Float(hDiag) }
                for i in oldDirs.indices {
                    let be = Self.dot(oldDirs[i], r) * ro[i]
                    for j in r.indices { r[j] += Float(al[i] - be) * oldSteps[i][j] }
                }
                d = r
            }
            previousGrad = g
            previousLoss = loss
            t = iterations == 1 ? Swift.min(1, 1 / Double(g.reduce(Float(0)) { $0 + abs($1) })) : 1
            let gtd = Self.dot(g, d)
            if gtd > -toleranceChange { break }
            let search = strongWolfe(f, x: x, t: t, d: d, loss: loss, g: g, gtd: gtd)
            (loss, g, t) = (search.loss, search.g, search.t)
            evaluations += search.evaluations
            for j in x.indices { x[j] += Float(t) * d[j] }
            if iterations == maxIterations || evaluations >= maxEvaluations { break }
            if Double(g.map { abs($0) }.max() ?? 0) <= toleranceGrad { break }
            if Double(d.map { abs($0) }.max() ?? 0) * abs(t) <= toleranceChange { break }
            if abs(loss - previousLoss) < toleranceChange { break }
        }
        return (x, loss)
    }

    static func cubicInterpolate(_ x1: Double, _ f1: Double, _ g1: Double, _ x2: Double, _ f2: Double, _ g2: Double,
                                 bounds: (Double, Double)? = nil) -> Double {
        let (lo, hi) = bounds ?? (x1 <= x2 ? (x1, x2) : (x2, x1))
        let d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        let d2Square = d1 * d1 - g1 * g2
        guard d2Square >= 0 else { return (lo + hi) / 2 }
        let d2 = d2Square.squareRoot()
        let minPos = x1 <= x2 ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
                              : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return Swift.min(Swift.max(minPos, lo), hi)
    }

    func strongWolfe(_ f: ([Float]) -> (Double, [Float]), x: [Float], t start: Double, d: [Float], loss: Double, g: [Float],
                     gtd: Double, c1: Double = 1e-4, c2: Double = 0.9, maxSearches: Int = 25) -> (loss: Double, g: [Float], t: Double, evaluations: Int) {
        func at(_ t: Double) -> (Double, [Float], Double) {
            let point = zip(x, d).map { $0 + Float(t) * $1 }
            let (value, grad) = f(point)
            return (value, grad, Self.dot(grad, d))
        }
        let dNorm = Double(d.map { abs($0) }.max() ?? 0)
        var t = start
        var (fNew, gNew, gtdNew) = at(t)
        var evaluations = 1
        var (tPrev, fPrev, gPrev, gtdPrev) = (0.0, loss, g, gtd)
        var done = false
        var searches = 0
        var bracket: [Double] = [], bracketF: [Double] = [], bracketG: [[Float]] = [], bracketGtd: [Double] = []
        while searches < maxSearches {
            if fNew > loss + c1 * t * gtd || (searches > 1 && fNew >= fPrev) {
                (bracket, bracketF, bracketG, bracketGtd) = ([tPrev, t], [fPrev, fNew], [gPrev, gNew], [gtdPrev, gtdNew])
                break
            }
            if abs(gtdNew) <= -c2 * gtd {
                (bracket, bracketF, bracketG, bracketGtd) = ([t], [fNew], [gNew], [gtdNew])
                done = true
                break
            }
            if gtdNew >= 0 {
                (bracket, bracketF, bracketG, bracketGtd) = ([tPrev, t], [fPrev, fNew], [gPrev, gNew], [gtdPrev, gtdNew])
                break
            }
            let previous = t
            t = Self.cubicInterpolate(tPrev, fPrev, gtdPrev, t, fNew, gtdNew, bounds: (t + 0.01 * (t - tPrev), t * 10))
            (tPrev, fPrev, gPrev, gtdPrev) = (previous, fNew, gNew, gtdNew)
            (fNew, gNew, gtdNew) = at(t)
            evaluations += 1
            searches += 1
        }
        if searches == maxSearches {
            (bracket, bracketF, bracketG, bracketGtd) = ([0, t], [loss, fNew], [g, gNew], [gtd, gtdNew])
        }
        var insufficientProgress = false
        var (low, high) = bracketF[0] <= bracketF[bracketF.count - 1] ? (0, 1) : (1, 0)
        while !done && searches < maxSearches {
            if abs(bracket[1] - bracket[0]) * dNorm < toleranceChange { break }
            t = Self.cubicInterpolate(bracket[0], bracketF[0], bracketGtd[0], bracket[1], bracketF[1], bracketGtd[1])
            let hi = bracket.max()!, lo = bracket.min()!
            let eps = 0.1 * (hi - lo)
            if Swift.min(hi - t, t - lo) < eps {
                if insufficientProgress || t >= hi || t <= lo {
                    t = abs(t - hi) < abs(t - lo) ? hi - eps : lo + eps
                    insufficientProgress = false
                } else {
                    insufficientProgress = true
                }
            } else {
                insufficientProgress = false
            }
            (fNew, gNew, gtdNew) = at(t)
            evaluations += 1
            searches += 1
            if fNew > loss + c1 * t * gtd || fNew >= bracketF[low] {
                (bracket[high], bracketF[high], bracketG[high], bracketGtd[high]) = (t, fNew, gNew, gtdNew)
                (low, high) = bracketF[0] <= bracketF[1] ? (0, 1) : (1, 0)
            } else {
                if abs(gtdNew) <= -c2 * gtd {
                    done = true
                } else if gtdNew * (bracket[high] - bracket[low]) >= 0 {
                    (bracket[high], bracketF[high], bracketG[high], bracketGtd[high]) = (bracket[low], bracketF[low], bracketG[low], bracketGtd[low])
                }
                (bracket[low], bracketF[low], bracketG[low], bracketGtd[low]) = (t, fNew, gNew, gtdNew)
            }
        }
        return (bracketF[low], bracketG[low], bracket[low], evaluations)
    }
}
