import CProcess
import Evaluation
import Foundation
import Store
import TensorCore

#if canImport(Glibc)
import Glibc
#endif

/// `workbench sweep`: every run of a `SweepPlan` as an ordinary run folder under one sweep folder
/// (runs/NAME/sweep-TIMESTAMP/), each run a `workbench run` child process with its share of the
/// cores (WORKBENCH_THREADS), N at a time; sweep.h5 at the folder's root holds a row per run and,
/// as runs finish, the summary over seeds and Welch's t between points that differ in one key.
/// A sweep resumes from its folder: finished runs are kept, interrupted ones continue from their
/// own checkpoints, missing ones start.
public enum SweepRunner {
    /// What the sweep folder's sweep.json records: the plan and how its runs are run.
    public struct Stored: Codable {
        public var plan: SweepPlan
        public var parallel: Int
        /// WORKBENCH_THREADS of every run (kept on resume, so that results stay bit-identical).
        public var threads: Int
        public var created: String
        public var command: String
    }

    public enum RunStatus: String { case pending, running, complete, failed, interrupted }

    /// Creates the sweep folder for `plan` (its recipe copied in as recipe.yaml) and returns it.
    public static func create(plan: SweepPlan, recipeName: String, runsDirectory: String, parallel: Int, threads: Int,
                              command: [String]) throws -> String {
        try RecipeRunner.checkWritable(runsDirectory)
        var directory = RecipeRunner.unusedTimestampedPath(in: "\(runsDirectory)/\(recipeName)", prefix: "sweep-")
        do {
            try FileManager.default.createDirectory(atPath: directory + "/.stderr", withIntermediateDirectories: true)
        } catch {
            throw RunError("cannot create the sweep folder \(directory): \(error.localizedDescription); pass --runs-dir with a writable folder")
        }
        directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        try FileManager.default.copyItem(atPath: plan.recipeFile, toPath: directory + "/recipe.yaml")
        var stored = Stored(plan: plan, parallel: parallel, threads: threads, created: ISO8601DateFormatter().string(from: Date()),
                            command: RecipeRunner.shellQuoted(command))
        stored.plan.recipeFile = directory + "/recipe.yaml"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(stored).write(to: URL(fileURLWithPath: directory + "/sweep.json"), options: .atomic)
        try record(command: command, in: directory)
        return directory
    }

    /// Appends a command line (a resume's) to the sweep folder's command.txt.
    public static func record(command: [String], in directory: String) throws {
        try RecipeRunner.recordCommand(RecipeRunner.shellQuoted(command), in: directory)
    }

