import Data
import Dispatch
import Encoders
import Foundation
import NN
import TensorCore

/// Top-1 and top-5 accuracy of `model`'s logits on `dataset` (evaluation mode, no tape).
public func classificationAccuracy(_ model: some HiddenLayerEncoder, on dataset: Dataset, mean: [Float], std: [Float],
                                   batchSize: Int = 1000) -> (top1: Double, top5: Double) {
    let wasTraining = model.isTraining
    model.eval()
    defer { model.train(wasTraining) }
    let loader = DataLoader(dataset, batchSize: batchSize, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
    var top1 = 0, top5 = 0
    for batch in loader {
        let logits = Autograd.noGrad { model.hidden(batch.images, layer: "logits") }
        let (_, best) = logits.topK(Swift.min(5, logits.shape[1]))
        let k = best.shape[1]
        for (row, label) in batch.labels.enumerated() {
            if best.values[row * k] == label { top1 += 1 }
            if best.values[(row * k)..<((row + 1) * k)].contains(label) { top5 += 1 }
        }
    }
    return (Double(top1) / Double(dataset.count), Double(top5) / Double(dataset.count))
}

/// Counts of (true label, predicted label) on `dataset`, row-major (classes x classes).
public func confusionMatrix(_ model: some HiddenLayerEncoder, on dataset: Dataset, mean: [Float], std: [Float], classes: Int,
                            batchSize: Int = 1000) -> [Int64] {
    let wasTraining = model.isTraining
    model.eval()
    defer { model.train(wasTraining) }
    var counts = [Int64](repeating: 0, count: classes * classes)
    let loader = DataLoader(dataset, batchSize: batchSize, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
    for batch in loader {
        let predicted = Autograd.noGrad { model.hidden(batch.images, layer: "logits").topK(1).indices.values }
        for (label, guess) in zip(batch.labels, predicted) where label < classes && guess < classes { counts[label * classes + guess] += 1 }
    }
    return counts
}
