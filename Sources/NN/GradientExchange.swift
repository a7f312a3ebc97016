import Dispatch
import Foundation
import TensorCore

/// Data parallelism's gradient exchange: every process's parameter gradients, each scaled by
/// `weight` (its share of the global batch), summed over processes in contiguous buckets of
/// parameters (one all-reduce per bucket, not one per tensor), so that every process holds the
/// global batch's gradient and takes the same optimizer step.
///
/// Buckets hold parameters in reverse order, the order in which backward completes them, and a
/// bucket's sum starts during backward as soon as every op that read its parameters has run its
/// backward (`Autograd.leavesCompleted`), so the exchange overlaps the rest of backward; what is
/// left is started and waited for after it. Every process builds the same buckets and starts
/// them in the same order (the tape's order, ties by bucket number), as MPI requires.
public final class GradientExchange {
    /// Floats per bucket: 2^22 (16 MiB), or WORKBENCH_BUCKET_FLOATS (smaller buckets start
    /// earlier in backward; the tests use them to exercise the overlap on small models).
    public static let bucketFloats: Int = {
        if let text = ProcessInfo.processInfo.environment["WORKBENCH_BUCKET_FLOATS"], let n = Int(text), n > 0 { return n }
        return 1 << 22
    }()

    let parameters: [Parameter]
    let buckets: [[Int]]                     // parameter indices per bucket
    let bucketOf: [ObjectIdentifier: Int]    // leaf node -> bucket
    let buffers: [UnsafeMutablePointer<Float>]
    let sizes: [Int]
    var remaining: [Int] = []
    var started: [Bool] = []
    /// This process's share of the global batch, which its gradients are scaled by (set before backward).
    public var weight: Float = 1

    public init(_ parameters: [Parameter]) {
        let trainable = Array(parameters.filter { !$0.isFrozen }.reversed())
        self.parameters = trainable
        var buckets: [[Int]] = [], current: [Int] = [], filled = 0
        for (i, p) in trainable.enumerated() {
            if filled > 0 && filled + p.value.count > Self.bucketFloats {
                buckets.append(current)
                (current, filled) = ([], 0)
            }
            current.append(i)
            filled += p.value.count
        }
        if !current.isEmpty { buckets.append(current) }
        self.buckets = buckets
        var bucketOf: [ObjectIdentifier: Int] = [:]
        for (b, members) in buckets.enumerated() {
            for i in members { if let node = trainable[i].value.node { bucketOf[ObjectIdentifier(node)] = b } }
        }
        self.bucketOf = bucketOf
        sizes = buckets.map { $0.reduce(0) { $0 + trainable[$1].value.count } }
        buffers = sizes.map { UnsafeMutablePointer<Float>.allocate(capacity: Swift.max($0, 1)) }
    }

    deinit { for b in buffers { b.deallocate() } }

    /// Call before the forward pass (the tape notes which op reads each parameter first); set
    /// `weight` before backward, during which buckets start as their gradients complete.
    public func prepare() {
        guard Distributed.isMultiProcess else { return }
        remaining = buckets.map(\.count)
        started = buckets.map { _ in false }
        Autograd.leavesCompleted = { [unowned self] nodes in self.completed(nodes) }
    }

    func completed(_ nodes: [GradNode]) {
        var ready: [Int] = []
        for node in nodes {
            guard let b = bucketOf[ObjectIdentifier(node)], !started[b] else { continue }
            remaining[b] -= 1
            // The last bucket (the first parameters: the embedding) completes with backward
            // itself: it waits for finish, which sums it with the faster blocking call.
            if remaining[b] == 0 && b < buckets.count - 1 { ready.append(b) }
        }
        for b in ready.sorted() { start(b) }
        Distributed.world.progress()
    }

    /// Packs bucket b's gradients and starts its sum.
    func start(_ b: Int) {
        pack(b)
        Distributed.world.startAllreduceSum(buffers[b], count: sizes[b])
    }

    /// Bucket b's gradients, scaled by `weight`, into its buffer (a parameter without one
    /// contributes zeros).
    func pack(_ b: Int) {
        started[b] = true
        var at = buffers[b]
        for i in buckets[b] {
            let p = parameters[i], n = p.value.count
            if let g = p.grad { for k in 0..<n { at[k] = g.base[k] * weight } } else { at.update(repeating: 0, count: n) }
            at += n
        }
    }

    /// Stops following the tape (a step abandoned before backward).
    public func cancel() { Autograd.leavesCompleted = nil }

    /// Call after backward: starts what is left, waits for every sum and writes the summed
    /// gradients back. Returns the seconds spent here (the exchange backward did not hide) and
    /// the fraction of buckets that started during backward.
    @discardableResult
    public func finish() -> (seconds: Double, overlapped: Double) {
        guard Distributed.isMultiProcess else { return (0, 0) }
        let begin = DispatchTime.now().uptimeNanoseconds
        Autograd.leavesCompleted = nil
        let early = started.filter { $0 }.count
        // What backward did not start, in bucket order on every process, with blocking sums
        // (Open MPI's are faster than its non-blocking ones through shared memory), then the rest.
        for b in buckets.indices where !started[b] {
            pack(b)
            Distributed.world.allreduceSum(buffers[b], count: sizes[b])
        }
        Distributed.world.waitAll()
        for (b, members) in buckets.enumerated() {
            var at = buffers[b]
            for i in members {
                let p = parameters[i], n = p.value.count
                // A parameter no op read has no gradient on any process: it stays without one.
                if let g = p.grad { g.base.update(from: at, count: n) }
                at += n
            }
        }
        return (Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9, Double(early) / Double(Swift.max(buckets.count, 1)))
    }
}
