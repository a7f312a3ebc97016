import TensorCore

/// A trainable tensor owned by a module. Optimizers update `value`'s storage in place, so the
/// module and every view of it see the new values. Freezing cuts the parameter from the tape.
public final class Parameter {
    public private(set) var value: Tensor
    /// Whether weight decay applies (false by default for biases, norms, position embeddings
    /// and class tokens: every parameter of rank < 2, and those marked so).
    public var decays: Bool
    /// Multiplies the optimizer's learning rate for this parameter (parameter groups, layer-wise
    /// learning-rate decay).
    public var learningRateScale: Float = 1
    public var isFrozen: Bool {
        didSet { if isFrozen != oldValue { value = isFrozen ? value.detached() : value.requiringGrad() } }
    }

    public init(_ initial: Tensor, decays: Bool? = nil) {
        value = initial.detached().requiringGrad()
        self.decays = decays ?? (initial.rank >= 2)
        isFrozen = false
    }

    public var shape: [Int] { value.shape }
    public var grad: Tensor? { value.grad }
    public func zeroGrad() { value.zeroGrad() }

    /// Copies `source`'s values into this parameter (same shape), keeping its identity.
    public func assign(_ source: Tensor) {
        precondition(source.shape == value.shape, "assign: shape \(source.shape) does not match \(value.shape)")
        value.base.update(from: source.base, count: value.count)
    }
}

/// Non-trainable state saved with a module (batch-norm running statistics).
public final class Buffer {
    public let value: Tensor
    public init(_ value: Tensor) { self.value = value }
}

/// Base class of every layer and model.
///
/// A module finds its parameters, buffers and submodules by reflection over its stored
/// properties (including arrays and optionals of them) and names them with dotted paths. A
/// property's name is its Swift name in snake_case unless `stateNames` maps it to another path,
/// so the names match vit-pytorch's state_dict keys (`transformer.layers.3.0.to_qkv.weight`).
/// The lists are computed once and cached: build the module tree completely in `init`.
open class Module {
    public private(set) var isTraining = true
    private var cachedParameters: [(String, Parameter)]?
    private var cachedBuffers: [(String, Buffer)]?

    public init() {}

    /// Swift property name -> state_dict path segment(s), for names that are not simply the
    /// snake_case of the property (e.g. `toOut: "to_out.0"` for a PyTorch Sequential).
    open var stateNames: [String: String] { [:] }

    /// Every parameter with its dotted name, in declaration order.
    public func namedParameters() -> [(String, Parameter)] {
        if let cachedParameters { return cachedParameters }
        var out: [(String, Parameter)] = []
        visit(prefix: "") { name, item in if let p = item as? Parameter { out.append((name, p)) } }
        cachedParameters = out
        return out
    }

    public var parameters: [Parameter] { namedParameters().map(\.1) }

    /// The dotted prefix under which `submodule`'s parameters appear in this module's state_dict
    /// ("" for the module itself, "teacher_encoder.net." for DINO's teacher), or nil when it is
    /// not part of this module.
    public func prefix(of submodule: Module) -> String? {
        if submodule === self { return "" }
        guard let (name, first) = submodule.namedParameters().first,
              let (outer, _) = namedParameters().first(where: { $0.1 === first }), outer.hasSuffix(name) else { return nil }
        return String(outer.dropLast(name.count))
    }

    public func namedBuffers() -> [(String, Buffer)] {
        if let cachedBuffers { return cachedBuffers }
        var out: [(String, Buffer)] = []
        visit(prefix: "") { name, item in if let b = item as? Buffer { out.append((name, b)) } }
        cachedBuffers = out
        return out
    }

    /// Direct submodules with their names.
    public func namedChildren() -> [(String, Module)] {
        var out: [(String, Module)] = []
        forEachProperty { name, value in
            for (suffix, item) in Module.flatten(value) { if let m = item as? Module { out.append((Module.join(name, suffix), m)) } }
        }
        return out
    }

