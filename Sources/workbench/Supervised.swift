import ArgumentParser
import Data
import Encoders
import Evaluation
import Foundation
import NN
import TensorCore

/// `workbench supervised`: the supervised stage on Fashion-MNIST with the reference ViT, until
/// the recipe runner schedules it from a recipe.
struct Supervised: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ViT from scratch on Fashion-MNIST with cross-entropy and report test accuracy.",
        discussion: "Defaults are the reference recipe of shared/reference/REFERENCE.md (5 epochs, AdamW 1e-3, weight decay 0.05, batch 256, cosine, flips).")

    @Option(help: "Folder with the Fashion-MNIST IDX files.") var data = FashionMNIST.defaultDirectory
    @Option(help: "Encoder: vit or simple-vit.") var encoder = "vit"
    @Option var epochs = 5
    @Option(name: .customLong("batch-size")) var batchSize = 256
    @Option(name: .customLong("lr")) var learningRate = 1e-3
    @Option(name: .customLong("weight-decay")) var weightDecay: Float = 0.05
    @Option(help: "Use only the first N training images.") var trainSubset: Int?
    @Option var seed: UInt64 = 0
    @Option var dim = 128
    @Option var depth = 4
    @Option var heads = 4
    @Option(name: .customLong("dim-head")) var dimHead = 32
    @Option(name: .customLong("mlp-dim")) var mlpDim = 256
    @Option(name: .customLong("patch-size")) var patchSize = 4

    func run() throws {
        var vit = ViTConfig()
        (vit.dim, vit.depth, vit.heads, vit.dimHead, vit.mlpDim) = (dim, depth, heads, dimHead, mlpDim)
        (vit.patchHeight, vit.patchWidth) = (patchSize, patchSize)
        if let problem = vit.problem { throw ValidationError("the encoder cannot be built: \(problem)") }
        guard ["vit", "simple-vit"].contains(encoder) else { throw ValidationError("--encoder must be vit or simple-vit, got '\(encoder)'") }
        let trainSet: Dataset, testSet: Dataset
        do {
            let full = try FashionMNIST.load(.train, directory: data)
            trainSet = trainSubset.map { Subset(first: $0, of: full) } ?? full
            testSet = try FashionMNIST.load(.test, directory: data)
        } catch let error as DataError {
            throw ValidationError(error.description)
        }
        var config = SupervisedConfig()
        (config.epochs, config.batchSize, config.learningRate, config.weightDecay, config.seed) = (epochs, batchSize, learningRate, weightDecay, seed)
        let initializer = Initializer(scheme: .pytorch, seed: seed)
        print("supervised: \(encoder) dim \(dim) depth \(depth) heads \(heads) on \(trainSet.count) training images, \(epochs) epochs, batch \(batchSize), \(Parallel.threads) threads")
        func train(_ model: some HiddenLayerEncoder) -> [EpochSummary] {
            SupervisedTrainer(model: model, train: trainSet, test: testSet, mean: [FashionMNIST.mean], std: [FashionMNIST.std],
                              config: config).run()
        }
        let summaries = encoder == "vit" ? train(ViT(vit, initializer: initializer)) : train(SimpleViT(vit, initializer: initializer))
        let seconds = summaries.reduce(0) { $0 + $1.seconds }
        let images = Double(summaries.count * (trainSet.count / batchSize) * batchSize)
        print(String(format: "final test top-1 %.2f%%, top-5 %.2f%%; training %.0f img/s over %.0f s",
                     100 * (summaries.last?.testTop1 ?? 0), 100 * (summaries.last?.testTop5 ?? 0), images / seconds, seconds))
    }
}
