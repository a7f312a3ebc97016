import Data
import Foundation

/// One data set kind (`data: {dataset: fashion-mnist, ...}`): its own recipe keys (a section
/// declared by its fields, empty for most), where its files live by default, what it holds and
/// how it loads. One file per data set in this folder, and one line in `DataSetRegistry`.
public protocol DataSetSettings: RecipeSection {
    static var kind: String { get }
    static var summary: String { get }
    /// Where the files are when `data.path` is not given.
    static var defaultPath: String { get }
    /// The normalisation defaults: one value for every channel, or one per channel.
    static var mean: [Double] { get }
    static var std: [Double] { get }
    /// (channels, height, width) of the stored images, when known without reading the files.
    func imageShape(path: String) -> [Int]?
    /// The shape assumed until the files tell (data sets whose shape depends on them).
    static var usualImageShape: [Int] { get }
    /// The class names in label order, when known without reading the files.
    func classNames(path: String) -> [String]?
    /// The number of training and test images, when known without reading the files.
    func splitSizes(path: String) -> (train: Int, test: Int)?
    /// What is missing or wrong at `path`, found without reading the files (nil: all there), as a
    /// message that names the fix.
    func problem(path: String) -> String?
    /// Both splits and the class names.
    func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String])
    /// Whether the data set has images without labels for pretraining (STL-10's 100000).
    static var hasUnlabelled: Bool { get }
    /// Those images (label -1), or nil.
    func loadUnlabelled(path: String) throws -> Dataset?
}

extension DataSetSettings {
    public static var usualImageShape: [Int] { [3, 224, 224] }
    public static var hasUnlabelled: Bool { false }
    public func loadUnlabelled(path: String) throws -> Dataset? { nil }
}

/// `data`: the data set, and the keys every data set shares (how images are sized, normalised and
/// subset). `path`, `image_size`, `channels`, `mean` and `std` default to the data set's own.
public struct DataSection: RecipeSection {
    public var source: any DataSetSettings
    public var path: String
    public var imageSize: Int
    public var channels: Int
    public var mean: [Double]
    public var std: [Double]
    public var trainSubset: Int?
    public var subsetMode = "first"
    public var testSubset: Int?
    /// What pretrain stages train on: the training split, the unlabelled images, or both.
    public var pretrainImages = "train"

    public init() { self.init(FashionMNISTSettings()) }

    /// The defaults of `source`.
    public init(_ source: any DataSetSettings) {
        let type = Swift.type(of: source)
        self.source = source
        path = type.defaultPath
        let shape = source.imageShape(path: type.defaultPath) ?? type.usualImageShape
        (channels, imageSize, mean, std) = (shape[0], shape[1], type.mean, type.std)
    }

    public var dataset: String { Swift.type(of: source).kind }

    static let shared = ["dataset"]

    public static let fields: [Field<DataSection>] = [
        .value("path", \.path, "the folder (or file) holding the data set; default: where its Debian package installs it"),
        .value("image_size", \.imageSize, "side of the images the encoder sees, in pixels", .positive, where: { size, s in
            guard let shape = s.source.imageShape(path: s.path), shape[1] != size || shape[2] != size else { return nil }
            return "\(s.dataset) images are \(shape[1])x\(shape[2]) and the data pipeline does not resize; use image_size: \(shape[1])"
        }),
        .value("channels", \.channels, "1 or 3 (3 repeats a gray channel, for RGB encoders)", where: { channels, s in
            guard channels == 1 || channels == 3 else { return "channels must be 1 or 3 (3 repeats the gray channel), got \(channels)" }
            if let stored = s.source.imageShape(path: s.path)?[0], stored == 3, channels != 3 {
                return "\(s.dataset) images have 3 channels; use channels: 3"
            }
            return nil
        }),
        .value("mean", \.mean, "per channel, or one for all; pixels are divided by 255 first", where: { mean, s in
            mean.count == 1 || mean.count == s.channels ? nil : "give one mean, or one per channel (\(s.channels))"
        }),
        .value("std", \.std, "per channel, or one for all", where: { std, s in
            guard std.count == 1 || std.count == s.channels else { return "give one std, or one per channel (\(s.channels))" }
            return std.allSatisfy { $0 > 0 } ? nil : "every std must be positive"
        }),
        .nullable("train_subset", \.trainSubset, "use N training images; null: all", .that({ $0 > 0 }) { _ in "a subset must hold at least one image" })
            .checked(\.trainSubset) { n, s in subsetProblem(n, s.source.splitSizes(path: s.path)?.train, "training", s.dataset) },
        .choice("subset_mode", \.subsetMode, ["first", "sample"], "first N, or a seeded sample of N"),
        .nullable("test_subset", \.testSubset, "likewise for the test images", .that({ $0 > 0 }) { _ in "a subset must hold at least one image" })
            .checked(\.testSubset) { n, s in subsetProblem(n, s.source.splitSizes(path: s.path)?.test, "test", s.dataset) },
        .choice("pretrain_images", \.pretrainImages, ["train", "unlabelled", "train+unlabelled"],
                "what pretrain stages train on: train (the training split, after train_subset) | unlabelled (the data set's images without labels, stl10) | train+unlabelled; evaluation and supervised stages always use train and test")
            .checked(\.pretrainImages) { images, s in
                images == "train" || Swift.type(of: s.source).hasUnlabelled ? nil
                    : "\(s.dataset) has no unlabelled images; use pretrain_images: train (or a data set that has them, such as stl10)"
            },
    ]

    /// A subset larger than its split is refused (not silently cut to the split).
    static func subsetProblem(_ n: Int?, _ size: Int?, _ split: String, _ dataset: String) -> String? {
        guard let n, let size, n > size else { return nil }
        return "\(dataset) has \(size) \(split) images, so a subset of \(n) cannot be drawn; use at most \(size), or null for all"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: RecipeKey.self)
        let kinds = DataSetRegistry.kinds.map { $0.kind }
        let kind = try c.choice("dataset", kinds, FashionMNISTSettings.kind)
        let type = DataSetRegistry.kinds.first { $0.kind == kind }!
        self.init(try type.decoded(from: decoder, extraKeys: Self.shared + Self.keys))
        try decode(from: decoder, extraKeys: Self.shared + type.keys)
        // A data set whose images' shape depends on its files: the defaults follow data.path.
        if let shape = source.imageShape(path: path) {
            if !c.contains(RecipeKey("image_size")) { imageSize = shape[1] }
            if !c.contains(RecipeKey("channels")) { channels = shape[0] }
        }
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields([("dataset", dataset)] + source.encodedFields + encodedFields)
    }

    /// (channels, height, width) of one image as the encoder sees it.
    public var imageShape: [Int] { [channels, imageSize, imageSize] }

    /// Training images a run uses, when known before loading.
    public var trainCount: Int? { trainSubset ?? source.splitSizes(path: path)?.train }
}
