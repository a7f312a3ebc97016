import Foundation
import Yams

/// One key of a recipe section, declared once: its name, where it lives in the settings value,
/// how it is checked, and one line of help. A section's list of fields gives its key list, its
/// decoding (unknown keys refused with the nearest valid one), its encoding (the order `validate`
/// prints) and its rows in the README's recipe reference. The default is whatever the settings
/// value holds before decoding (its `init()`, or the defaults an objective passes in), so it is
/// written in one place.
public struct Field<Settings> {
    public let key: String
    public let help: String
    let read: (inout Settings, KeyedDecodingContainer<RecipeKey>) throws -> Void
    let write: (Settings) -> any Encodable
    /// Whether the key belongs to these settings (accepted, printed), and when not, the message
    /// for a recipe that gives it.
    public let applies: (Settings) -> Bool
    let notApplying: String

    public init(_ key: String, help: String, applies: @escaping (Settings) -> Bool = { _ in true }, notApplying: String = "",
                read: @escaping (inout Settings, KeyedDecodingContainer<RecipeKey>) throws -> Void,
                write: @escaping (Settings) -> any Encodable) {
        self.key = key
        self.help = help
        self.read = read
        self.write = write
        self.applies = applies
        self.notApplying = notApplying
    }

    /// The same field with one more check, run after the value is set (it sees the value in the
    /// settings, so it fits any field): `problem(value, settings)` says what is wrong, or nil.
    public func checked<T>(_ path: KeyPath<Settings, T>, _ problem: @escaping (T, Settings) -> String?) -> Field {
        let read = self.read, key = self.key
        return Field(key, help: help, applies: applies, notApplying: notApplying, read: { s, c in
            try read(&s, c)
            if c.contains(RecipeKey(key)) { try c.check(problem(s[keyPath: path], s), key) }
        }, write: write)
    }

    /// A key that is refused with `message` (a key of a related section that does not belong here).
    public static func refused(_ key: String, _ message: String) -> Field {
        Field(key, help: message, applies: { _ in false }, notApplying: message, read: { _, _ in }, write: { _ in "" })
    }

    /// The same field on a value nested at `path` in a larger settings value (the training keys
    /// inside a stage).
    public func lifted<Outer>(_ path: WritableKeyPath<Outer, Settings>) -> Field<Outer> {
        let (read, write, applies) = (self.read, self.write, self.applies)
        return Field<Outer>(key, help: help, applies: { applies($0[keyPath: path]) }, notApplying: notApplying,
                            read: { outer, c in try read(&outer[keyPath: path], c) },
                            write: { write($0[keyPath: path]) })
    }
}

/// A check of one value: nil when it is fine, else what is wrong ("must be positive, got -1").
public struct Check<T> {
    let problem: (T) -> String?
    public init(_ problem: @escaping (T) -> String?) { self.problem = problem }
    public static func that(_ test: @escaping (T) -> Bool, _ message: @escaping (T) -> String) -> Check {
        Check { test($0) ? nil : message($0) }
    }
    public static var none: Check { Check { _ in nil } }
}

extension Check where T == Int {
    public static var positive: Check { .that({ $0 > 0 }) { "must be positive, got \($0)" } }
    public static var nonNegative: Check { .that({ $0 >= 0 }) { "must not be negative, got \($0)" } }
}

extension Check where T == Double {
    public static var positive: Check { .that({ $0 > 0 && $0.isFinite }) { "must be a positive number, got \(plainNumber($0))" } }
    public static var nonNegative: Check { .that({ $0 >= 0 && $0.isFinite }) { "must not be negative, got \(plainNumber($0))" } }
    /// [0, 1]
    public static var probability: Check { .that({ (0...1).contains($0) }) { "is a probability: give a number in [0, 1], got \(plainNumber($0))" } }
    /// [0, 1)
    public static var fraction: Check { .that({ $0 >= 0 && $0 < 1 }) { "must be at least 0 and below 1, got \(plainNumber($0))" } }
    /// (0, 1)
    public static var openFraction: Check { .that({ $0 > 0 && $0 < 1 }) { "must be strictly between 0 and 1, got \(plainNumber($0))" } }
}

extension Field {
    /// A key with a default: absent or null keeps the default.
    public static func value<T: Codable>(_ key: String, _ path: WritableKeyPath<Settings, T>, _ help: String, _ check: Check<T> = .none,
                                         where crossCheck: ((T, Settings) -> String?)? = nil) -> Field {
        Field(key, help: help, read: { settings, c in
            guard let value = try c.decodeIfPresent(T.self, forKey: RecipeKey(key)) else { return }
            try c.check(check.problem(value) ?? crossCheck?(value, settings), key)
            settings[keyPath: path] = value
        }, write: { plain($0[keyPath: path]) })
    }

