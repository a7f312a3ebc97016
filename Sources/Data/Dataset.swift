import Foundation
import TensorCore

/// A labelled image data set. Images come as floats in [0, 1], channel-first, at their stored
/// size: fixed for byte-backed sets (IDX, CIFAR, STL-10, arrays), each file's own for image
/// folders. `transform` says how the evaluation pipeline makes them (C, H, W) = `imageShape`.
public protocol Dataset {
    var name: String { get }
    var count: Int { get }
    /// (channels, height, width) of the images the evaluation pipeline gives.
    var imageShape: [Int] { get }
    var classCount: Int { get }
    func label(at index: Int) -> Int
    /// Image `index` at its stored size; `request(storedHeight, storedWidth)` may ask a JPEG
    /// file for a DCT-domain reduction (1, 2, 4 or 8) and for the region a crop reads alone.
    /// The decoder is the calling thread's own.
    func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage
    /// How stored images become `imageShape` for evaluation; nil: they already are that size.
    var transform: ImageTransform? { get }
    /// The index of item `index` in the data set it was taken from (subsets map back to it).
    func sourceIndex(at index: Int) -> Int
}

extension Dataset {
    public func sourceIndex(at index: Int) -> Int { index }
    public var transform: ImageTransform? { nil }

    /// Image `index` at its stored size, as (C * H * W) floats in [0, 1].
    public func pixels(at index: Int) throws -> [Float] {
        try image(at: index, decoder: ImageDecoder()) { _, _ in .whole }.image.pixels
    }
}

/// What a decode is asked for: a DCT-domain reduction (JPEG: 1, 2, 4 or 8) and the region of
/// the stored image a crop will read (nil: all of it).
public struct DecodeRequest: Equatable, Sendable {
    public var reduction: Int
    public var region: Augment.Box?
    public init(reduction: Int, region: Augment.Box?) { (self.reduction, self.region) = (reduction, region) }
    public static let whole = DecodeRequest(reduction: 1, region: nil)
}

/// An image as a data set gives it, with the size it is stored at (before a JPEG reduction):
/// floats already, or decoded bytes (perhaps of a region only) that become floats only where a
/// crop reads them.
public struct SourceImage {
    private var planar: AugmentImage?
    private var bytes: DecodedRegion?
    public var storedHeight: Int, storedWidth: Int

    public init(image: AugmentImage, storedHeight: Int, storedWidth: Int) {
        (planar, self.storedHeight, self.storedWidth) = (image, storedHeight, storedWidth)
    }

    public init(decoded: DecodedRegion, storedHeight: Int, storedWidth: Int) {
        (bytes, self.storedHeight, self.storedWidth) = (decoded, storedHeight, storedWidth)
    }

    /// The size of the image as decoded (a reduced JPEG is smaller than its stored size).
    public var height: Int { planar?.height ?? bytes!.fullHeight }
    public var width: Int { planar?.width ?? bytes!.fullWidth }

    /// The whole image as channel-first floats in [0, 1] (only for a whole decode).
    public var image: AugmentImage {
        planar ?? crop(Augment.Box(top: 0, left: 0, height: height, width: width))
    }

    /// `box` of the image as channel-first floats (the whole image when the box covers it); the
    /// box must lie in the decoded region.
    public func crop(_ box: Augment.Box) -> AugmentImage {
        if let bytes {
            return ImageFolder.planar(bytes.image, box: Augment.Box(top: box.top - bytes.top, left: box.left - bytes.left, height: box.height, width: box.width))
        }
        let image = planar!
        if box == Augment.Box(top: 0, left: 0, height: image.height, width: image.width) { return image }
        var out = [Float](repeating: 0, count: image.channels * box.height * box.width)
        for ch in 0..<image.channels {
            for y in 0..<box.height {
                let from = (ch * image.height + box.top + y) * image.width + box.left
                out.replaceSubrange(((ch * box.height + y) * box.width)..<((ch * box.height + y + 1) * box.width), with: image.pixels[from..<(from + box.width)])
            }
        }
        return AugmentImage(channels: image.channels, height: box.height, width: box.width, pixels: out)
    }
}

