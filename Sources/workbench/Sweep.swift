import ArgumentParser
import Cluster
import Foundation
import Runner
import TensorCore

/// `workbench sweep RECIPE --seeds 0-4 --grid key=v1,v2 [--parallel N]` and `--resume SWEEP_DIR`.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a recipe over a grid of overrides and several seeds; summarise each result over the seeds.",
        discussion: """
            Every combination of the grid's values times the seeds runs as an ordinary run folder under
            runs/NAME/sweep-TIMESTAMP/, N at a time (the cores split between them); sweep.h5 there holds
            a row per run, and per grid point the mean, sd and 95% interval of each result, and Welch's t
            between points that differ in one key. The recipe's own `sweep:` section (seeds, grid) is used
            when present; --seeds replaces its seeds, a --grid key replaces that key's values.
            Examples:
              workbench sweep recipes/mae.yaml --seeds 0-4
              workbench sweep recipes/mae.yaml --seeds 0-2 --grid stages.0.pretrain.lr=1.5e-4,3.0e-4 --parallel 2
              workbench sweep --resume runs/mae/sweep-20261206-120000
            """)

    @Argument(help: "The recipe (YAML).") var recipe: String?
    @Option(help: ArgumentHelp("Seeds: a range FIRST-LAST, a list, or both (0-4, 0,2,5, 0-2,7).", valueName: "seeds")) var seeds: String?
    @Option(name: .customLong("grid"), help: ArgumentHelp("A key and the values to try: key.path=v1,v2,... (repeat for more keys).", valueName: "key=values"))
    var grid: [String] = []
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a key in every run: dotted.path=value.", valueName: "key=value"))
    var overrides: [String] = []
    @Option(help: "How many runs at a time (each gets cores / N threads).") var parallel: Int?
    @Option(name: .customLong("runs-dir"), help: "Where the sweep folder goes.") var runsDirectory = "runs"
    @Option(help: ArgumentHelp("Finish the sweep in this folder: what is missing or was interrupted.", valueName: "sweep-dir")) var resume: String?

    func validate() throws {
        if resume != nil && (recipe != nil || seeds != nil || !grid.isEmpty || !overrides.isEmpty) {
            throw ValidationError("--resume finishes the sweep as it was planned (its sweep.json); give either a recipe with its options or --resume, not both")
        }
        if resume == nil && recipe == nil { throw ValidationError("give a recipe (for example recipes/mae.yaml --seeds 0-4) or --resume SWEEP_DIR") }
        if let parallel, parallel < 1 { throw ValidationError("--parallel must be 1 or more, got \(parallel)") }
    }

    func run() throws {
        if Cluster.launchedByMPI {
            // Every process would run the whole sweep; data parallelism is `mpirun ... workbench run`.
            FileHandle.standardError.write(Data("Error: workbench sweep runs its own processes; start it without mpirun (each of its runs is an ordinary `workbench run`; to spread one run over processes, use mpirun -np N workbench run RECIPE)\n".utf8))
            throw ExitCode(1)
        }
        StopSignal.install()
        let log = RunLog()
        try reportingUserErrors {
            let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
            if let resume {
                let stored = try SweepRunner.load(resume)
                try SweepRunner.record(command: CommandLine.arguments, in: resume)
                try SweepRunner.execute(resume, stored: stored, parallel: parallel ?? stored.parallel, executable: executable, log: log)
                return
            }
            guard let recipe else { return }
            let (plan, name) = try Self.plan(recipe: recipe, overrides: overrides, seeds: seeds, grid: grid)
            let parallel = min(self.parallel ?? 1, plan.runs.count)
            let threads = max(1, Parallel.threads / parallel)
            let directory = try SweepRunner.create(plan: plan, recipeName: name, runsDirectory: runsDirectory, parallel: parallel, threads: threads,
                                                   command: CommandLine.arguments)
            log("sweep: \(directory)")
            try SweepRunner.execute(directory, stored: try SweepRunner.load(directory), parallel: parallel, executable: executable, log: log)
        }
    }

    /// The plan of a sweep, every run's recipe checked; and the recipe's name.
    static func plan(recipe: String, overrides: [String], seeds: String?, grid: [String]) throws -> (SweepPlan, String) {
        let file = RecipeLoader.find(recipe) ?? recipe
        let loaded = try RecipeLoader.load(path: recipe, overrides: overrides)
        let spec = try (loaded.sweep ?? SweepSpec()).overridden(seeds: try seeds.map { try SweepSpec.seeds($0, origin: "--seeds") },
                                                                  grid: try grid.map(SweepSpec.axis))
        let plan = try SweepPlan(recipeFile: file, baseOverrides: overrides, spec: spec, defaultSeed: loaded.seed)
        try plan.check(origins: Dictionary(spec.grid.map { ($0.key, $0.origin) }) { a, _ in a })
        return (plan, loaded.name)
    }
}

/// `workbench compare RUN_OR_SWEEP_OR_CSV...`.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Summarise results over seeds and test their differences (Welch's t) across run folders, sweeps and CSV files.",
        discussion: """
            Run folders whose recipes differ only in the seed form one group; a folder of run folders
            (runs/NAME) gives its runs; a sweep folder gives one group per grid point; a CSV file gives
            one group per value of its `group` column (a header row, then one row per seed, results named
            as in metrics.h5: knn.test_top1; accuracies as fractions, or percent when all exceed 1).
            Examples:
              workbench compare runs/supervised
              workbench compare runs/supervised tools/reference/supervised_seeds.csv
            """)

    @Argument(help: "Run folders, folders of runs, sweep folders and CSV files.") var paths: [String]
    @Flag(help: "Show every result, not only test accuracies and final losses.") var all = false

    func run() throws {
        try reportingUserErrors {
            let table = try Comparison.table(paths)
            table.print(to: RunLog(), all: all)
        }
    }
}
