import Data
import Dispatch
import Encoders
import Evaluation
import Foundation
import NN
import Store
import TensorCore

/// One step of a recipe (pretrain, supervised, linear_probe, knn, finetune, extract). A stage is
/// its own settings: decoded from the recipe (rejecting unknown keys), encoded back with every
/// default, checked against the whole recipe before anything runs, then run with a context that
/// holds the encoder the earlier stages left.
public protocol Stage: RecipeSection {
    static var kind: String { get }
    /// One line for `workbench list`.
    static var summary: String { get }
    /// Problems only this stage can see (a hidden layer the encoder lacks, ...), thrown as a
    /// RecipeIssue whose path is relative to the stage's settings.
    func validate(_ recipe: Recipe) throws
    /// Runs the stage; returns its headline results (for the summary and later stages).
    func run(_ context: RunContext) throws -> [String: Double]
    /// Whether the stage trains the encoder (its encoder is then kept as encoder-STAGE.safetensors).
    static var trainsEncoder: Bool { get }
}

extension Stage {
    public func validate(_ recipe: Recipe) throws {}
    public static var trainsEncoder: Bool { false }
}

/// What a running stage sees: the recipe, the run folder's writers, the data, the encoder and,
/// when the run is resumed in the middle of this stage, where it stopped.
public final class RunContext {
    public let recipe: Recipe
    public let directory: String
    public let log: RunLog
    public let metrics: MetricsLog
    public let events: TensorBoardWriter
    public let data: RunData
    public let encoder: any HiddenLayerEncoder
    public let initializer: Initializer
    public let checkpoints: Checkpoints
    public internal(set) var stageIndex = 0
    /// Results of the stages finished so far.
    public internal(set) var results: [[String: Double]] = []
    /// Bumped whenever a stage trains the encoder, so cached features go stale.
    public internal(set) var encoderVersion = 0
    private var featureCache: [String: (train: Tensor, test: Tensor)] = [:]

    /// Train and test features of `layer` for the encoder as it is now, extracted once and shared
    /// by the evaluation stages that follow each other.
    public func features(_ layer: String, batchSize: Int = 1000) -> (train: Tensor, test: Tensor) {
        let key = "\(layer)@\(encoderVersion)"
        if let cached = featureCache[key] { return cached }
        let start = Date()
        let train = extractFeatures(encoder, layer: layer, dataset: data.train, mean: data.mean, std: data.std, batchSize: batchSize)
        let test = extractFeatures(encoder, layer: layer, dataset: data.test, mean: data.mean, std: data.std, batchSize: batchSize)
        log(String(format: "%@: '%@' features of %d + %d images in %.1f s", stageName, layer, data.train.count, data.test.count,
                   Date().timeIntervalSince(start)))
        featureCache = [key: (train, test)]
        return (train, test)
    }

    func encoderChanged() { encoderVersion += 1; featureCache = [:] }

    /// Set when resuming inside the current stage: its progress and the checkpoint folder.
    public internal(set) var resumePoint: (progress: StageProgress, folder: String)?

    init(recipe: Recipe, directory: String, log: RunLog, metrics: MetricsLog, events: TensorBoardWriter, data: RunData,
         encoder: any HiddenLayerEncoder, initializer: Initializer) {
        self.recipe = recipe
        self.directory = directory
        self.log = log
        self.metrics = metrics
        self.events = events
        self.data = data
        self.encoder = encoder
        self.initializer = initializer
        checkpoints = Checkpoints(directory: directory + "/checkpoints")
    }

    public var stageName: String { recipe.stageNames[stageIndex] }
    /// Where the current stage sits in the recipe, for messages ("stages.0.supervised").
    public var stagePath: String { "stages.\(stageIndex).\(recipe.stages[stageIndex].kind)" }
    /// TensorBoard's step for this stage's step 0: the steps of the stages before it.
    public var globalStepBase: Int { results.reduce(0) { $0 + Int($1["steps"] ?? 0) } }

    /// Metadata stored in every safetensors file the run writes.
    public var weightsMetadata: [String: String] {
        ["format": "pt", "encoder": RecipeLoader.yamlFragment(recipe.encoder), "data": RecipeLoader.yamlFragment(recipe.data),
         "recipe": recipe.name, "seed": String(recipe.seed), "workbench_version": WorkbenchInfo.version]
    }

    /// Saves a resumable checkpoint of the current stage.
    public func checkpoint(_ progress: StageProgress, module: Module, optimizer: Optimizer?, metadata extra: [String: String] = [:]) throws {
        try metrics.flush()
        try events.flush()
        let state = RunState(stageIndex: stageIndex, progress: progress, results: results, metricsRows: metrics.rowCounts,
                             dropoutStream: initializer.dropoutStream.stateWords, wallTime: Date().timeIntervalSince1970)
        let name = String(format: "s%d-step%06d", stageIndex, progress.step)
        try checkpoints.save(name: name, model: module.stateDict(), optimizer: optimizer?.stateTensors() ?? [:], state: state,
                             metadata: weightsMetadata.merging(["stage": stageName, "step": String(progress.step)]) { $1 }.merging(extra) { $1 })
    }

