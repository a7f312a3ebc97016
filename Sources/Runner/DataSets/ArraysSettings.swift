import Data
import Foundation
import Store

/// `dataset: arrays`: images a researcher already has as arrays: an HDF5 file (or a NumPy .npz)
/// holding uint8 images of shape (N, H, W, C) or (N, C, H, W) and integer labels, under the
/// names the recipe gives. The layout is read from the shape (C is 1 or 3) unless `layout` says.
public struct ArraysSettings: DataSetSettings {
    public static let kind = "arrays"
    public static let summary = "uint8 image arrays and integer labels in an HDF5 or .npz file, (N, H, W, C) or (N, C, H, W)"
    public static let defaultPath = "data/arrays.h5"
    public static let mean = [0.5]
    public static let std = [0.5]

    public var trainImages = "train/images"
    public var trainLabels = "train/labels"
    public var testImages = "test/images"
    public var testLabels = "test/labels"
    public var layout = "auto"
    public var classNames: [String]?

    public static let fields: [Field<ArraysSettings>] = [
        .value("train_images", \.trainImages, "the training images' dataset (HDF5 path, or .npz array name)"),
        .value("train_labels", \.trainLabels, "the training labels' dataset"),
        .value("test_images", \.testImages, "the test images' dataset"),
        .value("test_labels", \.testLabels, "the test labels' dataset"),
        .choice("layout", \.layout, ["auto", "nhwc", "nchw"], "auto (channels-last when the last axis is 1 or 3) | nhwc | nchw"),
        .nullable("class_names", \.classNames, "the names of labels 0, 1, ...; null: numbered", .that({ !$0.isEmpty }) { _ in "give at least one name" }),
    ]

    public init() {}

    public func imageShape(path: String) -> [Int]? {
        guard let shape = try? arrayShapes(path: path)[trainImages], shape.count == 4 else { return nil }
        return chw(shape)
    }
    public func classNames(path: String) -> [String]? { classNames }
    public func splitSizes(path: String) -> (train: Int, test: Int)? {
        guard let shapes = try? arrayShapes(path: path), let train = shapes[trainImages]?.first, let test = shapes[testImages]?.first else { return nil }
        return (train, test)
    }

    /// Whether images of array shape (N, a, b, c) are channels-last.
    func channelsLast(_ shape: [Int]) -> Bool {
        layout == "nhwc" || (layout == "auto" && [1, 3].contains(shape[3]) && ![1, 3].contains(shape[1]))
    }

    /// (C, H, W) of images whose array shape is (N, ...).
    func chw(_ shape: [Int]) -> [Int] { channelsLast(shape) ? [shape[3], shape[1], shape[2]] : [shape[1], shape[2], shape[3]] }

    /// The shapes of the four arrays, from the files' headers (HDF5 or .npz).
    func arrayShapes(path: String) throws -> [String: [Int]] {
        if (try? WeightFiles.format(of: path)) is NumpyArchive.Type { return try NumpyArchive.shapes(path: path) }
        let file = try HDF5File(path: path, mode: .readOnly)
        var shapes: [String: [Int]] = [:]
        for name in [trainImages, trainLabels, testImages, testLabels] { shapes[name] = try? file.root.dataset(name).shape }
        return shapes
    }

    public func problem(path: String) -> String? {
        guard FileManager.default.isReadableFile(atPath: path) else {
            return "\(path) does not exist; point data.path at an HDF5 (.h5) or NumPy (.npz) file of image arrays"
        }
        guard let shapes = try? arrayShapes(path: path) else { return "\(path) is neither an HDF5 file nor a NumPy .npz archive" }
        for (key, name) in [("train_images", trainImages), ("train_labels", trainLabels), ("test_images", testImages), ("test_labels", testLabels)]
        where shapes[name] == nil {
            return "\(path) has no array '\(name)' (data.\(key)); name the array that holds it"
        }
        for (key, name) in [("train_images", trainImages), ("test_images", testImages)] where shapes[name]!.count != 4 {
            return "\(path): '\(name)' (data.\(key)) has shape \(shapes[name]!); images are (N, H, W, C) or (N, C, H, W)"
        }
        return nil
    }

    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        func fail(_ message: String) -> DataError { .corrupt(path: path, reason: message) }
        let numpy = (try? WeightFiles.format(of: path)) is NumpyArchive.Type
        let arrays: [String: (shape: [Int], bytes: [UInt8])]
        if numpy {
            let all = try NumpyArchive.read(path: path)
            arrays = try all.filter { [trainImages, trainLabels, testImages, testLabels].contains($0.key) }.mapValues { t in
                let values = t.scalars
                guard values.allSatisfy({ $0 >= 0 && $0 <= 255 && $0 == $0.rounded() }) else { throw fail("an array holds values outside 0...255 or fractions; give uint8 images and integer labels") }
                return (t.shape, values.map { UInt8($0) })
            }
        } else {
            let file = try HDF5File(path: path, mode: .readOnly)
            var read: [String: ([Int], [UInt8])] = [:]
            for name in [trainImages, testImages] {
                let d = try file.root.dataset(name)
                guard d.elementType == "uint8" else { throw fail("'\(name)' holds \(d.elementType); images must be uint8 (0-255)") }
                read[name] = (d.shape, try d.read(as: UInt8.self))
            }
            for name in [trainLabels, testLabels] {
                let d = try file.root.dataset(name)
                let labels = try d.read(as: Int64.self)
                guard labels.allSatisfy({ $0 >= 0 && $0 < 256 }) else { throw fail("'\(name)' holds labels outside 0...255") }
                read[name] = (d.shape, labels.map { UInt8($0) })
            }
            arrays = read.mapValues { (shape: $0.0, bytes: $0.1) }
        }
        func split(_ images: String, _ labels: String, _ split: String) throws -> ByteImageDataset {
            guard let x = arrays[images], let y = arrays[labels] else { throw fail("it has no arrays '\(images)' and '\(labels)'") }
            guard x.shape.count == 4 else { throw fail("'\(images)' has shape \(x.shape); images are (N, H, W, C) or (N, C, H, W)") }
            guard y.shape == [x.shape[0]] else { throw fail("'\(labels)' has shape \(y.shape) for \(x.shape[0]) images") }
            let shape = chw(x.shape)
            var pixels = x.bytes
            if channelsLast(x.shape) {
                // (N, H, W, C) to (N, C, H, W).
                let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
                pixels = [UInt8](repeating: 0, count: x.bytes.count)
                for i in 0..<n { for yy in 0..<h { for xx in 0..<w { for ch in 0..<c {
                    pixels[((i * c + ch) * h + yy) * w + xx] = x.bytes[((i * h + yy) * w + xx) * c + ch]
                } } } }
            }
            let classes = classNames?.count ?? Int((arrays[trainLabels]!.bytes + arrays[testLabels]!.bytes).max() ?? 0) + 1
            if let bad = y.bytes.first(where: { Int($0) >= classes }) { throw fail("'\(labels)' has label \(bad), past the \(classes) class names") }
            return ByteImageDataset(name: "arrays-\(split)", imageShape: shape, classCount: classes, pixels: pixels, labels: y.bytes)
        }
        let train = try split(trainImages, trainLabels, "train"), test = try split(testImages, testLabels, "test")
        guard train.imageShape == test.imageShape else { throw fail("train images are \(train.imageShape), test images \(test.imageShape)") }
        return (train, test, classNames ?? (0..<train.classCount).map(String.init))
    }
}
