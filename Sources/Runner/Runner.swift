import Data
import Encoders
import Foundation
import NN
import Store
import TensorCore

/// A run folder is worked on by one process at a time: the process holds an exclusive lock on
/// its .lock file (flock, released when the process ends, however it ends).
public enum RunFolderLock {
    nonisolated(unsafe) static var held: [String: Int32] = [:]

    static func hold(_ directory: String) throws {
        guard held[directory] == nil else { return }
        let fd = open("\(directory)/.lock", O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { throw RunError("cannot write \(directory)/.lock; check the permissions of the run folder") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw RunError("\(directory) is in use by another workbench process; wait for it to end before resuming")
        }
        held[directory] = fd
    }

    /// Lets go of the folder (the run in this process has ended).
    static func release(_ directory: String) {
        guard let fd = held.removeValue(forKey: directory) else { return }
        close(fd)
    }

    /// Waits up to `seconds` for no process to hold the folder; true when it is free.
    public static func waitUntilFree(_ directory: String, seconds: Double) -> Bool {
        let fd = open("\(directory)/.lock", O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        let deadline = Date().addingTimeInterval(seconds)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if Date() > deadline { return false }
            usleep(100_000)
        }
        flock(fd, LOCK_UN)
        return true
    }
}

/// Runs recipes: creates the run folder, schedules the stages in order, and resumes an
/// interrupted run from its last checkpoint.
public enum RecipeRunner {
    /// Everything that can be checked before a run starts: the recipe (already decoded), the
    /// data files, and that the runs folder can be written.
    /// `checkWeights`: false for a resume that continues from a checkpoint (it does not read them).
    public static func preflight(_ recipe: Recipe, recipeFile: String, runsDirectory: String?, checkWeights: Bool = true) throws {
        try RunData.check(recipe.data, recipeFile: recipeFile)
        if checkWeights, let weights = recipe.encoder.weights {
            guard FileManager.default.isReadableFile(atPath: weights) else {
                throw RecipeError(file: recipeFile, location: nil, keyPath: "encoder.weights",
                                  message: "\(weights) does not exist or cannot be read (a relative path starts from \(FileManager.default.currentDirectoryPath))")
            }
            do { _ = try WeightFiles.format(of: weights) } catch {
                throw RecipeError(file: recipeFile, location: nil, keyPath: "encoder.weights", message: "\(error)")
            }
        }
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
    /// `command` is the command line that started the run (recorded in command.txt and metrics.h5).
    @discardableResult
    /// `folder`: the run folder itself instead of runsDirectory/NAME/TIMESTAMP (a sweep's runs);
    /// it must not exist yet.
    public static func start(_ recipe: Recipe, recipeFile: String, runsDirectory: String, folder: String? = nil,
                             command: [String] = CommandLine.arguments, log: RunLog = RunLog()) throws -> String {
        if let folder, FileManager.default.fileExists(atPath: folder) {
            throw RunError("\(folder) exists already; a run starts in a new folder (continue one with workbench run --resume \(folder))")
        }
        try preflight(recipe, recipeFile: recipeFile, runsDirectory: folder.map { ($0 as NSString).deletingLastPathComponent } ?? runsDirectory)
        let data = try RunData.load(recipe.data, seed: recipe.seed, recipeFile: recipeFile) { log($0) }
        // Weights that do not fit stop the run before its folder exists.
        let weights = try fitWeights(recipe, data: data, recipeFile: recipeFile)
        let directory = try folder.map { try makeRunFolder(exactly: $0) } ?? makeRunFolder(runsDirectory: runsDirectory, name: recipe.name)
        let resolved = RecipeLoader.yaml(recipe)
        try Data(resolved.utf8).write(to: URL(fileURLWithPath: "\(directory)/recipe.yaml"), options: .atomic)
        let commandLine = shellQuoted(command)
        try RunFolderLock.hold(directory)
        defer { RunFolderLock.release(directory) }
        try recordCommand(commandLine, in: directory)
        try log.attach("\(directory)/log.txt")
        log("workbench \(WorkbenchInfo.version) (\(WorkbenchInfo.gitCommit)): recipe \(recipeFile) -> \(directory)")
        let metrics = try MetricsLog(creating: "\(directory)/metrics.h5",
                                     attributes: runAttributes(recipe, resolved: resolved).merging(["command": commandLine]) { $1 },
                                     integerAttributes: ["seed": Int(truncatingIfNeeded: recipe.seed), "threads": Parallel.threads])
        try recordingOutcome(metrics: metrics, log: log, directory: directory) {
            try execute(recipe, directory: directory, data: data, metrics: metrics, log: log, state: nil, resuming: false, weights: weights)
        }
        return directory
    }

    /// `encoder.weights` read once and fitted to the recipe's encoder (an encoder of the same
    /// architecture stands in for the run's, which `execute` builds), or nil when there are none.
    static func fitWeights(_ recipe: Recipe, data: RunData, recipeFile: String) throws -> EncoderWeights.Fitted? {
        guard recipe.encoder.weights != nil else { return nil }
        return try EncoderWeights.fit(recipe.encoder, to: recipe.encoder.make(data.encoderInput, seed: recipe.seed).0, recipeFile: recipeFile)
    }

    /// The command line as a shell would take it back ('--set' values with spaces quoted).
    static func shellQuoted(_ arguments: [String]) -> String {
        arguments.map { word in
            word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) } && !word.isEmpty ? word
                : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
        }.joined(separator: " ")
    }

