import ArgumentParser
import Cluster
import Foundation
import Runner
import TensorCore

/// `workbench run RECIPE` and `workbench run --resume RUN_DIR`.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every stage of a recipe, or resume an interrupted run.",
        discussion: """
            Examples:
              workbench run recipes/supervised.yaml
              workbench run recipes/supervised.yaml --set stages.0.supervised.epochs=1 --set data.train_subset=5000
              workbench run --resume runs/supervised/20261123-101500
            """)

    @Argument(help: "The recipe (YAML); recipes/NAME.yaml finds Recipes/NAME.yaml.") var recipe: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a key: dotted.path=value (list items by index).", valueName: "key=value"))
    var overrides: [String] = []
    @Option(name: .customLong("runs-dir"), help: "Where run folders go.") var runsDirectory = "runs"
    @Option(help: ArgumentHelp("Continue the run in this folder from its last checkpoint.", valueName: "run-dir")) var resume: String?
    /// The run folder itself (a sweep's runs), instead of RUNS_DIR/NAME/TIMESTAMP.
    @Option(name: .customLong("run-folder"), help: .hidden) var runFolder: String?

    func validate() throws {
        if resume != nil && recipe != nil {
            throw ValidationError("--resume continues a run with the recipe saved in its folder; give either a recipe or --resume, not both")
        }
        if resume != nil && !overrides.isEmpty {
            throw ValidationError("--set is not allowed with --resume: a resumed run continues with the recipe saved in its folder (recipe.yaml), so that it ends as the uninterrupted run would. To change a key, start a new run: workbench run RECIPE --set ...")
        }
        if resume == nil && recipe == nil { throw ValidationError("give a recipe (for example recipes/mae.yaml) or --resume RUN_DIR") }
    }

    func run() throws {
        // Under mpirun, data-parallel training over its processes (see Cluster); otherwise nothing.
        Cluster.start()
        StopSignal.install()
        SweepRunner.followParent()
        guard Distributed.isMultiProcess else {
            try reportingUserErrors { try runOnce(runsDirectory: runsDirectory, runFolder: runFolder, resume: resume, log: RunLog()) }
            return
        }
        // Rank 0 writes the run folder; every other process writes the same files to a scratch
        // folder of its own (removed at the end) and prints nothing but errors.
        let rank = Distributed.rank
        let scratch = rank == 0 ? nil : NSTemporaryDirectory() + "workbench-rank\(rank)-\(getpid())"
        defer { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }
        do {
            try reportingUserErrors {
                var (runs, folder, resumed) = (runsDirectory, runFolder, resume)
                if let scratch {
                    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
                    runs = scratch
                    folder = runFolder.map { _ in "\(scratch)/run" }
                    if let resume {
                        // The run folder as it is now (every process reads it before rank 0 changes it).
                        guard FileManager.default.fileExists(atPath: resume) else {
                            throw RunError("\(resume) does not exist; pass the folder `workbench run` printed, runs/NAME/TIMESTAMP")
                        }
                        try FileManager.default.copyItem(atPath: resume, toPath: "\(scratch)/run")
                        resumed = "\(scratch)/run"
                    }
                }
                Distributed.world.barrier()
                try runOnce(runsDirectory: runs, runFolder: folder, resume: resumed, log: RunLog(echo: rank == 0))
            }
            Cluster.finish()
        } catch let error as ExitCode {
            // A stop on a signal ends every process alike: finish cleanly.
            if error.rawValue == 130 || error.rawValue == 143 { Cluster.finish(); throw error }
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            Cluster.abort(error.rawValue)
        } catch {
            // One process's failure ends the whole run (the others would wait for it forever).
            FileHandle.standardError.write(Data("\(rank == 0 ? "" : "[process \(rank)] ")Error: \(error)\n".utf8))
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            Cluster.abort(1)
        }
    }

    func runOnce(runsDirectory: String, runFolder: String?, resume: String?, log: RunLog) throws {
        if let resume {
            try RecipeRunner.resume(resume, log: log)
        } else if let recipe {
            let loaded = try RecipeLoader.load(path: recipe, overrides: overrides)
            if loaded.sweep != nil && runFolder == nil {
                log("note: the recipe's sweep section is for `workbench sweep`; this runs the recipe once, with seed \(loaded.seed)")
            }
            try RecipeRunner.start(loaded, recipeFile: RecipeLoader.find(recipe) ?? recipe, runsDirectory: runsDirectory, folder: runFolder, log: log)
        }
    }
}

/// `workbench validate RECIPE`: checks a recipe and prints it with every default filled in.
struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check a recipe without running it; print it resolved, every default filled in.")

    @Argument(help: "The recipe (YAML).") var recipe: String
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a key: dotted.path=value.", valueName: "key=value")) var overrides: [String] = []
    @Option(name: .customLong("runs-dir"), help: "The runs folder to check for writing.") var runsDirectory = "runs"

    func run() throws {
        try reportingUserErrors {
            let loaded = try RecipeLoader.load(path: recipe, overrides: overrides)
            try RecipeRunner.preflight(loaded, recipeFile: RecipeLoader.find(recipe) ?? recipe, runsDirectory: runsDirectory)
            print(RecipeLoader.yaml(loaded), terminator: "")
            // The hidden layers a stage may read, with their shapes for one image.
            let input = loaded.encoderInput
            print("# encoder \(loaded.encoder.kind) at \(input.imageSize)x\(input.imageSize)x\(input.channels), hidden layers (per image): \(loaded.encoder.hiddenShapesLine(input))")
            if loaded.sweep != nil {
                // The runs `workbench sweep` would make of it, each one's recipe checked.
                let (plan, _) = try Sweep.plan(recipe: recipe, overrides: overrides, seeds: nil, grid: [])
                print("# sweep: \(counted(plan.runs.count, "run")) (\(counted(plan.points.count, "grid point")) x \(counted(plan.seeds.count, "seed"))), each this recipe with:")
                for run in plan.runs { print("#   \(run.folder): " + run.overrides.map { "--set " + $0 }.joined(separator: " ")) }
            }
        }
    }
}

/// User errors (recipes, data, files) become one line on stderr and exit code 1, never a trace.
func reportingUserErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let stop as RunInterrupted {
        // The run printed where it stopped and how to resume; exit as the signal would.
        throw ExitCode(stop.exitStatus)
    } catch let stop as SweepInterrupted {
        FileHandle.standardError.write(Data((stop.description + "\n").utf8))
        throw ExitCode(stop.exitStatus)
    } catch let error as RecipeError {
        throw UserError(message: error.description)
    } catch let error as RunError {
        throw UserError(message: error.description)
    } catch {
        if error is ExitCode || error is CleanExit { throw error }
        throw UserError(message: String(describing: error))
    }
}

/// Refuses the first of `counts` (an option's name and value) below one, naming the option.
func requireCounts(_ counts: [(String, Int)]) throws {
    for (name, value) in counts where value < 1 { throw ValidationError("\(name) must be at least 1, not \(value)") }
}

struct UserError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
