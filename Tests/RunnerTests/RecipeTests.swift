import Foundation
import Runner
import XCTest

/// Bad recipes each get one clear message naming the file, the place and the fix.
final class RecipeTests: XCTestCase {
    let valid = """
        name: test
        seed: 1
        encoder:
          kind: vit
          dim: 32
        stages:
          - supervised:
              epochs: 2
          - extract:
        """

    func error(_ text: String, overrides: [String] = []) -> String {
        do {
            _ = try RecipeLoader.parse(text, file: "r.yaml", overrides: overrides)
            XCTFail("expected an error for:\n\(text)")
            return ""
        } catch let error as RecipeError {
            return error.description
        } catch {
            XCTFail("expected a RecipeError, got \(type(of: error)): \(error)")
            return ""
        }
    }

    func testValidRecipeFillsDefaultsAndRoundTrips() throws {
        let recipe = try RecipeLoader.parse(valid, file: "r.yaml")
        XCTAssertEqual(recipe.seed, 1)
        XCTAssertEqual((recipe.encoder.settings as? ViTSettings)?.config.dim, 32)
        XCTAssertEqual((recipe.encoder.settings as? ViTSettings)?.config.depth, 4)
        XCTAssertEqual(recipe.stages.map(\.kind), ["supervised", "extract"])
        let supervised = try XCTUnwrap(recipe.stages[0].settings as? SupervisedStage)
        XCTAssertEqual(supervised.settings.training.epochs, 2)
        XCTAssertEqual(supervised.settings.training.lr, 1e-3)
        XCTAssertEqual((recipe.stages[1].settings as? ExtractStage)?.hiddenLayer, "pooled")
        let resolved = RecipeLoader.yaml(recipe)
        XCTAssertTrue(resolved.contains("weight_decay: "), resolved)
        let again = try RecipeLoader.parse(resolved, file: "resolved.yaml")
        XCTAssertEqual(RecipeLoader.yaml(again), resolved, "the resolved recipe reads back to itself")
    }

    func testOverridesReachNestedKeysListItemsAndEmptyStages() throws {
        let recipe = try RecipeLoader.parse(valid, file: "r.yaml", overrides: [
            "stages.0.supervised.epochs=1", "data.train_subset=500", "stages.1.extract.hidden_layer=tokens", "encoder.pool=mean", "seed=7",
        ])
        XCTAssertEqual((recipe.stages[0].settings as? SupervisedStage)?.settings.training.epochs, 1)
        XCTAssertEqual(recipe.data.trainSubset, 500)
        XCTAssertEqual((recipe.stages[1].settings as? ExtractStage)?.hiddenLayer, "tokens")
        XCTAssertEqual((recipe.encoder.settings as? ViTSettings)?.config.pool, .mean)
        XCTAssertEqual(recipe.seed, 7)
    }

    func testMalformedYAMLGivesLineAndColumn() {
        let message = error("name: test\nstages:\n  - supervised: {epochs: 2\n")
        XCTAssertTrue(message.hasPrefix("r.yaml:"), message)
        XCTAssertTrue(message.contains("malformed YAML"), message)
    }

    func testUnknownKeyGivesLineColumnAndNearestKey() {
        let message = error(valid.replacingOccurrences(of: "      epochs: 2", with: "      epochs: 2\n      learning_rat: 0.1"))
        XCTAssertEqual(message.components(separatedBy: ": ").first, "r.yaml:9:7", message)
        XCTAssertTrue(message.contains("stages.0.supervised.learning_rat: unknown key 'learning_rat'"), message)
        let top = error(valid.replacingOccurrences(of: "seed: 1", with: "sead: 1"))
        XCTAssertTrue(top.hasPrefix("r.yaml:2:1: sead: unknown key 'sead'; did you mean 'seed'?"), top)
        let encoder = error(valid.replacingOccurrences(of: "dim: 32", with: "dims: 32"))
        XCTAssertTrue(encoder.lowercased().contains("did you mean 'dim'?"), encoder)
    }

    func testWrongTypeNamesTheKeyAndTheValue() {
        let message = error(valid.replacingOccurrences(of: "epochs: 2", with: "epochs: two"))
        XCTAssertTrue(message.hasPrefix("r.yaml:8:7: stages.0.supervised.epochs: expected an integer, found 'two'"), message)
        let list = error(valid.replacingOccurrences(of: "seed: 1", with: "seed: [1, 2]"))
        XCTAssertTrue(list.hasPrefix("r.yaml:2:1: seed: expected a single value, found a list"), list)
    }

