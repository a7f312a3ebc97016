import Data
import Encoders
import Foundation
import NN
import Store
import TensorCore

/// Runs recipes: creates the run folder, schedules the stages in order, and resumes an
/// interrupted run from its last checkpoint.
public enum RecipeRunner {
    /// Everything that can be checked before a run starts: the recipe (already decoded), the
    /// data files, and that the runs folder can be written.
    public static func preflight(_ recipe: Recipe, recipeFile: String, runsDirectory: String?) throws {
        try RunData.check(recipe.data, recipeFile: recipeFile)
        if let runsDirectory { try checkWritable(runsDirectory) }
    }

    static func checkWritable(_ directory: String) throws {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw RunError("the runs directory \(directory) is a file; pass --runs-dir with a folder") }
            guard fm.isWritableFile(atPath: directory) else {
                throw RunError("the runs directory \(directory) is not writable; fix its permissions or pass --runs-dir with a writable folder")
            }
            return
        }
        let parent = (directory as NSString).deletingLastPathComponent
        try checkWritable(parent.isEmpty ? "." : parent)
    }

    /// Starts a new run of `recipe` in runsDirectory/NAME/TIMESTAMP and returns that folder.
    @discardableResult
    public static func start(_ recipe: Recipe, recipeFile: String, runsDirectory: String, log: RunLog = RunLog()) throws -> String {
        try preflight(recipe, recipeFile: recipeFile, runsDirectory: runsDirectory)
        let data = try RunData.load(recipe.data, seed: recipe.seed, recipeFile: recipeFile)
        let directory = try makeRunFolder(runsDirectory: runsDirectory, name: recipe.name)
        let resolved = RecipeLoader.yaml(recipe)
        try Data(resolved.utf8).write(to: URL(fileURLWithPath: "\(directory)/recipe.yaml"), options: .atomic)
        try log.attach("\(directory)/log.txt")
        log("workbench \(WorkbenchInfo.version) (\(WorkbenchInfo.gitCommit)): recipe \(recipeFile) -> \(directory)")
        let metrics = try MetricsLog(creating: "\(directory)/metrics.h5", attributes: runAttributes(recipe, resolved: resolved),
                                     integerAttributes: ["seed": Int(truncatingIfNeeded: recipe.seed), "threads": Parallel.threads])
        try execute(recipe, directory: directory, data: data, metrics: metrics, log: log, state: nil, resuming: false)
        return directory
    }

    /// Continues the run in `directory` from its last checkpoint.
    public static func resume(_ directory: String, log: RunLog = RunLog()) throws {
        let recipeFile = "\(directory)/recipe.yaml"
        guard FileManager.default.fileExists(atPath: recipeFile) else {
            throw RunError("\(directory) is not a run folder (it has no recipe.yaml); pass the folder `workbench run` printed, runs/NAME/TIMESTAMP")
        }
        let recipe = try RecipeLoader.load(path: recipeFile, stored: true)
        let checkpoints = Checkpoints(directory: "\(directory)/checkpoints")
        let latest = try checkpoints.latest()
        if let state = latest?.state, state.stageIndex >= recipe.stages.count {
            log("\(directory) has already finished every stage; nothing to resume")
            return
        }
        try preflight(recipe, recipeFile: recipeFile, runsDirectory: nil)
        let data = try RunData.load(recipe.data, seed: recipe.seed, recipeFile: recipeFile)
        try log.attach("\(directory)/log.txt")
        let metricsPath = "\(directory)/metrics.h5"
        let metrics: MetricsLog
        if let state = latest?.state {
            let stale = recipe.stageNames.enumerated().filter { i, _ in i > state.stageIndex || (i == state.stageIndex && state.progress == nil) }.map(\.1)
            metrics = try MetricsLog(resuming: metricsPath, rowCounts: state.metricsRows, staleGroups: stale)
            log("resuming \(directory) at stage \(state.stageIndex) (\(recipe.stageNames[state.stageIndex]))"
                + (state.progress.map { ", step \($0.step)" } ?? ""))
        } else {
            log("resuming \(directory): no checkpoint was written, so the run starts over")
            metrics = try MetricsLog(creating: metricsPath, attributes: runAttributes(recipe, resolved: RecipeLoader.yaml(recipe)),
                                     integerAttributes: ["seed": Int(truncatingIfNeeded: recipe.seed), "threads": Parallel.threads])
        }
        try execute(recipe, directory: directory, data: data, metrics: metrics, log: log, state: latest, resuming: true)
    }

    static func runAttributes(_ recipe: Recipe, resolved: String) -> [String: String] {
        ["recipe": resolved, "recipe_name": recipe.name, "workbench_version": WorkbenchInfo.version, "git_commit": WorkbenchInfo.gitCommit,
         "created": ISO8601DateFormatter().string(from: Date()), "status": "running"]
    }

    static func makeRunFolder(runsDirectory: String, name: String) throws -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = formatter.string(from: Date())
        let fm = FileManager.default
        var directory = "\(runsDirectory)/\(name)/\(stamp)"
        var n = 2
        while fm.fileExists(atPath: directory) { directory = "\(runsDirectory)/\(name)/\(stamp)-\(n)"; n += 1 }
        do {
            try fm.createDirectory(atPath: "\(directory)/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw RunError("cannot create the run folder \(directory): \(error.localizedDescription); pass --runs-dir with a writable folder")
        }
        return directory
    }

    static func execute(_ recipe: Recipe, directory: String, data: RunData, metrics: MetricsLog, log: RunLog,
                        state: (folder: String, state: RunState)?, resuming: Bool) throws {
        let (encoder, initializer) = recipe.encoder.make(data.encoderInput, seed: recipe.seed)
        let events = try TensorBoardWriter(directory: directory)
        let context = RunContext(recipe: recipe, directory: directory, log: log, metrics: metrics, events: events, data: data,
                                 encoder: encoder, initializer: initializer)
        var first = 0
        if let (folder, saved) = state {
            first = saved.stageIndex
            context.results = saved.results
            initializer.dropoutStream.restore(saved.dropoutStream)
            if let progress = saved.progress {
                context.resumePoint = (progress, folder)
            } else {
                do { try encoder.load(try WeightFiles.read(path: "\(folder)/model.safetensors")) } catch {
                    throw RunError("cannot resume from \(folder)/model.safetensors: \(error)")
                }
            }
        }
        if resuming {
            // TensorBoard drops what the interrupted run logged after this step.
            events.restart(at: context.globalStepBase + (context.resumePoint?.progress.step ?? 0))
        }
        log("\(recipe.encoder.kind): \(encoder.parameters.reduce(0) { $0 + $1.value.count }) parameters; data \(recipe.data.dataset): \(data.train.count) train, \(data.test.count) test; \(Parallel.threads) threads")
        for index in first..<recipe.stages.count {
            context.stageIndex = index
            let stage = recipe.stages[index].settings
            let results = try stage.run(context)
            context.resumePoint = nil
            context.results.append(results)
            log.table(["\(context.stageName) results", ""], formatted(results).map { [$0.0, $0.1] })
            try context.checkpointStageEnd()
        }
        try metrics.withFile { file in
            try file.root.setAttribute("status", "complete")
            try file.root.setAttribute("finished", ISO8601DateFormatter().string(from: Date()))
        }
        try events.flush()
        log("done: \(directory)")
        log.table(["stage", "results"], zip(recipe.stageNames, context.results).map { name, results in
            [name, formatted(results).map { "\($0.0) \($0.1)" }.joined(separator: ", ")]
        })
    }

    /// Results as (name, text) pairs: accuracies in percent, counts as integers.
    static func formatted(_ results: [String: Double]) -> [(String, String)] {
        results.filter { $0.key != "steps" }.sorted { $0.key < $1.key }.map { key, value in
            (key, key.hasSuffix("top1") || key.hasSuffix("top5") ? String(format: "%.2f%%", 100 * value)
                : value == value.rounded() && abs(value) < 1e15 ? "\(Int(value))" : String(format: "%.4g", value))
        }
    }
}
