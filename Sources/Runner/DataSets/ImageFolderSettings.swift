import Data
import Foundation

/// `dataset: imagefolder`: folders of JPEG, PNG, WebP, BMP or PPM/PGM files with torchvision's
/// ImageFolder semantics (classes are the sorted subfolder names, files found by a sorted
/// recursive walk, extensions matched case-insensitively). `data.path` holds the split folders:
/// `train_folder` and `test_folder` (class subfolders each; the test classes must be among the
/// training ones) and, for pretraining, `unlabelled_folder` (images in any subfolders, no labels).
/// Images become RGB (or gray, channels: 1) as PIL's convert does, are decoded on data.workers
/// threads, and are made data.image_size by Resize + CenterCrop (data.crop_pct) for evaluation
/// and by the stage's random_resized_crop for training.
public struct ImageFolderSettings: DataSetSettings {
    public static let kind = "imagefolder"
    public static let summary = "folders of JPEG/PNG/WebP/BMP/PPM images, one subfolder per class (torchvision's ImageFolder), any size"
    public static let defaultPath = "data/images"
    /// ImageNet's statistics, the usual normalisation for photographs (torchvision, timm).
    public static let mean = [0.485, 0.456, 0.406]
    public static let std = [0.229, 0.224, 0.225]
    public static let cropPct = 0.875
    public static let hasUnlabelled = true

    public var trainFolder = "train"
    public var testFolder = "val"
    public var unlabelledFolder: String?
    public var verify = true

    public static let fields: [Field<ImageFolderSettings>] = [
        .value("train_folder", \.trainFolder, "the training images' folder (one subfolder per class), under data.path unless absolute"),
        .value("test_folder", \.testFolder, "the test (or validation) images' folder, under data.path unless absolute"),
        .nullable("unlabelled_folder", \.unlabelledFolder, "a folder of images without labels (any subfolders), for pretrain_images: unlabelled or train+unlabelled; null: none"),
        .value("verify", \.verify, "decode every image once before training, so that a bad file stops the run (or is skipped, on_error: skip) before the first step; false: a bad file stops the run when it is reached"),
    ]

    public init() {}

    func folder(_ name: String, _ path: String) -> String { name.hasPrefix("/") ? name : "\(path)/\(name)" }

    public func imageShape(path: String) -> [Int]? { nil }
    public var unlabelledAvailable: Bool { unlabelledFolder != nil }

    /// The class subfolders of the training folder (a listing of one folder, no walk).
    public func classNames(path: String) -> [String]? {
        guard let (_, dirs) = try? ImageFolder.entries(folder(trainFolder, path)), !dirs.isEmpty else { return nil }
        return dirs.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }
    public func splitSizes(path: String) -> (train: Int, test: Int)? { nil }

    public func problem(path: String) -> String? {
        var keys = [("train_folder", trainFolder), ("test_folder", testFolder)]
        if let unlabelledFolder { keys.append(("unlabelled_folder", unlabelledFolder)) }
        for (key, name) in keys {
            var isDirectory: ObjCBool = false
            let full = folder(name, path)
            if !FileManager.default.fileExists(atPath: full, isDirectory: &isDirectory) || !isDirectory.boolValue {
                return "\(full) is not a folder; data.path (\(path)) with data.\(key) (\(name)) must name a folder of images\(key == "unlabelled_folder" ? "" : " with one subfolder per class, as torchvision's ImageFolder reads (\(full)/CLASS/IMAGE.jpg)")"
            }
        }
        return nil
    }

    public var verifiesImages: Bool { verify }

    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        try load(path: path, options: DataLoadOptions())
    }

    public func load(path: String, options: DataLoadOptions) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        let train = try ImageFolder.list(root: folder(trainFolder, path), labelled: true)
        var test = try ImageFolder.list(root: folder(testFolder, path), labelled: true)
        // Test labels follow the training classes by name (a test folder may lack some classes).
        let index = Dictionary(uniqueKeysWithValues: train.classNames.enumerated().map { ($1, Int32($0)) })
        let unknown = test.classNames.filter { index[$0] == nil }
        guard unknown.isEmpty else {
            throw DataError.corrupt(path: test.root, reason: "has class folders the training folder lacks (\(unknown.prefix(5).joined(separator: ", "))\(unknown.count > 5 ? ", ..." : "")); the test classes must be among the training classes of \(train.root)")
        }
        test.labels = test.labels.map { index[test.classNames[Int($0)]]! }
        test.classNames = train.classNames
        func dataset(_ listing: ImageFolder.Listing, _ split: String) -> ImageFolder {
            ImageFolder(listing, name: "imagefolder-\(split)", channels: options.channels, transform: options.transform, cache: options.cache)
        }
        return (dataset(train, "train"), dataset(test, "test"), train.classNames)
    }

    public func loadUnlabelled(path: String, options: DataLoadOptions) throws -> Dataset? {
        guard let unlabelledFolder else { return nil }
        let listing = try ImageFolder.list(root: folder(unlabelledFolder, path), labelled: false)
        return ImageFolder(listing, name: "imagefolder-unlabelled", channels: options.channels, transform: options.transform, cache: options.cache)
    }
}