    /// The sweep recorded in `directory` (sweep.json).
    public static func load(_ directory: String) throws -> Stored {
        let path = directory + "/sweep.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunError("\(directory) is not a sweep folder (it has no sweep.json); pass the folder `workbench sweep` printed, runs/NAME/sweep-TIMESTAMP")
        }
        do {
            var stored = try JSONDecoder().decode(Stored.self, from: data)
            stored.plan.recipeFile = URL(fileURLWithPath: directory).standardizedFileURL.path + "/recipe.yaml"
            return stored
        } catch {
            throw RunError("\(path) cannot be read (\(error)); the sweep folder is damaged")
        }
    }

    /// Where a run stands, from its folder.
    public static func status(of folder: String) -> RunStatus {
        let fm = FileManager.default
        guard fm.fileExists(atPath: folder + "/metrics.h5"), let file = try? HDF5File(path: folder + "/metrics.h5", mode: .readOnly),
              case .string(let status)? = try? file.root.attribute("status") else { return .pending }
        return RunStatus(rawValue: status) ?? .interrupted
    }

    /// Runs what is not finished, `parallel` at a time, rewriting sweep.h5 as runs end. Throws
    /// `RunInterrupted` after SIGINT or SIGTERM (forwarded to the runs, which checkpoint).
    public static func execute(_ directory: String, stored: Stored, parallel: Int, executable: String, log: RunLog) throws {
        let lockFD = open(directory + "/.lock", O_CREAT | O_RDWR, 0o644)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            throw RunError("another workbench sweep is running in \(directory); wait for it to end (or stop it) before resuming")
        }
        defer { close(lockFD) }
        let plan = stored.plan
        try? FileManager.default.createDirectory(atPath: directory + "/.stderr", withIntermediateDirectories: true)
        var seconds = [Double](repeating: .nan, count: plan.runs.count)
        var errors = [String](repeating: "", count: plan.runs.count)
        var queue: [(SweepPlan.Run, resume: Bool)] = []
        for run in plan.runs {
            let folder = directory + "/" + run.folder
            switch status(of: folder) {
            case .complete: continue
            case .failed:
                log("sweep: \(run.folder) failed earlier; it is kept as it is (remove its folder and resume to run it again)")
            case .running, .interrupted:
                queue.append((run, FileManager.default.fileExists(atPath: folder + "/recipe.yaml")))
            case .pending:
                // A folder without metrics.h5 was left before its run began: nothing in it to keep.
                try? FileManager.default.removeItem(atPath: folder)
                queue.append((run, false))
            }
        }
        let done = plan.runs.count - queue.count
        log("sweep: \(counted(plan.runs.count, "run")) (\(counted(plan.points.count, "grid point")) x \(counted(plan.seeds.count, "seed")))"
            + (done > 0 ? ", \(done) already finished" : "") + ", \(parallel) at a time with \(counted(stored.threads, "thread")) each")
        try write(directory, stored: stored, seconds: seconds, errors: errors, final: false)

        var running: [(run: SweepPlan.Run, pid: pid_t, started: Double)] = []
        var forwarded = false
        var failures = 0
        while !queue.isEmpty || !running.isEmpty {
            while running.count < parallel && !queue.isEmpty && StopSignal.received == 0 {
                let (run, resume) = queue.removeFirst()
                let folder = directory + "/" + run.folder
                // A run of a sweep that was killed stops with a checkpoint on its own; wait for it.
                if resume && !RunFolderLock.waitUntilFree(folder, seconds: 300) {
                    throw RunError("\(folder) is still in use by another workbench process after 5 minutes; stop it, then resume the sweep")
                }
                let arguments = resume ? ["run", "--resume", folder]
                    : ["run", plan.recipeFile] + (plan.baseOverrides + run.overrides).flatMap { ["--set", $0] } + ["--run-folder", folder]
                let pid = try spawn(executable, arguments, stderrPath: directory + "/.stderr/" + run.folder + ".txt",
                                    environment: [Parallel.threadsVariable: String(stored.threads), sweepParentVariable: String(getpid())])
                log("sweep: \(resume ? "resuming" : "started") \(run.folder) (\(plan.label(point: run.point)), seed \(run.seed))")
                running.append((run, pid, now()))
            }
            if running.isEmpty { break }
            if StopSignal.received != 0 && !forwarded {
                // The runs are in process groups of their own: a Ctrl-C reaches them only from here.
                for r in running { kill(r.pid, SIGTERM) }
                forwarded = true
            }
            usleep(100_000)
            var still: [(run: SweepPlan.Run, pid: pid_t, started: Double)] = []
            for r in running {
                var status: Int32 = 0
                let waited = waitpid(r.pid, &status, WNOHANG)
                if waited == 0 { still.append(r); continue }
                let elapsed = now() - r.started
                let outcome = Self.status(of: directory + "/" + r.run.folder)
                let stderrText = (try? String(contentsOfFile: directory + "/.stderr/" + r.run.folder + ".txt", encoding: .utf8)) ?? ""
                let message = stderrText.split(separator: "\n").last(where: { $0.hasPrefix("Error: ") }).map { String($0.dropFirst(7)) }
                switch outcome {
                case .complete:
                    seconds[r.run.index] = elapsed
                    log("sweep: finished \(r.run.folder) in \(String(format: "%.0f", elapsed)) s" + headline(directory + "/" + r.run.folder))
                case .interrupted where StopSignal.received != 0:
                    log("sweep: \(r.run.folder) stopped with a checkpoint")
                default:
                    failures += 1
                    let code = status & 0x7f == 0 ? "exit status \((status >> 8) & 0xff)" : "signal \(status & 0x7f)"
                    errors[r.run.index] = message ?? "the run ended with \(code); see \(directory)/\(r.run.folder)/log.txt"
                    log("sweep: \(r.run.folder) failed (\(code)): \(errors[r.run.index])")
                }
                try write(directory, stored: stored, seconds: seconds, errors: errors, final: false)
            }
            running = still
        }
        if StopSignal.received != 0 {
            try write(directory, stored: stored, seconds: seconds, errors: errors, final: false)
            throw SweepInterrupted(signal: StopSignal.received, directory: directory)
        }
        let table = try write(directory, stored: stored, seconds: seconds, errors: errors, final: true)
        log("sweep: done: \(directory)/sweep.h5")
        table.print(to: log)
        if failures > 0 { throw RunError("\(counted(failures, "run")) of the sweep failed (listed above and in sweep.h5's runs/error); the rest are summarised") }
    }

    /// The variable that tells a run it belongs to a sweep (the parent's process id): it then
    /// stops with a checkpoint if the sweep process dies.
    public static let sweepParentVariable = "WORKBENCH_SWEEP_PARENT"

    /// In a run started by a sweep: SIGTERM when the sweep process dies (so no orphan goes on
    /// writing into a folder a resumed sweep would take over); exits if it has died already.
    public static func followParent() {
        guard let text = ProcessInfo.processInfo.environment[sweepParentVariable], let parent = Int32(text) else { return }
        _ = workbench_signal_when_parent_dies(SIGTERM)
        if getppid() != parent { exit(143) }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// " knn test_top1 81.20%, ..." for a finished run's log line.
    static func headline(_ folder: String) -> String {
        let results = (try? runResults(folder)) ?? [:]
        let shown = results.filter { $0.key.hasSuffix("test_top1") }.sorted { $0.key < $1.key }
        return shown.isEmpty ? "" : ": " + shown.map { "\($0.key) \(String(format: "%.2f%%", 100 * $0.value))" }.joined(separator: ", ")
    }

    /// Starts `executable` in a process group of its own, stdout discarded (the run's log.txt
    /// has it), stderr to `stderrPath`.
    static func spawn(_ executable: String, _ arguments: [String], stderrPath: String, environment: [String: String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw RunError("cannot start \(executable): \(String(cString: strerror(result)))") }
        return pid
    }

    /// A run's results: every number a stage recorded in its metrics.h5 ("knn.test_top1").
    public static func runResults(_ folder: String) throws -> [String: Double] {
        let file = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        var results: [String: Double] = [:]
        for stage in file.root.childNames {
            guard case .group(let group) = try file.root.child(stage) else { continue }
            for key in group.attributeNames where key != "table" {
                switch try group.attribute(key) {
                case .reals(let v) where v.count == 1: results["\(stage).\(key)"] = v[0]
                case .integers(let v) where v.count == 1: results["\(stage).\(key)"] = Double(v[0])
                default: break
                }
            }
        }
        return results
    }

    /// Rewrites sweep.h5 (to a temporary file, then renamed, so a reader never sees half of one)
    /// and returns the summary it holds.
    @discardableResult
    static func write(_ directory: String, stored: Stored, seconds: [Double], errors: [String], final: Bool) throws -> ResultTable {
        let plan = stored.plan
        let statuses = plan.runs.map { status(of: directory + "/" + $0.folder) }
        // A run's wall time from its metrics.h5 (created to finished), also for runs an earlier
        // invocation of the sweep finished; `seconds` (this invocation's measure) where that is missing.
        let seconds = plan.runs.map { run -> Double in
            guard statuses[run.index] == .complete, let file = try? HDF5File(path: directory + "/" + run.folder + "/metrics.h5", mode: .readOnly),
                  case .string(let created)? = try? file.root.attribute("created"), case .string(let finished)? = try? file.root.attribute("finished"),
                  let start = ISO8601DateFormatter().date(from: created), let end = ISO8601DateFormatter().date(from: finished) else { return seconds[run.index] }
            return end.timeIntervalSince(start)
        }
        let results = plan.runs.map { run in (try? runResults(directory + "/" + run.folder)) ?? [:] }
        let names = Set(results.flatMap(\.keys)).sorted()
        // The summary is over complete runs only.
        let groups = plan.points.indices.map { p in
            ResultTable.Group(label: plan.label(point: p),
                              samples: plan.runs.indices.filter { plan.runs[$0].point == p && statuses[$0] == .complete }.map { results[$0] })
        }
        let table = ResultTable(names: names, groups: groups,
                                pairs: plan.onKeyPairs.map { ($0.a, $0.b, "\(plan.grid[$0.key].key): \(plan.points[$0.a][$0.key]) vs \(plan.points[$0.b][$0.key])") })
        let temporary = directory + "/.sweep.h5.tmp"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            let file = try HDF5File(path: temporary, mode: .create)
            let root = file.root
            try root.setAttribute("recipe", (try? String(contentsOfFile: plan.recipeFile, encoding: .utf8)) ?? "")
            try root.setAttribute("command", stored.command)
            try root.setAttribute("created", stored.created)
            try root.setAttribute("seeds", plan.seeds.map(String.init).joined(separator: ","))
            try root.setAttribute("grid_keys", plan.grid.map(\.key).joined(separator: "\n"))
            try root.setAttribute("set", plan.baseOverrides.joined(separator: "\n"))
            try root.setAttribute("threads", stored.threads)
            try root.setAttribute("status", final ? "complete" : "running")
            let runs = try root.group("runs")
            try runs.write("index", plan.runs.map { Int64($0.index) })
            try runs.write("point", plan.runs.map { Int64($0.point) })
            try runs.write("seed", plan.runs.map { Int64(bitPattern: $0.seed) })
            try runs.writeStrings("folder", plan.runs.map(\.folder))
            try runs.writeStrings("overrides", plan.runs.map { $0.overrides.joined(separator: " ") })
            try runs.writeStrings("status", statuses.map(\.rawValue))
            try runs.writeStrings("error", errors)
            try runs.write("seconds", seconds)
            let gridGroup = try runs.group("grid")
            for (k, axis) in plan.grid.enumerated() {
                try gridGroup.writeStrings(axis.key, plan.runs.map { plan.points[$0.point][k] })
            }
            let resultGroup = try runs.group("results")
            for name in names {
                try resultGroup.write(name, results.map { $0[name] ?? .nan })
            }
            try table.write(to: try root.group("summary"), pointGrid: plan.grid.enumerated().map { k, axis in (axis.key, plan.points.map { $0[k] }) },
                            comparisons: try root.group("comparisons"),
                            pairKeys: plan.onKeyPairs.map { (plan.grid[$0.key].key, plan.points[$0.a][$0.key], plan.points[$0.b][$0.key]) })
            try file.flush()
        }
        if rename(temporary, directory + "/sweep.h5") != 0 {
            throw RunError("cannot write \(directory)/sweep.h5: \(String(cString: strerror(errno)))")
        }
        return table
    }
}

