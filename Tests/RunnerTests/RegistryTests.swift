import Foundation
import Objectives
import Runner
import Store
import TensorCore
import TestSupport
import XCTest

/// The house: every section is declared once (its fields), the registries are the only lists of
/// kinds, and what `validate`, `list`, the README and bench-step show comes from them.
final class RegistryTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    func error(_ text: String) -> String {
        do {
            _ = try RecipeLoader.parse(text, file: "r.yaml")
            XCTFail("expected an error for:\n\(text)")
        } catch { return "\(error)" }
        return ""
    }

    func testReadmeHoldsTheRecipeReferenceAsGenerated() throws {
        let readme = try String(contentsOfFile: Self.root + "/README.md", encoding: .utf8)
        let begin = try XCTUnwrap(readme.range(of: RecipeReference.begin), "README.md lacks the recipe reference's first marker")
        let end = try XCTUnwrap(readme.range(of: RecipeReference.end), "README.md lacks the recipe reference's last marker")
        let inReadme = String(readme[begin.lowerBound..<end.upperBound]) + "\n"
        XCTAssertEqual(inReadme, RecipeReference.markdown(), "the README's recipe reference is stale: paste `workbench list --reference` between its markers")
    }

    /// Every kind of every registry, at its defaults, survives encode -> decode -> encode, and
    /// every key it declares (that applies) is printed.
    func testEveryRegisteredKindRoundTrips() throws {
        func roundTrip(_ recipe: Recipe, file: StaticString = #filePath, line: UInt = #line) throws -> String {
            let first = RecipeLoader.yaml(recipe)
            let again = try RecipeLoader.parse(first, file: "round-trip.yaml")
            XCTAssertEqual(RecipeLoader.yaml(again), first, file: file, line: line)
            return first
        }
        func keys<S: RecipeSection>(_ type: S.Type) -> [String] { type.fields.filter { $0.applies(type.init()) }.map(\.key) }
        for kind in ObjectiveRegistry.kinds {
            // A simple-vit takes every objective (mp3 refuses learned positions).
            var recipe = Recipe(name: "t", stages: [StageEntry(PretrainStage(objective: kind.init()))])
            recipe.encoder = EncoderSection(SimpleViTSettings())
            let yaml = try roundTrip(recipe)
            for key in keys(kind) { XCTAssertTrue(yaml.contains("      \(key):"), "\(kind.kind): \(key) is not printed") }
            XCTAssertTrue(yaml.contains("kind: \(kind.kind)"))
        }
        for kind in EncoderRegistry.kinds {
            var recipe = Recipe(name: "t", stages: [StageEntry(SupervisedStage())])
            recipe.encoder = EncoderSection(kind.init())
            // Defaults made for other images (timm's 224-pixel ViTs) must say why they do not fit.
            if let (key, problem) = kind.init().check(recipe.encoderInput) {
                XCTAssertTrue(key == "patch_size" && problem.contains("does not divide the image size 28"), "\(kind.kind): \(problem)")
                continue
            }
            let yaml = try roundTrip(recipe)
            for key in keys(kind) { XCTAssertTrue(yaml.contains("  \(key):"), "\(kind.kind): \(key) is not printed") }
        }
        for kind in StageRegistry.kinds {
            let yaml = try roundTrip(Recipe(name: "t", stages: [StageEntry(kind.init())]))
            XCTAssertTrue(yaml.contains("- \(kind.kind):"), yaml)
        }
        for kind in DataSetRegistry.kinds {
            var recipe = Recipe(name: "t", stages: [StageEntry(SupervisedStage())])
            recipe.data = DataSection(kind.init())
            XCTAssertTrue(try roundTrip(recipe).contains("dataset: \(kind.kind)"))
        }
    }

    func testValidatePrintsOnlyTheKeysOfTheChosenKind() throws {
        let cvt = RecipeLoader.yaml(try RecipeLoader.parse("name: t\nencoder: {kind: cvt}\nstages:\n  - supervised:\n", file: "r.yaml"))
        for key in ["patch_size", "\n  dim:", "pool", "emb_dropout", "mlp_dim"] { XCTAssertFalse(cvt.contains(key), "a cvt recipe prints \(key):\n\(cvt)") }
        XCTAssertTrue(cvt.contains("cvt_stages:") && cvt.contains("final_norm: false"), cvt)
        let vit = RecipeLoader.yaml(try RecipeLoader.parse("name: t\nstages:\n  - supervised:\n", file: "r.yaml"))
        for key in ["cvt_stages", "final_norm"] { XCTAssertFalse(vit.contains(key), "a vit recipe prints \(key):\n\(vit)") }
        // Finetune's own keys belong to finetune alone.
        XCTAssertFalse(vit.contains("layer_decay"), vit)
    }

    func testNumbersArePrintedAsAPersonWritesThem() throws {
        let yaml = RecipeLoader.yaml(try RecipeLoader.load(path: Self.root + "/Recipes/dino.yaml"))
        for text in ["- 0.286", "lr: 0.0005", "min_lr: 1.0e-06", "dropout: 0.0", "teacher_momentum: 0.99", "- 1.3333333333333333"] {
            XCTAssertTrue(yaml.contains(text), "no '\(text)' in:\n\(yaml)")
        }
        for text in ["e+0", "e-1\n", "e-2\n", "Optional", "Array", "Swift."] { XCTAssertFalse(yaml.contains(text), "'\(text)' in:\n\(yaml)") }
        XCTAssertEqual(plainNumber(1e-6), "1.0e-06")
        XCTAssertEqual(plainNumber(2.5e-4), "0.00025")
        XCTAssertEqual(plainNumber(0), "0.0")
        XCTAssertEqual(Double(plainNumber(1.0 / 3.0)), 1.0 / 3.0)
    }

    func testAnEncoderKeyOfAnotherKindIsRefusedWithItsOwner() {
        let message = error("name: t\nencoder:\n  kind: cvt\n  patch_size: 4\nstages:\n  - supervised:\n")
        let owners = EncoderRegistry.kinds.filter { $0.keys.contains("patch_size") }.map { $0.kind }.joined(separator: ", ")
        XCTAssertTrue(owners.hasPrefix("vit, simple-vit"))
        XCTAssertTrue(message.contains("encoder.patch_size: patch_size applies to kind: \(owners) only (encoder.kind is cvt)"), message)
        let norm = error("name: t\nencoder:\n  final_norm: true\nstages:\n  - supervised:\n")
        XCTAssertTrue(norm.contains("final_norm applies to kind: cvt only (encoder.kind is vit)"), norm)
    }

    func testSimpleViTNeedsNoPoolKey() throws {
        let recipe = try RecipeLoader.parse("name: t\nencoder: {kind: simple-vit}\nstages:\n  - supervised:\n", file: "r.yaml")
        XCTAssertEqual(recipe.encoder.kind, "simple-vit")
        XCTAssertTrue(RecipeLoader.yaml(recipe).contains("pool: mean"))
        let cls = error("name: t\nencoder: {kind: simple-vit, pool: cls}\nstages:\n  - supervised:\n")
        XCTAssertTrue(cls.contains("encoder.pool: simple-vit always mean-pools"), cls)
    }

    /// Run folders written before the encoders had their own keys (a vit's recipe.yaml with
    /// cvt_stages: null and final_norm: false) still resume and extract.
    func testStoredRecipesOfOlderVersionsStillRead() throws {
        let old = "name: t\nencoder:\n  kind: vit\n  dim: 32\n  cvt_stages: null\n  final_norm: false\nstages:\n  - supervised:\n"
        XCTAssertThrowsError(try RecipeLoader.parse(old, file: "r.yaml"))
        let stored = try RecipeLoader.parse(old, file: "recipe.yaml", stored: true)
        XCTAssertEqual((stored.encoder.settings as? ViTSettings)?.config.dim, 32)
        let section = try RecipeLoader.section(EncoderSection.self, yaml: "kind: cvt\npatch_size: 4\ndim: 128\npool: cls\ndim_head: 32\n", file: "metadata")
        XCTAssertEqual((section.settings as? CvTSettings)?.config.dimHead, 32)
    }

    /// DINO's defaults live in DINO.Config alone.
    func testObjectiveDefaultsAreTheObjectivesOwn() {
        let settings = DINOSettings()
        XCTAssertEqual(settings.config.warmupTeacherTemperatureEpochs, DINO.Config().warmupTeacherTemperatureEpochs)
        XCTAssertEqual(settings.config.hiddenDim, DINO.Config().hiddenDim)
        XCTAssertEqual(MAESettings().config, MAE.Config())
    }

    func testWeightFilesAreRecognisedByContent() throws {
        let folder = NSTemporaryDirectory() + "weights-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/no-extension"
        try WeightFiles.write(["w": Tensor(shape: [2], [1, 2])], metadata: ["note": "x"], to: path)
        XCTAssertTrue(try WeightFiles.format(of: path) == SafeTensors.self)
        XCTAssertEqual(try WeightFiles.read(path: path)["w"]?.scalars, [1, 2])
        XCTAssertEqual(try WeightFiles.metadata(path: path)["note"], "x")
        let garbage = folder + "/garbage.safetensors"
        try Data("not weights at all, just text".utf8).write(to: URL(fileURLWithPath: garbage))
        XCTAssertThrowsError(try WeightFiles.read(path: garbage)) { error in
            let formats = WeightFormatRegistry.formats.map { $0.name }.joined(separator: ", ")
            XCTAssertTrue("\(error)".contains("garbage.safetensors is not a weight file the workbench reads (formats: \(formats))"), "\(error)")
        }
    }

    func testListAndBenchStepComeFromTheRegistries() throws {
        let list = try WorkbenchProcess.run(["list"], in: Self.root)
        XCTAssertEqual(list.status, 0, list.error)
        let rows = list.output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).prefix(2).joined(separator: " ") }
        for kind in StageRegistry.kinds { XCTAssertTrue(rows.contains("stage \(kind.kind)"), list.output) }
        for kind in ObjectiveRegistry.kinds { XCTAssertTrue(rows.contains("objective \(kind.kind)"), list.output) }
        for kind in EncoderRegistry.kinds { XCTAssertTrue(rows.contains("encoder \(kind.kind)"), list.output) }
        XCTAssertTrue(list.output.contains("data set   fashion-mnist"), list.output)
        XCTAssertTrue(list.output.contains("weights    safetensors"), list.output)
        let reference = try WorkbenchProcess.run(["list", "--reference"], in: Self.root)
        XCTAssertEqual(reference.output, RecipeReference.markdown())
        // Every objective's benchmark configuration builds and takes a step (not timed here).
        for name in ObjectiveRegistry.kinds.flatMap({ $0.anyBenchmarks.map(\.name) }) {
            let bench = try WorkbenchProcess.run(["bench-step", "--objective", name, "--steps", "1", "--batch", "4", "--dim", "16", "--depth", "1",
                                                  "--heads", "2", "--dim-head", "8", "--mlp-dim", "32"], in: Self.root)
            XCTAssertEqual(bench.status, 0, "\(name): \(bench.error)")
            XCTAssertTrue(bench.output.contains("bench-step \(name):") && bench.output.contains("of the roofline"), bench.output)
        }
        let unknown = try WorkbenchProcess.run(["bench-step", "--objective", "nope"], in: Self.root)
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.error.contains("supervised or one of mae, simmim, mpp, mp3, byol, byol-pytorch, dino, dino-official"), unknown.error)
        XCTAssertFalse(unknown.error.contains("Usage:"), "a bad setting's message is the whole answer: \(unknown.error)")
        // Counts below one are refused with their option's name, not a trap.
        for (option, value) in [("--steps", "0"), ("--dim", "0"), ("--batch=-3", nil), ("--channels", "0")] {
            let bad = try WorkbenchProcess.run(["bench-step", option] + (value.map { [$0] } ?? []), in: Self.root)
            XCTAssertEqual(bad.status, 1, "\(option): \(bad.error)")
            XCTAssertTrue(bad.error.contains("must be at least 1") && bad.error.contains(option.split(separator: "=")[0]), bad.error)
        }
        let repeats = try WorkbenchProcess.run(["bench", "--repeats", "0"], in: Self.root)
        XCTAssertEqual(repeats.status, 1, repeats.error)
        XCTAssertTrue(repeats.error.contains("--repeats must be at least 1"), repeats.error)
        // tools/bench's recipes (the rows of torch_step_bench.py that are no ViT objective) stay valid.
        let recipes = try FileManager.default.contentsOfDirectory(atPath: Self.root + "/tools/bench").filter { $0.hasSuffix(".yaml") }
        XCTAssertGreaterThanOrEqual(recipes.count, 2)
        for name in recipes {
            let bench = try WorkbenchProcess.run(["bench-step", "--recipe", "tools/bench/\(name)", "--steps", "1", "--batch", "4"], in: Self.root)
            XCTAssertEqual(bench.status, 0, "\(name): \(bench.error)")
            XCTAssertTrue(bench.output.contains("of the roofline") && bench.output.contains("peak memory"), bench.output)
        }
    }
}
