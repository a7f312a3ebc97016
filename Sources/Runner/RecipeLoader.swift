import Foundation
import Yams

/// A recipe that cannot be used: the file, where in it (line:column, or the --set that caused
/// it), the key path, and what to do.
public struct RecipeError: Error, CustomStringConvertible {
    public let file: String
    public let location: String?
    public let keyPath: String
    public let message: String

    public var description: String {
        var text = file
        if let location { text += location.hasPrefix("--set") ? " (\(location))" : ":\(location)" }
        text += ": "
        if !keyPath.isEmpty { text += "\(keyPath): " }
        return text + message
    }
}

/// Reads recipes: YAML through Yams into `Recipe`, with `--set key.path=value` overrides applied
/// first and every problem reported as a `RecipeError`.
public enum RecipeLoader {
    /// `path` as given, or, when it does not exist, the same path matched case-insensitively one
    /// component at a time (so `recipes/mae.yaml` finds Recipes/mae.yaml).
    public static func resolvePath(_ path: String) -> String? {
        let fm = FileManager.default
        if fm.fileExists(atPath: path) { return path }
        var current = path.hasPrefix("/") ? "/" : "."
        for part in path.split(separator: "/").map(String.init) {
            let candidate = current == "/" ? "/\(part)" : "\(current)/\(part)"
            if fm.fileExists(atPath: candidate) { current = candidate; continue }
            guard let entries = try? fm.contentsOfDirectory(atPath: current),
                  let match = entries.first(where: { $0.lowercased() == part.lowercased() }) else { return nil }
            current = current == "/" ? "/\(match)" : "\(current)/\(match)"
        }
        return current.hasPrefix("./") ? String(current.dropFirst(2)) : current
    }

    /// `stored`: the recipe.yaml of a run folder (written by the workbench, perhaps an older
    /// version): keys of other kinds that it wrote are skipped.
    public static func load(path: String, overrides: [String] = [], stored: Bool = false) throws -> Recipe {
        guard let resolved = find(path) else {
            let folder = repositoryRoot.map { "\($0)/Recipes" } ?? "Recipes"
            let known = (try? FileManager.default.contentsOfDirectory(atPath: folder))?.filter { $0.hasSuffix(".yaml") }.sorted() ?? []
            var message = "no such recipe file; a path is looked up from the current folder (\(FileManager.default.currentDirectoryPath))"
            if let root = repositoryRoot { message += " and then from the workbench's repository (\(root))" }
            if !known.isEmpty { message += "; the recipes there are \(known.map { "recipes/\($0)" }.joined(separator: ", ")) in \(folder)" }
            throw RecipeError(file: path, location: nil, keyPath: "", message: message)
        }
        guard let data = FileManager.default.contents(atPath: resolved), let text = String(data: data, encoding: .utf8) else {
            throw RecipeError(file: resolved, location: nil, keyPath: "", message: "cannot read the file (is it UTF-8 text?)")
        }
        return try parse(text, file: resolved, overrides: overrides, stored: stored)
    }

    /// The checkout this executable was built in (REPO/.build/<config>/workbench), when it has
    /// the Recipes folder: relative recipe paths are tried there after the current folder.
    public static let repositoryRoot: String? = {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var folder = binary.deletingLastPathComponent()
        for _ in 0..<4 {
            folder = folder.deletingLastPathComponent()
            if FileManager.default.fileExists(atPath: folder.path + "/Recipes") && FileManager.default.fileExists(atPath: folder.path + "/Package.swift") {
                return folder.path
            }
        }
        return nil
    }()

    /// `path` from the current folder (case-insensitively, see `resolvePath`), else, when
    /// relative, from the repository root.
    public static func find(_ path: String) -> String? {
        if let found = resolvePath(path) { return found }
        guard !path.hasPrefix("/"), let root = repositoryRoot else { return nil }
        return resolvePath("\(root)/\(path)")
    }

