import CMPI
import Foundation
import TensorCore

/// Data parallelism over Open MPI: when the workbench is started by mpirun (Open MPI sets
/// OMPI_COMM_WORLD_SIZE in every process it starts), `Cluster.start()` initialises MPI and
/// installs its communicator as `Distributed.world`; otherwise nothing happens and the run is the
/// one-process run it always was (libmpi is linked, but never initialised).
public enum Cluster {
    /// The processes on this machine, from mpirun's environment (1 outside mpirun).
    public static var localSize: Int {
        Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
    }

    /// Whether this process was started by mpirun.
    public static var launchedByMPI: Bool {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil
    }

    nonisolated(unsafe) static var started = false

    /// Initialises MPI when launched by mpirun; returns the world's size.
    @discardableResult
    public static func start() -> Int {
        guard launchedByMPI, !started else { return Distributed.size }
        var provided: Int32 = 0
        // Every collective is called from the thread that runs the model (FUNNELED).
        let rc = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
        guard rc == cmpi_success() else {
            FileHandle.standardError.write(Data("workbench: MPI_Init_thread failed (error \(rc)); is this Open MPI's mpirun?\n".utf8))
            exit(1)
        }
        started = true
        Distributed.world = MPICommunicator()
        return Distributed.size
    }

    /// Ends MPI cleanly (every process must call it once its work is done).
    public static func finish() {
        guard started else { return }
        started = false
        MPI_Finalize()
    }

    /// Ends every process of the run with `code` (a failure on one process that the others would
    /// wait for in a collective forever).
    public static func abort(_ code: Int32) -> Never {
        if started { MPI_Abort(cmpi_comm_world(), code) }
        exit(code)
    }
}

/// MPI_COMM_WORLD's collectives. A failed call aborts the job (MPI's default error handler).
final class MPICommunicator: Communicator {
    let rank: Int
    let size: Int
    let comm = cmpi_comm_world()

    init() {
        var r: Int32 = 0, s: Int32 = 1
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        (rank, size) = (Int(r), Int(s))
    }

    /// MPI counts are Int32: long buffers go in pieces.
    private func pieces(_ count: Int, _ body: (Int, Int32) -> Void) {
        let most = Int(Int32.max / 2)
        var start = 0
        while start < count {
            let n = Swift.min(most, count - start)
            body(start, Int32(n))
            start += n
        }
    }

    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        pieces(count) { start, n in _ = MPI_Allreduce(cmpi_in_place(), buffer + start, n, cmpi_float(), cmpi_sum(), comm) }
    }

    func allreduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {
        pieces(count) { start, n in _ = MPI_Allreduce(cmpi_in_place(), buffer + start, n, cmpi_double(), cmpi_sum(), comm) }
    }

    func allgather(_ send: UnsafePointer<Float>, count: Int, into result: UnsafeMutablePointer<Float>, counts: [Int]) {
        precondition(counts.count == size && counts[rank] == count, "allgather: counts \(counts) do not fit rank \(rank)'s \(count)")
        // MPI's counts and displacements are Int32: 2^31 floats (8 GiB) at most in all.
        precondition(counts.reduce(0, +) < Int(Int32.max), "allgather: \(counts.reduce(0, +)) floats are more than one MPI call gathers")
        var sizes = counts.map { Int32($0) }
        var displacements = [Int32](repeating: 0, count: size)
        for r in 1..<size { displacements[r] = displacements[r - 1] + sizes[r - 1] }
        _ = MPI_Allgatherv(send, Int32(count), cmpi_float(), result, &sizes, &displacements, cmpi_float(), comm)
    }

    /// Requests of the sums started and not yet waited for.
    private var pending: [MPI_Request?] = []

    func startAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) {
        pieces(count) { start, n in
            var request: MPI_Request?
            _ = MPI_Iallreduce(cmpi_in_place(), buffer + start, n, cmpi_float(), cmpi_sum(), comm, &request)
            pending.append(request)
        }
    }

    func progress() {
        guard !pending.isEmpty else { return }
        var done: Int32 = 0
        _ = MPI_Testall(Int32(pending.count), &pending, &done, cmpi_statuses_ignore())
    }

    func waitAll() {
        guard !pending.isEmpty else { return }
        _ = MPI_Waitall(Int32(pending.count), &pending, cmpi_statuses_ignore())
        pending.removeAll()
    }

    func barrier() { _ = MPI_Barrier(comm) }
}