/// A data set of same-sized images held in (or read from) byte arrays, copied out one at a time.
public protocol StoredImageDataset: Dataset {
    /// Writes image `index` as floats in [0, 1] into `out` (C * H * W floats).
    func copyImage(at index: Int, into out: UnsafeMutablePointer<Float>)
}

extension StoredImageDataset {
    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        let shape = imageShape
        _ = request(shape[1], shape[2])
        var image = AugmentImage(channels: shape[0], height: shape[1], width: shape[2], pixels: [Float](repeating: 0, count: shape.reduce(1, *)))
        image.pixels.withUnsafeMutableBufferPointer { copyImage(at: index, into: $0.baseAddress!) }
        return SourceImage(image: image, storedHeight: shape[1], storedWidth: shape[2])
    }
}

/// A data set seen through an evaluation transform (Resize + CenterCrop to `transform.size`):
/// a stored set at another size than its own, or with a crop fraction below 1.
public struct Transformed: Dataset {
    public let base: Dataset
    public let transform: ImageTransform?
    public init(_ base: Dataset, _ transform: ImageTransform) { (self.base, self.transform) = (base, transform) }
    public var name: String { base.name }
    public var count: Int { base.count }
    public var imageShape: [Int] { [base.imageShape[0], transform!.size, transform!.size] }
    public var classCount: Int { base.classCount }
    public func label(at index: Int) -> Int { base.label(at: index) }
    public func sourceIndex(at index: Int) -> Int { base.sourceIndex(at: index) }
    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        try base.image(at: index, decoder: decoder, request: request)
    }
}

/// A byte-backed data set (what IDX files and CIFAR binaries load into).
public struct ByteImageDataset: StoredImageDataset {
    public let name: String
    public let imageShape: [Int]
    public let classCount: Int
    let pixels: [UInt8]
    let labels: [UInt8]

    public init(name: String, imageShape: [Int], classCount: Int, pixels: [UInt8], labels: [UInt8]) {
        precondition(pixels.count == labels.count * imageShape.reduce(1, *), "pixels and labels disagree")
        self.name = name
        self.imageShape = imageShape
        self.classCount = classCount
        self.pixels = pixels
        self.labels = labels
    }

    /// The same images with another class count.
    public init(relabelled base: ByteImageDataset, classCount: Int) {
        self.init(name: base.name, imageShape: base.imageShape, classCount: classCount, pixels: base.pixels, labels: base.labels)
    }

    public var count: Int { labels.count }
    public func label(at index: Int) -> Int { Int(labels[index]) }

    public func copyImage(at index: Int, into out: UnsafeMutablePointer<Float>) {
        let size = imageShape.reduce(1, *)
        pixels.withUnsafeBufferPointer { p in
            let src = p.baseAddress! + index * size
            for i in 0..<size { out[i] = Float(src[i]) * (1 / 255) }
        }
    }
}

/// A view of some of another data set's items, in a given order.
public struct Subset: Dataset {
    public let base: Dataset
    public let indices: [Int]

    /// The first `count` items.
    public init(first count: Int, of base: Dataset) {
        self.base = base
        indices = Array(0..<Swift.min(count, base.count))
    }

    /// The items at `indices`, in that order.
    public init(indices: [Int], of base: Dataset) {
        self.base = base
        self.indices = indices
    }

    /// `count` items drawn without replacement by a seeded permutation (as torch.randperm(n)[:count]).
    public init(sample count: Int, of base: Dataset, seed: UInt64) {
        self.base = base
        indices = Array(RandomStream(seed: seed, purpose: "subset").permutation(base.count).prefix(count))
    }

    public var name: String { base.name }
    public var count: Int { indices.count }
    public var imageShape: [Int] { base.imageShape }
    public var classCount: Int { base.classCount }
    public func label(at index: Int) -> Int { base.label(at: indices[index]) }
    public var transform: ImageTransform? { base.transform }
    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        try base.image(at: indices[index], decoder: decoder, request: request)
    }
    public func sourceIndex(at index: Int) -> Int { base.sourceIndex(at: indices[index]) }
}

