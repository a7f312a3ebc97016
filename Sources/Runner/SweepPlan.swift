import Foundation
import Yams

/// What a sweep varies: the seeds and a grid of values per recipe key, from a recipe's `sweep:`
/// section and the command line (`--seeds 0-4 --grid key.path=v1,v2`). Values are kept as the
/// YAML text a `--set` would take, so each run is the recipe with ordinary overrides.
public struct SweepSpec: Equatable {
    public struct Axis: Equatable {
        public var key: String
        public var values: [String]
        /// Where it was written, for messages: "--grid key=..." or "sweep.grid.key" with its line.
        public var origin: String
    }

    public var seeds: [UInt64]?
    public var grid: [Axis] = []

    public init(seeds: [UInt64]? = nil, grid: [Axis] = []) {
        self.seeds = seeds
        self.grid = grid
    }

    /// "0-4", "3", "0,2,5", "0-2,7": whole numbers and ranges; no repeats.
    public static func seeds(_ text: String, origin: String) throws -> [UInt64] {
        func fail(_ why: String) -> SweepError {
            SweepError("\(origin): the seeds '\(text)' do not parse (\(why)); write a range FIRST-LAST (0-4), a list (0,1,5) or both (0-2,7)")
        }
        var seeds: [UInt64] = []
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        for part in parts {
            if part.isEmpty { throw fail("an empty item") }
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard bounds.count <= 2, let first = UInt64(bounds[0]), let last = UInt64(bounds.last!) else {
                throw fail("'\(part)' is not a whole number of 0 or more nor a range of them")
            }
            guard first <= last else { throw fail("the range \(part) runs backwards") }
            guard last - first < 100_000 else { throw fail("the range \(part) holds more than 100000 seeds") }
            seeds += Array(first...last)
        }
        var seen = Set<UInt64>()
        for seed in seeds where !seen.insert(seed).inserted { throw fail("seed \(seed) is given twice") }
        return seeds
    }

    /// "key.path=v1,v2,...": the values split at top-level commas (a value may be a YAML flow
    /// list or mapping, or a quoted string holding commas).
    public static func axis(_ text: String) throws -> Axis {
        let origin = "--grid \(text)"
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw SweepError("\(origin): a grid entry is key.path=value1,value2,..., for example --grid stages.0.pretrain.lr=1.0e-4,5.0e-4")
        }
        let key = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        let values = splitValues(String(text[text.index(after: equals)...]))
        guard !values.isEmpty, !values.contains(where: \.isEmpty) else {
            throw SweepError("\(origin): \(key) needs one or more values separated by commas, none of them empty (key.path=value1,value2)")
        }
        return Axis(key: key, values: values, origin: origin)
    }

    static func splitValues(_ text: String) -> [String] {
        var values: [String] = []
        var current = ""
        var depth = 0
        var quote: Character?
        for character in text {
            if let q = quote {
                if character == q { quote = nil }
            } else if character == "'" || character == "\"" {
                quote = character
            } else if character == "[" || character == "{" {
                depth += 1
            } else if character == "]" || character == "}" {
                depth -= 1
            } else if character == "," && depth == 0 {
                values.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
                continue
            }
            current.append(character)
        }
        if !current.isEmpty || !values.isEmpty { values.append(current.trimmingCharacters(in: .whitespaces)) }
        return values
    }

    /// The recipe's `sweep:` section (`seeds: 0-4` or a list, `grid: {key.path: [values]}`).
    static func section(_ node: Node, file: String) throws -> SweepSpec {
        func fail(_ path: String, _ at: Node?, _ message: String) -> RecipeError {
            RecipeError(file: file, location: at?.mark?.description, keyPath: path, message: message)
        }
        guard let mapping = node.mapping else {
            throw fail("sweep", node, "a sweep is a mapping with seeds (0-4, or a list) and grid (key.path: [value, ...])")
        }
        var spec = SweepSpec()
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            switch key {
            case "seeds":
                let origin = "\(file):\(value.mark?.description ?? "?"): sweep.seeds"
                if let list = value.sequence {
                    spec.seeds = try seeds(list.map { $0.string ?? "?" }.joined(separator: ","), origin: origin)
                } else if let text = value.string {
                    spec.seeds = try seeds(text, origin: origin)
                } else {
                    throw fail("sweep.seeds", value, "give the seeds as a range (0-4) or a list ([0, 1, 2])")
                }
            case "grid":
                guard let grid = value.mapping else {
                    throw fail("sweep.grid", value, "the grid is a mapping of recipe keys to lists of values, for example {stages.0.pretrain.lr: [1.0e-4, 5.0e-4]}")
                }
                for (axisKey, values) in grid {
                    let name = axisKey.string ?? ""
                    let path = "sweep.grid.\(name)"
                    guard let list = values.sequence else {
                        throw fail(path, values, "give a list of the values to try, for example [1.0e-4, 5.0e-4]")
                    }
                    guard !list.isEmpty else { throw fail(path, values, "the list of values is empty; give one or more") }
                    if spec.grid.contains(where: { $0.key == name }) { throw fail(path, axisKey, "the key is in the grid twice; give it once with every value") }
                    spec.grid.append(Axis(key: name, values: list.map(flowText), origin: "\(file):\(axisKey.mark?.description ?? "?"): \(path)"))
                }
            default:
                var message = "unknown key '\(key)'"
                if let near = nearest(key, in: ["seeds", "grid"]) { message += "; did you mean '\(near)'?" }
                throw fail("sweep.\(key)", keyNode, message + " A sweep has seeds and grid.")
            }
        }
        return spec
    }

    /// The recipe's sweep with the command line's on top: `--seeds` replaces the recipe's seeds,
    /// a `--grid` key replaces that key's values in the recipe's grid or adds it.
    public func overridden(seeds: [UInt64]?, grid: [Axis]) throws -> SweepSpec {
        var result = self
        if let seeds { result.seeds = seeds }
        var seen = Set<String>()
        for axis in grid {
            guard seen.insert(axis.key).inserted else {
                throw SweepError("\(axis.origin): \(axis.key) is given twice with --grid; give it once with every value (key=v1,v2,v3)")
            }
            if let i = result.grid.firstIndex(where: { $0.key == axis.key }) { result.grid[i] = axis } else { result.grid.append(axis) }
        }
        return result
    }
}