/// The sweep stopped on SIGINT or SIGTERM; its runs checkpointed.
public struct SweepInterrupted: Error, CustomStringConvertible {
    public let signal: Int32
    public let directory: String
    public var exitStatus: Int32 { 128 + signal }
    public var description: String {
        "interrupted by \(signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)"): the runs in progress stopped with checkpoints. Continue with: workbench sweep --resume \(directory)"
    }
}

/// Results over seeds, per group (a grid point, a set of run folders, a CSV's group): mean,
/// standard deviation and 95% interval, and Welch's t for chosen pairs of groups.
public struct ResultTable {
    public struct Group {
        public var label: String
        /// One dictionary of results per seed.
        public var samples: [[String: Double]]
        public init(label: String, samples: [[String: Double]]) {
            self.label = label
            self.samples = samples
        }
    }

    public var names: [String]
    public var groups: [Group]
    /// Whether the printed groups carry numbers (#1, #2) that the pairs' labels use.
    public var numbered = false
    /// (group a, group b, what differs).
    public var pairs: [(a: Int, b: Int, label: String)]

    public init(names: [String], groups: [Group], pairs: [(Int, Int, String)]) {
        self.names = names
        self.groups = groups
        self.pairs = pairs.map { (a: $0.0, b: $0.1, label: $0.2) }
    }