    /// A key whose null is a value of its own (no clipping, a constant schedule): absent keeps the
    /// default, null sets nil.
    public static func nullable<T: Codable>(_ key: String, _ path: WritableKeyPath<Settings, T?>, _ help: String, _ check: Check<T> = .none) -> Field {
        Field(key, help: help, read: { settings, c in
            guard c.contains(RecipeKey(key)) else { return }
            let value = try c.decodeIfPresent(T.self, forKey: RecipeKey(key))
            if let value { try c.check(check.problem(value), key) }
            settings[keyPath: path] = value
        }, write: { plain($0[keyPath: path]) })
    }

    /// A string that must be one of `allowed`.
    public static func choice(_ key: String, _ path: WritableKeyPath<Settings, String>, _ allowed: [String], _ help: String) -> Field {
        Field(key, help: help, read: { settings, c in
            settings[keyPath: path] = try c.choice(key, allowed, settings[keyPath: path])
        }, write: { $0[keyPath: path] })
    }

    /// A string-valued enumeration (its raw values are what a recipe writes).
    public static func choice<E: RawRepresentable & CaseIterable>(_ key: String, _ path: WritableKeyPath<Settings, E>, _ help: String) -> Field where E.RawValue == String {
        Field(key, help: help, read: { settings, c in
            let allowed = E.allCases.map(\.rawValue)
            settings[keyPath: path] = E(rawValue: try c.choice(key, allowed, settings[keyPath: path].rawValue))!
        }, write: { $0[keyPath: path].rawValue })
    }

    /// A value stored in another type than the recipe writes (a Float kept as Double in YAML).
    public static func converted<T: Codable, Stored>(_ key: String, _ path: WritableKeyPath<Settings, Stored>, _ help: String, _ check: Check<T> = .none,
                                                     to: @escaping (T) -> Stored, from: @escaping (Stored) -> T) -> Field {
        Field(key, help: help, read: { settings, c in
            guard let value = try c.decodeIfPresent(T.self, forKey: RecipeKey(key)) else { return }
            try c.check(check.problem(value), key)
            settings[keyPath: path] = to(value)
        }, write: { plain(from($0[keyPath: path])) })
    }

    /// A key that takes one number or a list of them (per stage of a staged encoder): one number
    /// is stored as `repeatSingle` copies of it (1: a one-element list, written back as a number).
    public static func numberOrList(_ key: String, _ path: WritableKeyPath<Settings, [Int]>, _ help: String, allowZero: Bool = false,
                                    repeatSingle: Int = 1) -> Field {
        let low = allowZero ? 0 : 1
        let what = allowZero ? "numbers of 0 or more" : "positive numbers"
        return Field(key, help: help, read: { s, c in
            if let one = try? c.decodeIfPresent(Int.self, forKey: RecipeKey(key)) {
                try c.check(one >= low, key, allowZero ? "must not be negative, got \(one)" : "must be positive, got \(one)")
                s[keyPath: path] = Array(repeating: one, count: repeatSingle)
            } else if let list = try c.decodeIfPresent([Int].self, forKey: RecipeKey(key)) {
                try c.check(!list.isEmpty && list.allSatisfy { $0 >= low }, key, "give one number or a list of \(what), one per stage")
                s[keyPath: path] = list
            }
        }, write: { $0[keyPath: path].count == 1 ? $0[keyPath: path][0] as any Encodable : $0[keyPath: path] })
    }

    /// A nested section (`augment:` inside an objective), decoded on top of the value it holds.
    public static func section<S: RecipeSection>(_ key: String, _ path: WritableKeyPath<Settings, S>, _ help: String) -> Field {
        Field(key, help: help, read: { settings, c in
            guard c.contains(RecipeKey(key)), try !c.decodeNil(forKey: RecipeKey(key)) else { return }
            try settings[keyPath: path].decode(from: c.superDecoder(forKey: RecipeKey(key)))
        }, write: { $0[keyPath: path] })
    }
}

/// A recipe section declared by its fields. Decoding starts from the value as it is (the
/// defaults) and reads each field in order, so a field's check can see the fields before it;
/// encoding writes every field that applies, in order.
public protocol RecipeSection: Codable {
    init()
    static var fields: [Field<Self>] { get }
    /// A problem between keys that no single field's check sees, with the key to blame.
    func check() -> (key: String, problem: String)?
}

extension RecipeSection {
    public func check() -> (key: String, problem: String)? { nil }

    public init(from decoder: Decoder) throws {
        self.init()
        try decode(from: decoder)
    }

