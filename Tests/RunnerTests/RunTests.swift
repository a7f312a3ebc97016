import Foundation
import Store
import TensorCore
import TestSupport
import XCTest

/// End-to-end runs of the `workbench` executable: a run killed with SIGKILL mid-epoch and resumed
/// ends bit for bit as the uninterrupted run; a NaN loss and bad input exit non-zero with one
/// clear message.
final class RunTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "run-tests-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    /// A small recipe with dropout (so the dropout stream must be restored too): 4 epochs of 16
    /// steps, a checkpoint every 4 steps, then extraction.
    func writeRecipe(_ extra: String = "") throws -> String {
        let path = root + "/tiny.yaml"
        try """
            name: tiny
            seed: 3
            data:
              train_subset: 1024
              subset_mode: sample
              test_subset: 300
            encoder:
              dim: 32
              depth: 2
              heads: 2
              dim_head: 16
              mlp_dim: 64
              dropout: 0.1
              emb_dropout: 0.1
            checkpoint:
              every_steps: 4
            stages:
              - supervised:
                  epochs: 4
                  batch_size: 64
                  lr: 2.0e-3
                  gradient_clip: 1.0
              - extract:
                  splits: [test]
            \(extra)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The small recipe with `stages` (YAML list items) run before its own, written to `file`.
    func writeRecipe(stagesFirst stages: String, file: String) throws -> String {
        let text = try String(contentsOfFile: try writeRecipe(), encoding: .utf8).replacingOccurrences(of: "stages:\n", with: "stages:\n" + stages + "\n")
        let path = root + "/" + file
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    typealias Outcome = WorkbenchProcess.Outcome

    /// Runs the workbench in this test's folder.
    func workbench(_ arguments: [String], killWhen: ((String) -> Bool)? = nil, signal: Int32 = SIGKILL,
                   environment: [String: String] = [:]) throws -> Outcome {
        try WorkbenchProcess.run(arguments, in: root, killWhen: killWhen, signal: signal, environment: environment)
    }

    func runFolder(_ runs: String) throws -> String {
        let base = "\(root!)/\(runs)/tiny"
        let stamps = try FileManager.default.contentsOfDirectory(atPath: base)
        XCTAssertEqual(stamps.count, 1)
        return "\(base)/\(stamps[0])"
    }

    /// Every number a run's outcome depends on: per-step losses, epoch results, final results and
    /// the extracted features.
    func fingerprint(_ folder: String, pretrain: Bool = false) throws -> [String: [Double]] {
        let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        var values: [String: [Double]] = [:]
        for stage in pretrain ? ["pretrain", "supervised"] : ["supervised"] {
            for column in ["step", "loss", "lr"] {
                values["\(stage)/steps/\(column)"] = try metrics.root.dataset("\(stage)/steps/\(column)").read(as: Double.self)
            }
        }
        if pretrain {
            values["pretrain/reconstruction"] = try metrics.root.dataset("pretrain/reconstructions/reconstruction").read(as: Double.self)
        }
        for column in ["epoch", "loss", "train_top1", "test_top1", "test_top5"] {
            values["epochs/\(column)"] = try metrics.root.dataset("supervised/epochs/\(column)").read(as: Double.self)
        }
        let stage = try metrics.root.group("supervised")
        for key in ["test_top1", "test_top5", "final_loss"] {
            guard case .reals(let v) = try stage.attribute(key) else { XCTFail("\(key) is a number"); continue }
            values[key] = v
        }
        values["confusion"] = try stage.dataset("confusion").read(as: Double.self)
        let embeddings = try HDF5File(path: folder + "/embeddings.h5", mode: .readOnly)
        values["features"] = try embeddings.root.dataset("test/features").read(as: Double.self)
        values["indices"] = try embeddings.root.dataset("test/indices").read(as: Double.self)
        return values
    }

    func testRunKilledMidEpochAndResumedEndsBitForBitAsTheUninterruptedRun() throws {
        try killAndResume(try writeRecipe(), stage: "supervised", stageIndex: 0, totalSteps: 64)
    }

    /// The same through a pretrain stage: MAE's mask stream must come back too, and the stages
    /// after it must continue from the resumed encoder.
    func testPretrainingKilledMidEpochResumesBitForBit() throws {
        let recipe = try writeRecipe(stagesFirst: """
              - pretrain:
                  objective: {kind: mae, decoder_dim: 16, decoder_depth: 1, decoder_heads: 2, decoder_dim_head: 8}
                  epochs: 2
                  batch_size: 64
            """, file: "tiny-pretrain.yaml")
        let fingerprint = try killAndResume(recipe, stage: "pretrain", stageIndex: 0, totalSteps: 32)
        XCTAssertEqual(fingerprint["epochs/test_top1"]?.count, 4, "the supervised stage after pretraining ran in full")
    }

    /// Runs `recipe` whole, then again killed with SIGKILL right after the step-20 checkpoint of
    /// `stage` (epoch 2, batch 4) and resumed, and compares every number bit for bit.
    @discardableResult
    func killAndResume(_ recipe: String, stage: String, stageIndex: Int, totalSteps: Int) throws -> [String: [Double]] {
        let whole = try workbench(["run", recipe, "--runs-dir", "whole-\(stage)"])
        XCTAssertEqual(whole.status, 0, whole.output + whole.error)
        let expected = try fingerprint(try runFolder("whole-\(stage)"), pretrain: stage == "pretrain")
        XCTAssertEqual(expected["\(stage)/steps/loss"]?.count, totalSteps)

        // Whatever the run did after the announced checkpoint is discarded on resume.
        let killed = try workbench(["run", recipe, "--runs-dir", "killed-\(stage)"], killWhen: { $0.contains("\(stage): checkpoint at step 20 ") })
        XCTAssertTrue(killed.signaled, "the run must still be going when it is killed:\n\(killed.output)")
        let folder = try runFolder("killed-\(stage)")
        do {
            // Closed before the resumed run writes (HDF5 shares one open file per process).
            let partial = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
            XCTAssertGreaterThanOrEqual(try partial.root.dataset("\(stage)/steps/loss").shape[0], 20, "metrics are on disk up to the checkpoint")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/embeddings.h5"))

        let resumed = try workbench(["run", "--resume", folder])
        XCTAssertEqual(resumed.status, 0, resumed.output + resumed.error)
        XCTAssertTrue(resumed.output.contains("\(stage): resumed at epoch 2, batch 4, step 20"), resumed.output)
        let actual = try fingerprint(folder, pretrain: stage == "pretrain")
        XCTAssertEqual(Set(actual.keys), Set(expected.keys))
        for (key, value) in expected {
            let got = actual[key] ?? []
            let differing = zip(got, value).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }.map(\.offset)
            XCTAssertTrue(got.count == value.count && differing.isEmpty,
                          "\(key) differs after resume: \(differing.count) of \(value.count) values, first at \(differing.first ?? -1)")
        }
        let log = try String(contentsOfFile: folder + "/log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("resuming \(folder) at stage \(stageIndex) (\(stage)), step 20"), log)

        let again = try workbench(["run", "--resume", folder])
        XCTAssertEqual(again.status, 0)
        XCTAssertTrue(again.output.contains("already finished every stage"), again.output)
        return actual
    }

    /// An objective's diagnostics (EsViT: view and region loss, teacher temperature) become
    /// columns of the steps table beside the loss, as long as it; the kNN monitor fills the
    /// epochs table's knn_top1 at the epochs it runs.
    func testObjectiveDiagnosticsAreStepColumns() throws {
        let recipe = root + "/tiny-esvit.yaml"
        try """
            name: tiny
            seed: 1
            data:
              train_subset: 256
              test_subset: 100
            encoder:
              kind: cvt
              dim_head: 8
              cvt_stages:
                - {emb_dim: 8, emb_kernel: 7, emb_stride: 4, heads: 1, depth: 1}
                - {emb_dim: 16, emb_kernel: 3, emb_stride: 2, heads: 2, depth: 1}
            stages:
              - pretrain:
                  objective:
                    kind: esvit
                    out_dim: 64
                    hidden_dim: 32
                    bottleneck_dim: 16
                    augment: {local_crops: 2, local_size: 12}
                  epochs: 2
                  batch_size: 64
                  knn_monitor: 2
                  knn_monitor_images: 128
            """.write(toFile: recipe, atomically: true, encoding: .utf8)
        let run = try workbench(["run", recipe, "--runs-dir", "esvit"])
        XCTAssertEqual(run.status, 0, run.output + run.error)
        let metrics = try HDF5File(path: try runFolder("esvit") + "/metrics.h5", mode: .readOnly)
        let loss = try metrics.root.dataset("pretrain/steps/loss").read(as: Double.self)
        XCTAssertEqual(loss.count, 8)
        // The kNN monitor ran at the end of epoch 2 only (every 2 epochs).
        let knn = try metrics.root.dataset("pretrain/epochs/knn_top1").read(as: Double.self)
        XCTAssertEqual(knn.count, 2)
        XCTAssertTrue(knn[0].isNaN && knn[1] > 0.1 && knn[1] <= 1, "\(knn)")
        XCTAssertTrue(run.output.contains("pretrain: epoch 2/2") && run.output.contains("kNN top-1 "), run.output)
        let view = try metrics.root.dataset("pretrain/steps/view_loss").read(as: Double.self)
        let region = try metrics.root.dataset("pretrain/steps/region_loss").read(as: Double.self)
        let temperature = try metrics.root.dataset("pretrain/steps/teacher_temperature").read(as: Double.self)
        XCTAssertEqual([view.count, region.count, temperature.count], [8, 8, 8])
        for i in 0..<8 { XCTAssertEqual(loss[i], (view[i] + region[i]) / 2, accuracy: 1e-4 * loss[i]) }
        XCTAssertEqual(temperature[0], 0.04, accuracy: 1e-7)
    }

    func testNaNLossStopsWithAClearMessageAndKeepsTheMetrics() throws {
        let recipe = try writeRecipe()
        let outcome = try workbench(["run", recipe, "--runs-dir", "nan", "--set", "stages.0.supervised.lr=1.0e30",
                                     "--set", "stages.0.supervised.gradient_clip=null"])
        XCTAssertEqual(outcome.status, 1, outcome.output)
        XCTAssertTrue(outcome.error.contains("stages.0.supervised: the loss is"), outcome.error)
        XCTAssertTrue(outcome.error.contains("Lower stages.0.supervised.lr"), outcome.error)
        XCTAssertFalse(outcome.error.contains("Fatal error"), outcome.error)
        let folder = try runFolder("nan")
        let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        let losses = try metrics.root.dataset("supervised/steps/loss").read(as: Double.self)
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "the rows before the failing step are kept")
    }

    /// A failed run ends "failed" in metrics.h5, with the message there and in log.txt.
    func testFailedRunSaysSoInMetricsAndLog() throws {
        let recipe = try writeRecipe()
        let outcome = try workbench(["run", recipe, "--runs-dir", "failed", "--set", "stages.0.supervised.lr=1.0e30",
                                     "--set", "stages.0.supervised.gradient_clip=null"])
        XCTAssertEqual(outcome.status, 1)
        let folder = try runFolder("failed")
        let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        XCTAssertEqual(try metrics.root.attribute("status"), .string("failed"))
        guard case .string(let message) = try metrics.root.attribute("error") else { return XCTFail("no error attribute") }
        XCTAssertTrue(message.contains("stages.0.supervised: the loss is"), message)
        let log = try String(contentsOfFile: folder + "/log.txt", encoding: .utf8)
        XCTAssertTrue(log.contains("error: stages.0.supervised: the loss is"), log)
    }

    /// SIGINT and SIGTERM: a checkpoint at the step in progress, status "interrupted", the
    /// --resume command printed, exit 130 / 143; resumed, the run ends bit for bit as the
    /// uninterrupted one.
    func testInterruptedRunsCheckpointAndResumeBitForBit() throws {
        let recipe = try writeRecipe()
        let whole = try workbench(["run", recipe, "--runs-dir", "whole"])
        XCTAssertEqual(whole.status, 0, whole.output + whole.error)
        let expected = try fingerprint(try runFolder("whole"))
        for (signal, status, name) in [(SIGINT, Int32(130), "SIGINT"), (SIGTERM, Int32(143), "SIGTERM")] {
            let runs = "stopped-\(name)"
            let stopped = try workbench(["run", recipe, "--runs-dir", runs], killWhen: { $0.contains("supervised: checkpoint at step 8 ") }, signal: signal)
            XCTAssertEqual(stopped.status, status, stopped.output + stopped.error)
            XCTAssertFalse(stopped.signaled)
            let folder = try runFolder(runs)
            XCTAssertTrue(stopped.output.contains("interrupted by \(name)"), stopped.output)
            XCTAssertTrue(stopped.output.contains("Continue with: workbench run --resume \(folder)"), stopped.output)
            XCTAssertTrue(stopped.error.contains("stopping after this step with a checkpoint"), stopped.error)
            do {
                let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
                XCTAssertEqual(try metrics.root.attribute("status"), .string("interrupted"))
                let steps = try metrics.root.dataset("supervised/steps/step").read(as: Double.self)
                XCTAssertGreaterThan(steps.count, 8, "the step in progress when the signal came is kept")
            }
            let latest = try String(contentsOfFile: folder + "/checkpoints/LATEST", encoding: .utf8)
            XCTAssertFalse(latest.contains("step000008"), "a checkpoint after the signal, not only the scheduled one: \(latest)")
            let resumed = try workbench(["run", "--resume", folder])
            XCTAssertEqual(resumed.status, 0, resumed.output + resumed.error)
            let actual = try fingerprint(folder)
            for (key, value) in expected {
                let got = actual[key] ?? []
                XCTAssertTrue(got.count == value.count && zip(got, value).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(name): \(key) differs after resume")
            }
            let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
            XCTAssertEqual(try metrics.root.attribute("status"), .string("complete"))
        }
    }

    /// The run folder keeps the command line, the encoder after every training stage (with the
    /// stage in its metadata), and counts steps and epochs from 1, in one sequence across stages.
    func testRunFolderKeepsCommandEncodersAndCountsFromOne() throws {
        let recipe = try writeRecipe(stagesFirst: """
              - pretrain:
                  objective: {kind: mae, decoder_dim: 16, decoder_depth: 1, decoder_heads: 2, decoder_dim_head: 8}
                  epochs: 1
                  batch_size: 64
              - linear_probe: {iterations: 5}
            """, file: "tiny-stages.yaml")
        let run = try workbench(["run", recipe, "--runs-dir", "stages", "--set", "stages.2.supervised.epochs=1"])
        XCTAssertEqual(run.status, 0, run.output + run.error)
        XCTAssertTrue(run.output.contains("supervised: 1 epoch of 16 steps"), run.output)
        let folder = try runFolder("stages")
        let command = try String(contentsOfFile: folder + "/command.txt", encoding: .utf8)
        XCTAssertTrue(command.contains("run \(recipe) --runs-dir stages --set stages.2.supervised.epochs=1"), command)
        for stage in ["pretrain", "supervised"] {
            let file = folder + "/checkpoints/encoder-\(stage).safetensors"
            XCTAssertEqual(try SafeTensors.metadata(path: file)["stage"], stage)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/checkpoints/encoder-linear_probe.safetensors"))
        let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        guard case .string(let recorded) = try metrics.root.attribute("command") else { return XCTFail("no command attribute") }
        XCTAssertEqual(recorded + "\n", command)
        // The OpenBLAS core is recorded with the seed and threads: the bits depend on all three.
        XCTAssertEqual(try metrics.root.attribute("blas_core"), .string(blasCore))
        let pretrainSteps = try metrics.root.dataset("pretrain/steps/step").read(as: Int64.self)
        XCTAssertEqual(pretrainSteps, Array(1...16))
        let supervised = try metrics.root.dataset("supervised/steps/global_step").read(as: Int64.self)
        XCTAssertEqual(supervised, Array(17...32), "global_step (TensorBoard's) continues after the pretrain stage")
        XCTAssertEqual(try metrics.root.dataset("supervised/steps/step").read(as: Int64.self), Array(1...16))
        XCTAssertEqual(try metrics.root.dataset("supervised/epochs/epoch").read(as: Int64.self), [1])
        XCTAssertEqual(try SafeTensors.metadata(path: folder + "/checkpoints/best.safetensors")["epoch"], "1")
        // The linear probe's results are TensorBoard scalars too.
        let events = try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasPrefix("events.out.tfevents") }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + XCTUnwrap(events)))
        XCTAssertNotNil(bytes.range(of: Data("linear_probe/test_top1".utf8)))
    }

    /// Every checkpoint a DINO run writes is extractable: best.safetensors and the step folders
    /// hold the objective, whose teacher (encoder_prefix) is what the later stages use.
    func testEveryCheckpointOfAViewObjectiveIsExtractable() throws {
        let recipe = root + "/tiny-dino.yaml"
        try """
            name: tiny
            seed: 2
            data: {train_subset: 256, test_subset: 64}
            encoder: {dim: 16, depth: 1, heads: 2, dim_head: 8, mlp_dim: 32, pool: mean}
            checkpoint: {every_steps: 2}
            stages:
              - pretrain:
                  objective: {kind: dino, out_dim: 32, hidden_dim: 16, bottleneck_dim: 8, augment: {local_crops: 1}}
                  epochs: 1
                  batch_size: 64
            """.write(toFile: recipe, atomically: true, encoding: .utf8)
        let run = try workbench(["run", recipe, "--runs-dir", "dino"])
        XCTAssertEqual(run.status, 0, run.output + run.error)
        let folder = try runFolder("dino")
        var features: [String: [Float]] = [:]
        let latest = try String(contentsOfFile: folder + "/checkpoints/LATEST", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        for file in ["best.safetensors", "encoder-pretrain.safetensors", "encoder.safetensors", "\(latest)/model.safetensors"] {
            let out = root + "/extracted/\(file.replacingOccurrences(of: "/", with: "-")).h5"
            let extract = try workbench(["extract", "--checkpoint", folder + "/checkpoints/" + file, "--split", "test", "--out", out])
            XCTAssertEqual(extract.status, 0, "\(file): \(extract.error)")
            features[file] = try HDF5File(path: out, mode: .readOnly).root.dataset("test/features").read(as: Float.self)
        }
        XCTAssertEqual(try SafeTensors.metadata(path: folder + "/checkpoints/best.safetensors")["encoder_prefix"], "teacher_encoder.net.")
        XCTAssertEqual(features["best.safetensors"], features["encoder-pretrain.safetensors"], "the last epoch is the best one: the same teacher")
        XCTAssertEqual(features["encoder.safetensors"], features["encoder-pretrain.safetensors"])
    }

    func testUserErrorsExitNonZeroWithOneMessageAndNoTrace() throws {
        let recipe = try writeRecipe()
        let cases: [([String], String)] = [
            (["run", "recipes/none.yaml"], "recipes/none.yaml: no such recipe file"),
            (["run", recipe, "--set", "encoder.patch_size=5"], "encoder.patch_size: patch size 5 does not divide"),
            (["run", recipe, "--set", "data.path=/nonexistent"], "data.path: /nonexistent/train-images-idx3-ubyte.gz does not exist"),
            (["validate", recipe, "--set", "stages.0.supervised.epoch=3"], "unknown key 'epoch'; did you mean 'epochs'?"),
            (["run", recipe, "--runs-dir", recipe], "is a file; pass --runs-dir with a folder"),
            (["run", "--resume", root + "/nothing"], "is not a run folder"),
            (["inspect", recipe], "is neither an HDF5 file nor a weights file the workbench reads (safetensors, pytorch, npz)"),
            (["extract", "--checkpoint", root + "/none.safetensors", "--out", root + "/e.h5"], "none.safetensors"),
            (["run", "--resume", root, "--set", "seed=1"], "--set is not allowed with --resume"),
            (["run", recipe, "--set", "stages.0.pretrain.epochs=1"], "stage 0 is supervised, not pretrain"),
            (["run", recipe, "--set", "data.test_subset=20000"], "fashion-mnist has 10000 test images, so a subset of 20000 cannot be drawn"),
            (["validate", recipe, "--set", "stages.0.supervised.learning_rate=0.1"], "unknown key 'learning_rate'; did you mean 'lr'? Valid keys here:"),
        ]
        for (arguments, expected) in cases {
            let outcome = try workbench(arguments)
            XCTAssertNotEqual(outcome.status, 0, arguments.joined(separator: " "))
            XCTAssertFalse(outcome.signaled, "\(arguments): \(outcome.error)")
            XCTAssertTrue(outcome.error.contains(expected), "\(arguments): \(outcome.error)")
            XCTAssertFalse(outcome.error.contains("Fatal error") || outcome.error.contains("Stack dump"), outcome.error)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/runs"), "nothing is created before the recipe checks pass")
    }

    func testValidateListInspectAndExtract() throws {
        let recipe = try writeRecipe()
        let validate = try workbench(["validate", recipe])
        XCTAssertEqual(validate.status, 0, validate.error)
        XCTAssertTrue(validate.output.contains("weight_decay: 0.05"), validate.output)
        let list = try workbench(["list"])
        XCTAssertTrue(list.output.contains("stage      supervised"), list.output)
        XCTAssertTrue(list.output.contains("encoder    simple-vit"), list.output)

        let run = try workbench(["run", recipe, "--runs-dir", "runs", "--set", "stages.0.supervised.epochs=1"])
        XCTAssertEqual(run.status, 0, run.error)
        let folder = try runFolder("runs")
        let inspect = try workbench(["inspect", folder + "/metrics.h5"])
        XCTAssertTrue(inspect.output.contains("supervised/"), inspect.output)
        XCTAssertTrue(inspect.output.contains("loss  float64 16"), inspect.output)
        XCTAssertTrue(inspect.output.contains("confusion  int64 10 x 10"), inspect.output)
        let out = root + "/out.h5"
        let extract = try workbench(["extract", "--checkpoint", folder + "/checkpoints/encoder.safetensors", "--split", "test",
                                     "--hidden-layer", "tokens", "--attention", "--attention-images", "4", "--out", out])
        XCTAssertEqual(extract.status, 0, extract.error)
        let file = try HDF5File(path: out, mode: .readOnly)
        // The run's own test subset (300 images) unless --all-images.
        XCTAssertEqual(try file.root.dataset("test/features").shape, [300, 50, 32])
        XCTAssertEqual(try file.root.dataset("test/labels").shape, [300])
        XCTAssertEqual(try file.root.attribute("seed"), .integers([3]))
        XCTAssertEqual(try file.root.attribute("checkpoint"), .string(folder + "/checkpoints/encoder.safetensors"))
        XCTAssertEqual(try file.root.attribute("hidden_layer"), .string("tokens"))
        let attention = try file.root.dataset("test/attention")
        XCTAssertEqual(attention.shape, [4, 2, 2, 50, 50], "images, blocks, heads, query token, key token")
        let rows = try attention.read(as: Float.self)
        for row in stride(from: 0, to: rows.count, by: 50) {
            XCTAssertEqual(rows[row..<(row + 50)].reduce(0, +), 1, accuracy: 1e-4, "each query's attention sums to 1")
        }
        let images = try file.root.dataset("test/images").read(as: Float.self)
        XCTAssertEqual(images.count, 4 * 28 * 28)
        XCTAssertTrue(images.allSatisfy { $0 >= -1e-5 && $0 <= 1 + 1e-5 }, "pixels back in [0, 1]")
        let inRun = try HDF5File(path: folder + "/embeddings.h5", mode: .readOnly)
        XCTAssertEqual(try inRun.root.dataset("test/features").shape, [300, 32])
    }
}