    func testUnknownStageAndEncoderSuggestTheNearest() {
        let stage = error(valid.replacingOccurrences(of: "- supervised:", with: "- supervized:"))
        XCTAssertTrue(stage.contains("unknown stage 'supervized'; did you mean 'supervised'?"), stage)
        let objective = error(valid.replacingOccurrences(of: "- supervised:", with: "- dinosaur:"))
        XCTAssertTrue(objective.contains("unknown stage 'dinosaur'"), objective)
        XCTAssertTrue(objective.contains("Stages: pretrain, supervised, linear_probe, knn, finetune, extract."), objective)
        let encoder = error(valid.replacingOccurrences(of: "kind: vit", with: "kind: vitt"))
        let kinds = EncoderRegistry.kinds.map { $0.kind }.joined(separator: ", ")
        XCTAssertTrue(encoder.hasPrefix("r.yaml:4:3: encoder.kind: 'vitt' is not one of \(kinds); did you mean 'vit'?"), encoder)
    }

    func testPretrainNamesItsObjective() throws {
        let pretrain = valid.replacingOccurrences(of: "  - supervised:\n      epochs: 2", with: "  - pretrain:\n      objective:\n        kind: mea\n      epochs: 2")
        let unknown = error(pretrain)
        XCTAssertTrue(unknown.contains("stages.0.pretrain.objective.kind: unknown objective 'mea'; did you mean 'mae'?"), unknown)
        XCTAssertTrue(unknown.hasPrefix("r.yaml:9:9:"), unknown)
        let missing = error(pretrain.replacingOccurrences(of: "        kind: mea\n", with: "        masking_ratio: 0.5\n"))
        XCTAssertTrue(missing.contains("objective.kind: name the objective"), missing)
        let key = error(pretrain.replacingOccurrences(of: "kind: mea", with: "kind: mae\n        mask_ratio: 0.5"))
        XCTAssertTrue(key.contains("unknown key 'mask_ratio'; did you mean 'masking_ratio'?"), key)
        let recipe = try RecipeLoader.parse(pretrain.replacingOccurrences(of: "kind: mea", with: "kind: simmim"), file: "r.yaml",
                                            overrides: ["stages.0.pretrain.objective.masking_ratio=0.4"])
        let stage = try XCTUnwrap(recipe.stages[0].settings as? PretrainStage)
        XCTAssertEqual((stage.objective as? SimMIMSettings)?.config.maskingRatio, 0.4)
        XCTAssertEqual(stage.training.gradientClip, 5.0, "the objective's training defaults apply")
        XCTAssertEqual(stage.training.epochs, 2)
        let square = error(pretrain.replacingOccurrences(of: "kind: mea", with: "kind: simmim\n        mask_patch_size: 6"))
        XCTAssertTrue(square.contains("mask_patch_size: the mask square (6 pixels) must be a multiple of encoder.patch_size (4)"), square)
    }

