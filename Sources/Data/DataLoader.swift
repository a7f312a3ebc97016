import Foundation
import TensorCore

/// One batch: normalised images (B, C, H, W), their labels and their indices in the data set,
/// and, when the loader has a view pipeline, the augmented views (one tensor per view).
public struct Batch {
    public let images: Tensor
    public let labels: [Int]
    public let indices: [Int]
    public var views: [Tensor] = []
    /// Where these rows start in the global batch, and its size (a process's share; 0 and the
    /// batch's own size in one process).
    public var rowOffset = 0
    public var globalRows = 0
}

/// Batches of a data set: a seeded shuffle per epoch, the evaluation transform (or, for
/// training, `trainTransform`: RandomResizedCrop), normalisation ((x - mean) / std per channel),
/// optional per-image horizontal flips, and `workers` threads that prepare whole batches ahead of
/// the consumer. Every random choice for image k of batch b of epoch e comes from streams seeded
/// by (seed, e, b, k), so the batches do not depend on the number of workers or processes.
public final class DataLoader {
    public let dataset: Dataset
    public let batchSize: Int
    public let shuffle: Bool
    public let dropLast: Bool
    public let mean: [Float], std: [Float]
    public let horizontalFlip: Bool
    public let seed: UInt64
    /// Batches prepared ahead of the consumer (at least one per worker).
    public let prefetch: Int
    /// Threads that read, decode and transform batches.
    public let workers: Int
    /// Augmented views to make of every image (on the worker threads), for the siamese objectives.
    public var views: ViewPipeline?
    /// The training transform (RandomResizedCrop); nil: the data set's evaluation transform.
    public var trainTransform: ImageTransform?

    /// The workers of loaders not told otherwise (the runner sets it from data.workers).
    nonisolated(unsafe) public static var defaultWorkers = 1

    public init(_ dataset: Dataset, batchSize: Int, shuffle: Bool, dropLast: Bool, mean: [Float], std: [Float],
                horizontalFlip: Bool = false, seed: UInt64, prefetch: Int = 2, workers: Int? = nil) {
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
        self.workers = Swift.max(1, workers ?? Self.defaultWorkers)
        self.prefetch = Swift.max(prefetch, self.workers)
        epoch = 0
    }

    /// The epoch the next iteration runs (its order and flips depend on it). Set it to resume.
    public var epoch: Int

    public var batchesPerEpoch: Int { dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize }

    /// (channels, height, width) of the batches' images.
    public var imageShape: [Int] {
        let shape = dataset.imageShape
        guard let t = trainTransform else { return shape }
        return [shape[0], t.size, t.size]
    }

    /// The order of epoch `e`: a permutation seeded by (seed, e), or 0..<count.
    public func order(epoch e: Int) -> [Int] {
        shuffle ? RandomStream(seed: seed &+ UInt64(e), purpose: "data order").permutation(dataset.count) : Array(0..<dataset.count)
    }

    /// Image `index` as the pipeline makes it (before normalisation and flips), and, when
    /// `keepSource`, the stored image the views are cut from. `crops` draws the random crop.
    public func transformed(_ index: Int, decoder: ImageDecoder, crops: RandomStream?, keepSource: Bool = false) throws
        -> (image: AugmentImage, source: AugmentImage?) {
        let transform = trainTransform ?? dataset.transform
        var plan: ImageTransform.Plan?
        let source = try dataset.image(at: index, decoder: decoder) { h, w in
            guard let transform, !transform.isIdentity(height: h, width: w) else { return .whole }
            plan = transform.plan(height: h, width: w, rng: crops)
            return keepSource ? .whole : DecodeRequest(reduction: plan!.reduction, region: plan!.box)
        }
        var image: AugmentImage
        if let transform, let plan {
            // Only the crop becomes floats; the transform then reads it from its origin.
            var held = plan.scaled(fromHeight: source.storedHeight, width: source.storedWidth, toHeight: source.height, width: source.width)
            let crop = source.crop(held.box)
            held.box = Augment.Box(top: 0, left: 0, height: held.box.height, width: held.box.width)
            image = transform.apply(held, to: crop)
        } else {
            image = source.image
        }
        let shape = imageShape
        guard image.channels == shape[0], image.height == shape[1], image.width == shape[2] else {
            throw ImageDecodingError("image \(index) of \(dataset.name) is \(image.channels)x\(image.height)x\(image.width), not \(shape[0])x\(shape[1])x\(shape[2])")
        }
        return (image, keepSource ? source.image : nil)
    }

    /// Whether each process builds only its share of every batch (data-parallel training): rows
    /// `Distributed.share(of: batch rows)` of the global batch. One process builds all of it.
    public var sharded = false

