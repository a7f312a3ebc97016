import Foundation
import Store
import SwiftCSV
import Yams

/// `workbench compare`: results gathered from run folders, sweep folders and CSV files (for
/// example a PyTorch reference's seeds) into groups, summarised over seeds, every pair of groups
/// compared with Welch's t.
public enum Comparison {
    /// The groups of `paths`, in the order given: a sweep folder gives one group per grid point;
    /// run folders (or a folder of them) are grouped by recipe, every key but the seed equal; a
    /// CSV file gives one group per value of its `group` column (or one, named after the file).
    public static func table(_ paths: [String]) throws -> ResultTable {
        var groups: [ResultTable.Group] = []
        var runs: [(folder: String, recipe: String, name: String, results: [String: Double])] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw RunError("\(path) does not exist; give run folders, sweep folders or CSV files of results")
            }
            if !isDirectory.boolValue {
                groups += try csvGroups(path)
            } else if FileManager.default.fileExists(atPath: path + "/sweep.json") {
                groups += try sweepGroups(path)
            } else if FileManager.default.fileExists(atPath: path + "/metrics.h5") {
                runs.append(try run(path))
            } else {
                let children = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
                    .map { path + "/" + $0 }.filter { FileManager.default.fileExists(atPath: $0 + "/metrics.h5") }
                guard !children.isEmpty else {
                    throw RunError("\(path) holds no run (no metrics.h5 in it or in its folders) and is not a sweep folder (no sweep.json)")
                }
                for child in children { runs.append(try run(child)) }
            }
        }
        groups += runGroups(runs)
        guard !groups.isEmpty else { throw RunError("nothing to compare: none of the runs given has finished") }
        let names = Set(groups.flatMap { $0.samples.flatMap(\.keys) }).sorted()
        var pairs: [(Int, Int, String)] = []
        for a in groups.indices { for b in groups.indices where b > a { pairs.append((a, b, "#\(a + 1) vs #\(b + 1)")) } }
        var table = ResultTable(names: names, groups: groups, pairs: pairs)
        table.numbered = true
        return table
    }

    static func run(_ folder: String) throws -> (folder: String, recipe: String, name: String, results: [String: Double]) {
        let file: HDF5File
        do { file = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly) } catch {
            throw RunError("\(folder)/metrics.h5 cannot be read (\(error)); is it a workbench run folder?")
        }
        guard case .string(let recipe)? = try? file.root.attribute("recipe") else {
            throw RunError("\(folder)/metrics.h5 has no recipe attribute; is it a workbench run folder?")
        }
        let name: String
        if case .string(let n)? = try? file.root.attribute("recipe_name") { name = n } else { name = (folder as NSString).lastPathComponent }
        let complete = (try? file.root.attribute("status")) == .string("complete")
        return (folder, recipe, name, complete ? try SweepRunner.runResults(folder) : [:])
    }

    /// Runs whose recipes are equal but for the seed form a group, labelled by the recipe's name
    /// and, where names repeat, the keys in which the groups differ.
    static func runGroups(_ runs: [(folder: String, recipe: String, name: String, results: [String: Double])]) -> [ResultTable.Group] {
        var order: [String] = []
        var members: [String: [Int]] = [:]
        var flat: [String: [String: String]] = [:]
        for (i, run) in runs.enumerated() {
            var keys = flatten(run.recipe)
            keys["seed"] = nil
            let identity = keys.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n")
            if members[identity] == nil { order.append(identity); flat[identity] = keys }
            members[identity, default: []].append(i)
        }
        return order.map { identity in
            let first = runs[members[identity]![0]]
            let sameName = order.filter { runs[members[$0]![0]].name == first.name }
            var label = first.name
            if sameName.count > 1 {
                let mine = flat[identity]!
                let allKeys = Set(sameName.flatMap { flat[$0]!.keys }).sorted()
                let differing = allKeys.filter { key in Set(sameName.map { flat[$0]![key] ?? "(none)" }).count > 1 }
                label += ": " + differing.map { "\($0)=\(mine[$0] ?? "(none)")" }.joined(separator: ", ")
            }
            return ResultTable.Group(label: label, samples: members[identity]!.map { runs[$0].results }.filter { !$0.isEmpty })
        }
    }

    /// A recipe's keys as dotted paths to their values' text.
    static func flatten(_ yaml: String) -> [String: String] {
        var result: [String: String] = [:]
        func walk(_ node: Node, _ path: String) {
            switch node {
            case .mapping(let m): for (k, v) in m { walk(v, path.isEmpty ? (k.string ?? "?") : "\(path).\(k.string ?? "?")") }
            case .sequence(let s): for (i, v) in s.enumerated() { walk(v, "\(path).\(i)") }
            default: result[path] = flowText(node)
            }
        }
        if let node = try? Yams.compose(yaml: yaml) { walk(node, "") }
        return result
    }

    static func sweepGroups(_ directory: String) throws -> [ResultTable.Group] {
        let stored = try SweepRunner.load(directory)
        let plan = stored.plan
        let name = (directory as NSString).standardizingPath.split(separator: "/").suffix(2).joined(separator: "/")
        return plan.points.indices.map { p in
            ResultTable.Group(label: "\(name): \(plan.label(point: p))", samples: plan.runs.filter { $0.point == p }.compactMap { run in
                let folder = directory + "/" + run.folder
                return SweepRunner.status(of: folder) == .complete ? try? SweepRunner.runResults(folder) : nil
            })
        }
    }

    /// A CSV of results, one row per seed: an optional `group` column, an optional `seed` column,
    /// and a column per result named as the workbench names it (`knn.test_top1`; `knn/test_top1`
    /// also reads). Accuracies may be fractions or percent: a top1/top5 column whose values all
    /// exceed 1 is read as percent.
    static func csvGroups(_ path: String) throws -> [ResultTable.Group] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw RunError("\(path) cannot be read as text; give a CSV of results (a header row, then a row per seed)")
        }
        let csv: CSV<Enumerated>
        do { csv = try CSV<Enumerated>(string: text, delimiter: .comma) } catch {
            let why: String
            switch error as? CSVParseError {
            case .generic(let message)?, .quotation(let message)?: why = message
            case nil: why = "\(error)"
            }
            throw RunError("\(path): not a CSV file (\(why)); give a CSV of results: a header row (group, seed, then results such as knn.test_top1), then one row per seed")
        }
        let header = csv.header.map { $0.trimmingCharacters(in: .whitespaces) }
        let groupColumn = header.firstIndex(of: "group")
        let resultColumns = header.indices.filter { $0 != groupColumn && header[$0] != "seed" && !header[$0].isEmpty }
        guard !resultColumns.isEmpty, !csv.rows.isEmpty else {
            throw RunError("\(path): no results; the first row names the columns (group, seed, then results such as knn.test_top1), one row per seed follows")
        }
        var columns: [[Double]] = resultColumns.map { _ in [] }
        for (r, row) in csv.rows.enumerated() {
            for (j, c) in resultColumns.enumerated() {
                let cell = c < row.count ? row[c].trimmingCharacters(in: .whitespaces) : ""
                if cell.isEmpty { columns[j].append(.nan); continue }
                guard let value = Double(cell), value.isFinite else {
                    throw RunError("\(path): row \(r + 2), column \(header[c]): '\(cell)' is not a number; each result cell holds a number (or nothing)")
                }
                columns[j].append(value)
            }
        }
        for (j, c) in resultColumns.enumerated() where header[c].hasSuffix("top1") || header[c].hasSuffix("top5") {
            let present = columns[j].filter { !$0.isNaN }
            if !present.isEmpty && present.allSatisfy({ $0 > 1 }) { columns[j] = columns[j].map { $0 / 100 } }
        }
        var order: [String] = []
        var samples: [String: [[String: Double]]] = [:]
        let fallback = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        for (r, row) in csv.rows.enumerated() {
            let group = groupColumn.flatMap { $0 < row.count ? row[$0].trimmingCharacters(in: .whitespaces) : nil }.flatMap { $0.isEmpty ? nil : $0 } ?? fallback
            if samples[group] == nil { order.append(group) }
            var result: [String: Double] = [:]
            for (j, c) in resultColumns.enumerated() where !columns[j][r].isNaN {
                result[header[c].replacingOccurrences(of: "/", with: ".")] = columns[j][r]
            }
            samples[group, default: []].append(result)
        }
        return order.map { ResultTable.Group(label: $0, samples: samples[$0]!) }
    }
}
