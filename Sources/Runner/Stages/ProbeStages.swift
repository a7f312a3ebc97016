import Evaluation
import Foundation
import TensorCore

/// Checks that `layer` is one of the encoder's hidden layers (for the evaluation stages).
func checkHiddenLayer(_ layer: String, _ recipe: Recipe) throws {
    let names = recipe.encoder.hiddenLayerNames
    guard names.contains(layer) else {
        var message = "the \(recipe.encoder.kind) encoder has no hidden layer '\(layer)'"
        if let near = nearest(layer, in: names) { message += "; did you mean '\(near)'?" }
        throw RecipeIssue(path: ["hidden_layer"], message: message + " Its layers: \(names.joined(separator: ", ")).")
    }
}

/// `linear_probe`: a multinomial logistic regression on frozen features of a hidden layer
/// (standardised with the training split's statistics), fitted full-batch with L-BFGS and a
/// strong-Wolfe line search from zero weights, as the reference probe (torch.optim.LBFGS, 100
/// iterations, history 20). Top-1 and top-5 on the test split.
public struct LinearProbeStage: Stage {
    public static let kind = "linear_probe"
    public static let summary = "logistic regression (L-BFGS) on frozen, standardised features of a hidden layer; test top-1/top-5"

    public var hiddenLayer = "pooled"
    public var iterations = 100
    public var historySize = 20
    public var batchSize = 1000

    public init() {}

    public static let fields: [Field<LinearProbeStage>] = [
        .value("hidden_layer", \.hiddenLayer, "the frozen features: pooled | tokens | logits | blocks.i (the encoder's hidden layers)"),
        .value("iterations", \.iterations, "full-batch L-BFGS iterations (strong-Wolfe line search, from zero)", .positive),
        .value("history_size", \.historySize, "L-BFGS history", .positive),
        .value("batch_size", \.batchSize, "images per feature-extraction batch", .positive),
    ]

    public func validate(_ recipe: Recipe) throws { try checkHiddenLayer(hiddenLayer, recipe) }

    public func run(_ context: RunContext) throws -> [String: Double] {
        let evaluation = try FrozenEvaluation(context, layer: hiddenLayer, batchSize: batchSize)
        let (trainStd, testStd) = standardize(train: evaluation.train, test: evaluation.test)
        let start = Date()
        let model = LogisticRegression.fit(trainStd, labels: evaluation.trainLabels, classes: evaluation.classes,
                                           maxIterations: iterations, historySize: historySize)
        let (trainTop1, _) = topAccuracy(model.scores(trainStd), labels: evaluation.trainLabels)
        let results = try evaluation.finish(model.scores(testStd), extra: ["train_top1": trainTop1, "train_loss": model.loss],
                                            recorded: ["iterations": Double(model.iterations)])
        context.log(String(format: "%@: '%@' features (%d dims), L-BFGS %d iterations, %d evaluations, %.1f s: loss %.4f, train top-1 %.2f%%, test top-1 %.2f%%, top-5 %.2f%%",
                           context.stageName, hiddenLayer, trainStd.shape[1], model.iterations, model.evaluations, Date().timeIntervalSince(start),
                           model.loss, 100 * trainTop1, 100 * results["test_top1"]!, 100 * results["test_top5"]!))
        return results
    }
}

/// `knn`: DINO's weighted k-nearest-neighbour evaluation on frozen features of a hidden layer:
/// cosine similarity, k = 20, votes weighted by exp(similarity / 0.07).
public struct KNNStage: Stage {
    public static let kind = "knn"
    public static let summary = "weighted k-nearest-neighbour classifier on frozen features (cosine, k 20, T 0.07, as DINO); test top-1/top-5"

    public var hiddenLayer = "pooled"
    public var k = 20
    public var temperature = 0.07
    public var batchSize = 1000

    public init() {}

    public static let fields: [Field<KNNStage>] = [
        .value("hidden_layer", \.hiddenLayer, "the frozen features (L2-normalised)"),
        .value("k", \.k, "neighbours", .positive),
        .value("temperature", \.temperature, "votes weighted by exp(similarity / temperature)", .positive),
        .value("batch_size", \.batchSize, "images per feature-extraction batch", .positive),
    ]

    public func validate(_ recipe: Recipe) throws {
        try checkHiddenLayer(hiddenLayer, recipe)
        if let train = recipe.data.trainCount, k > train {
            throw RecipeIssue(path: ["k"], message: "k is \(k) but there are \(train) training images to vote; use at most \(train) (data.train_subset)")
        }
    }

    public func run(_ context: RunContext) throws -> [String: Double] {
        let evaluation = try FrozenEvaluation(context, layer: hiddenLayer, batchSize: batchSize)
        let start = Date()
        let scores = knnClassify(train: evaluation.train, trainLabels: evaluation.trainLabels, test: evaluation.test,
                                 classes: evaluation.classes, k: k, temperature: temperature)
        let results = try evaluation.finish(scores)
        context.log(String(format: "%@: '%@' features, k %d, T %.2f, %.1f s: test top-1 %.2f%%, top-5 %.2f%%", context.stageName, hiddenLayer,
                           k, temperature, Date().timeIntervalSince(start), 100 * results["test_top1"]!, 100 * results["test_top5"]!))
        return results
    }
}

/// What the frozen-feature evaluations share: the features of the current encoder, the labels,
/// and writing test scores out as results and a confusion matrix.
struct FrozenEvaluation {
    let context: RunContext
    let train: Tensor, test: Tensor
    let trainLabels: [Int], testLabels: [Int]
    let classes: Int

    init(_ context: RunContext, layer: String, batchSize: Int) throws {
        self.context = context
        (train, test) = try context.features(layer, batchSize: batchSize)
        let data = context.data
        trainLabels = (0..<data.train.count).map { data.train.label(at: $0) }
        testLabels = (0..<data.test.count).map { data.test.label(at: $0) }
        classes = data.classNames.count
    }

    /// Test top-1/top-5 of `scores` plus `extra`, written to metrics.h5 with the confusion matrix.
    func finish(_ scores: Tensor, extra: [String: Double] = [:], recorded: [String: Double] = [:]) throws -> [String: Double] {
        let (top1, top5) = topAccuracy(scores, labels: testLabels)
        let results = ["test_top1": top1, "test_top5": top5].merging(extra) { $1 }
        // In TensorBoard at the run's step so far, beside the training curves.
        for (key, value) in results { context.events.scalar("\(context.stageName)/\(key)", value, step: context.globalStepBase) }
        try context.metrics.results(context.stageName, scalars: results.merging(recorded) { $1 },
                                    arrays: ["confusion": (confusionCounts(scores, labels: testLabels, classes: classes), [classes, classes])],
                                    strings: ["class_names": context.data.classNames])
        return results
    }
}
