import Data
import Foundation

/// `dataset: idx`: any folder of MNIST-format IDX files (MNIST, KMNIST, EMNIST, Fashion-MNIST):
/// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
/// t10k-labels-idx1-ubyte, gzipped (.gz) or plain. `class_names` names the labels; without it
/// the classes are numbered, as many as the largest label needs.
public struct IDXSettings: DataSetSettings {
    public static let kind = "idx"
    public static let summary = "a folder of MNIST-format IDX files (MNIST, KMNIST, EMNIST), gray, any size"
    public static let defaultPath = "data/mnist"
    public static let mean = [0.5]
    public static let std = [0.5]
    public static let usualImageShape = [1, 28, 28]

    public var classNames: [String]?

    public static let fields: [Field<IDXSettings>] = [
        .nullable("class_names", \.classNames, "the names of labels 0, 1, ...; null: numbered", .that({ !$0.isEmpty }) { _ in "give at least one name" }),
    ]

    public init() {}

    /// The images' shape from the training images' header, when the file is there.
    public func imageShape(path: String) -> [Int]? {
        guard let header = try? IDXArray.readHeader(path: IDXFolder.path(IDXFolder.files(.train).images, in: path)), header.count == 3 else { return nil }
        return [1, header[1], header[2]]
    }
    public func classNames(path: String) -> [String]? { classNames }
    public func splitSizes(path: String) -> (train: Int, test: Int)? {
        guard let train = try? IDXArray.readHeader(path: IDXFolder.path(IDXFolder.files(.train).labels, in: path)).first,
              let test = try? IDXArray.readHeader(path: IDXFolder.path(IDXFolder.files(.test).labels, in: path)).first else { return nil }
        return (train, test)
    }

    public func problem(path: String) -> String? {
        for split in [FashionMNIST.Split.train, .test] {
            for file in [IDXFolder.files(split).images, IDXFolder.files(split).labels] {
                let found = IDXFolder.path(file, in: path)
                if !FileManager.default.isReadableFile(atPath: found) {
                    return "\(path)/\(file) (or \(String(file.dropLast(3)))) does not exist; point data.path at a folder of MNIST-format IDX files"
                }
            }
        }
        return nil
    }

    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        let hint = "A folder of MNIST-format IDX files holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (gzipped or plain)."
        // The class count: the names given, else enough for the largest label of either split.
        let limit = classNames?.count ?? 256
        let train = try IDXFolder.load(.train, directory: path, name: "idx", classCount: limit, missingHint: hint)
        let test = try IDXFolder.load(.test, directory: path, name: "idx", classCount: limit, missingHint: hint)
        let largest = ((0..<train.count).map(train.label) + (0..<test.count).map(test.label)).max() ?? 0
        let names = classNames ?? (0...largest).map(String.init)
        return (ByteImageDataset(relabelled: train, classCount: names.count), ByteImageDataset(relabelled: test, classCount: names.count), names)
    }
}