    /// Builds batch `b` of `order`: the whole batch, or, when `sharded`, this process's share of
    /// it. Image k of the batch draws its flip, crop and views from streams seeded by
    /// (seed, epoch, batch, k), so an image's augmentations depend neither on the number of
    /// workers nor on the number of processes.
    public func makeBatch(_ b: Int, of order: [Int], epoch e: Int, decoder: ImageDecoder = ImageDecoder()) throws -> Batch {
        let lo = b * batchSize, hi = Swift.min(lo + batchSize, order.count)
        let rows = sharded ? Distributed.share(of: hi - lo) : 0 ..< (hi - lo)
        let indices = Array(order[(lo + rows.lowerBound) ..< (lo + rows.upperBound)])
        let shape = imageShape
        let (c, h, w) = (shape[0], shape[1], shape[2])
        let size = c * h * w
        let storage = Storage(uninitializedCount: indices.count * size)
        let batchSeed = seed &+ UInt64(e) &* 1_000_003 &+ UInt64(b)
        func imageSeed(_ k: Int) -> UInt64 { batchSeed &+ UInt64(rows.lowerBound + k) &* 0x9E37_79B9_7F4A_7C15 }
        var sources: [AugmentImage] = []
        for (k, index) in indices.enumerated() {
            let crops = trainTransform == nil ? nil : RandomStream(seed: imageSeed(k), purpose: "crop")
            let (image, source) = try transformed(index, decoder: decoder, crops: crops, keepSource: views != nil)
            if let source { sources.append(source) }
            let out = storage.base + k * size
            image.pixels.withUnsafeBufferPointer { src in
                for ch in 0..<c {
                    let m = mean[mean.count == 1 ? 0 : ch], s = 1 / std[std.count == 1 ? 0 : ch]
                    let plane = out + ch * h * w, from = src.baseAddress! + ch * h * w
                    for i in 0..<(h * w) { plane[i] = (from[i] - m) * s }
                }
            }
            if horizontalFlip && RandomStream(seed: imageSeed(k), purpose: "flip").nextFloat() < 0.5 {
                for row in 0..<(c * h) {
                    let r = out + row * w
                    for x in 0..<(w / 2) { (r[x], r[w - 1 - x]) = (r[w - 1 - x], r[x]) }
                }
            }
        }
        var batch = Batch(images: Tensor(shape: [indices.count, c, h, w], storage: storage),
                          labels: indices.map { dataset.label(at: $0) }, indices: indices)
        (batch.rowOffset, batch.globalRows) = (rows.lowerBound, hi - lo)
        if let views {
            batch.views = views.makeViews(images: sources, mean: mean, std: std,
                                          rngs: indices.indices.map { RandomStream(seed: imageSeed($0), purpose: "views") })
        }
        return batch
    }

    /// Iterates one epoch (then increments `epoch`), with batches prepared on the worker threads.
    public func batches() -> PrefetchIterator {
        let e = epoch
        epoch += 1
        return PrefetchIterator(loader: self, epoch: e)
    }

    /// Every batch of the next epoch (for tests and small sets; training iterates `batches()`).
    public func allBatches() throws -> [Batch] {
        let iterator = batches()
        var out: [Batch] = []
        while let batch = try iterator.next() { out.append(batch) }
        return out
    }

    /// Iterates epoch `e` from batch `start` on (for a resumed run), with `epoch` left at e + 1.
    public func iterate(epoch e: Int, from start: Int) -> PrefetchIterator {
        epoch = e + 1
        return PrefetchIterator(loader: self, epoch: e, start: start)
    }
}

/// Delivers an epoch's batches in order, or the error that stopped one; `workers` threads fill a
/// bounded queue ahead of it, each with its own decoder. The threads hold only the queue, so an
/// iterator dropped mid-epoch cancels it and the threads end.
public final class PrefetchIterator {
    let queue: BatchQueue
    let total: Int
    private var position = 0

    init(loader: DataLoader, epoch: Int, start: Int = 0) {
        total = loader.batchesPerEpoch
        position = Swift.min(start, total)
        let queue = BatchQueue(capacity: loader.prefetch, first: position, end: total)
        self.queue = queue
        let order = loader.order(epoch: epoch)
        for worker in 0..<Swift.min(loader.workers, Swift.max(total - position, 1)) {
            let thread = Thread {
                let decoder = ImageDecoder()
                while let b = queue.claim() {
                    queue.put(b, Result { try loader.makeBatch(b, of: order, epoch: epoch, decoder: decoder) })
                }
            }
            thread.name = "data-\(worker)"
            thread.start()
        }
    }

    deinit { queue.cancel() }

    /// The next batch, nil at the end of the epoch, or the error that stopped one.
    public func next() throws -> Batch? {
        guard position < total else { return nil }
        defer { position += 1 }
        return try queue.take(position).get()
    }
}

/// Batches handed from the worker threads to the consumer: workers claim batch numbers in order
/// while fewer than `capacity` are claimed and not yet taken.
final class BatchQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var ready: [Int: Result<Batch, Error>] = [:]
    private var cancelled = false
    private var nextClaim: Int, taken: Int
    private let end: Int
    let capacity: Int

    init(capacity: Int, first: Int, end: Int) {
        self.capacity = Swift.max(1, capacity)
        (nextClaim, taken, self.end) = (first, first, end)
    }

    /// The next batch number to build, once there is room; nil at the end or once cancelled.
    func claim() -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && nextClaim < end && nextClaim - taken >= capacity { condition.wait() }
        guard !cancelled, nextClaim < end else { return nil }
        nextClaim += 1
        return nextClaim - 1
    }

    func put(_ index: Int, _ batch: Result<Batch, Error>) {
        condition.lock()
        if !cancelled { ready[index] = batch }
        condition.broadcast()
        condition.unlock()
    }

    func take(_ index: Int) -> Result<Batch, Error> {
        condition.lock()
        defer { condition.unlock() }
        while ready[index] == nil { condition.wait() }
        let batch = ready.removeValue(forKey: index)!
        taken = index + 1
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
