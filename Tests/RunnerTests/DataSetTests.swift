import Data
import Foundation
import Runner
import TestSupport
import XCTest

/// The data sets beyond Fashion-MNIST, on files the tests write in their formats: CIFAR-10 and
/// CIFAR-100 binaries, and a folder of MNIST-format IDX files.
final class DataSetTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "datasets-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    /// CIFAR records: label byte(s), then 3072 pixel bytes (pixel p of channel c is (7r + 3c + p) % 256).
    func writeCIFAR(_ folder: String, files: [(String, Int)], coarse: Bool) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        var r = 0
        for (file, records) in files {
            var bytes: [UInt8] = []
            for _ in 0..<records {
                if coarse { bytes.append(UInt8(r % 20)) }
                bytes.append(UInt8(r % (coarse ? 100 : 10)))
                for c in 0..<3 { for p in 0..<1024 { bytes.append(UInt8((7 * r + 3 * c + p) % 256)) } }
                r += 1
            }
            try Data(bytes).write(to: URL(fileURLWithPath: "\(folder)/\(file)"))
        }
    }

    func testCIFAR10ReadsItsBinaryBatches() throws {
        let folder = root + "/cifar-10-batches-bin"
        try writeCIFAR(folder, files: (1...5).map { ("data_batch_\($0).bin", 4) } + [("test_batch.bin", 3)], coarse: false)
        let recipe = try RecipeLoader.parse("name: t\ndata: {dataset: cifar10, path: \(folder)}\nstages:\n  - knn: {k: 5}\n", file: "r.yaml")
        XCTAssertEqual(recipe.data.imageShape, [3, 32, 32])
        XCTAssertEqual(recipe.data.mean, [0.4914, 0.4822, 0.4465])
        let data = try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")
        XCTAssertEqual([data.train.count, data.test.count], [20, 3])
        XCTAssertEqual(data.classNames, CIFAR.cifar10Names)
        var pixels = [Float](repeating: 0, count: 3072)
        data.train.copyImage(at: 5, into: &pixels)
        // data_batch_1 comes first: image 5 is record 5 overall.
        XCTAssertEqual(pixels[1024 + 33], Float((7 * 5 + 3 + 33) % 256) / 255, "channel-first planes")
        XCTAssertEqual(data.train.label(at: 5), 5)
        let knnTooLarge = try? RecipeLoader.parse("name: t\ndata: {dataset: cifar10, path: \(folder)}\nstages:\n  - knn: {k: 50}\n", file: "r.yaml")
        XCTAssertNil(knnTooLarge, "k is checked against the 20 images these files hold")
    }

    func testCIFAR100FineAndCoarseLabels() throws {
        let folder = root + "/cifar-100-binary"
        try writeCIFAR(folder, files: [("train.bin", 30), ("test.bin", 5)], coarse: true)
        try (0..<20).map { "super\($0)" }.joined(separator: "\n").write(toFile: folder + "/coarse_label_names.txt", atomically: true, encoding: .utf8)
        for (labels, expected, classes) in [("fine", 27, 100), ("coarse", 7, 20)] {
            let recipe = try RecipeLoader.parse("name: t\ndata: {dataset: cifar100, path: \(folder), labels: \(labels)}\nstages:\n  - knn: {k: 5}\n", file: "r.yaml")
            let data = try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")
            XCTAssertEqual(data.train.label(at: 27), expected, labels)
            XCTAssertEqual(data.classNames.count, classes)
        }
        let names = try RunData.load(try RecipeLoader.parse("name: t\ndata: {dataset: cifar100, path: \(folder), labels: coarse}\nstages:\n  - knn: {k: 5}\n", file: "r.yaml").data,
                                     seed: 0, recipeFile: "r.yaml").classNames
        XCTAssertEqual(names.first, "super0", "names from coarse_label_names.txt")
    }

    func testBadCIFARFilesSayWhatIsWrong() throws {
        let folder = root + "/bad"
        try writeCIFAR(folder, files: [("train.bin", 2), ("test.bin", 1)], coarse: true)
        try Data(repeating: 1, count: 3073 * 2).write(to: URL(fileURLWithPath: folder + "/test.bin"))
        let recipe = try RecipeLoader.parse("name: t\ndata: {dataset: cifar100, path: \(folder)}\nstages:\n  - knn: {k: 1}\n", file: "r.yaml")
        XCTAssertThrowsError(try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("test.bin is corrupt or truncated: 6146 bytes is not a whole number of 3074-byte records"), "\(error)")
        }
        let missing = try RecipeLoader.parse("name: t\ndata: {dataset: cifar10}\nstages:\n  - knn:\n", file: "r.yaml")
        XCTAssertThrowsError(try RecipeRunner.preflight(missing, recipeFile: "r.yaml", runsDirectory: nil)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("data.path: data/cifar-10-batches-bin/data_batch_1.bin does not exist; CIFAR-10 is not installable here: download its binary version (cifar-10-binary.tar.gz"), text)
        }
    }

    /// A folder of plain (not gzipped) IDX files of 10x10 images in 3 classes.
    func testAnIDXFolderWithClassNames() throws {
        let folder = root + "/idx"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func idx(_ dims: [Int], _ bytes: [UInt8]) -> Data {
            var d: [UInt8] = [0, 0, 8, UInt8(dims.count)]
            for n in dims { d += [UInt8(n >> 24 & 255), UInt8(n >> 16 & 255), UInt8(n >> 8 & 255), UInt8(n & 255)] }
            return Data(d + bytes)
        }
        for (prefix, n) in [("train", 12), ("t10k", 6)] {
            try idx([n, 10, 10], (0..<(n * 100)).map { UInt8($0 % 256) }).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-images-idx3-ubyte"))
            try idx([n], (0..<n).map { UInt8($0 % 3) }).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-labels-idx1-ubyte"))
        }
        let recipe = try RecipeLoader.parse("name: t\ndata: {dataset: idx, path: \(folder), class_names: [a, b, c]}\nencoder: {patch_size: 5}\nstages:\n  - knn: {k: 3}\n",
                                            file: "r.yaml")
        XCTAssertEqual(recipe.data.imageShape, [1, 10, 10], "the shape follows the files")
        let data = try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")
        XCTAssertEqual([data.train.count, data.test.count], [12, 6])
        XCTAssertEqual(data.classNames, ["a", "b", "c"])
        let numbered = try RunData.load(try RecipeLoader.parse("name: t\ndata: {dataset: idx, path: \(folder)}\nencoder: {patch_size: 5}\nstages:\n  - knn: {k: 3}\n", file: "r.yaml").data,
                                        seed: 0, recipeFile: "r.yaml")
        XCTAssertEqual(numbered.classNames, ["0", "1", "2"])
        let tooFew = try RecipeLoader.parse("name: t\ndata: {dataset: idx, path: \(folder), class_names: [a, b]}\nencoder: {patch_size: 5}\nstages:\n  - knn: {k: 3}\n", file: "r.yaml")
        XCTAssertThrowsError(try RunData.load(tooFew.data, seed: 0, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("label 2 is outside the 2 classes"), "\(error)")
        }
    }

    /// A CIFAR-10 recipe runs end to end (RGB at 32 pixels: training, kNN, embeddings).
    func testACIFARRecipeRunsEndToEnd() throws {
        let folder = root + "/cifar-10-batches-bin"
        try writeCIFAR(folder, files: (1...5).map { ("data_batch_\($0).bin", 40) } + [("test_batch.bin", 30)], coarse: false)
        try """
            name: cifar
            data: {dataset: cifar10, path: \(folder)}
            encoder: {patch_size: 8, dim: 16, depth: 1, heads: 2, dim_head: 8, mlp_dim: 32}
            stages:
              - supervised: {epochs: 1, batch_size: 50}
              - knn: {k: 5}
              - extract: {splits: [test]}
            """.write(toFile: root + "/cifar.yaml", atomically: true, encoding: .utf8)
        let run = try WorkbenchProcess.run(["run", "cifar.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(run.status, 0, run.output + run.error)
        XCTAssertTrue(run.output.contains("data cifar10: 200 train, 30 test"), run.output)
    }
}
