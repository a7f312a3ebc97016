import Data
import Foundation
import Runner
import Store
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
        pixels = try data.train.pixels(at: 5)
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

    /// STL-10's binary files: column-major planes, labels 1-10, folds, unlabelled images.
    func writeSTL10(_ folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func images(_ n: Int, from first: Int) -> Data {
            var bytes = [UInt8](repeating: 0, count: n * 3 * 96 * 96)
            for i in 0..<n { for c in 0..<3 { for row in 0..<96 { for col in 0..<96 {
                bytes[i * 27648 + c * 9216 + col * 96 + row] = UInt8((7 * (first + i) + 5 * c + 3 * row + col) % 256)
            } } } }
            return Data(bytes)
        }
        try images(6, from: 0).write(to: URL(fileURLWithPath: folder + "/train_X.bin"))
        try Data([1, 2, 3, 10, 5, 6]).write(to: URL(fileURLWithPath: folder + "/train_y.bin"))
        try images(4, from: 100).write(to: URL(fileURLWithPath: folder + "/test_X.bin"))
        try Data([4, 3, 2, 1]).write(to: URL(fileURLWithPath: folder + "/test_y.bin"))
        try images(5, from: 200).write(to: URL(fileURLWithPath: folder + "/unlabeled_X.bin"))
        try (0..<10).map { f in "\(f % 6) \((f + 1) % 6)" }.joined(separator: "\n").write(toFile: folder + "/fold_indices.txt", atomically: true, encoding: .utf8)
    }

    func testSTL10ReadsPlanesFoldsAndUnlabelledImages() throws {
        let folder = root + "/stl10_binary"
        try writeSTL10(folder)
        let recipe = try RecipeLoader.parse("name: t\ndata: {dataset: stl10, path: \(folder), pretrain_images: train+unlabelled}\nencoder: {patch_size: 16}\nstages:\n  - knn: {k: 2}\n",
                                            file: "r.yaml")
        let data = try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")
        XCTAssertEqual([data.train.count, data.test.count, data.pretrain.count], [6, 4, 11])
        XCTAssertEqual((0..<6).map(data.train.label), [0, 1, 2, 9, 4, 5], "labels 1-10 become 0-9")
        XCTAssertEqual(data.pretrain.label(at: 7), -1, "the unlabelled images have no label")
        var pixels = [Float](repeating: 0, count: 27648)
        pixels = try data.test.pixels(at: 2)
        XCTAssertEqual(pixels[9216 + 10 * 96 + 20], Float((7 * 102 + 5 + 30 + 20) % 256) / 255, "planes turned from column-major to (C, H, W)")
        pixels = try data.pretrain.pixels(at: 8)
        XCTAssertEqual(pixels[2 * 9216 + 95 * 96 + 1], Float((7 * 202 + 10 + 285 + 1) % 256) / 255)
        let fold = try RunData.load(try RecipeLoader.parse("name: t\ndata: {dataset: stl10, path: \(folder), fold: 3}\nencoder: {patch_size: 16}\nstages:\n  - knn: {k: 2}\n",
                                                            file: "r.yaml").data, seed: 0, recipeFile: "r.yaml")
        XCTAssertEqual((0..<fold.train.count).map(fold.train.label), [3, 4].map { [0, 1, 2, 9, 4, 5][$0] }, "fold 3 lists training images 3 and 4")
        let cifar = "name: t\ndata: {dataset: cifar10, pretrain_images: unlabelled}\nstages:\n  - knn:\n"
        XCTAssertThrowsError(try RecipeLoader.parse(cifar, file: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("data.pretrain_images: cifar10 has no unlabelled images"), "\(error)")
        }
        try Data(count: 1000).write(to: URL(fileURLWithPath: folder + "/test_X.bin"))
        XCTAssertThrowsError(try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("test_X.bin is corrupt or truncated: 1000 bytes is not a whole number of 27648-byte 96x96 RGB images"), "\(error)")
        }
    }

    /// Pretraining on STL-10's unlabelled images, then kNN on its labelled splits, end to end.
    func testPretrainingOnUnlabelledImagesRuns() throws {
        let folder = root + "/stl10_binary"
        try writeSTL10(folder)
        try """
            name: stl
            data: {dataset: stl10, path: \(folder), pretrain_images: unlabelled}
            encoder: {patch_size: 16, dim: 16, depth: 1, heads: 2, dim_head: 8, mlp_dim: 32}
            stages:
              - pretrain:
                  objective: {kind: mae, decoder_dim: 16, decoder_depth: 1, decoder_heads: 2, decoder_dim_head: 8}
                  epochs: 1
                  batch_size: 5
                  warmup_epochs: 0
              - knn: {k: 2}
            """.write(toFile: root + "/stl.yaml", atomically: true, encoding: .utf8)
        let run = try WorkbenchProcess.run(["run", "stl.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(run.status, 0, run.output + run.error)
        XCTAssertTrue(run.output.contains("pretrain: mae, 1 epoch of 1 step, batch 5, 5 training images"), run.output)
    }

    /// `arrays`: uint8 images (N, H, W, C) and labels in an HDF5 file, under the recipe's names.
    func testArraysFromAnHDF5File() throws {
        let path = root + "/arrays.h5"
        do {
            let file = try HDF5File(path: path, mode: .create)
            // 5 training and 2 test images of 4x6 pixels, 3 channels last: value (9i + 5y + 2x + c) % 256.
            func images(_ n: Int) -> [UInt8] {
                var v: [UInt8] = []
                for i in 0..<n { for y in 0..<4 { for x in 0..<6 { for c in 0..<3 { v.append(UInt8((9 * i + 5 * y + 2 * x + c) % 256)) } } } }
                return v
            }
            try file.root.group("x").write("train", images(5), shape: [5, 4, 6, 3])
            try file.root.group("x").write("test", images(2), shape: [2, 4, 6, 3])
            try file.root.write("train_y", [Int64](arrayLiteral: 0, 1, 2, 1, 0))
            try file.root.write("test_y", [Int64](arrayLiteral: 2, 0))
        }
        let text = "name: t\ndata: {dataset: arrays, path: \(path), train_images: x/train, train_labels: train_y, test_images: x/test, test_labels: test_y, class_names: [a, b, c]}\nencoder: {patch_size: 2}\nstages:\n  - knn: {k: 2}\n"
        let recipe = try RecipeLoader.parse(text, file: "r.yaml")
        XCTAssertEqual(recipe.data.imageShape[0], 3)
        let data = try RunData.load(recipe.data, seed: 0, recipeFile: "r.yaml")
        // Stored (C, H, W) = (3, 4, 6); the encoder sees image_size 4 (the height), so the evaluation
        // transform resizes the shorter side to 4 and centre-crops 4x4.
        XCTAssertEqual(data.train.imageShape, [3, 4, 4])
        XCTAssertEqual(try data.train.image(at: 0, decoder: ImageDecoder()) { _, _ in .whole }.image.width, 6, "channels-last arrays become (C, H, W)")
        XCTAssertEqual(data.classNames, ["a", "b", "c"])
        var pixels = [Float](repeating: 0, count: 72)
        pixels = try data.train.pixels(at: 3)
        XCTAssertEqual(pixels[2 * 24 + 1 * 6 + 4], Float((27 + 5 + 8 + 2) % 256) / 255)
        XCTAssertEqual(data.test.label(at: 0), 2)
        let missing = try RecipeLoader.parse(text.replacingOccurrences(of: "test_labels: test_y", with: "test_labels: nope"), file: "r.yaml")
        XCTAssertThrowsError(try RecipeRunner.preflight(missing, recipeFile: "r.yaml", runsDirectory: nil)) { error in
            XCTAssertTrue("\(error)".contains("has no array 'nope' (data.test_labels)"), "\(error)")
        }
    }

    /// `workbench views`: the evaluation images and every pretraining view, before normalisation.
    func testViewsWritesWhatTheStagesSee() throws {
        let out = root + "/views/dino.h5"
        let run = try WorkbenchProcess.run(["views", "recipes/dino.yaml", "--count", "3", "--out", out], in: RegistryTests.root)
        XCTAssertEqual(run.status, 0, run.error)
        let file = try HDF5File(path: out, mode: .readOnly)
        XCTAssertEqual(try file.root.dataset("train/eval").shape, [3, 1, 28, 28])
        XCTAssertEqual(try file.root.dataset("test/pretrain/view_0").shape, [3, 1, 28, 28])
        XCTAssertEqual(try file.root.dataset("test/pretrain/view_7").shape, [3, 1, 12, 12], "dino.yaml: 2 global views and 6 local ones of 12 pixels")
        let pixels = try file.root.dataset("train/pretrain/view_2").read(as: Float.self)
        XCTAssertTrue(pixels.allSatisfy { $0 >= -1e-5 && $0 <= 1 + 1e-5 }, "pixels before normalisation")
        XCTAssertEqual(try file.root.attribute("mean"), .reals([0.286]))
        let bad = try WorkbenchProcess.run(["views", "recipes/dino.yaml", "--count", "0", "--out", out], in: RegistryTests.root)
        XCTAssertTrue(bad.error.contains("--count must be positive"), bad.error)
    }
}
