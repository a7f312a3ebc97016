/// The gradient slot of a tensor that takes part in differentiation.
///
/// Leaves (parameters, inputs marked `requiresGrad`) keep their slot for as long as the tensor
/// lives, so gradients accumulate across backward passes until `zeroGrad()`. Intermediate slots
/// are held only by the tape and are released as soon as their backward has run.
public final class GradNode {
    public let count: Int
    public let isLeaf: Bool
    /// The accumulated gradient, `nil` until some backward writes to it.
    public var grad: Storage?

    init(count: Int, isLeaf: Bool) {
        self.count = count
        self.isLeaf = isLeaf
    }

    /// Pointer to a gradient buffer to add into, zero-filled on first use.
    @inline(__always)
    public func accumulator() -> UnsafeMutablePointer<Float> {
        if let grad { return grad.base }
        let fresh = Storage(count: count)
        grad = fresh
        return fresh.base
    }

    /// A gradient buffer and the BLAS `beta` to write into it: 0 when the buffer is fresh
    /// (its contents are garbage and must be overwritten), 1 when it already holds a gradient.
    @inline(__always)
    public func gemmAccumulator() -> (UnsafeMutablePointer<Float>, Float) {
        if let grad { return (grad.base, 1) }
        let fresh = Storage(uninitializedCount: count)
        grad = fresh
        return (fresh.base, 0)
    }
}

/// The reverse-mode tape. Each differentiable op appends one entry: the node of its output and a
/// closure that reads the output's gradient and adds into its inputs' gradients. `backward`
/// walks the entries in reverse and then releases them, so memory does not grow across steps.
///
/// Recording happens on the thread that runs the model; kernels may fan out internally.
public enum Autograd {
    struct Entry {
        let output: GradNode
        let backward: (Storage) -> Void
    }

    nonisolated(unsafe) static var tape: [Entry] = []
    nonisolated(unsafe) static var noGradDepth = 0

    /// Called during `backward` with the leaves (parameters) whose gradients are complete: every
    /// op that read them has run its backward. Set by data parallelism, which starts exchanging a
    /// bucket of gradients as soon as all of its parameters are complete; nil (the default)
    /// records nothing extra.
    nonisolated(unsafe) public static var leavesCompleted: (([GradNode]) -> Void)? {
        didSet { firstUse.removeAll(keepingCapacity: true) }
    }
    /// For each leaf read by a recorded op: the tape index of the first op that read it (its
    /// gradient is complete once backward has run that entry).
    nonisolated(unsafe) static var firstUse: [ObjectIdentifier: (index: Int, node: GradNode)] = [:]

    @inline(__always)
    static func noteLeafInputs(_ inputs: [Tensor]) {
        for input in inputs {
            guard let node = input.node, node.isLeaf else { continue }
            let id = ObjectIdentifier(node)
            if firstUse[id] == nil { firstUse[id] = (tape.count, node) }
        }
    }

    /// Whether ops currently record onto the tape.
    public static var isRecording: Bool { noGradDepth == 0 }

    /// Runs `body` without recording: outputs do not require gradients.
    public static func noGrad<R>(_ body: () throws -> R) rethrows -> R {
        noGradDepth += 1
        defer { noGradDepth -= 1 }
        return try body()
    }

    /// Number of entries currently recorded (for tests and diagnostics).
    public static var tapeLength: Int { tape.count }

    /// Drops everything recorded since the last backward, without computing gradients.
    public static func discardTape() {
        tape.removeAll(keepingCapacity: true)
        firstUse.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    static func record(_ output: GradNode, _ backward: @escaping (Storage) -> Void) {
        tape.append(Entry(output: output, backward: backward))
    }

    /// Runs the tape backwards from `root`, whose gradient is seeded with `seed` (ones when nil).
    static func backward(from root: GradNode, seed: Storage?) {
        if let seed {
            precondition(seed.count == root.count, "backward: seed gradient has the wrong size")
            addInto(root, seed)
        } else {
            let g = root.accumulator()
            for i in 0..<root.count { g[i] += 1 }
        }
        let entries = tape
        tape.removeAll(keepingCapacity: true)
        guard let hook = leavesCompleted else {
            for entry in entries.reversed() {
                guard let g = entry.output.grad else { continue }
                entry.backward(g)
                if !entry.output.isLeaf { entry.output.grad = nil }
            }
            return
        }
        // Which leaves each entry completes (the first op that read them).
        var completes: [Int: [GradNode]] = [:]
        for (_, use) in firstUse { completes[use.index, default: []].append(use.node) }
        firstUse.removeAll(keepingCapacity: true)
        for (index, entry) in entries.enumerated().reversed() {
            if let g = entry.output.grad {
                entry.backward(g)
                if !entry.output.isLeaf { entry.output.grad = nil }
            }
            if let done = completes[index] { hook(done) }
        }
    }
}