    /// Reads the section's keys on top of the current values; `extraKeys` are accepted and left
    /// to the caller (a kind key read by the enclosing section).
    public mutating func decode(from decoder: Decoder, extraKeys: [String] = []) throws {
        let c = try decoder.section(extraKeys + Self.fields.map(\.key))
        for field in Self.fields { try field.read(&self, c) }
        if let (key, problem) = check() { try c.check(problem, key) }
        for field in Self.fields where !field.applies(self) && c.contains(RecipeKey(field.key)) && !decoder.isStoredRecipe {
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + [field.key], message: field.notApplying)
        }
    }

    /// The section decoded on top of `defaults`.
    public static func decoded(from decoder: Decoder, defaults: Self, extraKeys: [String] = []) throws -> Self {
        var value = defaults
        try value.decode(from: decoder, extraKeys: extraKeys)
        return value
    }

    /// The section decoded on top of its `init()` defaults.
    public static func decoded(from decoder: Decoder, extraKeys: [String] = []) throws -> Self {
        try decoded(from: decoder, defaults: Self(), extraKeys: extraKeys)
    }

    /// The (key, value) pairs `encode` writes.
    public var encodedFields: [(String, any Encodable)] {
        Self.fields.filter { $0.applies(self) }.map { ($0.key, $0.write(self)) }
    }

    public func encode(to encoder: Encoder) throws { try encoder.fields(encodedFields) }

    public static var keys: [String] { fields.map(\.key) }
}

extension CodingUserInfoKey {
    /// Set when decoding YAML the workbench wrote itself (a run's recipe.yaml, a checkpoint's
    /// metadata): keys an older version wrote for every kind are skipped instead of refused.
    public static let storedRecipe = CodingUserInfoKey(rawValue: "workbench.storedRecipe")!
}

extension Decoder {
    var isStoredRecipe: Bool { userInfo[.storedRecipe] as? Bool ?? false }
}

/// A number as a person writes it: the shortest text that reads back to the same Double
/// (0.286, 0.0, 1.0e-06, 0.0005), not Yams' scientific form (2.86e-1).
/// Exponents get a mantissa with a point (1.0e-06), which YAML 1.1 readers such as PyYAML need to
/// see a number.
public func plainNumber(_ value: Double) -> String {
    guard value.isFinite else { return value.isNaN ? ".nan" : value > 0 ? ".inf" : "-.inf" }
    let text = "\(value)"
    guard let e = text.firstIndex(of: "e"), !text[..<e].contains(".") else { return text }
    return text[..<e] + ".0" + text[e...]
}

/// A Double that YAML shows as `plainNumber` does.
struct PlainNumber: YAMLEncodable {
    let value: Double
    func box() -> Node { Node(plainNumber(value), Tag(.float)) }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}

/// `value` ready for YAML: Doubles (alone, in lists, optional) as plain numbers.
func plain<T: Encodable>(_ value: T) -> any Encodable {
    if let d = value as? Double { return PlainNumber(value: d) }
    if let list = value as? [Double] { return list.map { PlainNumber(value: $0) } }
    if let optional = value as? Double?, optional == nil { return optional }
    return value
}

/// One value as a YAML flow text (`0.75`, `[0.9, 0.95]`, `null`, `cls`), for the reference.
func yamlScalarText(_ value: any Encodable) -> String {
    guard let node = try? Yams.Node(value as any Encodable, encoderUserInfo: [:]) else { return "?" }
    return flowText(node)
}

/// A node as one line of YAML flow text, which reads back to the same node (quoted scalars stay quoted).
func flowText(_ node: Node) -> String {
    switch node {
    case .scalar(let s):
        if s.string.isEmpty || s.style == .singleQuoted || s.style == .doubleQuoted {
            return "'" + s.string.replacingOccurrences(of: "'", with: "''") + "'"
        }
        return s.string
    case .sequence(let s): return "[" + s.map(flowText).joined(separator: ", ") + "]"
    case .mapping(let m): return "{" + m.map { "\(flowText($0.key)): \(flowText($0.value))" }.joined(separator: ", ") + "}"
    default: return "?"
    }
}

extension Yams.Node {
    /// The node `YAMLEncoder` makes of `value`.
    init(_ value: any Encodable, encoderUserInfo: [CodingUserInfoKey: Any]) throws {
        let text = try YAMLEncoder().encode(AnyEncodable(value))
        self = try Yams.compose(yaml: text) ?? Node("null")
    }
}

/// Type erasure so that an existential Encodable can be handed to a generic encoder.
struct AnyEncodable: Encodable {
    let value: any Encodable
    init(_ value: any Encodable) { self.value = value }
    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(value)
    }
}
