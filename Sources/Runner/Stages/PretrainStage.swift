import Data
import Encoders
import Evaluation
import Foundation
import NN
import Objectives
import Store
import TensorCore

/// `pretrain`: trains the encoder with a self-supervised objective; the stages after it use the
/// pretrained encoder.
public struct PretrainStage: Stage {
    public static let kind = "pretrain"
    public static let trainsEncoder = true
    public static let summary = "self-supervised pretraining of the encoder with an objective (objective.kind: "
        + ObjectiveRegistry.kinds.map { $0.kind }.joined(separator: ", ") + ")"

    public var objective: any ObjectiveSettings
    public var training: TrainingSettings
    /// kNN top-1 of the trained encoder (DINO's teacher) every `knnMonitor` epochs (0: never),
    /// with the first `knnMonitorImages` training images as the neighbours and every test image
    /// as queries: the `knn_top1` column of the epochs table (NaN in the epochs between).
    public var knnMonitor = 0
    public var knnMonitorImages = 10000
    public var knnMonitorLayer = "pooled"

    public init(objective: any ObjectiveSettings) {
        self.objective = objective
        training = objective.defaults
    }

    public init() { self.init(objective: MAESettings()) }

    public static let fields: [Field<PretrainStage>] = [objectiveField]
        + TrainingSettings.fields.map { $0.lifted(\.training) } + [
            .value("knn_monitor", \.knnMonitor, "every N epochs, the kNN top-1 (k 20, T 0.07) of the trained encoder (DINO's teacher) in the epoch line and the epochs table (knn_top1); 0: never",
                   .that({ $0 >= 0 }) { "is a number of epochs between kNN evaluations (0: none), got \($0)" }),
            .value("knn_monitor_images", \.knnMonitorImages, "the first N training images are the monitor's neighbours", .positive),
            .value("knn_monitor_layer", \.knnMonitorLayer, "the hidden layer the monitor reads"),
        ]

