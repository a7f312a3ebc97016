/// The processes a run is spread over (data parallelism), as the engine sees them: collectives
/// over plain buffers. One process (`SingleProcess`, the default) makes every collective a no-op;
/// the Cluster target installs Open MPI's (`Distributed.world = ...`) when the workbench runs
/// under mpirun. Every collective must be called by every process, in the same order.
public protocol Communicator: AnyObject {
    /// This process's number, 0 ..< size; rank 0 writes the run folder.
    var rank: Int { get }
    var size: Int { get }
    /// Element-wise sum over every process, in place.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int)
    /// Every process's `send` (counts[rank] floats), concatenated in rank order into `result`
    /// (sum(counts) floats) on every process.
    func allgather(_ send: UnsafePointer<Float>, count: Int, into result: UnsafeMutablePointer<Float>, counts: [Int])
    /// Starts an element-wise sum over every process, in place, without waiting for it (the
    /// buffer must not be touched until `waitAll`).
    func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int)
    /// Lets started sums move on (MPI progresses non-blocking collectives inside its calls).
    func progress()
    /// Waits until every started sum has completed.
    func waitAll()
    func barrier()
}

/// The communicator of a run in one process.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {}
    public func allgather(_ send: UnsafePointer<Float>, count: Int, into result: UnsafeMutablePointer<Float>, counts: [Int]) {
        result.update(from: send, count: count)
    }
    public func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {}
    public func progress() {}
    public func waitAll() {}
    public func barrier() {}
}

public enum Distributed {
    /// Set once at start-up, before any work.
    nonisolated(unsafe) public static var world: any Communicator = SingleProcess()
    public static var rank: Int { world.rank }
    public static var size: Int { world.size }
    public static var isMultiProcess: Bool { world.size > 1 }

    /// The contiguous share of `count` items (a global batch's rows, a data set's images) that
    /// process `rank` of `size` handles: sizes differ by at most one, lower ranks take the extra.
    public static func share(of count: Int, rank: Int = Distributed.rank, size: Int = Distributed.size) -> Range<Int> {
        let base = count / size, extra = count % size
        let lo = rank * base + Swift.min(rank, extra)
        return lo ..< lo + base + (rank < extra ? 1 : 0)
    }

    /// The rows of the global batch this process trains on in the step being taken (its first
    /// row and the global batch's size), set by the training loop for the step; nil outside a
    /// step or in one process. Objectives draw per-image randomness (masks) for the global batch
    /// and keep these rows, so that it does not depend on the number of processes.
    nonisolated(unsafe) public static var stepRows: (offset: Int, global: Int)?

    /// The rows a draw for `local` images must cover: the global batch when this process trains on
    /// a share of it, the images themselves otherwise.
    public static func drawRows(local: Int) -> (offset: Int, global: Int) {
        guard let rows = stepRows, isMultiProcess else { return (0, local) }
        return rows
    }

    /// Sums a few doubles over every process (counts, losses, statistics); returns them.
    public static func sum(_ values: [Double]) -> [Double] {
        guard isMultiProcess else { return values }
        var out = values
        out.withUnsafeMutableBufferPointer { world.allreduceSum($0.baseAddress!, count: $0.count) }
        return out
    }
}
