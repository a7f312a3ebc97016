import Dispatch
import TensorCore

/// Data parallelism's gradient exchange: every process's parameter gradients, each scaled by
/// `weight` (its share of the global batch), summed over processes in contiguous buckets of
/// parameters (one MPI_Allreduce per bucket, not one per tensor), so that every process holds the
/// global batch's gradient and takes the same optimizer step.
///
/// Buckets are filled in reverse parameter order, the order in which backward completes them.
/// The exchange starts after backward; overlapping it with backward is not done.
public enum GradientSync {
    /// Floats per bucket (16 MiB).
    public static let bucketFloats = 1 << 22

    /// Returns the seconds spent in the exchange.
    @discardableResult
    public static func combine(_ parameters: [Parameter], weight: Float) -> Double {
        guard Distributed.isMultiProcess else { return 0 }
        let start = DispatchTime.now().uptimeNanoseconds
        // Every process has the same parameters with gradients (the same model and step), so
        // every process builds the same buckets.
        let grads = parameters.reversed().compactMap { $0.isFrozen ? nil : $0.grad }
        let bucket = UnsafeMutablePointer<Float>.allocate(capacity: Swift.min(bucketFloats, Swift.max(1, grads.reduce(0) { $0 + $1.count })))
        defer { bucket.deallocate() }
        var members: [(Tensor, Int, Int)] = []   // (gradient, its first element, count) in the bucket
        var filled = 0
        func flush() {
            guard filled > 0 else { return }
            Distributed.world.allreduceSum(bucket, count: filled)
            var at = 0
            for (g, first, n) in members {
                (g.base + first).update(from: bucket + at, count: n)
                at += n
            }
            members.removeAll(keepingCapacity: true)
            filled = 0
        }
        for g in grads {
            var first = 0
            while first < g.count {
                let n = Swift.min(g.count - first, bucketFloats - filled)
                let src = g.base + first, dst = bucket + filled
                for i in 0..<n { dst[i] = src[i] * weight }
                members.append((g, first, n))
                filled += n
                first += n
                if filled == bucketFloats { flush() }
            }
        }
        flush()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