    /// Appends the command line to the run folder's command.txt (a resume adds its own line).
    static func recordCommand(_ line: String, in directory: String) throws {
        let path = "\(directory)/command.txt"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw RunError("cannot write \(path); check the permissions of the run folder") }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data((line + "\n").utf8))
    }

    /// Continues the run in `directory` from its last checkpoint.
    public static func resume(_ directory: String, command: [String] = CommandLine.arguments, log: RunLog = RunLog()) throws {
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
        try preflight(recipe, recipeFile: recipeFile, runsDirectory: nil, checkWeights: latest == nil)
        let data = try RunData.load(recipe.data, seed: recipe.seed, recipeFile: recipeFile) { log($0) }
        // Without a checkpoint the run starts over, from the weights file if the recipe names one.
        let weights = latest == nil ? try fitWeights(recipe, data: data, recipeFile: recipeFile) : nil
        try RunFolderLock.hold(directory)
        defer { RunFolderLock.release(directory) }
        try recordCommand(shellQuoted(command), in: directory)
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
        try recordingOutcome(metrics: metrics, log: log, directory: directory) {
            try execute(recipe, directory: directory, data: data, metrics: metrics, log: log, state: latest, resuming: true, weights: weights)
        }
    }

    /// Runs `body`; when it throws, metrics.h5 says how the run ended ("interrupted" or "failed",
    /// with the message under `error`) and log.txt gets the message, before the error goes on.
    static func recordingOutcome(metrics: MetricsLog, log: RunLog, directory: String, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch var stop as RunInterrupted {
            // Absolute, so that the printed command works from any folder.
            stop.directory = URL(fileURLWithPath: directory).standardizedFileURL.path
            try? mark(metrics, status: "interrupted", message: stop.description)
            log(stop.description)
            throw stop
        } catch {
            let message = (error as? RecipeError)?.description ?? (error as? RunError)?.description ?? "\(error)"
            try? mark(metrics, status: "failed", message: message)
            log.file("error: " + message)
            throw error
        }
    }

    static func mark(_ metrics: MetricsLog, status: String, message: String) throws {
        try metrics.withFile { file in
            try file.root.setAttribute("status", status)
            try file.root.setAttribute("error", message)
            try file.root.setAttribute("finished", ISO8601DateFormatter().string(from: Date()))
        }
    }

    static func runAttributes(_ recipe: Recipe, resolved: String) -> [String: String] {
        ["recipe": resolved, "recipe_name": recipe.name, "workbench_version": WorkbenchInfo.version, "git_commit": WorkbenchInfo.gitCommit, "blas_core": blasCore,
         "created": ISO8601DateFormatter().string(from: Date()), "status": "running"]
    }

    static func makeRunFolder(exactly directory: String) throws -> String {
        do {
            try FileManager.default.createDirectory(atPath: "\(directory)/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw RunError("cannot create the run folder \(directory): \(error.localizedDescription)")
        }
        return directory
    }

    /// A new folder name under `parent`: PREFIX + the time (yyyyMMdd-HHmmss), with -2, -3, ... added
    /// when that exists.
    static func unusedTimestampedPath(in parent: String, prefix: String = "") -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = formatter.string(from: Date())
        var directory = "\(parent)/\(prefix)\(stamp)"
        var n = 2
        while FileManager.default.fileExists(atPath: directory) { directory = "\(parent)/\(prefix)\(stamp)-\(n)"; n += 1 }
        return directory
    }

    static func makeRunFolder(runsDirectory: String, name: String) throws -> String {
        let fm = FileManager.default
        let directory = unusedTimestampedPath(in: "\(runsDirectory)/\(name)")
        do {
            try fm.createDirectory(atPath: "\(directory)/checkpoints", withIntermediateDirectories: true)
        } catch {
            throw RunError("cannot create the run folder \(directory): \(error.localizedDescription); pass --runs-dir with a writable folder")
        }
        return directory
    }

    static func execute(_ recipe: Recipe, directory: String, data: RunData, metrics: MetricsLog, log: RunLog,
                        state: (folder: String, state: RunState)?, resuming: Bool, weights: EncoderWeights.Fitted?) throws {
        let (encoder, initializer) = recipe.encoder.make(data.encoderInput, seed: recipe.seed)
        let events = try TensorBoardWriter(directory: directory)
        let context = RunContext(recipe: recipe, directory: directory, log: log, metrics: metrics, events: events, data: data,
                                 encoder: encoder, initializer: initializer)
        var first = 0
        if let weights {
            try weights.apply(to: encoder)
            log(weights.report)
        }
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
        if Distributed.isMultiProcess && Distributed.rank > 0 {
            // Dropout's masks are drawn by each process for its own rows: every process but rank
            // 0 (whose stream the checkpoints keep) derives a stream of its own from it.
            let words = initializer.dropoutStream.stateWords
            initializer.dropoutStream.restore(RandomStream(seed: words[0] ^ words[1] &+ UInt64(Distributed.rank), purpose: "dropout, process \(Distributed.rank)").stateWords)
        }
        if resuming {
            // TensorBoard drops what the interrupted run logged after the checkpoint's last step
            // (a restart at step s keeps the events of steps below s).
            events.restart(at: context.globalStepBase + (context.resumePoint?.progress.step ?? 0) + 1)
        }
        for note in data.notes { log(note) }
        if recipe.data.onError == "skip" && !resuming {
            // How many images were left out (and which, with why), for the analysis of the run.
            try metrics.withFile { file in
                try file.root.setAttribute("skipped_images", data.skipped.count)
                if !data.skipped.isEmpty { try file.root.writeStrings("skipped_files", data.skipped) }
            }
        }
        log("\(recipe.encoder.kind): \(encoder.parameters.reduce(0) { $0 + $1.value.count }) parameters; data \(recipe.data.dataset): \(data.train.count) train, \(data.test.count) test; \(counted(Parallel.threads, "thread")), OpenBLAS core \(blasCore)")
        for index in first..<recipe.stages.count {
            context.stageIndex = index
            let stage = recipe.stages[index].settings
            let results = try stage.run(context)
            context.resumePoint = nil
            context.results.append(results)
            log.table(["\(context.stageName) results", ""], formatted(results).map { [$0.0, $0.1] })
            try context.checkpointStageEnd()
            if index < recipe.stages.count - 1 { try StopSignal.check(stage: context.stageName, step: nil) }
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