    /// Sets training (dropout active, batch-norm batch statistics) or evaluation mode, recursively.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, child) in namedChildren() { child.train(on) }
    }

    public func eval() { train(false) }

    /// Freezes or unfreezes every parameter of this module.
    public func setFrozen(_ frozen: Bool) { for p in parameters { p.isFrozen = frozen } }

    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Parameters and buffers by name (as a state_dict).
    public func stateDict() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (n, p) in namedParameters() { d[n] = p.value.detached() }
        for (n, b) in namedBuffers() { d[n] = b.value }
        return d
    }

    /// Copies values from a state_dict. Every parameter and buffer must be present with its
    /// shape; returns the keys of `state` that matched nothing.
    @discardableResult
    public func load(_ state: [String: Tensor]) throws -> [String] {
        var used = Set<String>()
        for (name, p) in namedParameters() {
            guard let t = state[name] else { throw ModuleError.missingKey(name) }
            guard t.shape == p.shape else { throw ModuleError.shapeMismatch(name, expected: p.shape, got: t.shape) }
            p.assign(t)
            used.insert(name)
        }
        for (name, b) in namedBuffers() {
            guard let t = state[name] else { throw ModuleError.missingKey(name) }
            guard t.count == b.value.count else { throw ModuleError.shapeMismatch(name, expected: b.value.shape, got: t.shape) }
            b.value.base.update(from: t.base, count: t.count)
            used.insert(name)
        }
        return state.keys.filter { !used.contains($0) }.sorted()
    }

    // MARK: reflection

    private func forEachProperty(_ body: (String, Any) -> Void) {
        var mirrors: [Mirror] = []
        var m: Mirror? = Mirror(reflecting: self)
        while let current = m { mirrors.insert(current, at: 0); m = current.superclassMirror }
        let names = stateNames
        for mirror in mirrors {
            for child in mirror.children {
                guard let label = child.label, !label.hasPrefix("cached"), label != "isTraining" else { continue }
                let clean = label.hasPrefix("$__lazy_storage_$_") ? String(label.dropFirst(18)) : label
                body(names[clean] ?? Module.snakeCase(clean), child.value)
            }
        }
    }

    private func visit(prefix: String, _ body: (String, Any) -> Void) {
        forEachProperty { name, value in
            for (suffix, item) in Module.flatten(value) {
                let full = Module.join(Module.join(prefix, name), suffix)
                if let module = item as? Module { module.visit(prefix: full, body) } else { body(full, item) }
            }
        }
    }

    /// Unwraps optionals and arrays into (index path, element) pairs.
    static func flatten(_ value: Any) -> [(String, Any)] {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let some = mirror.children.first else { return [] }
            return flatten(some.value)
        }
        if mirror.displayStyle == .collection, value is [Any] {
            return mirror.children.enumerated().flatMap { i, child in
                flatten(child.value).map { (join(String(i), $0.0), $0.1) }
            }
        }
        if value is Module || value is Parameter || value is Buffer { return [("", value)] }
        return []
    }

    static func join(_ a: String, _ b: String) -> String { a.isEmpty ? b : (b.isEmpty ? a : a + "." + b) }

    /// `positionEmbedding` -> `position_embedding`, `toQKV` -> `to_qkv` (an acronym stays one word).
    static func snakeCase(_ s: String) -> String {
        var out = ""
        var previous: Character?
        for ch in s {
            if ch.isUppercase, let p = previous, p.isLowercase || p.isNumber { out += "_" }
            out += ch.lowercased()
            previous = ch
        }
        return out
    }
}

public enum ModuleError: Error, CustomStringConvertible {
    case missingKey(String)
    case shapeMismatch(String, expected: [Int], got: [Int])

    public var description: String {
        switch self {
        case .missingKey(let k): return "the weights have no entry '\(k)'"
        case let .shapeMismatch(k, e, g): return "weight '\(k)' has shape \(g), the model expects \(e)"
        }
    }
}
