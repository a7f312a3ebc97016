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
    public func features(_ layer: String, batchSize: Int = 1000) throws -> (train: Tensor, test: Tensor) {
        let key = "\(layer)@\(encoderVersion)"
        if let cached = featureCache[key] { return cached }
        let start = Date()
        let train = try extractFeatures(encoder, layer: layer, dataset: data.train, mean: data.mean, std: data.std, batchSize: batchSize)
        let test = try extractFeatures(encoder, layer: layer, dataset: data.test, mean: data.mean, std: data.std, batchSize: batchSize)
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
        // Whether the classifier head has been trained (by a supervised or finetune stage up to this one), for `predict`.
        let trainedBy = recipe.stages.indices.filter { $0 <= stageIndex && ["supervised", "finetune"].contains(recipe.stages[$0].kind) }.last
        let names = (try? JSONEncoder().encode(data.classNames)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
        return ["format": "pt", "encoder": RecipeLoader.yamlFragment(recipe.encoder), "data": RecipeLoader.yamlFragment(recipe.data),
                "recipe": recipe.name, "seed": String(recipe.seed), "workbench_version": WorkbenchInfo.version,
                "class_names": names, "head": trainedBy.map { "trained by \(recipe.stageNames[$0])" } ?? "untrained"]
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
    /// Side of the images the encoder sees, and the filter of every resize.
    public var imageSize: Int
    public var filter: ResizeFilter = .bilinear
    /// What loading found, for the run's log (folder listings).
    public var notes: [String] = []
    /// The files left out because they did not decode (data.on_error: skip), with why.
    public var skipped: [String] = []

    /// Loads the data set, or throws a RecipeError naming `data.path` and what to do. An image
    /// folder is listed, and (verify) every image decoded once on data.workers threads; `progress`
    /// hears how far that got.
    public static func load(_ section: DataSection, seed: UInt64, recipeFile: String, progress: ((String) -> Void)? = nil) throws -> RunData {
        var train: Dataset, test: Dataset, classNames: [String]
        let filter = ResizeFilter(rawValue: section.interpolation) ?? .bilinear
        let evaluation = ImageTransform.center(size: section.imageSize, cropPct: section.cropPct, filter: filter)
        var options = DataLoadOptions()
        (options.channels, options.transform, options.cache) = (section.channels, evaluation, section.cache)
        let workers = section.workers ?? ProcessInfo.processInfo.activeProcessorCount
        DataLoader.defaultWorkers = workers
        do {
            (train, test, classNames) = try section.source.load(path: section.path, options: options)
        } catch let error as DataError {
            throw RecipeError(file: recipeFile, location: nil, keyPath: "data.path", message: error.description)
        }
        // Stored images of another size than image_size (or cropped for evaluation) are transformed.
        func sized(_ d: Dataset) -> Dataset {
            guard d.transform == nil, d.imageShape[1] != section.imageSize || d.imageShape[2] != section.imageSize || section.cropPct != 1 else { return d }
            return Transformed(d, evaluation)
        }
        (train, test) = (sized(train), sized(test))
        var notes: [String] = []
        for (split, d) in [("train", train), ("test", test)] {
            if let folder = d as? ImageFolder {
                let l = folder.listing
                notes.append("\(section.dataset) \(split): \(counted(l.files.count, "image")) in \(counted(l.classNames.count, "class")) under \(l.root)"
                             + (l.ignored > 0 ? "; \(counted(l.ignored, "other file")) passed over (e.g. \(l.ignoredExamples[0]))" : ""))
            }
        }
        if let n = section.trainSubset {
            train = section.subsetMode == "sample" ? Subset(sample: n, of: train, seed: seed) : Subset(first: n, of: train)
        }
        if let n = section.testSubset {
            test = section.subsetMode == "sample" ? Subset(sample: n, of: test, seed: seed &+ 1) : Subset(first: n, of: test)
        }
        var pretrain = train
        var unlabelledImages: Dataset?
        if section.pretrainImages != "train" {
            do {
                guard let found = try section.source.loadUnlabelled(path: section.path, options: options) else {
                    throw RecipeError(file: recipeFile, location: nil, keyPath: "data.pretrain_images", message: "\(section.dataset) has no unlabelled images")
                }
                let unlabelled = sized(found)
                unlabelledImages = unlabelled
                if let folder = unlabelled as? ImageFolder {
                    notes.append("\(section.dataset) unlabelled: \(counted(folder.count, "image")) under \(folder.path)")
                }
                pretrain = section.pretrainImages == "unlabelled" ? unlabelled : Concatenation([train, unlabelled])
            } catch let error as DataError {
                throw RecipeError(file: recipeFile, location: nil, keyPath: "data.pretrain_images", message: error.description)
            }
        }
        // Every image decoded once before training: a bad file stops the run here, or is left out.
        var skipped: [String] = []
        if section.source.verifiesImages {
            let pretrainOnly = unlabelledImages.map { [("unlabelled", $0)] } ?? []
            var checked: [String: Dataset] = [:]
            for (split, d) in [("train", train), ("test", test)] + pretrainOnly {
                let start = Date()
                let failures = verifyImages(d, workers: workers) { done in progress?("checking \(split) images: \(done) of \(d.count)") }
                progress?(String(format: "checked the %d %@ images in %.1f s", d.count, split, Date().timeIntervalSince(start)))
                if failures.isEmpty { checked[split] = d; continue }
                guard section.onError == "skip" else {
                    let more = failures.count > 1 ? " (and \(counted(failures.count - 1, "other image")) that do not decode)" : ""
                    throw RecipeError(file: recipeFile, location: nil, keyPath: "data.on_error",
                                      message: failures[0].message + more + "; replace or remove the file, or set data.on_error: skip to leave such files out")
                }
                for f in failures { skipped.append(f.message) }
                let bad = Set(failures.map(\.index))
                checked[split] = Subset(indices: (0..<d.count).filter { !bad.contains($0) }, of: d)
            }
            (train, test) = (checked["train"]!, checked["test"]!)
            if let unlabelled = checked["unlabelled"] {
                pretrain = section.pretrainImages == "unlabelled" ? unlabelled : Concatenation([train, unlabelled])
            } else {
                pretrain = train
            }
            if !skipped.isEmpty { notes.append("left out \(counted(skipped.count, "image")) that did not decode (data.on_error: skip): \(skipped.prefix(3).joined(separator: "; "))\(skipped.count > 3 ? "; ..." : "")") }
        }
        if section.channels > train.imageShape[0] {
            train = RepeatedChannels(train, channels: section.channels)
            test = RepeatedChannels(test, channels: section.channels)
            pretrain = RepeatedChannels(pretrain, channels: section.channels)
        }
        return RunData(train: train, test: test, pretrain: pretrain, mean: section.mean.map { Float($0) }, std: section.std.map { Float($0) },
                       classNames: classNames, imageSize: section.imageSize, filter: filter, notes: notes, skipped: skipped)
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
