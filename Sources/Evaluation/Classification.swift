import TensorCore

/// Top-1 and top-5 of score rows (N, classes) against labels.
public func topAccuracy(_ scores: Tensor, labels: [Int]) -> (top1: Double, top5: Double) {
    let k = Swift.min(5, scores.shape[1])
    let best = scores.topK(k).indices.values
    var top1 = 0, top5 = 0
    for (row, label) in labels.enumerated() {
        if best[row * k] == label { top1 += 1 }
        if best[(row * k)..<((row + 1) * k)].contains(label) { top5 += 1 }
    }
    return (Double(top1) / Double(labels.count), Double(top5) / Double(labels.count))
}

/// Counts of (true label, highest-scoring class) for score rows (N, classes), row-major
/// (classes x classes).
public func confusionCounts(_ scores: Tensor, labels: [Int], classes: Int) -> [Int64] {
    let predicted = scores.topK(1).indices.values
    var counts = [Int64](repeating: 0, count: classes * classes)
    for (label, guess) in zip(labels, predicted) where label < classes && guess < classes { counts[label * classes + guess] += 1 }
    return counts
}
