import Data
import Foundation
import Runner
import Store
import TestSupport
import XCTest

/// `dataset: imagefolder` through the runner: recipes on a folder of images of several sizes and
/// formats, the bad-file policy (stop before training, or skip and count), and the messages a
/// missing or wrong folder gets.
final class ImageFolderRunTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "imagefolder-run-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    /// A binary PPM (P6) or PGM (P5) of width x height whose pixels depend on `seed`.
    func writeNetpbm(_ path: String, width: Int, height: Int, gray: Bool, seed: Int) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        var bytes = Array("\(gray ? "P5" : "P6")\n\(width) \(height)\n255\n".utf8)
        for y in 0..<height { for x in 0..<width { for c in 0..<(gray ? 1 : 3) {
            bytes.append(UInt8((seed * 37 + x * (3 + seed % 4) + y * (5 + c) + c * 50) % 256))
        } } }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// train/{a,b,c}/ and val/{a,b,c}/ of RGB and gray images from 20x30 to 70x50.
    func writeFolder(perClass: Int = 6) throws -> String {
        let folder = root + "/images"
        for (split, count) in [("train", perClass), ("val", 2)] {
            for (c, name) in ["a", "b", "c"].enumerated() {
                for i in 0..<count {
                    let w = 20 + (i * 17 + c * 11) % 50, h = 30 + (i * 7) % 20
                    try writeNetpbm("\(folder)/\(split)/\(name)/\(i).\(i % 3 == 0 ? "pgm" : "ppm")", width: w, height: h, gray: i % 3 == 0, seed: c * 100 + i)
                }
            }
        }
        return folder
    }

    func recipe(_ folder: String, extra: String = "", stages: String? = nil) -> String {
        """
        name: folder
        data: {dataset: imagefolder, path: \(folder), image_size: 16\(extra)}
        encoder: {patch_size: 8, dim: 16, depth: 1, heads: 2, dim_head: 8, mlp_dim: 32}
        stages:
        \(stages ?? "  - supervised: {epochs: 1, batch_size: 6, random_resized_crop: [0.3, 1.0]}\n  - knn: {k: 3}\n  - extract: {splits: [test]}")
        """
    }

    func testAFolderRecipeRunsEndToEnd() throws {
        let folder = try writeFolder()
        try recipe(folder).write(toFile: root + "/folder.yaml", atomically: true, encoding: .utf8)
        let run = try WorkbenchProcess.run(["run", "folder.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(run.status, 0, run.output + run.error)
        XCTAssertTrue(run.output.contains("imagefolder train: 18 images in 3 classes"), run.output)
        XCTAssertTrue(run.output.contains("data imagefolder: 18 train, 6 test"), run.output)
        let runFolder = try FileManager.default.contentsOfDirectory(atPath: root + "/runs/folder").first!
        let embeddings = try HDF5File(path: "\(root!)/runs/folder/\(runFolder)/embeddings.h5", mode: .readOnly)
        XCTAssertEqual(try embeddings.root.dataset("class_names").readStrings(), ["a", "b", "c"])
        // predict applies the run's evaluation transform: its scores are the softmax of the test
        // split's logits as extract computes them, file by file.
        let checkpoint = "runs/folder/\(runFolder)/checkpoints/encoder.safetensors"
        let extract = try WorkbenchProcess.run(["extract", "--checkpoint", checkpoint, "--hidden-layer", "logits", "--split", "test", "--out", "logits.h5"], in: root)
        XCTAssertEqual(extract.status, 0, extract.error)
        let logits = try HDF5File(path: root + "/logits.h5", mode: .readOnly).root.dataset("test/features").read(as: Float.self)
        let predict = try WorkbenchProcess.run(["predict", "--checkpoint", checkpoint, "--json", "--top", "3", "\(folder)/val"], in: root)
        XCTAssertEqual(predict.status, 0, predict.error)
        let list = try JSONSerialization.jsonObject(with: Data(predict.output.utf8)) as! [[String: Any]]
        XCTAssertEqual(list.count, 6)
        for (i, entry) in list.enumerated() {
            let row = Array(logits[(3 * i)..<(3 * i + 3)]), top = row.max()!
            let exps = row.map { Foundation.exp(Double($0 - top)) }, total = exps.reduce(0, +)
            for p in entry["predictions"] as! [[String: Any]] {
                XCTAssertEqual(p["score"] as! Double, exps[p["index"] as! Int] / total, accuracy: 1e-5, "\(entry["file"]!)")
            }
        }
        XCTAssertTrue(predict.error.isEmpty, "a trained head: no warning")
    }

    func testPretrainingOnAnUnlabelledFolderAndTheSameBatchesWithAnyWorkers() throws {
        let folder = try writeFolder()
        for i in 0..<8 { try writeNetpbm("\(folder)/raw/\(i % 2)/\(i).ppm", width: 40 + i, height: 33, gray: false, seed: 500 + i) }
        let stages = """
              - pretrain:
                  objective: {kind: dino, out_dim: 32, hidden_dim: 16, bottleneck_dim: 8, augment: {local_crops: 2, local_size: 8}}
                  epochs: 1
                  batch_size: 4
              - knn: {k: 3}
            """
        var losses: [String] = []
        for workers in [1, 3] {
            let text = recipe(folder, extra: ", unlabelled_folder: raw, pretrain_images: unlabelled, workers: \(workers)", stages: stages)
            let loaded = try RecipeLoader.parse(text, file: "r.yaml")
            let log = RunLog(echo: false)
            let directory = try RecipeRunner.start(loaded, recipeFile: "r.yaml", runsDirectory: root + "/runs-\(workers)", log: log)
            let metrics = try HDF5File(path: directory + "/metrics.h5", mode: .readOnly)
            losses.append("\(try metrics.root.group("pretrain").attribute("final_loss")) \(try metrics.root.group("knn").attribute("test_top1"))")
        }
        XCTAssertEqual(losses[0], losses[1], "1 and 3 workers give the same run")
    }

    func testABadFileStopsTheRunBeforeTrainingOrIsSkippedAndCounted() throws {
        let folder = try writeFolder()
        try Data("GIF89a not really".utf8).write(to: URL(fileURLWithPath: "\(folder)/train/b/broken.jpg"))
        try recipe(folder).write(toFile: root + "/folder.yaml", atomically: true, encoding: .utf8)
        let stopped = try WorkbenchProcess.run(["run", "folder.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertNotEqual(stopped.status, 0)
        XCTAssertTrue(stopped.error.contains("train/b/broken.jpg") && stopped.error.contains("data.on_error: skip"), stopped.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/runs/folder"), "no run folder for a run that never started")
        try recipe(folder, extra: ", on_error: skip").write(toFile: root + "/skip.yaml", atomically: true, encoding: .utf8)
        let skipped = try WorkbenchProcess.run(["run", "skip.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(skipped.status, 0, skipped.output + skipped.error)
        XCTAssertTrue(skipped.output.contains("left out 1 image that did not decode"), skipped.output)
        let runFolder = try FileManager.default.contentsOfDirectory(atPath: root + "/runs/folder").first!
        let metrics = try HDF5File(path: "\(root!)/runs/folder/\(runFolder)/metrics.h5", mode: .readOnly)
        XCTAssertEqual(try metrics.root.attribute("skipped_images"), .integers([1]))
        XCTAssertTrue(try metrics.root.dataset("skipped_files").readStrings()[0].contains("broken.jpg"))
    }

    func testFolderMistakesGetMessagesThatNameTheFix() throws {
        let folder = try writeFolder()
        try recipe(folder, extra: ", test_folder: test").write(toFile: root + "/wrong.yaml", atomically: true, encoding: .utf8)
        let wrong = try WorkbenchProcess.run(["validate", "wrong.yaml"], in: root)
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.error.contains("\(folder)/test is not a folder") && wrong.error.contains("data.test_folder"), wrong.error)
        try FileManager.default.createDirectory(atPath: "\(folder)/train/d_empty", withIntermediateDirectories: true)
        try recipe(folder).write(toFile: root + "/empty.yaml", atomically: true, encoding: .utf8)
        let empty = try WorkbenchProcess.run(["run", "empty.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.error.contains("d_empty") && empty.error.contains("no images"), empty.error)
        // Normalisations by name: timm's constants, stored as numbers.
        let named = try RecipeLoader.parse(recipe(folder, extra: ", mean: inception, std: imagenet"), file: "r.yaml")
        XCTAssertEqual(named.data.mean, [0.5])
        XCTAssertEqual(named.data.std, [0.229, 0.224, 0.225])
        XCTAssertThrowsError(try RecipeLoader.parse(recipe(folder, extra: ", mean: imagenett"), file: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("data.mean: unknown normalisation 'imagenett'; name one of imagenet, inception"), "\(error)")
        }
        XCTAssertThrowsError(try RecipeLoader.parse(recipe(folder, extra: ", pretrain_images: unlabelled"), file: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("unlabelled_folder"), "\(error)")
        }
    }
}
