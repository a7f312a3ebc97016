import Dispatch
import Foundation
import Store
import TensorCore

/// What the terminal shows, also appended to the run's log.txt line by line. Progress is a bar
/// redrawn in place on a terminal and a plain line every 15 seconds elsewhere (and in log.txt).
public final class RunLog {
    private var handle: FileHandle?
    public let echo: Bool
    /// Whether standard output is a terminal (progress bars) or a file or pipe (plain lines).
    public let interactive: Bool
    private var barShown = false
    private var lastBar: UInt64 = 0
    private var lastPlain: UInt64 = 0

    public init(echo: Bool = true) {
        self.echo = echo
        interactive = echo && isatty(STDOUT_FILENO) == 1
    }

    /// Starts writing (appending) to `path`.
    public func attach(_ path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw RunError("cannot write \(path); check the permissions of the run folder")
        }
        handle.seekToEndOfFile()
        self.handle = handle
    }

    public func callAsFunction(_ line: String) {
        if barShown {
            print("\r\u{1B}[K", terminator: "")
            barShown = false
        }
        if echo { print(line) }
        handle?.write(Data((line + "\n").utf8))
    }

    /// A line for log.txt alone (the terminal gets it another way, e.g. as the error message).
    public func file(_ line: String) {
        handle?.write(Data((line + "\n").utf8))
    }

    /// Progress: `bar` redrawn at most 5 times a second on a terminal; `line` written as a plain
    /// line (terminal or not, and to log.txt) at most every 15 seconds.
    public func progress(bar: @autoclosure () -> String, line: @autoclosure () -> String) {
        let now = DispatchTime.now().uptimeNanoseconds
        if lastPlain == 0 { lastPlain = now }
        if now - lastPlain >= 15_000_000_000 {
            lastPlain = now
            let text = line()
            handle?.write(Data((text + "\n").utf8))
            if !interactive && echo { print(text) }
        }
        if interactive && now - lastBar >= 200_000_000 {
            lastBar = now
            print("\r\u{1B}[K" + bar(), terminator: "")
            fflush(stdout)
            barShown = true
        }
    }

    /// Rows under a header, columns aligned (numbers to the right).
    public func table(_ header: [String], _ rows: [[String]], indent: String = "  ") {
        let widths = header.indices.map { j in ([header[j]] + rows.map { $0[j] }).map(\.count).max() ?? 0 }
        func format(_ cells: [String]) -> String {
            indent + cells.enumerated().map { j, cell in
                let numeric = rows.allSatisfy { row in row[j].first.map { $0.isNumber || $0 == "-" } ?? true }
                return numeric ? String(repeating: " ", count: widths[j] - cell.count) + cell
                    : cell.padding(toLength: widths[j], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        self(format(header))
        for row in rows { self(format(row)) }
    }
}

/// "1 epoch", "2 epochs": a count with its noun in the right number.
public func counted(_ n: Int, _ noun: String) -> String {
    "\(n) \(noun)\(n == 1 ? "" : (noun.hasSuffix("s") || noun.hasSuffix("x") ? "es" : "s"))"
}

/// A failure of the run itself (as opposed to a bad recipe), with what to do about it.
public struct RunError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// metrics.h5: one group per stage with appendable tables (`steps`, `epochs`, ...), each a set
/// of equally long one-dimensional datasets, plus results as attributes and small datasets.
/// Rows are buffered and written every `flushInterval` seconds (and at checkpoints and stage
/// ends) by opening, appending and closing the file, so between flushes the file on disk is
/// closed and complete: a run killed at any moment leaves a file h5py opens, holding every row up
/// to the last flush.
public final class MetricsLog {
    public let path: String
    public var flushInterval: Double
    private var pending: [String: (columns: [String], rows: [[Double]])] = [:]
    private var tableOrder: [String] = []
    private var lastFlush = DispatchTime.now().uptimeNanoseconds
    /// Rows written so far per table ("supervised/steps" -> 120), as a checkpoint records them.
    public private(set) var rowCounts: [String: Int] = [:]

    /// Creates the file with the run's attributes.
    public init(creating path: String, attributes: [String: String], integerAttributes: [String: Int], flushInterval: Double = 2) throws {
        self.path = path
        self.flushInterval = flushInterval
        let file = try HDF5File(path: path, mode: .create)
        for (k, v) in attributes { try file.root.setAttribute(k, v) }
        for (k, v) in integerAttributes { try file.root.setAttribute(k, v) }
    }

    /// Reopens an existing file for a resumed run, cutting every table back to `rowCounts` (the
    /// rows the checkpoint knew of) and removing the groups of `staleGroups`.
    public init(resuming path: String, rowCounts: [String: Int], staleGroups: [String], flushInterval: Double = 2) throws {
        self.path = path
        self.flushInterval = flushInterval
        let file = try HDF5File(path: path, mode: .readWrite)
        for group in staleGroups { try file.root.remove(group) }
        for (table, count) in rowCounts where file.root.contains(table) {
            let group = try file.root.group(table)
            for column in group.childNames { try group.dataset(column).resize(rows: count) }
        }
        // Tables that the checkpoint did not know of were started after it: drop them.
        for stage in file.root.childNames {
            guard case .group(let g) = try file.root.child(stage) else { continue }
            for table in g.childNames where rowCounts["\(stage)/\(table)"] == nil {
                if case .group = try g.child(table), Self.isTable(try g.group(table)) { try g.remove(table) }
            }
        }
        self.rowCounts = rowCounts
    }

    static func isTable(_ group: HDF5Group) -> Bool {
        (try? group.attribute("table")) == .string("appendable")
    }

    /// Appends one row to `table` (created with these columns on first use).
    public func append(_ table: String, _ row: KeyValuePairs<String, Double>) {
        append(table, columns: row.map(\.key), values: row.map(\.value))
    }

    public func append(_ table: String, columns: [String], values: [Double]) {
        if pending[table] == nil {
            pending[table] = (columns, [])
            tableOrder.append(table)
        }
        precondition(pending[table]!.columns == columns, "table \(table) keeps its columns")
        pending[table]!.rows.append(values)
        if Double(DispatchTime.now().uptimeNanoseconds - lastFlush) / 1e9 >= flushInterval { try? flush() }
    }

    /// Writes results of a stage: numbers as attributes of its group, arrays as datasets.
    public func results(_ stage: String, scalars: [String: Double], arrays: [String: (values: [Int64], shape: [Int])] = [:],
                        strings: [String: [String]] = [:]) throws {
        try flush()
        let file = try HDF5File(path: path, mode: .readWrite)
        let group = try file.root.group(stage)
        for (k, v) in scalars { try group.setAttribute(k, v) }
        for (k, a) in arrays { try group.write(k, a.values, shape: a.shape) }
        for (k, s) in strings { try group.writeStrings(k, s) }
    }

    /// Opens the file for a writer that stores larger arrays (reconstructions, confusion matrices).
    public func withFile<T>(_ body: (HDF5File) throws -> T) throws -> T {
        try flush()
        return try body(try HDF5File(path: path, mode: .readWrite))
    }

    public func flush() throws {
        lastFlush = DispatchTime.now().uptimeNanoseconds
        let tables = tableOrder.filter { !(pending[$0]?.rows.isEmpty ?? true) }
        guard !tables.isEmpty else { return }
        let file = try HDF5File(path: path, mode: .readWrite)
        for table in tables {
            let (columns, rows) = pending[table]!
            let existed = file.root.contains(table)
            let group = try file.root.group(table)
            if !existed { try group.setAttribute("table", "appendable") }
            for (j, column) in columns.enumerated() {
                if Self.integerColumns.contains(column) {
                    if !group.contains(column) { try group.createExtendable(column, of: Int64.self) }
                    try group.dataset(column).append(rows.map { Int64($0[j]) })
                } else {
                    if !group.contains(column) { try group.createExtendable(column, of: Double.self) }
                    try group.dataset(column).append(rows.map { $0[j] })
                }
            }
            rowCounts[table, default: 0] += rows.count
            pending[table]!.rows.removeAll()
        }
        try file.flush()
    }

    /// A table's columns as written so far (flushing first).
    public func read(_ table: String) throws -> [String: [Double]] {
        try flush()
        let file = try HDF5File(path: path, mode: .readOnly)
        guard file.root.contains(table) else { return [:] }
        let group = try file.root.group(table)
        var columns: [String: [Double]] = [:]
        for name in group.childNames { columns[name] = try group.dataset(name).read(as: Double.self) }
        return columns
    }

    static let integerColumns: Set<String> = ["step", "epoch", "batch", "global_step"]
}

/// What a checkpoint records besides tensors: where the run was, enough to continue exactly.
public struct RunState: Codable {
    /// The stage to run next (or the one in progress).
    public var stageIndex: Int
    /// Progress inside that stage; nil when it has not started.
    public var progress: StageProgress?
    /// Results of the stages already finished.
    public var results: [[String: Double]]
    /// Rows of each metrics table at the checkpoint.
    public var metricsRows: [String: Int]
    /// The dropout stream of the encoder.
    public var dropoutStream: [UInt64]
    public var wallTime: Double
}

/// Where a training stage stands: the next batch to run and the epoch's running sums.
public struct StageProgress: Codable {
    public var epoch: Int
    public var batch: Int
    public var step: Int
    public var sums: [String: Double]
    public var best: Double?
    public var streams: [String: [UInt64]]
    public init(epoch: Int, batch: Int, step: Int, sums: [String: Double], best: Double?, streams: [String: [UInt64]] = [:]) {
        (self.epoch, self.batch, self.step, self.sums, self.best, self.streams) = (epoch, batch, step, sums, best, streams)
    }
}

/// checkpoints/: each checkpoint is a folder `s<stage>-step<step>` holding model.safetensors (the
/// trained module's state_dict, dotted names), optimizer.safetensors and state.json; the file
/// LATEST names the newest complete one. A folder is written under a temporary name and renamed,
/// then LATEST is replaced atomically, then older folders are removed, so a crash at any point
/// leaves LATEST naming a complete checkpoint. best.safetensors and encoder.safetensors are
/// written to a temporary file and renamed.
public struct Checkpoints {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public func save(name: String, model: [String: Tensor], optimizer: [String: Tensor], state: RunState, metadata: [String: String]) throws {
        let fm = FileManager.default
        let temporary = "\(directory)/.tmp-\(name)"
        try? fm.removeItem(atPath: temporary)
        try fm.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        try WeightFiles.write(model, metadata: metadata, to: "\(temporary)/model.safetensors")
        if !optimizer.isEmpty { try WeightFiles.write(optimizer, to: "\(temporary)/optimizer.safetensors") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: URL(fileURLWithPath: "\(temporary)/state.json"))
        let final = "\(directory)/\(name)"
        try? fm.removeItem(atPath: final)
        try fm.moveItem(atPath: temporary, toPath: final)
        try Data(name.utf8).write(to: URL(fileURLWithPath: "\(directory)/LATEST"), options: .atomic)
        for entry in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where entry != name && entry.hasPrefix("s") && entry.contains("-step") {
            try? fm.removeItem(atPath: "\(directory)/\(entry)")
        }
    }

    /// The newest complete checkpoint, if any.
    public func latest() throws -> (folder: String, state: RunState)? {
        guard let data = FileManager.default.contents(atPath: "\(directory)/LATEST"),
              let name = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !name.isEmpty else { return nil }
        let folder = "\(directory)/\(name)"
        guard let stateData = FileManager.default.contents(atPath: "\(folder)/state.json") else {
            throw RunError("\(folder)/state.json is missing; the checkpoint named by \(directory)/LATEST is incomplete")
        }
        do {
            return (folder, try JSONDecoder().decode(RunState.self, from: stateData))
        } catch {
            throw RunError("\(folder)/state.json cannot be read (\(error)); the checkpoint is damaged")
        }
    }

    /// A weights-only file (best.safetensors, encoder.safetensors), written atomically.
    public func saveWeights(_ file: String, _ tensors: [String: Tensor], metadata: [String: String]) throws {
        try WeightFiles.write(tensors, metadata: metadata, to: "\(directory)/\(file)")
    }
}
