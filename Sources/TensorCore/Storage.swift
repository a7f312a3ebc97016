import CSpin
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A 64-byte-aligned Float32 buffer owned by one object; tensors share it by reference.
public final class Storage: @unchecked Sendable {
    public let count: Int
    public let base: UnsafeMutablePointer<Float>

    /// Uninitialised storage of `count` floats.
    public init(uninitializedCount count: Int) {
        self.count = count
        base = StoragePool.allocate(count)
    }

    /// Storage of `count` floats, all set to `value`.
    public convenience init(count: Int, repeating value: Float = 0) {
        self.init(uninitializedCount: count)
        if value == 0 {
            memset(base, 0, count * MemoryLayout<Float>.stride)
        } else {
            base.initialize(repeating: value, count: count)
        }
    }

    public convenience init(copying source: UnsafePointer<Float>, count: Int) {
        self.init(uninitializedCount: count)
        base.update(from: source, count: count)
    }

    deinit { StoragePool.deallocate(base, count) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }
}

/// Recycles large buffers by size class, so that a training step's allocations are served from
/// the previous step's: resident memory stays flat from the first steps on, and large buffers
/// do not pay mmap page faults on every op. Small buffers go straight to malloc.
public enum StoragePool {
    /// Buffers below this many floats are not pooled.
    static let minimumPooled = 256
    /// At most this many bytes are kept for reuse; beyond it buffers are freed.
    nonisolated(unsafe) public static var capacityBytes = 8 << 30
    nonisolated(unsafe) static var freeLists: [Int: [UnsafeMutablePointer<Float>]] = [:]
    nonisolated(unsafe) static var cachedBytes = 0
    static let lock = Lock()

    /// The size class of a request: the next of 2^k, 1.25, 1.5 and 1.75 times 2^k floats.
    @inline(__always)
    static func sizeClass(_ count: Int) -> Int {
        let top = Int.bitWidth - 1 - count.leadingZeroBitCount
        let quarter = Swift.max(1, (1 << top) >> 2)
        return (count + quarter - 1) / quarter * quarter
    }

    static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count >= minimumPooled {
            let size = sizeClass(count)
            lock.lock()
            let reused = freeLists[size]?.popLast()
            if reused != nil { cachedBytes -= size * 4 }
            lock.unlock()
            if let reused { return reused }
            return rawAllocate(size)
        }
        return rawAllocate(Swift.max(count, 1))
    }

    static func deallocate(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= minimumPooled {
            let size = sizeClass(count)
            lock.lock()
            let keep = cachedBytes + size * 4 <= capacityBytes
            if keep {
                freeLists[size, default: []].append(p)
                cachedBytes += size * 4
            }
            lock.unlock()
            if keep { return }
        }
        free(p)
    }

    /// Tells glibc's malloc to keep the pages of what is freed instead of handing them back to the
    /// kernel: no allocation is served by its own mmap (M_MMAP_MAX 0) and the heap is never trimmed
    /// (M_TRIM_THRESHOLD at its largest). Scratch outside the pool (kernels' arrays, OpenBLAS's
    /// outputs of the first touch, Swift arrays) then reuses warm pages: at its defaults a MAE step
    /// took about 19,000 page faults (77 MB zeroed by the kernel) after the first steps, with this
    /// none. Resident memory never shrinks below its peak, which a training process reaches in its
    /// first step anyway. Called once by the workbench at start.
    public static func keepFreedPages() {
        cmemory_keep_freed_pages()
    }

    /// Frees every cached buffer (for instance between two stages of a run).
    public static func trim() {
        lock.lock()
        for list in freeLists.values { for p in list { free(p) } }
        freeLists.removeAll()
        cachedBytes = 0
        lock.unlock()
    }

    static func rawAllocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        var raw: UnsafeMutableRawPointer?
        let bytes = count * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        return raw.bindMemory(to: Float.self, capacity: count)
    }
}

/// A pthread mutex at a stable address.
final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    @inline(__always) func lock() { pthread_mutex_lock(&mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(&mutex) }
}
