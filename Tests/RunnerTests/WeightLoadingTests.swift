import Encoders
import Foundation
import NN
import Objectives
import Runner
import Store
import TensorCore
import TestSupport
import XCTest

/// `encoder.weights`: the workbench's own checkpoints and vit-pytorch state_dicts saved by
/// torch.save (fixtures from tools/make_weight_fixtures.py, real PyTorch 2.15), read without
/// running code, loaded strictly, with a report that says what the file holds.
final class WeightLoadingTests: XCTestCase {
    func fixture(_ name: String) throws -> String {
        try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")).path
    }

    /// The fixtures' ViT, as a recipe's encoder section.
    var tinyViT: EncoderSection {
        var vit = ViTSettings()
        (vit.config.patchHeight, vit.config.patchWidth, vit.config.dim, vit.config.depth) = (4, 4, 16, 2)
        (vit.config.heads, vit.config.dimHead, vit.config.mlpDim) = (2, 8, 32)
        return EncoderSection(vit)
    }

    func testATorchSaveStateDictMatchesVitPytorch() throws {
        let expected = try SafeTensors.read(path: try fixture("vit_tiny_expected.safetensors"))
        let state = try TorchCheckpoint.read(path: try fixture("vit_tiny.pt"))
        XCTAssertEqual(state["mlp_head.weight"]?.scalars, expected["mlp_head.weight"]?.scalars)
        XCTAssertTrue(try WeightFiles.format(of: try fixture("vit_tiny.pt")) == TorchCheckpoint.self)
        var section = tinyViT
        section.weights = try fixture("vit_tiny.pt")
        let (encoder, _) = section.make(EncoderInput(imageSize: 8, channels: 1, classes: 5), seed: 9)
        XCTAssertEqual(Set(state.keys), Set(encoder.stateDict().keys), "a vit-pytorch state_dict has exactly the encoder's names")
        let report = try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")
        XCTAssertTrue(report.contains("tensors from") && report.contains("(pytorch)"), report)
        encoder.eval()
        let x = try XCTUnwrap(expected["x"])
        for layer in ["logits", "pooled"] {
            let got = Autograd.noGrad { encoder.hidden(x, layer: layer) }.scalars
            let want = try XCTUnwrap(expected[layer]).scalars
            for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-4 * Swift.max(1, abs(b)), layer) }
        }
    }

    /// {"state_dict": {"module." + name: ...}, "epoch": 3}: found under its prefix; other dtypes
    /// and a transposed (non-contiguous) tensor read as torch holds them.
    func testNestedCheckpointsDtypesAndStrides() throws {
        let path = try fixture("vit_tiny_nested.pth")
        let file = try TorchCheckpoint.read(path: path)
        let head = try XCTUnwrap(file["state_dict.module.mlp_head.weight"])
        XCTAssertNil(file["epoch"], "numbers are not tensors")
        XCTAssertEqual(file["state_dict.extra.double"]?.scalars, head.scalars)
        for (a, b) in zip(try XCTUnwrap(file["state_dict.extra.half"]).scalars, head.scalars) { XCTAssertEqual(a, b, accuracy: 1e-3 * Swift.max(1, abs(b))) }
        let transposed = try XCTUnwrap(file["state_dict.extra.transposed"])
        XCTAssertEqual(transposed.shape, [head.shape[1], head.shape[0]])
        XCTAssertEqual(transposed.scalars, head.transposed(0, 1).scalars)
        var section = tinyViT
        section.weights = path
        let (encoder, _) = section.make(EncoderInput(imageSize: 8, channels: 1, classes: 5), seed: 9)
        let found = try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")
        XCTAssertTrue(found.contains("prefix 'state_dict.module.'"), "the prefix is found from the names: \(found)")
        XCTAssertEqual(encoder.stateDict()["mlp_head.weight"]?.scalars, head.scalars)
        // Under a prefix that also holds other tensors, strict loading refuses the strangers.
        section.weightsPrefix = "state_dict."
        XCTAssertThrowsError(try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("unexpected"), "\(error)")
        }
    }

    func testAPickleThatAsksForCodeIsRefused() throws {
        let path = try fixture("evil.pt")
        XCTAssertThrowsError(try TorchCheckpoint.read(path: path)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("asks for the Python global 'posix.system'") && message.contains("never runs code"), message)
        }
    }

    /// Truncated and bit-flipped checkpoints give an error or tensors, never a trap.
    func testDamagedCheckpointsNeverTrap() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: try fixture("vit_tiny.pt")))
        let folder = NSTemporaryDirectory() + "fuzz-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let rng = RandomStream(seed: 4, purpose: "fuzz")
        var errors = 0
        for trial in 0..<600 {
            var bytes = [UInt8](original)
            if trial % 3 == 0 {
                bytes = Array(bytes.prefix(rng.nextInt(below: bytes.count)))
            } else {
                for _ in 0..<(1 + trial % 7) { bytes[rng.nextInt(below: bytes.count)] ^= UInt8(1 << rng.nextInt(below: 8)) }
            }
            let path = folder + "/damaged.pt"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do { _ = try WeightFiles.read(path: path) } catch { errors += 1 }
        }
        XCTAssertGreaterThan(errors, 100, "most damaged files are refused")
    }

    /// A mismatch says what the file holds and which keys to set.
    func testAMismatchSaysWhatTheFileHolds() throws {
        var section = EncoderSection()
        section.weights = try fixture("vit_tiny.pt")
        let (encoder, _) = section.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 1)
        XCTAssertThrowsError(try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("r.yaml: encoder.weights: "), message)
            XCTAssertTrue(message.contains("the file has 2 blocks of width 16 and patch 4 over 1 channel: set encoder.depth: 2, encoder.dim: 16, encoder.patch_size: 4, encoder.mlp_dim: 32, encoder.heads * encoder.dim_head = 16."), message)
        }
        // The right shape at 28 pixels: positions resampled; only the head (5 classes, not 10) differs.
        var fits = tinyViT
        fits.weights = section.weights
        let (small, _) = fits.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 1)
        XCTAssertThrowsError(try EncoderWeights.load(fits, into: small, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("Only the classification head differs: set encoder.weights_skip_head: true"), "\(error)")
        }
        fits.weightsSkipHead = true
        let report = try EncoderWeights.load(fits, into: small, recipeFile: "r.yaml")
        XCTAssertTrue(report.contains("pos_embedding resampled bicubically (antialiased) from 5 to 50 positions"), report)
        XCTAssertTrue(report.contains("classification head (mlp_head.*) keeps its fresh initialisation"), report)
    }

    /// CrossViT's two heads (sm_mlp_head, lg_mlp_head) are its classification head: weights for
    /// other classes load with both kept fresh.
    func testTwoHeadsAreSkippedTogether() throws {
        let path = NSTemporaryDirectory() + "crossvit-\(getpid()).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var section = try RecipeLoader.section(EncoderSection.self, yaml: "kind: cross-vit\n", file: "r.yaml")
        let (five, _) = section.make(EncoderInput(imageSize: 28, channels: 1, classes: 5), seed: 1)
        try SafeTensors.write(five.stateDict(), to: path)
        section.weights = path
        let (ten, _) = section.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 2)
        XCTAssertThrowsError(try EncoderWeights.load(section, into: ten, recipeFile: "r.yaml")) { error in
            XCTAssertTrue("\(error)".contains("Only the classification head differs"), "\(error)")
        }
        section.weightsSkipHead = true
        let report = try EncoderWeights.load(section, into: ten, recipeFile: "r.yaml")
        XCTAssertTrue(report.contains("classification head (sm_mlp_head.*, lg_mlp_head.*) keeps its fresh initialisation"), report)
    }

    /// `encoder.weights: RUN/checkpoints/encoder-supervised.safetensors` evaluates an earlier run:
    /// an evaluation-only recipe gives the first run's kNN result, bit for bit.
    func testAnEvaluationRecipeStartsFromAnEarlierRun() throws {
        let root = NSTemporaryDirectory() + "weights-run-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let common = """
            seed: 4
            data: {train_subset: 512, test_subset: 200}
            encoder: {dim: 16, depth: 1, heads: 2, dim_head: 8, mlp_dim: 32}

            """
        try ("name: first\n" + common + "stages:\n  - supervised: {epochs: 1, batch_size: 64}\n  - knn:\n")
            .write(toFile: root + "/first.yaml", atomically: true, encoding: .utf8)
        let first = try WorkbenchProcess.run(["run", "first.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(first.status, 0, first.output + first.error)
        let folder = root + "/runs/first/" + (try FileManager.default.contentsOfDirectory(atPath: root + "/runs/first")[0])
        let second = "name: second\n" + common.replacingOccurrences(of: "mlp_dim: 32}", with: "mlp_dim: 32, weights: \(folder)/checkpoints/encoder-supervised.safetensors}")
            + "stages:\n  - knn:\n"
        try second.write(toFile: root + "/second.yaml", atomically: true, encoding: .utf8)
        let again = try WorkbenchProcess.run(["run", "second.yaml", "--runs-dir", "runs"], in: root)
        XCTAssertEqual(again.status, 0, again.output + again.error)
        XCTAssertTrue(again.output.contains("tensors from \(folder)/checkpoints/encoder-supervised.safetensors (safetensors)"), again.output)
        func knn(_ run: String) throws -> Double {
            let dir = root + "/runs/\(run)/" + (try FileManager.default.contentsOfDirectory(atPath: root + "/runs/\(run)")[0])
            guard case .reals(let v) = try HDF5File(path: dir + "/metrics.h5", mode: .readOnly).root.group("knn").attribute("test_top1") else { return .nan }
            return v[0]
        }
        XCTAssertEqual(try knn("first"), try knn("second"))
        let missing = try WorkbenchProcess.run(["validate", "second.yaml", "--set", "encoder.weights=nope.pt"], in: root)
        XCTAssertTrue(missing.error.contains("encoder.weights: nope.pt does not exist or cannot be read"), missing.error)
        // Weights that do not fit stop the run before it makes a folder, naming the user's recipe.
        let wrong = try WorkbenchProcess.run(["run", "second.yaml", "--runs-dir", "wrong", "--set", "encoder.dim=32"], in: root)
        XCTAssertEqual(wrong.status, 1)
        XCTAssertTrue(wrong.error.contains("second.yaml: encoder.weights: ") && wrong.error.contains("does not fit the vit encoder"), wrong.error)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/wrong"), "no run folder for a run that cannot start")
    }

    /// `export` writes the checkpoint's encoder (the teacher of a DINO checkpoint) as a .pt that
    /// reads back to the same tensors (torch.load(weights_only=True) and vit-pytorch's strict load
    /// are checked by tools/check_export.py, which needs PyTorch), or as safetensors.
    func testExportWritesTheEncoderForPyTorch() throws {
        let root = NSTemporaryDirectory() + "export-\(getpid())"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        var section = tinyViT
        section.weights = try fixture("vit_tiny.pt")
        let (encoder, _) = section.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 3)
        var objective = encoder.stateDict().map { ("teacher_encoder.net." + $0.key, $0.value) }
        objective.append(("teacher_encoder.projector.last_layer.weight", .zeros([3, 2])))
        let data = DataSection()
        let metadata = ["encoder": RecipeLoader.yamlFragment(section), "data": RecipeLoader.yamlFragment(data), "encoder_prefix": "teacher_encoder.net."]
        try WeightFiles.write(Dictionary(uniqueKeysWithValues: objective), metadata: metadata, to: root + "/best.safetensors")
        for out in ["teacher.pt", "teacher.pth", "teacher.safetensors"] {
            let run = try WorkbenchProcess.run(["export", "--checkpoint", "best.safetensors", "--to", "vit-pytorch", "--out", "out/" + out], in: root)
            XCTAssertEqual(run.status, 0, run.error)
            XCTAssertTrue(run.output.contains("load_state_dict("), run.output)
            let back = try WeightFiles.read(path: root + "/out/" + out)
            let original = encoder.stateDict()
            XCTAssertEqual(Set(back.keys), Set(original.keys), out)
            for (name, tensor) in original { XCTAssertEqual(back[name]?.scalars, tensor.scalars, "\(out): \(name)") }
        }
        let timm = try WorkbenchProcess.run(["export", "--checkpoint", "best.safetensors", "--to", "timm", "--out", "t.pt"], in: root)
        XCTAssertEqual(timm.status, 1)
        XCTAssertTrue(timm.error.contains("holds a vit encoder, whose weights are vit-pytorch's; export it --to vit-pytorch"), timm.error)
        let format = try WorkbenchProcess.run(["export", "--checkpoint", "best.safetensors", "--out", "t.bin"], in: root)
        XCTAssertTrue(format.error.contains("give a .safetensors, .pt or .pth file name"), format.error)
        // A timm-vit checkpoint exports with timm's names, --to timm.
        var timmViT = TimmViTSettings()
        (timmViT.config.patchSize, timmViT.config.dim, timmViT.config.depth, timmViT.config.heads, timmViT.config.mlpDim) = (4, 16, 2, 2, 32)
        let timmSection = EncoderSection(timmViT)
        let (timmEncoder, _) = timmSection.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 6)
        try WeightFiles.write(timmEncoder.stateDict(), metadata: ["encoder": RecipeLoader.yamlFragment(timmSection), "data": RecipeLoader.yamlFragment(data)],
                              to: root + "/timm.safetensors")
        let toTimm = try WorkbenchProcess.run(["export", "--checkpoint", "timm.safetensors", "--to", "timm", "--out", "timm.pt"], in: root)
        XCTAssertEqual(toTimm.status, 0, toTimm.error)
        XCTAssertTrue(toTimm.output.contains("timm names") && toTimm.output.contains("VisionTransformer(img_size=28"), toTimm.output)
        XCTAssertEqual(Set(try TorchCheckpoint.read(path: root + "/timm.pt").keys), Set(timmEncoder.stateDict().keys))
        // A CvT's BatchNorms: torch's strict load also wants num_batches_tracked, which export adds and loading ignores.
        var cvt = EncoderSection(CvTSettings())
        let (cvtEncoder, _) = cvt.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 7)
        try WeightFiles.write(cvtEncoder.stateDict(), metadata: ["encoder": RecipeLoader.yamlFragment(cvt), "data": RecipeLoader.yamlFragment(data)],
                              to: root + "/cvt.safetensors")
        let toTorch = try WorkbenchProcess.run(["export", "--checkpoint", "cvt.safetensors", "--out", "cvt.pt"], in: root)
        XCTAssertEqual(toTorch.status, 0, toTorch.error)
        let exported = try TorchCheckpoint.read(path: root + "/cvt.pt")
        XCTAssertTrue(exported.keys.contains { $0.hasSuffix(".num_batches_tracked") })
        cvt.weights = root + "/cvt.pt"
        let (again, _) = cvt.make(EncoderInput(imageSize: 28, channels: 1, classes: 10), seed: 8)
        _ = try EncoderWeights.load(cvt, into: again, recipeFile: "r.yaml")
        XCTAssertEqual(again.stateDict().mapValues(\.scalars), cvtEncoder.stateDict().mapValues(\.scalars))
    }

    /// timm's state_dict loads into `timm-vit` unchanged and gives timm's tokens, pre-logits and
    /// logits (token pooling, and avg pooling with fc_norm); MAE trains on it (a PatchTokenEncoder).
    func testTimmWeightsLoadIntoTheTimmViT() throws {
        for pool in ["token", "avg"] {
            var timm = TimmViTSettings()
            (timm.config.patchSize, timm.config.dim, timm.config.depth, timm.config.heads, timm.config.mlpDim) = (4, 16, 2, 2, 32)
            timm.config.pool = TimmViTConfig.Pool(rawValue: pool)!
            var section = EncoderSection(timm)
            section.weights = try fixture("timm_tiny_\(pool).safetensors")
            let (encoder, _) = section.make(EncoderInput(imageSize: 8, channels: 1, classes: 5), seed: 2)
            XCTAssertEqual(Set(try SafeTensors.read(path: section.weights!).keys), Set(encoder.stateDict().keys), "timm's names, unchanged")
            _ = try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")
            encoder.eval()
            let expected = try SafeTensors.read(path: try fixture("timm_tiny_\(pool)_expected.safetensors"))
            let x = try XCTUnwrap(expected["x"])
            for layer in ["tokens", "pooled", "logits"] {
                let got = Autograd.noGrad { encoder.hidden(x, layer: layer) }
                let want = try XCTUnwrap(expected[layer])
                XCTAssertEqual(got.shape, want.shape, "\(pool) \(layer)")
                for (a, b) in zip(got.scalars, want.scalars) { XCTAssertEqual(a, b, accuracy: 1e-4 * Swift.max(1, abs(b)), "\(pool) \(layer)") }
            }
            // At 16 pixels the 2x2 position grid is resampled to 4x4, the class row kept.
            var bigger = section
            bigger.weights = section.weights
            let (large, _) = bigger.make(EncoderInput(imageSize: 16, channels: 1, classes: 5), seed: 2)
            let report = try EncoderWeights.load(bigger, into: large, recipeFile: "r.yaml")
            XCTAssertTrue(report.contains("pos_embed resampled bicubically (antialiased) from 5 to 17 positions"), report)
            guard let patchEncoder = encoder as? any PatchTokenEncoder else { return XCTFail("timm-vit is a PatchTokenEncoder") }
            var mae = MAE.Config()
            (mae.decoderDim, mae.decoderDepth, mae.decoderHeads, mae.decoderDimHead) = (16, 1, 2, 8)
            encoder.train()
            let objective = MAE(encoder: patchEncoder, config: mae, initializer: Initializer(seed: 3), maskSeed: 1)
            let loss = objective.loss(x).loss
            XCTAssertTrue(loss.item.isFinite)
            loss.backward()
            XCTAssertNotNil(encoder.stateDict().isEmpty ? nil : (encoder as Module).parameters.first { $0.grad != nil }, "gradients reach the encoder")
        }
    }

    /// Google's original ViT .npz (timm's _load_weights inverted, and checked by it): recognised as
    /// npz, mapped to timm's names, and the timm-vit gives timm's outputs for the same model.
    func testGoogleNpzLoadsIntoTheTimmViT() throws {
        let path = try fixture("google_tiny.npz")
        XCTAssertTrue(try WeightFiles.format(of: path) == NumpyArchive.self)
        XCTAssertEqual(try NumpyArchive.read(path: path)["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]?.shape, [16, 2, 8])
        XCTAssertEqual(try NumpyArchive.shapes(path: path), try NumpyArchive.read(path: path).mapValues(\.shape), "the headers alone give the shapes")
        var timm = TimmViTSettings()
        (timm.config.patchSize, timm.config.dim, timm.config.depth, timm.config.heads, timm.config.mlpDim) = (4, 16, 2, 2, 32)
        var section = EncoderSection(timm)
        section.weights = path
        let (encoder, _) = section.make(EncoderInput(imageSize: 8, channels: 1, classes: 5), seed: 5)
        let report = try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")
        XCTAssertTrue(report.contains("(npz)") && report.contains("Google ViT names mapped to timm's"), report)
        encoder.eval()
        let expected = try SafeTensors.read(path: try fixture("timm_tiny_token_expected.safetensors"))
        let got = Autograd.noGrad { encoder.hidden(try! XCTUnwrap(expected["x"]), layer: "logits") }
        for (a, b) in zip(got.scalars, try XCTUnwrap(expected["logits"]).scalars) { XCTAssertEqual(a, b, accuracy: 1e-4 * Swift.max(1, abs(b))) }
        // A damaged archive: an error, never a trap.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let damaged = NSTemporaryDirectory() + "damaged-\(getpid()).npz"
        defer { try? FileManager.default.removeItem(atPath: damaged) }
        let rng = RandomStream(seed: 8, purpose: "fuzz")
        for trial in 0..<200 {
            var copy = trial % 2 == 0 ? Array(bytes.prefix(rng.nextInt(below: bytes.count))) : bytes
            if trial % 2 == 1 { for _ in 0..<3 { copy[rng.nextInt(below: copy.count)] ^= 0x5A } }
            try Data(copy).write(to: URL(fileURLWithPath: damaged))
            _ = try? WeightFiles.read(path: damaged)
        }
        bytes.removeAll()
    }

    /// A position grid for another image size, resampled as timm does when it loads the file: a
    /// hub checkpoint bicubically with antialiasing (checkpoint_filter_fn), a Google .npz bilinearly
    /// without (_load_weights); up (2x2 -> 4x4 at 16 px) and down (2x2 -> 1x1 at 4 px).
    func testPositionTablesAreResampledAsTimmResamplesThem() throws {
        for (file, expectedName) in [("timm_tiny_token.safetensors", "timm_tiny_token"), ("google_tiny.npz", "google_tiny")] {
            for size in [16, 4] {
                var timm = TimmViTSettings()
                (timm.config.patchSize, timm.config.dim, timm.config.depth, timm.config.heads, timm.config.mlpDim) = (4, 16, 2, 2, 32)
                var section = EncoderSection(timm)
                section.weights = try fixture(file)
                let (encoder, _) = section.make(EncoderInput(imageSize: size, channels: 1, classes: 5), seed: 5)
                let report = try EncoderWeights.load(section, into: encoder, recipeFile: "r.yaml")
                XCTAssertTrue(report.contains(file.hasSuffix(".npz") ? "resampled bilinearly" : "resampled bicubically (antialiased)"), report)
                encoder.eval()
                let expected = try SafeTensors.read(path: try fixture("\(expectedName)_\(size)_expected.safetensors"))
                let positions = try XCTUnwrap(encoder.stateDict()["pos_embed"]).scalars
                for (a, b) in zip(positions, try XCTUnwrap(expected["pos_embed"]).scalars) {
                    XCTAssertEqual(a, b, accuracy: 1e-5 * Swift.max(1, abs(b)), "\(file) at \(size) px: pos_embed")
                }
                let x = try XCTUnwrap(expected["x"])
                for layer in ["tokens", "pooled", "logits"] {
                    let got = Autograd.noGrad { encoder.hidden(x, layer: layer) }
                    for (a, b) in zip(got.scalars, try XCTUnwrap(expected[layer]).scalars) {
                        XCTAssertEqual(a, b, accuracy: 1e-4 * Swift.max(1, abs(b)), "\(file) at \(size) px: \(layer)")
                    }
                }
            }
        }
    }
}
