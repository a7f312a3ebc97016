import Dispatch

/// Row-split parallel loops. The partition depends only on the problem size, never on thread
/// scheduling, so reductions that combine per-chunk partials in chunk order are bit-reproducible.
public enum Parallel {
    /// Number of worker threads for element-wise and row-wise loops (the machine's cores).
    nonisolated(unsafe) public static var threads: Int = Swift.max(1, ProcessInfoCores.count)

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
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            body(c, chunkRange(c, of: chunks, count: count))
        }
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

enum ProcessInfoCores {
    static var count: Int {
        #if canImport(Glibc)
        return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #else
        return 2
        #endif
    }
}
#if canImport(Glibc)
import Glibc
#endif
