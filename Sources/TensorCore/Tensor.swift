/// A dense, row-major Float32 tensor.
///
/// `Tensor` is a small value: a shape, a reference to its `Storage` and, when it takes part in
/// differentiation, a `GradNode`. Reshapes share storage; every other op writes a new contiguous
/// result. Ops record their backward on `Autograd`'s tape when any input requires a gradient.
public struct Tensor {
    public let shape: [Int]
    public let storage: Storage
    public let node: GradNode?

    /// Wraps `storage` with `shape` (the element counts must agree).
    public init(shape: [Int], storage: Storage, node: GradNode? = nil) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        precondition(shape.reduce(1, *) == storage.count, "shape \(shape) does not match \(storage.count) elements")
        self.shape = shape
        self.storage = storage
        self.node = node
    }

    /// A tensor holding `values` in row-major order.
    public init(shape: [Int], _ values: [Float], requiresGrad: Bool = false) {
        let n = shape.reduce(1, *)
        precondition(values.count == n, "\(values.count) values for shape \(shape)")
        let s = Storage(uninitializedCount: n)
        values.withUnsafeBufferPointer { s.base.update(from: $0.baseAddress!, count: n) }
        self.init(shape: shape, storage: s, node: requiresGrad ? GradNode(count: n, isLeaf: true) : nil)
    }

    /// A scalar (shape []).
    public init(scalar: Float) { self.init(shape: [], [scalar]) }

    public static func zeros(_ shape: [Int], requiresGrad: Bool = false) -> Tensor {
        full(shape, 0, requiresGrad: requiresGrad)
    }

    public static func ones(_ shape: [Int], requiresGrad: Bool = false) -> Tensor {
        full(shape, 1, requiresGrad: requiresGrad)
    }

    public static func full(_ shape: [Int], _ value: Float, requiresGrad: Bool = false) -> Tensor {
        let n = shape.reduce(1, *)
        return Tensor(shape: shape, storage: Storage(count: n, repeating: value),
                      node: requiresGrad ? GradNode(count: n, isLeaf: true) : nil)
    }

    /// Standard-normal entries times `std` plus `mean`, drawn from `rng`.
    public static func randn(_ shape: [Int], mean: Float = 0, std: Float = 1, rng: RandomStream,
                             requiresGrad: Bool = false) -> Tensor {
        let n = shape.reduce(1, *)
        let s = Storage(uninitializedCount: n)
        for i in 0..<n { s.base[i] = mean + std * rng.nextNormal() }
        return Tensor(shape: shape, storage: s, node: requiresGrad ? GradNode(count: n, isLeaf: true) : nil)
    }

    /// Uniform entries in [low, high), drawn from `rng`.
    public static func uniform(_ shape: [Int], low: Float = 0, high: Float = 1, rng: RandomStream,
                               requiresGrad: Bool = false) -> Tensor {
        let n = shape.reduce(1, *)
        let s = Storage(uninitializedCount: n)
        for i in 0..<n { s.base[i] = low + (high - low) * rng.nextFloat() }
        return Tensor(shape: shape, storage: s, node: requiresGrad ? GradNode(count: n, isLeaf: true) : nil)
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }
    public var requiresGrad: Bool { node != nil }
    public var base: UnsafeMutablePointer<Float> { storage.base }

    /// The values in row-major order (a copy).
    public var scalars: [Float] { Array(storage.buffer) }

    /// The single value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item() needs a one-element tensor, got shape \(shape)")
        return storage.base[0]
    }

    /// The accumulated gradient of a tensor that requires one.
    public var grad: Tensor? {
        guard let node, let g = node.grad else { return nil }
        return Tensor(shape: shape, storage: g)
    }

    /// Resets the accumulated gradient (the next backward starts from zero).
    public func zeroGrad() { node?.grad = nil }

    /// The same values, cut off from the tape.
    public func detached() -> Tensor { Tensor(shape: shape, storage: storage) }

    /// A leaf that requires a gradient and shares this tensor's values.
    public func requiringGrad() -> Tensor {
        Tensor(shape: shape, storage: storage, node: GradNode(count: count, isLeaf: true))
    }

    /// A deep copy of the values (not on the tape).
    public func copy() -> Tensor {
        Tensor(shape: shape, storage: Storage(copying: storage.base, count: count))
    }

    /// Back-propagates from this tensor. A scalar is seeded with 1; otherwise pass `gradient`.
    public func backward(gradient: Tensor? = nil) {
        guard let node else { preconditionFailure("backward() on a tensor that does not require a gradient") }
        if gradient == nil {
            precondition(count == 1, "backward() without a gradient needs a scalar, got shape \(shape)")
        }
        Autograd.backward(from: node, seed: gradient?.storage)
    }

    /// Normalises a possibly negative axis.
    @inline(__always)
    public func axis(_ a: Int) -> Int {
        let r = a < 0 ? a + rank : a
        precondition(r >= 0 && r < rank, "axis \(a) out of range for shape \(shape)")
        return r
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(shown)\(count > 8 ? ", ..." : "")])"
    }
}

/// Builds an op's result and, when recording and any input needs a gradient, its tape entry.
@inline(__always)
func makeResult(shape: [Int], storage: Storage, inputs: [Tensor],
                backward: () -> ((Storage) -> Void)) -> Tensor {
    if Autograd.isRecording && inputs.contains(where: { $0.node != nil }) {
        let node = GradNode(count: storage.count, isLeaf: false)
        if Autograd.leavesCompleted != nil { Autograd.noteLeafInputs(inputs) }
        Autograd.record(node, backward())
        return Tensor(shape: shape, storage: storage, node: node)
    }
    return Tensor(shape: shape, storage: storage)
}

@inline(__always)
func product(_ dims: ArraySlice<Int>) -> Int { dims.reduce(1, *) }
@inline(__always)
func product(_ dims: [Int]) -> Int { dims.reduce(1, *) }
