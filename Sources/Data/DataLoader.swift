import Foundation
import TensorCore

/// One batch: normalised images (B, C, H, W), their labels and their indices in the data set,
/// and, when the loader has a view pipeline, the augmented views (one tensor per view).
public struct Batch {
    public let images: Tensor
    public let labels: [Int]
    public let indices: [Int]
    public var views: [Tensor] = []
}

/// Batches of a data set: a seeded shuffle per epoch, normalisation ((x - mean) / std per
/// channel), optional per-image horizontal flips, and a background thread that prepares the
/// next batches while the model trains on the current one.
public final class DataLoader: Sequence {
    public let dataset: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let dropLast: Bool
    public let mean: [Float], std: [Float]
    public let horizontalFlip: Bool
    public let seed: UInt64
    /// Batches prepared ahead of the consumer.
    public let prefetch: Int
    /// Augmented views to make of every image (on the prefetch thread), for the siamese objectives.
    public var views: ViewPipeline?

    public init(_ dataset: Dataset, batchSize: Int, shuffle: Bool, dropLast: Bool, mean: [Float], std: [Float],
                horizontalFlip: Bool = false, seed: UInt64, prefetch: Int = 2) {
        precondition(batchSize > 0, "batch size must be positive")
        precondition(mean.count == dataset.imageShape[0] || mean.count == 1, "one mean per channel")
        self.dataset = dataset
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.dropLast = dropLast
        self.mean = mean
        self.std = std
        self.horizontalFlip = horizontalFlip
        self.seed = seed
        self.prefetch = prefetch
        epoch = 0
    }

    /// The epoch the next iteration runs (its order and flips depend on it). Set it to resume.
    public var epoch: Int

    public var batchesPerEpoch: Int { dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize }

    /// The order of epoch `e`: a permutation seeded by (seed, e), or 0..<count.
    public func order(epoch e: Int) -> [Int] {
        shuffle ? RandomStream(seed: seed &+ UInt64(e), purpose: "data order").permutation(dataset.count) : Array(0..<dataset.count)
    }

    /// Builds batch `b` of `order` (flips and views drawn from streams seeded by (seed, epoch, batch)).
    public func makeBatch(_ b: Int, of order: [Int], epoch e: Int) -> Batch {
        let lo = b * batchSize, hi = Swift.min(lo + batchSize, order.count)
        let indices = Array(order[lo..<hi])
        let shape = dataset.imageShape
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let size = c * h * w
        let storage = Storage(uninitializedCount: indices.count * size)
        let flips = RandomStream(seed: seed &+ UInt64(e) &* 1_000_003 &+ UInt64(b), purpose: "flip")
        for (k, index) in indices.enumerated() {
            let out = storage.base + k * size
            dataset.copyImage(at: index, into: out)
            for ch in 0..<c {
                let m = mean[mean.count == 1 ? 0 : ch], s = 1 / std[std.count == 1 ? 0 : ch]
                let plane = out + ch * h * w
                for i in 0..<(h * w) { plane[i] = (plane[i] - m) * s }
            }
            if horizontalFlip && flips.nextFloat() < 0.5 {
                for row in 0..<(c * h) {
                    let r = out + row * w
                    for x in 0..<(w / 2) { (r[x], r[w - 1 - x]) = (r[w - 1 - x], r[x]) }
                }
            }
        }
        var batch = Batch(images: Tensor(shape: [indices.count, c, h, w], storage: storage),
                          labels: indices.map { dataset.label(at: $0) }, indices: indices)
        if let views {
            let rng = RandomStream(seed: seed &+ UInt64(e) &* 1_000_003 &+ UInt64(b), purpose: "views")
            let images = indices.map { index -> AugmentImage in
                var image = AugmentImage(channels: c, height: h, width: w, pixels: [Float](repeating: 0, count: size))
                image.pixels.withUnsafeMutableBufferPointer { dataset.copyImage(at: index, into: $0.baseAddress!) }
                return image
            }
            batch.views = views.makeViews(images: images, mean: mean, std: std, rng: rng)
        }
        return batch
    }

    /// Iterates one epoch (then increments `epoch`), with batches prepared on a background thread.
    public func makeIterator() -> PrefetchIterator {
        let e = epoch
        epoch += 1
        return PrefetchIterator(loader: self, epoch: e)
    }

    /// Iterates epoch `e` from batch `start` on (for a resumed run), with `epoch` left at e + 1.
    public func iterate(epoch e: Int, from start: Int) -> PrefetchIterator {
        epoch = e + 1
        return PrefetchIterator(loader: self, epoch: e, start: start)
    }
}

/// Delivers an epoch's batches in order; a worker thread fills a bounded queue ahead of it. The
/// thread holds only the queue, so an iterator dropped mid-epoch cancels it and the thread ends.
public final class PrefetchIterator: IteratorProtocol {
    let queue: BatchQueue
    let total: Int
    private var position = 0

    init(loader: DataLoader, epoch: Int, start: Int = 0) {
        total = loader.batchesPerEpoch
        position = Swift.min(start, total)
        let queue = BatchQueue(capacity: loader.prefetch)
        self.queue = queue
        let order = loader.order(epoch: epoch)
        let total = total
        let thread = Thread {
            for b in Swift.min(start, total)..<total {
                guard queue.waitForRoom() else { return }
                queue.put(b, loader.makeBatch(b, of: order, epoch: epoch))
            }
        }
        thread.name = "data-prefetch"
        thread.start()
    }

    deinit { queue.cancel() }

    public func next() -> Batch? {
        guard position < total else { return nil }
        defer { position += 1 }
        return queue.take(position)
    }
}

/// Batches handed from the prefetch thread to the consumer, at most `capacity` waiting.
final class BatchQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var ready: [Int: Batch] = [:]
    private var cancelled = false
    let capacity: Int

    init(capacity: Int) { self.capacity = Swift.max(1, capacity) }

    /// Blocks until there is room; false once cancelled.
    func waitForRoom() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && ready.count >= capacity { condition.wait() }
        return !cancelled
    }

    func put(_ index: Int, _ batch: Batch) {
        condition.lock()
        ready[index] = batch
        condition.broadcast()
        condition.unlock()
    }

    func take(_ index: Int) -> Batch {
        condition.lock()
        defer { condition.unlock() }
        while ready[index] == nil { condition.wait() }
        let batch = ready.removeValue(forKey: index)!
        condition.broadcast()
        return batch
    }

    func cancel() {
        condition.lock()
        cancelled = true
        ready.removeAll()
        condition.broadcast()
        condition.unlock()
    }
}
