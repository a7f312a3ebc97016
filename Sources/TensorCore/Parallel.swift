import CSpin
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Row-split parallel loops. The partition depends only on the problem size and the thread count,
/// never on thread scheduling, so reductions that combine per-chunk partials in chunk order are
/// bit-reproducible.
public enum Parallel {
    /// Number of threads for element-wise and row-wise loops: the machine's cores (under mpirun,
    /// their share for each of the processes it started on the machine), or WORKBENCH_THREADS
    /// when it is set (e.g. to run two experiments side by side on one core each).
    public static var threads: Int { pool.workerCount + 1 }

    /// The environment variable that sets `threads`.
    public static let threadsVariable = "WORKBENCH_THREADS"

    /// WORKBENCH_THREADS as a thread count: nil when unset, `.failure` with the offending text when
    /// it is not a whole number from 1 to 1024 (the command line reports that before any work).
    public static func requestedThreads() -> Result<Int, ThreadSettingError>? {
        guard let text = ProcessInfo.processInfo.environment[threadsVariable] else { return nil }
        guard let n = Int(text.trimmingCharacters(in: .whitespaces)), (1...1024).contains(n) else { return .failure(ThreadSettingError(text: text)) }
        return .success(n)
    }

    public struct ThreadSettingError: Error, CustomStringConvertible {
        public let text: String
        public var description: String {
            "\(Parallel.threadsVariable)=\"\(text)\" is not a thread count: set it to a whole number from 1 to 1024 (e.g. 1), or unset it to use every core"
        }
    }

    static let pool: WorkerPool = {
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let n: Int
        if case .success(let requested)? = requestedThreads() {
            n = requested
        } else if let local = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap({ Int($0) }), local > 1 {
            // Processes that mpirun started on this machine share its cores.
            n = Swift.max(1, cores / local)
        } else {
            n = cores
        }
        return WorkerPool(workers: max(0, n - 1))
    }()

    /// Splits `0..<count` into at most `threads` contiguous chunks of at least `grain` items and
    /// runs `body` on each, concurrently when there is more than one chunk.
    @inline(__always)
    public static func forChunks(_ count: Int, grain: Int = 4096, _ body: (Range<Int>) -> Void) {
        forIndexedChunks(count, grain: grain) { _, range in body(range) }
    }

    /// As `forChunks`, also passing the chunk's number (0..<chunkCount(count, grain:)), for
    /// per-chunk partial buffers that are then combined in chunk order.
    @inline(__always)
    public static func forIndexedChunks(_ count: Int, grain: Int = 4096, _ body: (Int, Range<Int>) -> Void) {
        let chunks = chunkCount(count, grain: grain)
        if chunks <= 1 {
            if count > 0 { body(0, 0..<count) }
            return
        }
        pool.run(chunks: chunks) { c in body(c, chunkRange(c, of: chunks, count: count)) }
    }

    /// How many chunks `forChunks` uses for `count` items (a pure function of its arguments).
    @inline(__always)
    public static func chunkCount(_ count: Int, grain: Int) -> Int {
        Swift.max(1, Swift.min(threads, count / Swift.max(grain, 1)))
    }

    @inline(__always)
    public static func chunkRange(_ c: Int, of chunks: Int, count: Int) -> Range<Int> {
        let lo = c * count / chunks
        let hi = (c + 1) * count / chunks
        return lo..<hi
    }
}

/// Persistent worker threads that share the chunks of one job with the calling thread.
/// (libdispatch's concurrentPerform keeps memory per call on Linux; this pool allocates nothing
/// per job.) A job started while another runs, e.g. from inside a chunk, runs serially.
///
/// A training step issues thousands of short jobs. Sleeping on the condition variable between
/// them costs a futex wake-up and a context switch per job, tens of microseconds on a VM, so a
/// worker that runs out of chunks first spins (with the CPU's pause hint) for up to
/// `workerSpin` for the next job, and the caller spins up to `callerSpin` for the workers'
/// last chunks, before either sleeps. The job state stays under the mutex; the spins only read
/// two atomics that mirror it.
final class WorkerPool: @unchecked Sendable {
    let workerCount: Int
    private var mutex = pthread_mutex_t()
    private var workAvailable = pthread_cond_t()
    private var workDone = pthread_cond_t()
    private var generation: UInt64 = 0
    private var job: ((Int) -> Void)?
    private var chunks = 0, nextChunk = 0, remaining = 0
    private var busy = false
    /// `generation` and `remaining`, readable without the mutex (written under it).
    private let publishedGeneration = Atomic<UInt64>(0)
    private let publishedRemaining = Atomic<Int>(0)

    /// 50 microseconds each: on this 2-core VM the EsViT step went from 220 to 236 img/s (five
    /// alternating bench-step pairs); longer worker spins slowed the supervised ViT step, whose
    /// big products leave the caller's serial work exposed to a spinning neighbour.
    static let workerSpin: UInt64 = 50_000  // ns
    static let callerSpin: UInt64 = 50_000  // ns

    init(workers: Int) {
        workerCount = workers
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&workAvailable, nil)
        pthread_cond_init(&workDone, nil)
        for _ in 0..<workers {
            let thread = Thread { [unowned self] in self.workerLoop() }
            thread.name = "tensor-worker"
            thread.start()
        }
    }

    func run(chunks count: Int, _ body: (Int) -> Void) {
        pthread_mutex_lock(&mutex)
        if busy || workerCount == 0 {
            pthread_mutex_unlock(&mutex)
            for c in 0..<count { body(c) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            busy = true
            job = escapable
            chunks = count
            nextChunk = 0
            remaining = count
            publishedRemaining.store(count, ordering: .releasing)
            generation &+= 1
            publishedGeneration.store(generation, ordering: .releasing)
            pthread_cond_broadcast(&workAvailable)
            drainChunks()
            if remaining > 0 {
                pthread_mutex_unlock(&mutex)
                Self.spin(for: Self.callerSpin) { publishedRemaining.load(ordering: .acquiring) == 0 }
                pthread_mutex_lock(&mutex)
                while remaining > 0 { pthread_cond_wait(&workDone, &mutex) }
            }
            job = nil
            busy = false
        }
        pthread_mutex_unlock(&mutex)
    }

    /// Takes chunks until none is left; called and returns with the mutex held.
    private func drainChunks() {
        while nextChunk < chunks, let body = job {
            let c = nextChunk
            nextChunk += 1
            pthread_mutex_unlock(&mutex)
            body(c)
            pthread_mutex_lock(&mutex)
            remaining -= 1
            publishedRemaining.store(remaining, ordering: .releasing)
            if remaining == 0 { pthread_cond_signal(&workDone) }
        }
    }

    private func workerLoop() {
        var seen: UInt64 = 0
        pthread_mutex_lock(&mutex)
        while true {
            if generation == seen {
                pthread_mutex_unlock(&mutex)
                Self.spin(for: Self.workerSpin) { publishedGeneration.load(ordering: .acquiring) != seen }
                pthread_mutex_lock(&mutex)
                while generation == seen { pthread_cond_wait(&workAvailable, &mutex) }
            }
            seen = generation
            drainChunks()
        }
    }

    /// Polls `done` with the pause hint until it holds or `nanoseconds` have passed.
    @inline(__always)
    private static func spin(for nanoseconds: UInt64, until done: () -> Bool) {
        let start = DispatchTime.now().uptimeNanoseconds
        while !done() {
            for _ in 0..<32 { cspin_relax() }
            if DispatchTime.now().uptimeNanoseconds &- start > nanoseconds { return }
        }
    }
}