/// A gray data set seen with its channel repeated `channels` times (for encoders and recipes
/// that expect RGB, as the reference Dino recipe does).
public struct RepeatedChannels: Dataset {
    public let base: Dataset
    public let channels: Int

    public init(_ base: Dataset, channels: Int) {
        precondition(base.imageShape[0] == 1, "only a one-channel data set can be repeated")
        self.base = base
        self.channels = channels
    }

    public var name: String { base.name }
    public var count: Int { base.count }
    public var imageShape: [Int] { [channels, base.imageShape[1], base.imageShape[2]] }
    public var classCount: Int { base.classCount }
    public func label(at index: Int) -> Int { base.label(at: index) }
    public func sourceIndex(at index: Int) -> Int { base.sourceIndex(at: index) }
    public var transform: ImageTransform? { base.transform }
    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        let source = try base.image(at: index, decoder: decoder, request: request)
        var image = source.image
        let plane = image.plane
        image.pixels.reserveCapacity(plane * channels)
        for _ in 1..<channels { image.pixels += image.pixels[0..<plane] }
        image.channels = channels
        return SourceImage(image: image, storedHeight: source.storedHeight, storedWidth: source.storedWidth)
    }
}

/// Fashion-MNIST (Xiao et al. 2017) from Debian's dataset-fashion-mnist package.
public enum FashionMNIST {
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    public static let mean: Float = 0.2860
    public static let std: Float = 0.3530
    public static let classNames = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    public enum Split: String, Sendable { case train, test }

    /// Loads one split from the four gzipped IDX files in `directory`.
    public static func load(_ split: Split, directory: String = defaultDirectory) throws -> ByteImageDataset {
        let hint = directory == defaultDirectory
            ? "Install it with: apt-get install dataset-fashion-mnist (or run make setup)."
            : "Point the data path at a folder holding \(IDXFolder.files(split).images) and \(IDXFolder.files(split).labels)."
        return try IDXFolder.load(split, directory: directory, name: "fashion-mnist", classCount: 10, missingHint: hint)
    }
}

/// A folder of MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST): train- and
/// t10k-images-idx3-ubyte and -labels-idx1-ubyte, gzipped (.gz) or plain.
public enum IDXFolder {
    /// The images and labels files of a split, gzipped names (the plain ones drop ".gz").
    public static func files(_ split: FashionMNIST.Split) -> (images: String, labels: String) {
        let prefix = split == .train ? "train" : "t10k"
        return ("\(prefix)-images-idx3-ubyte.gz", "\(prefix)-labels-idx1-ubyte.gz")
    }

    /// The path of `file` in `directory`: gzipped, or plain when only that exists.
    public static func path(_ file: String, in directory: String) -> String {
        let gz = "\(directory)/\(file)", plain = String(gz.dropLast(3))
        return !FileManager.default.fileExists(atPath: gz) && FileManager.default.fileExists(atPath: plain) ? plain : gz
    }

    /// One split; every label must be below `classCount`.
    public static func load(_ split: FashionMNIST.Split, directory: String, name: String, classCount: Int, missingHint: String) throws -> ByteImageDataset {
        let imagesPath = path(files(split).images, in: directory)
        let labelsPath = path(files(split).labels, in: directory)
        let images = try IDXArray.read(path: imagesPath, missingHint: missingHint)
        let labels = try IDXArray.read(path: labelsPath, missingHint: missingHint)
        guard images.dimensions.count == 3 else {
            throw DataError.corrupt(path: imagesPath, reason: "expected dimensions (N, H, W), found \(images.dimensions)")
        }
        guard labels.dimensions == [images.dimensions[0]] else {
            throw DataError.corrupt(path: labelsPath, reason: "\(labels.dimensions) labels for \(images.dimensions[0]) images")
        }
        if let bad = labels.bytes.first(where: { Int($0) >= classCount }) {
            throw DataError.corrupt(path: labelsPath, reason: "label \(bad) is outside the \(classCount) classes (0 to \(classCount - 1))")
        }
        return ByteImageDataset(name: "\(name)-\(split.rawValue)", imageShape: [1, images.dimensions[1], images.dimensions[2]],
                                classCount: classCount, pixels: images.bytes, labels: labels.bytes)
    }
}
