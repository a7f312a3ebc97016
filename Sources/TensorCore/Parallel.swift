import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Row-split parallel loops. The partition depends only on the problem size, never on thread
/// scheduling, so reductions that combine per-chunk partials in chunk order are bit-reproducible.
public enum Parallel {
    /// Number of threads for element-wise and row-wise loops (the machine's cores).
    public static var threads: Int { pool.workerCount + 1 }

    static let pool = WorkerPool(workers: max(0, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1))

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
final class WorkerPool: @unchecked Sendable {
    let workerCount: Int
    private var mutex = pthread_mutex_t()
    private var workAvailable = pthread_cond_t()
    private var workDone = pthread_cond_t()
    private var generation: UInt64 = 0
    private var job: ((Int) -> Void)?
    private var chunks = 0, nextChunk = 0, remaining = 0
    private var busy = false

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
            generation &+= 1
            pthread_cond_broadcast(&workAvailable)
            drainChunks()
            while remaining > 0 { pthread_cond_wait(&workDone, &mutex) }
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
            if remaining == 0 { pthread_cond_signal(&workDone) }
        }
    }

    private func workerLoop() {
        var seen: UInt64 = 0
        pthread_mutex_lock(&mutex)
        while true {
            while generation == seen { pthread_cond_wait(&workAvailable, &mutex) }
            seen = generation
            drainChunks()
        }
    }
}