    public func values(_ group: Int, _ name: String) -> [Double] {
        groups[group].samples.compactMap { $0[name] }.filter { !$0.isNaN }
    }

    public func summary(_ group: Int, _ name: String) -> Statistics.Summary { Statistics.summary(values(group, name)) }
    public func welch(_ pair: Int, _ name: String) -> Statistics.Welch {
        Statistics.welch(values(pairs[pair].a, name), values(pairs[pair].b, name))
    }

    /// The results a person looks at first: test accuracies and final losses.
    public var headlineNames: [String] {
        let headline = names.filter { $0.hasSuffix("test_top1") || $0.hasSuffix("final_loss") }
        return headline.isEmpty ? names : headline
    }

    static func format(_ name: String, _ value: Double) -> String {
        if value.isNaN { return "-" }
        return name.hasSuffix("top1") || name.hasSuffix("top5") ? String(format: "%.2f", 100 * value) : String(format: "%.4g", value)
    }

    /// The tables, one per result (`all`: every result, else the headline ones).
    public func print(to log: RunLog, all: Bool = false) {
        for name in all ? names : headlineNames {
            let percent = name.hasSuffix("top1") || name.hasSuffix("top5")
            log("\(name)\(percent ? " (%)" : ""): mean over seeds, sd, 95% interval")
            // Groups without this result (another recipe's stages) are left out, and their pairs.
            let present = groups.indices.filter { !values($0, name).isEmpty }
            log.table(["group", "n", "mean", "sd", "95% interval"], present.map { g in
                let s = summary(g, name)
                return [(numbered ? "#\(g + 1) " : "") + groups[g].label, "\(s.count)", Self.format(name, s.mean), Self.format(name, s.sd),
                        s.low.isNaN ? "-" : "\(Self.format(name, s.low)) .. \(Self.format(name, s.high))"]
            })
            let shown = pairs.indices.filter { present.contains(pairs[$0].a) && present.contains(pairs[$0].b) }
            guard !shown.isEmpty else { continue }
            log.table(["difference", "a - b", "Welch t", "df", "p"], shown.map { i in
                let w = welch(i, name)
                let d = Statistics.mean(values(pairs[i].a, name)) - Statistics.mean(values(pairs[i].b, name))
                return [pairs[i].label, Self.format(name, d), w.t.isNaN ? "-" : String(format: "%.3f", w.t),
                        w.df.isNaN ? "-" : String(format: "%.1f", w.df), w.p.isNaN ? "-" : String(format: "%.3g", w.p)]
            })
        }
    }

