import Data
import Foundation

/// `dataset: stl10`: STL-10, the binary version's folder (stl10_binary): 5000 training and 8000
/// test images of 96x96 RGB in 10 classes, and 100000 unlabelled images for pretraining
/// (`data.pretrain_images: unlabelled` or `train+unlabelled`). `fold: 0..9` trains the
/// evaluation stages on one of its ten predefined folds of 1000 images. Not installable here:
/// download the binary version from the STL-10 page and unpack it under data/ (or set data.path).
public struct STL10Settings: DataSetSettings {
    public static let kind = "stl10"
    public static let summary = "STL-10 (binary version), 5k train / 8k test / 100k unlabelled 96x96 RGB, 10 classes, 10 folds"
    public static let defaultPath = "data/stl10_binary"
    public static let mean = [0.4467, 0.4398, 0.4066]
    public static let std = [0.2603, 0.2566, 0.2713]
    public static let hasUnlabelled = true

    public var fold: Int?

    public static let fields: [Field<STL10Settings>] = [
        .nullable("fold", \.fold, "train on one of the ten predefined folds of 1000 images (fold_indices.txt); null: all 5000",
                  .that({ (0...9).contains($0) }) { "must be 0 to 9, got \($0)" }),
    ]

    public init() {}

    public func imageShape(path: String) -> [Int]? { [3, 96, 96] }
    public func classNames(path: String) -> [String]? { STL10.classNames }

    public func splitSizes(path: String) -> (train: Int, test: Int)? {
        func images(_ file: String) -> Int? {
            ((try? FileManager.default.attributesOfItem(atPath: "\(path)/\(file)"))?[.size] as? Int).map { $0 / (3 * 96 * 96) }
        }
        return (fold == nil ? images("train_X.bin") ?? 5000 : 1000, images("test_X.bin") ?? 8000)
    }

    public func problem(path: String) -> String? {
        for file in STL10.files where !FileManager.default.isReadableFile(atPath: "\(path)/\(file)") {
            return "\(path)/\(file) does not exist; STL-10 is not installable here: download its binary version (stl10_binary.tar.gz, from the STL-10 page of Stanford University) and unpack it so that data.path holds \(STL10.files.joined(separator: ", ")), \(STL10.unlabelledFile) and fold_indices.txt"
        }
        return nil
    }

    public func load(path: String) throws -> (train: Dataset, test: Dataset, classNames: [String]) {
        let (train, test) = try STL10.load(directory: path, fold: fold)
        return (train, test, STL10.classNames)
    }

    public func loadUnlabelled(path: String) throws -> Dataset? { try STL10.unlabelled(directory: path) }
}