    /// `objective: {kind: ...}`: the kind picks the settings type; the training defaults become
    /// that objective's before the stage's training keys are read.
    static let objectiveField = Field<PretrainStage>("objective", help: "the objective: {kind: " + ObjectiveRegistry.kinds.map { $0.kind }.joined(separator: " | ") + ", its keys}",
                                                     read: { stage, c in
        let kinds = ObjectiveRegistry.kinds.map { $0.kind }
        let objectiveDecoder = try c.superDecoder(forKey: RecipeKey("objective"))
        let kinded = try objectiveDecoder.container(keyedBy: RecipeKey.self)
        guard let kind = try kinded.optional("kind", String.self) else {
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + ["objective", "kind"],
                              message: "name the objective: objective: {kind: \(kinds.joined(separator: " | "))}")
        }
        guard let type = ObjectiveRegistry.kinds.first(where: { $0.kind == kind }) else {
            var message = "unknown objective '\(kind)'"
            if let near = nearest(kind, in: kinds) { message += "; did you mean '\(near)'?" }
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + ["objective", "kind"],
                              message: message + " Objectives available: \(kinds.joined(separator: ", ")).")
        }
        stage.objective = try type.decoded(from: objectiveDecoder, extraKeys: ["kind"])
        stage.training = type.trainingDefaults
    }, write: { $0.objective })

    public func validate(_ recipe: Recipe) throws {
        try training.validate(recipe)
        if knnMonitor > 0 {
            do { try checkHiddenLayer(knnMonitorLayer, recipe) } catch let issue as RecipeIssue {
                throw RecipeIssue(path: ["knn_monitor_layer"], message: issue.message)
            }
            if let train = recipe.data.trainCount, knnMonitorImages > train, knnMonitorImages != PretrainStage().knnMonitorImages {
                throw RecipeIssue(path: ["knn_monitor_images"], message: "there are \(train) training images; use at most \(train) (the default takes the first 10000, or all when fewer)")
            }
        }
        do { try objective.validate(recipe) } catch let issue as RecipeIssue {
            throw RecipeIssue(path: ["objective"] + issue.path, message: issue.message)
        }
    }

    public func run(_ context: RunContext) throws -> [String: Double] {
        let seed = context.recipe.seed &+ UInt64(context.stageIndex)
        let initializer = Initializer(scheme: context.recipe.encoder.initScheme, seed: seed &+ 0x0B1E_C71E)
        let recipe = context.recipe
        let input = context.data.encoderInput
        let newEncoder = { recipe.encoder.make(input, seed: seed &+ 0x7EAC_4E12).0 }
        guard let model = objective.make(encoder: context.encoder, newEncoder: newEncoder, recipe: recipe, initializer: initializer, seed: seed) else {
            throw RunError("\(context.stagePath): \(objective.kindName) cannot wrap the \(context.recipe.encoder.kind) encoder")
        }
        let data = context.data
        let loader = training.loader(data, seed: seed, images: data.pretrain)
        loader.views = objective.views(recipe)
        if let views = loader.views {
            context.log("\(context.stageName): \(views.views.count) views per image (\(views.views.map { "\($0.size)px" }.joined(separator: ", "))), made on the data thread")
        }
        context.log("\(context.stageName): \(objective.kindName), \(counted(training.epochs, "epoch")) of \(counted(loader.batchesPerEpoch, "step")), batch \(training.batchSize), \(counted(data.pretrain.count, "training image")), \(training.optimizer) lr \(training.lr)")
        let loop = training.loop(context, module: model, loader: loader, streams: model.randomStreams)
        loop.encoderPrefix = model.prefix(of: model.trainedEncoder) ?? ""
        let totalSteps = loader.batchesPerEpoch * training.epochs
        var lastLoss = 0.0
        let perEpoch = loader.batchesPerEpoch
        let steps = try loop.run(step: { batch in
            let output = batch.views.isEmpty ? model.loss(batch.images) : model.loss(views: batch.views)
            return StepOutput(loss: output.loss, diagnostics: output.diagnostics)
        }, beforeStep: { step in
            model.willStep(step, of: totalSteps, stepsPerEpoch: perEpoch)
        }, afterStep: { step in
            model.afterStep(step, of: totalSteps)
        }, endOfEpoch: { epoch, sums in
            let loss = sums["loss", default: 0] / Swift.max(sums["batches", default: 1], 1)
            let seconds = sums["seconds", default: 0]
            let rate = sums["seen", default: 0] / Swift.max(seconds, 1e-9)
            lastLoss = loss
            let line = String(format: "%@: epoch %d/%d  loss %.4f  %.1f s  %.0f img/s", context.stageName, epoch + 1, training.epochs, loss, seconds, rate)
            guard knnMonitor > 0 else {
                return EpochReport(columns: ["loss": loss, "seconds": seconds, "images_per_s": rate], score: loss, higherIsBetter: false, line: line)
            }
            let knn = (epoch + 1) % knnMonitor == 0 ? try monitorKNN(model.trainedEncoder, context) : .nan
            return EpochReport(columns: ["loss": loss, "knn_top1": knn, "seconds": seconds, "images_per_s": rate], score: loss, higherIsBetter: false,
                               line: line + (knn.isNaN ? "" : String(format: "  kNN top-1 %.2f%%", 100 * knn)))
        })
        // Objectives that evaluate another network than the one they were handed (DINO's teacher)
        // leave its weights in the run's encoder for the stages after this one.
        if model.trainedEncoder !== context.encoder {
            try context.encoder.load(model.trainedEncoder.stateDict())
            context.log("\(context.stageName): the encoder now holds the \(objective.kindName) teacher's weights (what the later stages use)")
        }
        try writeReconstructions(model, context)
        try context.metrics.results(context.stageName, scalars: ["final_loss": lastLoss])
        return ["final_loss": lastLoss, "steps": Double(steps)]
    }

    /// kNN top-1 (k 20, T 0.07, as the knn stage) of `encoder`'s monitor layer: the first
    /// knn_monitor_images training images against the whole test split.
    func monitorKNN(_ encoder: any HiddenLayerEncoder, _ context: RunContext) throws -> Double {
        let data = context.data
        let bank = Subset(first: Swift.min(knnMonitorImages, data.train.count), of: data.train)
        let train = try extractFeatures(encoder, layer: knnMonitorLayer, dataset: bank, mean: data.mean, std: data.std)
        let test = try extractFeatures(encoder, layer: knnMonitorLayer, dataset: data.test, mean: data.mean, std: data.std)
        let scores = knnClassify(train: train, trainLabels: (0..<bank.count).map { bank.label(at: $0) }, test: test, classes: data.classNames.count)
        return topAccuracy(scores, labels: (0..<data.test.count).map { data.test.label(at: $0) }).top1
    }

    /// For objectives that reconstruct pixels: the first 8 test images, their masked version and
    /// the reconstruction, in [0, 1] pixels, under /STAGE/reconstructions.
    func writeReconstructions(_ model: any Objective, _ context: RunContext) throws {
        let data = context.data
        let count = Swift.min(8, data.test.count)
        let loader = DataLoader(Subset(first: count, of: data.test), batchSize: count, shuffle: false, dropLast: false,
                                mean: data.mean, std: data.std, seed: 0)
        guard let batch = try loader.batches().next(),
              let grid = Autograd.noGrad({ model.reconstructions(batch.images, rng: RandomStream(seed: context.recipe.seed, purpose: "reconstructions")) })
        else { return }
        let shape = batch.images.shape
        func pixels(_ t: Tensor) -> [Float] { Runner.pixels(t, mean: data.mean, std: data.std, clamped: true) }
        try context.metrics.withFile { file in
            let group = try file.root.group("\(context.stageName)/reconstructions")
            try group.write("input", pixels(batch.images), shape: shape)
            try group.write("masked", pixels(grid.masked), shape: shape)
            try group.write("reconstruction", pixels(grid.reconstruction), shape: shape)
            try group.write("indices", batch.indices.map { Int64(data.test.sourceIndex(at: $0)) })
            try group.setAttribute("split", "test")
        }
    }
}

