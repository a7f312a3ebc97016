import Foundation

/// A coding key for any string or index, so that a section can see every key a recipe wrote.
public struct RecipeKey: CodingKey, Hashable {
    public var stringValue: String
    public var intValue: Int?
    public init(_ string: String) { stringValue = string }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

/// A problem found while decoding a recipe, at a key path; `RecipeLoader` turns it into a
/// `RecipeError` with the file, line and column.
public struct RecipeIssue: Error {
    public let path: [String]
    public let message: String
    public init(path: [String], message: String) {
        self.path = path
        self.message = message
    }
}

extension CodingKey {
    var pathComponent: String { intValue.map(String.init) ?? stringValue }
}

extension Decoder {
    /// The section as a keyed container, after rejecting any key that is not in `known` (with the
    /// nearest valid key as a suggestion).
    public func section(_ known: [String]) throws -> KeyedDecodingContainer<RecipeKey> {
        let container = try container(keyedBy: RecipeKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) && !isStoredRecipe {
            var message = "unknown key '\(key.stringValue)'"
            message += nearest(key.stringValue, in: known).map { "; did you mean '\($0)'?" } ?? "."
            message += " Valid keys here: \(known.joined(separator: ", "))."
            throw RecipeIssue(path: codingPath.map(\.pathComponent) + [key.stringValue], message: message)
        }
        return container
    }
}

extension KeyedDecodingContainer where Key == RecipeKey {
    /// The value at `key`, or `fallback` when the key is absent or null.
    public func value<T: Decodable>(_ key: String, _ fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: RecipeKey(key)) ?? fallback
    }

    /// An optional value: nil when absent or null.
    public func optional<T: Decodable>(_ key: String, _ type: T.Type = T.self) throws -> T? {
        try decodeIfPresent(T.self, forKey: RecipeKey(key))
    }

    public func required<T: Decodable>(_ key: String, _ type: T.Type = T.self) throws -> T {
        guard let value = try decodeIfPresent(T.self, forKey: RecipeKey(key)) else {
            throw RecipeIssue(path: codingPath.map(\.pathComponent) + [key], message: "required key '\(key)' is missing")
        }
        return value
    }

    /// A string that must be one of `allowed`.
    public func choice(_ key: String, _ allowed: [String], _ fallback: String) throws -> String {
        let value = try self.value(key, fallback)
        guard allowed.contains(value) else {
            var message = "'\(value)' is not one of \(allowed.joined(separator: ", "))"
            if let near = nearest(value, in: allowed) { message += "; did you mean '\(near)'?" }
            throw RecipeIssue(path: codingPath.map(\.pathComponent) + [key], message: message)
        }
        return value
    }

    /// Throws a RecipeIssue at `key` when there is a problem.
    public func check(_ problem: String?, _ key: String) throws {
        if let problem { throw RecipeIssue(path: codingPath.map(\.pathComponent) + [key], message: problem) }
    }

    /// Throws a RecipeIssue at `key` unless `condition` holds.
    public func check(_ condition: Bool, _ key: String, _ message: @autoclosure () -> String) throws {
        if !condition { throw RecipeIssue(path: codingPath.map(\.pathComponent) + [key], message: message()) }
    }
}

extension Encoder {
    /// Encodes a section's keys in the order given (the order `validate` prints them in).
    public func fields(_ pairs: KeyValuePairs<String, any Encodable>) throws {
        try fields(pairs.map { ($0.key, $0.value) })
    }

    public func fields(_ pairs: [(String, any Encodable)]) throws {
        var container = container(keyedBy: RecipeKey.self)
        for (key, value) in pairs { try container.encode(value, forKey: RecipeKey(key)) }
    }
}

/// Names from other tools (timm, PyTorch, DINO's and MAE's argument parsers) for the workbench's
/// keys: a suggestion when one is typed.
let synonyms = ["wd": "weight_decay", "num_heads": "heads", "n_heads": "heads", "warmup": "warmup_epochs", "batch": "batch_size",
                "bs": "batch_size", "patch": "patch_size", "learning_rate": "lr", "embed_dim": "dim", "hidden_dim": "dim",
                "mlp_ratio": "mlp_dim", "mask_ratio": "masking_ratio", "n_epochs": "epochs", "num_epochs": "epochs",
                "drop": "dropout", "drop_rate": "dropout", "momentum_teacher": "teacher_momentum", "clip_grad": "gradient_clip",
                "grad_clip": "gradient_clip", "local_crops_number": "local_crops", "out_dim_k": "out_dim", "layer": "hidden_layer",
                "seed_value": "seed", "dataset_path": "path", "data_path": "path", "img_size": "image_size", "input_size": "image_size"]

/// The candidate closest to `word`: a known synonym ("wd" for weight_decay), or the nearest by
/// edit distance when it is close enough to be a likely typo.
public func nearest(_ word: String, in candidates: [String]) -> String? {
    if let canonical = synonyms[word.lowercased()], candidates.contains(canonical) { return canonical }
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for i in 1...Swift.max(a.count, 1) where !a.isEmpty {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...Swift.max(b.count, 1) where !b.isEmpty {
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }
    let lowered = Array(word.lowercased())
    let scored = candidates.map { ($0, distance(lowered, Array($0.lowercased()))) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= Swift.max(2, word.count / 3) ? best.0 : nil
}