    public static func parse(_ text: String, file: String, overrides: [String] = [], stored: Bool = false) throws -> Recipe {
        let original: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw RecipeError(file: file, location: nil, keyPath: "", message: "the recipe is empty; start from one of the files in Recipes/")
            }
            original = node
        } catch let error as YamlError {
            throw malformed(error, file: file)
        }
        guard original.mapping != nil else {
            throw RecipeError(file: file, location: original.mark?.description, keyPath: "",
                              message: "a recipe is a mapping of keys (name, seed, data, encoder, checkpoint, stages)")
        }
        var node = original
        var overridden: [(path: [String], text: String)] = []
        for assignment in overrides {
            let (path, value) = try parseOverride(assignment, file: file)
            try checkStageKind(path, in: node, assignment: assignment, file: file)
            try set(&node, path: path, value: value, assignment: assignment, file: file)
            overridden.append((path, assignment))
        }
        func located(_ path: [String], _ message: String) -> RecipeError {
            if let o = overridden.last(where: { path.starts(with: $0.path) || $0.path.starts(with: path) && !path.isEmpty }) {
                return RecipeError(file: file, location: "--set \(o.text)", keyPath: path.joined(separator: "."), message: message)
            }
            return RecipeError(file: file, location: mark(of: path, in: original)?.description, keyPath: path.joined(separator: "."), message: message)
        }
        // `sweep:` is read here (the sweep command expands it into runs); a run's own recipe has none.
        var sweep: SweepSpec?
        if var mapping = node.mapping, let section = mapping["sweep"] {
            do {
                sweep = try SweepSpec.section(section, file: file)
            } catch let error as RecipeError where overridden.contains(where: { $0.path.first == "sweep" }) {
                throw located(error.keyPath.split(separator: ".").map(String.init), error.message)
            }
            mapping["sweep"] = nil
            node = .mapping(mapping)
        }
        do {
            var recipe = try YAMLDecoder().decode(Recipe.self, from: node, userInfo: stored ? [.storedRecipe: true] : [:])
            recipe.sweep = sweep
            return recipe
        } catch let issue as RecipeIssue {
            throw located(issue.path, issue.message)
        } catch let error as DecodingError {
            switch error {
            case let .typeMismatch(type, context):
                let path = context.codingPath.map(\.pathComponent)
                let found = value(at: path, in: node).map { " found \(describe($0))" } ?? ""
                var message = "expected \(describe(type)),\(found.isEmpty ? " found something else" : found)"
                if path.last == "seed" { message += " (the seed starts every random stream: use 0 or a positive whole number)" }
                throw located(path, message)
            case let .valueNotFound(type, context):
                throw located(context.codingPath.map(\.pathComponent), "expected \(describe(type)), found nothing (null)")
            case let .keyNotFound(key, context):
                throw located(context.codingPath.map(\.pathComponent) + [key.pathComponent], "required key is missing")
            case let .dataCorrupted(context):
                throw located(context.codingPath.map(\.pathComponent), context.debugDescription)
            @unknown default:
                throw RecipeError(file: file, location: nil, keyPath: "", message: "\(error)")
            }
        } catch let error as YamlError {
            throw malformed(error, file: file)
        }
    }

    /// The resolved recipe as YAML, every default filled in.
    public static func yaml(_ recipe: Recipe) -> String {
        (try? YAMLEncoder().encode(recipe)) ?? ""
    }

    /// One section the workbench stored (e.g. the encoder settings in a checkpoint's metadata)
    /// read back from YAML.
    public static func section<T: Decodable>(_ type: T.Type, yaml text: String, file: String) throws -> T {
        do {
            return try YAMLDecoder().decode(T.self, from: text, userInfo: [.storedRecipe: true])
        } catch let issue as RecipeIssue {
            throw RecipeError(file: file, location: nil, keyPath: issue.path.joined(separator: "."), message: issue.message)
        } catch {
            throw RecipeError(file: file, location: nil, keyPath: "", message: "cannot be read: \(error)")
        }
    }

    /// Any section as YAML (stored in checkpoints and HDF5 attributes).
    public static func yamlFragment<T: Encodable>(_ value: T) -> String {
        (try? YAMLEncoder().encode(value)) ?? ""
    }

    static func malformed(_ error: YamlError, file: String) -> RecipeError {
        switch error {
        case let .scanner(context, problem, mark, yaml), let .parser(context, problem, mark, yaml), let .composer(context, problem, mark, yaml):
            let snippet = mark.snippet(from: yaml)
            return RecipeError(file: file, location: mark.description, keyPath: "",
                               message: "malformed YAML: \(context.map { "\($0.text) " } ?? "")\(problem)\n\(snippet)")
        default:
            return RecipeError(file: file, location: nil, keyPath: "", message: "malformed YAML: \(error)")
        }
    }

    static func parseOverride(_ assignment: String, file: String) throws -> ([String], Node) {
        guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
            throw RecipeError(file: file, location: "--set \(assignment)", keyPath: "",
                              message: "an override is key.path=value, for example --set stages.0.supervised.epochs=1")
        }
        let path = assignment[..<equals].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !path.contains(where: \.isEmpty) else {
            throw RecipeError(file: file, location: "--set \(assignment)", keyPath: "", message: "the key path has an empty part")
        }
        let text = String(assignment[assignment.index(after: equals)...])
        do {
            return (path, try Yams.compose(yaml: text) ?? Node("null"))
        } catch {
            throw RecipeError(file: file, location: "--set \(assignment)", keyPath: path.joined(separator: "."), message: "the value is not valid YAML: \(error)")
        }
    }

    /// `--set stages.I.KIND.key=...` must name the kind stage I has: say which it is, and where
    /// a stage of KIND is if the recipe has one.
    static func checkStageKind(_ path: [String], in root: Node, assignment: String, file: String) throws {
        guard path.count >= 3, path[0] == "stages", let index = Int(path[1]),
              case .sequence(let stages)? = root.mapping?["stages"], index >= 0, index < stages.count,
              case .mapping(let entry) = stages[index], entry.count == 1, let kind = entry.first?.key.string, kind != path[2] else { return }
        var message = "stage \(index) is \(kind), not \(path[2])"
        let kinds = stages.map { $0.mapping?.first?.key.string }
        if let other = kinds.firstIndex(of: path[2]) {
            message += "; stage \(other) is \(path[2]): --set " + (["stages", String(other)] + path.dropFirst(2)).joined(separator: ".") + "=..."
        } else {
            message += "; the stages are " + kinds.enumerated().map { "\($0.offset) \($0.element ?? "?")" }.joined(separator: ", ")
                + ", so --set stages.\(index).\(kind)." + path.dropFirst(3).joined(separator: ".") + "=... changes stage \(index)"
        }
        throw RecipeError(file: file, location: "--set \(assignment)", keyPath: path.prefix(3).joined(separator: "."), message: message)
    }

    /// Sets the value at `path`, creating mappings on the way; list indices must exist.
    static func set(_ node: inout Node, path: [String], value: Node, assignment: String, file: String, depth: Int = 0) throws {
        let key = path[depth]
        func fail(_ message: String) -> RecipeError {
            RecipeError(file: file, location: "--set \(assignment)", keyPath: path.prefix(depth + 1).joined(separator: "."), message: message)
        }
        switch node {
        case .mapping(var mapping):
            if depth == path.count - 1 {
                mapping[key] = value
            } else {
                var child = mapping[key] ?? Node([(Node, Node)]())
                try set(&child, path: path, value: value, assignment: assignment, file: file, depth: depth + 1)
                mapping[key] = child
            }
            node = .mapping(mapping)
        case .sequence(var sequence):
            guard let index = Int(key), index >= 0, index < sequence.count else {
                throw fail(sequence.isEmpty ? "'\(key)' is not an index: this list is empty"
                           : "'\(key)' is not an index of this list of \(sequence.count) (0 to \(sequence.count - 1))")
            }
            if depth == path.count - 1 {
                sequence[index] = value
            } else {
                var child = sequence[index]
                try set(&child, path: path, value: value, assignment: assignment, file: file, depth: depth + 1)
                sequence[index] = child
            }
            node = .sequence(sequence)
        default:
            if case .scalar(let s) = node, ["", "~", "null", "Null", "NULL"].contains(s.string) {
                // `- extract:` (null) becomes a mapping when a key under it is set.
                node = Node([(Node, Node)]())
                try set(&node, path: path, value: value, assignment: assignment, file: file, depth: depth)
                return
            }
            throw fail("'\(path.prefix(depth).joined(separator: "."))' is a single value, so it has no key '\(key)'")
        }
    }

    static func child(_ node: Node, _ key: String) -> (key: Node?, value: Node)? {
        switch node {
        case .mapping(let mapping):
            guard let pair = mapping.first(where: { $0.key.string == key }) else { return nil }
            return (pair.key, pair.value)
        case .sequence(let sequence):
            guard let index = Int(key), index >= 0, index < sequence.count else { return nil }
            return (nil, sequence[index])
        default:
            return nil
        }
    }

    /// Where `path` is in the file: the key's mark if present, else the nearest enclosing node's.
    static func mark(of path: [String], in root: Node) -> Mark? {
        var node = root
        var best = root.mark
        for (i, key) in path.enumerated() {
            guard let (keyNode, value) = child(node, key) else { return best }
            best = (i == path.count - 1 ? keyNode?.mark : nil) ?? value.mark ?? best
            node = value
        }
        return best
    }

    static func value(at path: [String], in root: Node) -> Node? {
        var node = root
        for key in path {
            guard let (_, value) = child(node, key) else { return nil }
            node = value
        }
        return node
    }

    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        default: return "an alias"
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is UInt64.Type, is UInt.Type, is UInt32.Type: return "a whole number of 0 or more"
        case is Int.Type, is Int64.Type, is Int32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default:
            // Yams and Swift name what they wanted by protocol or type; say it in YAML's words.
            let name = "\(type)"
            if name == "Scalar" { return "a single value" }
            if name.hasPrefix("Array") || name.contains("Sequence") || name.contains("Unkeyed") { return "a list" }
            if name.hasPrefix("Dictionary") || name.contains("Mapping") || name.contains("Keyed") { return "a mapping" }
            return "a value of another kind"
        }
    }
}
