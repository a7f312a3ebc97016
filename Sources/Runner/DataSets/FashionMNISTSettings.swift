import Data
import Foundation

/// `dataset: fashion-mnist`: Fashion-MNIST (Xiao et al. 2017), 60000 training and 10000 test
/// images of 28x28 gray in 10 classes, as the four gzipped IDX files of Debian's
/// dataset-fashion-mnist package.
public struct FashionMNISTSettings: DataSetSettings {
    public static let kind = "fashion-mnist"
    public static let summary = "Fashion-MNIST, 60k train / 10k test 28x28 gray, 10 classes (apt: dataset-fashion-mnist)"
    public static let defaultPath = FashionMNIST.defaultDirectory
    public static let mean = [0.2860]
    public static let std = [0.3530]
    public static let fields: [Field<FashionMNISTSettings>] = []

    static let files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    public init() {}

    public func imageShape(path: String) -> [Int]? { [1, 28, 28] }
    public func classNames(path: String) -> [String]? { FashionMNIST.classNames }
    public func splitSizes(path: String) -> (train: Int, test: Int)? { (60000, 10000) }

    public func problem(path: String) -> String? {
        for file in Self.files where !FileManager.default.isReadableFile(atPath: "\(path)/\(file)") {
            let hint = path == Self.defaultPath
                ? "install the data set with `sudo apt-get install dataset-fashion-mnist` (or `make setup`)"
                : "point data.path at a folder holding the four Fashion-MNIST IDX files, or remove it to use \(Self.defaultPath)"
            return "\(path)/\(file) does not exist; \(hint)"
        }
        return nil
    }

    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        (try FashionMNIST.load(.train, directory: path), try FashionMNIST.load(.test, directory: path), FashionMNIST.classNames)
    }
}