    func testSiameseObjectivesAndTheirViews() throws {
        let pretrain = valid.replacingOccurrences(of: "  - supervised:\n      epochs: 2", with: "  - pretrain:\n      objective:\n        kind: dino\n      epochs: 2")
        let recipe = try RecipeLoader.parse(pretrain, file: "r.yaml", overrides: ["stages.0.pretrain.objective.augment.local_crops=4"])
        let stage = try XCTUnwrap(recipe.stages[0].settings as? PretrainStage)
        let dino = try XCTUnwrap(stage.objective as? DINOSettings)
        XCTAssertEqual(dino.views(recipe)?.views.map(\.size), [28, 28, 12, 12, 12, 12], "2 global crops and the local ones")
        XCTAssertEqual(stage.training.weightDecayEnd, 0.4, "DINO's weight-decay schedule")
        XCTAssertEqual(stage.training.gradientClip, 3.0)
        let vitPytorch = try RecipeLoader.parse(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: dino\n        mode: vit-pytorch"), file: "r.yaml")
        let mode = try XCTUnwrap((vitPytorch.stages[0].settings as? PretrainStage)?.objective as? DINOSettings)
        XCTAssertEqual(mode.views(vitPytorch)?.views.map(\.size), [28, 28, 28, 28], "vit-pytorch: 2 global and 2 full-size local crops")
        XCTAssertEqual(mode.config.studentTemperature, 0.9)
        // Local crops must split into patches; a token-shaped layer cannot take two crop sizes.
        let size = error(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: dino\n        augment: {local_size: 10}"))
        XCTAssertTrue(size.contains("objective.augment.local_size: 10 pixels do not split into the encoder's 4-pixel patches"), size)
        let layer = error(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: dino\n        hidden_layer: tokens"))
        XCTAssertTrue(layer.contains("objective.hidden_layer: 'tokens' has a different width for 12-pixel local crops"), layer)
        let probability = error(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: byol\n        augment: {blur: [1.0, 0.1]}"))
        XCTAssertTrue(probability.contains("augment.blur: give three probabilities"), probability)
        let byolLocal = error(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: byol\n        augment: {local_crops: 2}"))
        XCTAssertTrue(byolLocal.contains("BYOL trains on two views"), byolLocal)
        let esvit = error(pretrain.replacingOccurrences(of: "kind: dino", with: "kind: esvit\n        hidden_layer: pooled"))
        XCTAssertTrue(esvit.contains("name the token map with region_layer"), esvit)
        // A CvT is not patch-based: the masked objectives say so; the siamese ones take it.
        // (dim is a ViT key: a cvt recipe that gives it is refused, see RegistryTests.)
        let cvt = pretrain.replacingOccurrences(of: "kind: vit", with: "kind: cvt").replacingOccurrences(of: "  dim: 32\n", with: "")
        let masked = error(cvt.replacingOccurrences(of: "kind: dino", with: "kind: mae"))
        XCTAssertTrue(masked.contains("mae masks patches, so it needs a patch-token encoder"), masked)
        XCTAssertTrue(masked.contains("the cvt encoder is not one"), masked)
        XCTAssertNoThrow(try RecipeLoader.parse(cvt.replacingOccurrences(of: "kind: dino", with: "kind: esvit"), file: "r.yaml"))
        let stages = error(valid.replacingOccurrences(of: "dim: 32", with: "dim: 32\n  cvt_stages: [{emb_dim: 8}]"))
        XCTAssertTrue(stages.contains("cvt_stages applies to kind: cvt only"), stages)
        let norm = error(valid.replacingOccurrences(of: "dim: 32", with: "dim: 32\n  final_norm: true"))
        XCTAssertTrue(norm.contains("encoder.final_norm: final_norm applies to kind: cvt only"), norm)
        let normed = try RecipeLoader.parse(cvt.replacingOccurrences(of: "kind: cvt", with: "kind: cvt\n  final_norm: true")
            .replacingOccurrences(of: "kind: dino", with: "kind: esvit"), file: "r.yaml")
        XCTAssertEqual((normed.encoder.settings as? CvTSettings)?.config.finalNorm, true)
    }

    func testPatchSizeMustDivideTheImage() {
        let message = error(valid.replacingOccurrences(of: "dim: 32", with: "dim: 32\n  patch_size: 5"))
        XCTAssertTrue(message.contains("encoder.patch_size: patch size 5 does not divide the image size 28"), message)
        XCTAssertTrue(message.contains("use one of 2, 4, 7, 14"), message)
    }

    func testSemanticChecksAndMissingKeys() {
        XCTAssertTrue(error("seed: 1\nstages: []\n").contains("name: required key 'name' is missing"))
        XCTAssertTrue(error("name: x\nstages: []\n").contains("stages: a recipe needs at least one stage"))
        XCTAssertTrue(error("").contains("the recipe is empty"))
        XCTAssertTrue(error("- a\n- b\n").contains("a recipe is a mapping"))
        let layer = error(valid.replacingOccurrences(of: "  - extract:", with: "  - extract:\n      hidden_layer: pooler"))
        XCTAssertTrue(layer.contains("stages.1.extract.hidden_layer: the vit encoder has no hidden layer 'pooler'; did you mean 'pooled'?"), layer)
        let batch = error(valid + "\ndata:\n  train_subset: 100\n")
        XCTAssertTrue(batch.contains("stages.0.supervised.batch_size: batch size 256 exceeds the 100 training images"), batch)
        let stageShape = error("name: x\nstages:\n  - supervised: {}\n    extract: {}\n")
        XCTAssertTrue(stageShape.contains("each stage is a mapping with one key"), stageShape)
    }

    func testBadOverridesNameTheOverride() {
        XCTAssertTrue(error(valid, overrides: ["stages.5.supervised.epochs=1"]).contains("'5' is not an index of this list of 2"))
        XCTAssertTrue(error(valid, overrides: ["epochs"]).contains("an override is key.path=value"))
        let typed = error(valid, overrides: ["stages.0.supervised.epochs=many"])
        XCTAssertTrue(typed.hasPrefix("r.yaml (--set stages.0.supervised.epochs=many): stages.0.supervised.epochs: expected an integer"), typed)
        let unknown = error(valid, overrides: ["encoder.depht=2"])
        XCTAssertTrue(unknown.contains("(--set encoder.depht=2): encoder.depht: unknown key 'depht'; did you mean 'depth'?"), unknown)
    }

    func testMissingDataSetAndUnwritableRunsDirectoryFailBeforeTraining() throws {
        let missing = try RecipeLoader.parse(valid, file: "r.yaml", overrides: ["data.path=/nonexistent/fmnist"])
        XCTAssertThrowsError(try RecipeRunner.preflight(missing, recipeFile: "r.yaml", runsDirectory: nil)) {
            XCTAssertTrue("\($0)".contains("data.path: /nonexistent/fmnist/train-images-idx3-ubyte.gz does not exist"), "\($0)")
        }
        let defaultPath = try RecipeLoader.parse(valid, file: "r.yaml")
        let file = NSTemporaryDirectory() + "runs-file-\(getpid())"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        XCTAssertThrowsError(try RecipeRunner.preflight(defaultPath, recipeFile: "r.yaml", runsDirectory: file)) {
            XCTAssertTrue("\($0)".contains("is a file; pass --runs-dir with a folder"), "\($0)")
        }
        if getuid() != 0 {
            XCTAssertThrowsError(try RecipeRunner.preflight(defaultPath, recipeFile: "r.yaml", runsDirectory: "/proc/runs")) {
                XCTAssertTrue("\($0)".contains("not writable"), "\($0)")
            }
        }
        XCTAssertThrowsError(try RecipeRunner.preflight(defaultPath, recipeFile: "r.yaml", runsDirectory: "/proc/sys/runs")) {
            XCTAssertTrue("\($0)".contains("not writable"), "\($0)")
        }
    }

    func testRecipePathsResolveCaseInsensitively() throws {
        let root = NSTemporaryDirectory() + "resolve-\(getpid())"
        try FileManager.default.createDirectory(atPath: root + "/Recipes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try valid.write(toFile: root + "/Recipes/mae.yaml", atomically: true, encoding: .utf8)
        XCTAssertEqual(RecipeLoader.resolvePath(root + "/recipes/mae.yaml"), root + "/Recipes/mae.yaml")
        XCTAssertNil(RecipeLoader.resolvePath(root + "/recipes/none.yaml"))
    }

    func testEveryCommittedRecipeValidates() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Recipes").path
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }
        XCTAssertTrue(files.contains("supervised.yaml"))
        for file in files { XCTAssertNoThrow(try RecipeLoader.load(path: "\(folder)/\(file)"), file) }
    }

    /// Issue 24's comparison: dino_cvt.yaml is esvit.yaml without the region loss, every other
    /// resolved key (encoder, views, heads, optimiser, schedule, batch, epochs, evaluation) equal.
    func testDINOOnTheCvTDiffersFromEsViTOnlyInTheObjective() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Recipes").path
        func lines(_ file: String) throws -> [String] {
            RecipeLoader.yaml(try RecipeLoader.load(path: "\(folder)/\(file)")).split(separator: "\n").map(String.init)
        }
        let (esvit, dino) = (try lines("esvit.yaml"), try lines("dino_cvt.yaml"))
        let onlyESViT = esvit.filter { !dino.contains($0) }, onlyDINO = dino.filter { !esvit.contains($0) }
        XCTAssertEqual(onlyESViT.map { $0.trimmingCharacters(in: .whitespaces) }, ["name: esvit", "kind: esvit", "region_layer: tokens", "region_weight: 1.0"])
        XCTAssertEqual(onlyDINO.map { $0.trimmingCharacters(in: .whitespaces) }, ["name: dino_cvt", "kind: dino", "hidden_layer: pooled"])
    }
}
