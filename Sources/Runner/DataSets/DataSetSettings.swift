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
    /// Both splits, for data sets whose images depend on the data section (image folders: the
    /// channels, the evaluation transform, the cache). Default: load(path:).
    func load(path: String, options: DataLoadOptions) throws -> (train: Dataset, test: Dataset, classNames: [String])
    func loadUnlabelled(path: String, options: DataLoadOptions) throws -> Dataset?
    /// Whether these settings give unlabelled images (default: hasUnlabelled).
    var unlabelledAvailable: Bool { get }
    /// Whether every image is decoded once before training (image folders, `verify`).
    var verifiesImages: Bool { get }
    /// The default data.crop_pct: 1 for data sets stored at one size, timm's 0.875 for photographs.
    static var cropPct: Double { get }
}

extension DataSetSettings {
    public static var usualImageShape: [Int] { [3, 224, 224] }
    public static var hasUnlabelled: Bool { false }
    public static var cropPct: Double { 1 }
    public func loadUnlabelled(path: String) throws -> Dataset? { nil }
    public func load(path: String, options: DataLoadOptions) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        try load(path: path)
    }
    public func loadUnlabelled(path: String, options: DataLoadOptions) throws -> Dataset? { try loadUnlabelled(path: path) }
    public var unlabelledAvailable: Bool { Self.hasUnlabelled }
    public var verifiesImages: Bool { false }
}

/// What a data set that decodes files needs from the data section.
public struct DataLoadOptions {
    public var channels = 3
    public var transform = ImageTransform.center(size: 224, cropPct: 0.875)
    public var cache = false
    public init() {}
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
    public var cropPct: Double
    public var interpolation = "bilinear"
    /// Decoding threads; nil: the machine's cores.
    public var workers: Int?
    public var cache = false
    public var onError = "stop"

    public init() { self.init(FashionMNISTSettings()) }

    /// The defaults of `source`.
    public init(_ source: any DataSetSettings) {
        let type = Swift.type(of: source)
        self.source = source
        path = type.defaultPath
        let shape = source.imageShape(path: type.defaultPath) ?? type.usualImageShape
        (channels, imageSize, mean, std) = (shape[0], shape[1], type.mean, type.std)
        cropPct = type.cropPct
    }

    public var dataset: String { Swift.type(of: source).kind }

    static let shared = ["dataset"]

