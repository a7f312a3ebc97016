import Data
import Foundation

/// `dataset: cifar10`: CIFAR-10 (Krizhevsky 2009), 50000 training and 10000 test images of 32x32
/// RGB in 10 classes, as the binary version's folder (cifar-10-batches-bin: data_batch_1..5.bin,
/// test_batch.bin, batches.meta.txt). No Debian package ships it: download the binary version
/// from the CIFAR page and unpack it under data/ (or set data.path).
public struct CIFAR10Settings: DataSetSettings {
    public static let kind = "cifar10"
    public static let summary = "CIFAR-10 (binary version), 50k train / 10k test 32x32 RGB, 10 classes"
    public static let defaultPath = "data/cifar-10-batches-bin"
    /// The usual CIFAR-10 statistics (as in the DINO, solo-learn and lightly CIFAR recipes).
    public static let mean = [0.4914, 0.4822, 0.4465]
    public static let std = [0.2470, 0.2435, 0.2616]
    public static let fields: [Field<CIFAR10Settings>] = []

    public init() {}

    public func imageShape(path: String) -> [Int]? { [3, 32, 32] }
    public func classNames(path: String) -> [String]? { CIFAR.classNames(.cifar10, directory: path) }
    public func splitSizes(path: String) -> (train: Int, test: Int)? { cifarSizes(.cifar10, path: path) }
    public func problem(path: String) -> String? { cifarProblem(.cifar10, path: path, name: "CIFAR-10", archive: "cifar-10-binary.tar.gz") }
    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        let (train, test, names) = try CIFAR.load(.cifar10, directory: path)
        return (train, test, names)
    }
}

/// `dataset: cifar100`: CIFAR-100, 50000 / 10000 32x32 RGB images in 100 classes (`labels: fine`)
/// or 20 superclasses (`labels: coarse`), as the binary version's folder (cifar-100-binary:
/// train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt).
public struct CIFAR100Settings: DataSetSettings {
    public static let kind = "cifar100"
    public static let summary = "CIFAR-100 (binary version), 50k train / 10k test 32x32 RGB, 100 fine or 20 coarse classes"
    public static let defaultPath = "data/cifar-100-binary"
    public static let mean = [0.5071, 0.4865, 0.4409]
    public static let std = [0.2673, 0.2564, 0.2762]

    public var labels = "fine"

    public static let fields: [Field<CIFAR100Settings>] = [
        .choice("labels", \.labels, ["fine", "coarse"], "fine (100 classes) | coarse (20 superclasses)"),
    ]

    public init() {}

    var variant: CIFAR.Variant { .cifar100(fine: labels == "fine") }

    public func imageShape(path: String) -> [Int]? { [3, 32, 32] }
    public func classNames(path: String) -> [String]? { CIFAR.classNames(variant, directory: path) }
    public func splitSizes(path: String) -> (train: Int, test: Int)? { cifarSizes(variant, path: path) }
    public func problem(path: String) -> String? { cifarProblem(variant, path: path, name: "CIFAR-100", archive: "cifar-100-binary.tar.gz") }
    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        let (train, test, names) = try CIFAR.load(variant, directory: path)
        return (train, test, names)
    }
}

/// The images a CIFAR folder holds, from its files' sizes; the real sets' 50000 / 10000 when the
/// files are not there yet.
func cifarSizes(_ variant: CIFAR.Variant, path: String) -> (train: Int, test: Int)? {
    func records(_ files: [String]) -> Int? {
        let sizes = files.map { (try? FileManager.default.attributesOfItem(atPath: "\(path)/\($0)")[.size] as? Int) ?? nil }
        guard sizes.allSatisfy({ $0 != nil }) else { return nil }
        return sizes.reduce(0) { $0 + $1! } / variant.recordSize
    }
    guard let train = records(variant.files.train), let test = records(variant.files.test) else { return (50000, 10000) }
    return (train, test)
}

func cifarProblem(_ variant: CIFAR.Variant, path: String, name: String, archive: String) -> String? {
    for file in CIFAR.requiredFiles(variant) where !FileManager.default.isReadableFile(atPath: "\(path)/\(file)") {
        return "\(path)/\(file) does not exist; \(name) is not installable here: download its binary version (\(archive), from the CIFAR page of the University of Toronto) and unpack it so that data.path holds \(CIFAR.requiredFiles(variant).joined(separator: ", "))"
    }
    return nil
}
