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
        var raw: UnsafeMutableRawPointer?
        let bytes = Swift.max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        base = raw.bindMemory(to: Float.self, capacity: Swift.max(count, 1))
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

    deinit { free(base) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }
}