    public static let fields: [Field<DataSection>] = [
        .value("path", \.path, "the folder (or file) holding the data set; default: where its Debian package installs it"),
        .value("image_size", \.imageSize, "side of the images the encoder sees, in pixels; other sizes are resized (evaluation: Resize to image_size / crop_pct on the shorter side, then CenterCrop; training: the stage's random_resized_crop)", .positive),
        .value("channels", \.channels, "1 or 3 (3 repeats a gray channel, for RGB encoders; image folders convert as PIL's convert(\"RGB\") or (\"L\"))", where: { channels, s in
            guard channels == 1 || channels == 3 else { return "channels must be 1 or 3 (3 repeats the gray channel), got \(channels)" }
            if let stored = s.source.imageShape(path: s.path)?[0], stored == 3, channels != 3 {
                return "\(s.dataset) images have 3 channels; use channels: 3"
            }
            return nil
        }),
        statistics("mean", \.mean, "per channel, or one for all (pixels are divided by 255 first), or a name: imagenet (0.485, 0.456, 0.406), inception (0.5)", \.mean) { mean, s in
            mean.count == 1 || mean.count == s.channels ? nil : "give one mean, or one per channel (\(s.channels))"
        },
        statistics("std", \.std, "per channel, or one for all, or a name: imagenet (0.229, 0.224, 0.225), inception (0.5)", \.std) { std, s in
            guard std.count == 1 || std.count == s.channels else { return "give one std, or one per channel (\(s.channels))" }
            return std.allSatisfy { $0 > 0 } ? nil : "every std must be positive"
        },
        .nullable("train_subset", \.trainSubset, "use N training images; null: all", .that({ $0 > 0 }) { _ in "a subset must hold at least one image" })
            .checked(\.trainSubset) { n, s in subsetProblem(n, s.source.splitSizes(path: s.path)?.train, "training", s.dataset) },
        .choice("subset_mode", \.subsetMode, ["first", "sample"], "first N, or a seeded sample of N"),
        .nullable("test_subset", \.testSubset, "likewise for the test images", .that({ $0 > 0 }) { _ in "a subset must hold at least one image" })
            .checked(\.testSubset) { n, s in subsetProblem(n, s.source.splitSizes(path: s.path)?.test, "test", s.dataset) },
        .choice("pretrain_images", \.pretrainImages, ["train", "unlabelled", "train+unlabelled"],
                "what pretrain stages train on: train (the training split, after train_subset) | unlabelled (the data set's images without labels, stl10) | train+unlabelled; evaluation and supervised stages always use train and test")
            .checked(\.pretrainImages) { images, s in
                if images == "train" || s.source.unlabelledAvailable { return nil }
                if s.source is ImageFolderSettings { return "set data.unlabelled_folder to a folder of images without labels, or use pretrain_images: train" }
                return "\(s.dataset) has no unlabelled images; use pretrain_images: train (or a data set that has them, such as stl10)"
            },
        .value("crop_pct", \.cropPct, "evaluation crop fraction (timm's crop_pct): Resize the shorter side to floor(image_size / crop_pct), then CenterCrop(image_size); default 0.875 for image folders (torchvision's 256 -> 224), 1 for the others", .that({ $0 > 0 && $0 <= 1 }) { _ in "must be in (0, 1], e.g. 0.875" }),
        .choice("interpolation", \.interpolation, ResizeFilter.allCases.map(\.rawValue), "the resampling filter of every resize and crop: bilinear | bicubic (antialiased, as PIL's)"),
        .nullable("workers", \.workers, "threads that read, decode and transform images (the batches do not depend on it); null: the machine's cores", .positive),
        .value("cache", \.cache, "keep decoded images in memory after their first use (image folders that fit in memory; the other data sets are held in memory already)"),
        .choice("on_error", \.onError, ["stop", "skip"], "an image that does not decode: stop (the run stops before training, naming the file) | skip (leave it out, log it, count it in metrics.h5 under skipped_images)")
            .checked(\.onError) { mode, s in
                mode == "stop" || s.source.verifiesImages ? nil : "on_error: skip needs a data set whose images are checked before training (dataset: imagefolder with verify: true)"
            },
    ]

    /// The normalisations a recipe may name instead of listing numbers (timm's constants).
    static let namedStatistics: [String: (mean: [Double], std: [Double])] = [
        "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        "inception": ([0.5], [0.5]),
    ]

    /// `mean` or `std`: a list of numbers, or the name of a known normalisation (stored as its numbers).
    static func statistics(_ key: String, _ path: WritableKeyPath<DataSection, [Double]>, _ help: String,
                           _ pick: KeyPath<(mean: [Double], std: [Double]), [Double]>,
                           check: @escaping ([Double], DataSection) -> String?) -> Field<DataSection> {
        Field(key, help: help, read: { settings, c in
            guard c.contains(RecipeKey(key)) else { return }
            let value: [Double]
            if let name = try? c.decode(String.self, forKey: RecipeKey(key)) {
                guard let named = namedStatistics[name.lowercased()] else {
                    try c.check("unknown normalisation '\(name)'; name one of \(namedStatistics.keys.sorted().joined(separator: ", ")), or give numbers, e.g. [0.485, 0.456, 0.406]", key)
                    return
                }
                value = named[keyPath: pick]
            } else {
                value = try c.decode([Double].self, forKey: RecipeKey(key))
            }
            try c.check(check(value, settings), key)
            settings[keyPath: path] = value
        }, write: { plain($0[keyPath: path]) })
    }

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