/// A sweep that cannot be planned or run, with what to do.
public struct SweepError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Every run of a sweep: the grid's points (the product of its values, the first key varying
/// slowest) times the seeds, in that order, each with its overrides and its folder's name.
public struct SweepPlan: Codable, Equatable {
    public struct Axis: Codable, Equatable {
        public var key: String
        public var values: [String]
    }

    public struct Run: Codable, Equatable {
        public var index: Int
        /// The grid point (an index into `points`).
        public var point: Int
        public var seed: UInt64
        /// The folder under the sweep folder.
        public var folder: String
        /// The `--set` overrides that make this run from the sweep's recipe (grid, then seed).
        public var overrides: [String]
    }

    /// The sweep's copy of the recipe (recipe.yaml in the sweep folder).
    public var recipeFile: String
    /// `--set` overrides given to `workbench sweep`, applied before the grid's.
    public var baseOverrides: [String]
    public var seeds: [UInt64]
    public var grid: [Axis]
    /// Each point's value per grid key, in the grid's order.
    public var points: [[String]]
    public var runs: [Run]

    public init(recipeFile: String, baseOverrides: [String], spec: SweepSpec, defaultSeed: UInt64) throws {
        self.recipeFile = recipeFile
        self.baseOverrides = baseOverrides
        seeds = spec.seeds ?? [defaultSeed]
        grid = spec.grid.map { Axis(key: $0.key, values: $0.values) }
        for axis in spec.grid {
            if axis.key == "seed" { throw SweepError("\(axis.origin): the seed is not a grid key; give the seeds with --seeds (or sweep.seeds)") }
            if axis.key.hasPrefix("sweep.") || axis.key == "sweep" { throw SweepError("\(axis.origin): a sweep cannot vary its own sweep section") }
            if let set = baseOverrides.first(where: { $0.hasPrefix(axis.key + "=") }) {
                throw SweepError("\(axis.origin): \(axis.key) is also fixed by --set \(set); drop one of them")
            }
        }
        var points: [[String]] = [[]]
        for axis in grid { points = points.flatMap { p in axis.values.map { p + [$0] } } }
        self.points = points
        var runs: [Run] = []
        let width = String(points.count * seeds.count - 1).count
        for (p, values) in points.enumerated() {
            for seed in seeds {
                let index = runs.count
                let label = (zip(grid, values).map { "\($0.key.split(separator: ".").last!)=\($1)" } + ["seed=\(seed)"]).joined(separator: "-")
                let number = String(repeating: "0", count: max(0, width - String(index).count)) + String(index)
                runs.append(Run(index: index, point: p, seed: seed, folder: Self.folderName(number + "-" + label),
                                overrides: zip(grid, values).map { "\($0.key)=\($1)" } + ["seed=\(seed)"]))
            }
        }
        self.runs = runs
    }

    /// Letters, digits and ._=+- kept, the rest as '_', at most 96 characters.
    static func folderName(_ label: String) -> String {
        let safe = String(label.map { $0.isASCII && ($0.isLetter || $0.isNumber || "._=+-".contains($0)) ? $0 : "_" })
        return String(safe.prefix(96))
    }

    /// A point's values as "lr=0.0005, dim=64" (the last part of each key), or "(the recipe)".
    public func label(point: Int) -> String {
        grid.isEmpty ? "(the recipe)" : zip(grid, points[point]).map { "\($0.key.split(separator: ".").last!)=\($1)" }.joined(separator: ", ")
    }

    /// Pairs of points whose values differ in exactly one key: (key index, point a, point b).
    public var onKeyPairs: [(key: Int, a: Int, b: Int)] {
        var pairs: [(Int, Int, Int)] = []
        for a in points.indices {
            for b in points.indices where b > a {
                let differing = grid.indices.filter { points[a][$0] != points[b][$0] }
                if differing.count == 1 { pairs.append((differing[0], a, b)) }
            }
        }
        return pairs
    }

    /// Loads every run's recipe, so that a bad grid value or key stops the sweep before anything
    /// runs; the message names the grid entry.
    public func check(origins: [String: String]) throws {
        for run in runs {
            do {
                _ = try RecipeLoader.load(path: recipeFile, overrides: baseOverrides + run.overrides)
            } catch let error as RecipeError {
                guard let location = error.location, location.hasPrefix("--set "),
                      let key = run.overrides.first(where: { location == "--set " + $0 })?.split(separator: "=").first.map(String.init),
                      let origin = origins[key] else { throw error }
                throw SweepError("\(origin) (run \(run.folder)): \(error.keyPath.isEmpty ? "" : error.keyPath + ": ")\(error.message)")
            }
        }
    }
}