    /// Saves the state after stage `stageIndex` finished: the encoder, for the stages after it.
    func checkpointStageEnd() throws {
        try metrics.flush()
        try events.flush()
        let state = RunState(stageIndex: stageIndex + 1, progress: nil, results: results, metricsRows: metrics.rowCounts,
                             dropoutStream: initializer.dropoutStream.stateWords, wallTime: Date().timeIntervalSince1970)
        try checkpoints.save(name: String(format: "s%d-step%06d", stageIndex + 1, 0), model: encoder.stateDict(), optimizer: [:],
                             state: state, metadata: weightsMetadata.merging(["stage": "after \(stageName)"]) { $1 })
        try checkpoints.saveWeights("encoder.safetensors", encoder.stateDict(), metadata: weightsMetadata.merging(["stage": "after \(stageName)"]) { $1 })
        // The encoder after every training stage stays, so that another recipe can start from it.
        if type(of: recipe.stages[stageIndex].settings).trainsEncoder {
            try checkpoints.saveWeights("encoder-\(stageName).safetensors", encoder.stateDict(),
                                        metadata: weightsMetadata.merging(["stage": stageName, "encoder_prefix": ""]) { $1 })
        }
    }
}

/// The data a recipe names, loaded once per run.
public struct RunData {
    public let train: Dataset
    public let test: Dataset
    /// What pretrain stages train on (data.pretrain_images): the training split unless told.
    public var pretrain: Dataset
    public let mean: [Float]
    public let std: [Float]
    public let classNames: [String]

    /// Loads the data set, or throws a RecipeError naming `data.path` and what to do.
    public static func load(_ section: DataSection, seed: UInt64, recipeFile: String) throws -> RunData {
        var train: Dataset, test: Dataset, classNames: [String]
        do {
            (train, test, classNames) = try section.source.load(path: section.path)
        } catch let error as DataError {
            throw RecipeError(file: recipeFile, location: nil, keyPath: "data.path", message: error.description)
        }
        if let n = section.trainSubset {
            train = section.subsetMode == "sample" ? Subset(sample: n, of: train, seed: seed) : Subset(first: n, of: train)
        }
        if let n = section.testSubset {
            test = section.subsetMode == "sample" ? Subset(sample: n, of: test, seed: seed &+ 1) : Subset(first: n, of: test)
        }
        var pretrain = train
        if section.pretrainImages != "train" {
            do {
                guard let unlabelled = try section.source.loadUnlabelled(path: section.path) else {
                    throw RecipeError(file: recipeFile, location: nil, keyPath: "data.pretrain_images", message: "\(section.dataset) has no unlabelled images")
                }
                pretrain = section.pretrainImages == "unlabelled" ? unlabelled : Concatenation([train, unlabelled])
            } catch let error as DataError {
                throw RecipeError(file: recipeFile, location: nil, keyPath: "data.pretrain_images", message: error.description)
            }
        }
        if section.channels > train.imageShape[0] {
            train = RepeatedChannels(train, channels: section.channels)
            test = RepeatedChannels(test, channels: section.channels)
            pretrain = RepeatedChannels(pretrain, channels: section.channels)
        }
        return RunData(train: train, test: test, pretrain: pretrain, mean: section.mean.map { Float($0) }, std: section.std.map { Float($0) },
                       classNames: classNames)
    }

    /// Whether the files exist, without reading them (for `validate`).
    public static func check(_ section: DataSection, recipeFile: String) throws {
        if let problem = section.source.problem(path: section.path) {
            throw RecipeError(file: recipeFile, location: nil, keyPath: "data.path", message: problem)
        }
    }

    /// What the encoder is built for: these images and classes.
    public var encoderInput: EncoderInput {
        EncoderInput(imageSize: train.imageShape[1], channels: train.imageShape[0], classes: classNames.count)
    }
}

/// The version and source of this build, recorded in every output.
public enum WorkbenchInfo {
    public static let version = "0.2.0"

    /// The git commit of the checkout the executable was built in ("+dirty" when it has
    /// uncommitted changes), or "unknown".
    public static let gitCommit: String = {
        let folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        func git(_ arguments: [String]) -> String? {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            process.arguments = ["-C", folder] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return nil }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { return nil }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let commit = git(["rev-parse", "HEAD"]) else { return "unknown" }
        let dirty = !(git(["status", "--porcelain", "--untracked-files=no"]) ?? "").isEmpty
        return commit + (dirty ? "+dirty" : "")
    }()
}