    /// summary/: per group, the label (and the grid values), and per result n, mean, sd, ci_low,
    /// ci_high; comparisons/: per pair, its groups and label, and per result difference, t, df, p.
    public func write(to summaryGroup: HDF5Group, pointGrid: [(key: String, values: [String])], comparisons: HDF5Group,
                      pairKeys: [(key: String, a: String, b: String)]) throws {
        try summaryGroup.writeStrings("label", groups.map(\.label))
        try summaryGroup.write("group", groups.indices.map { Int64($0) })
        if !pointGrid.isEmpty {
            let grid = try summaryGroup.group("grid")
            for (key, values) in pointGrid { try grid.writeStrings(key, values) }
        }
        let results = try summaryGroup.group("results")
        for name in names {
            let g = try results.group(name)
            let s = groups.indices.map { summary($0, name) }
            try g.write("n", s.map { Int64($0.count) })
            try g.write("mean", s.map(\.mean))
            try g.write("sd", s.map(\.sd))
            try g.write("ci_low", s.map(\.low))
            try g.write("ci_high", s.map(\.high))
        }
        try comparisons.write("a", pairs.map { Int64($0.a) })
        try comparisons.write("b", pairs.map { Int64($0.b) })
        try comparisons.writeStrings("label", pairs.map(\.label))
        if !pairKeys.isEmpty {
            try comparisons.writeStrings("key", pairKeys.map(\.key))
            try comparisons.writeStrings("value_a", pairKeys.map(\.a))
            try comparisons.writeStrings("value_b", pairKeys.map(\.b))
        }
        let compared = try comparisons.group("results")
        for name in names {
            let g = try compared.group(name)
            let w = pairs.indices.map { welch($0, name) }
            try g.write("difference", pairs.map { Statistics.mean(values($0.a, name)) - Statistics.mean(values($0.b, name)) })
            try g.write("t", w.map(\.t))
            try g.write("df", w.map(\.df))
            try g.write("p", w.map(\.p))
        }
    }
}
