import Foundation
import NN
import Runner
import TestSupport
import XCTest

/// The messages a new user meets: suggestions that know other tools' names, no Swift in the
/// words, limits refused instead of clamped, and hints that say where to look.
final class MessageTests: XCTestCase {
    func error(_ text: String, overrides: [String] = []) -> String {
        do {
            _ = try RecipeLoader.parse(text, file: "r.yaml", overrides: overrides)
            XCTFail("expected an error for:\n\(text)")
        } catch { return "\(error)" }
        return ""
    }

    let recipe = "name: t\ndata: {train_subset: 1000}\nstages:\n  - supervised:\n      epochs: 1\n  - knn:\n"

    func testSuggestionsKnowCommonSynonyms() {
        for (typed, meant) in [("learning_rate", "lr"), ("wd", "weight_decay"), ("warmup", "warmup_epochs"), ("batch", "batch_size")] {
            let message = error(recipe, overrides: ["stages.0.supervised.\(typed)=1"])
            XCTAssertTrue(message.contains("unknown key '\(typed)'; did you mean '\(meant)'? Valid keys here: epochs,"), message)
        }
        for (typed, meant) in [("num_heads", "heads"), ("patch", "patch_size")] {
            let message = error(recipe, overrides: ["encoder.\(typed)=4"])
            XCTAssertTrue(message.contains("did you mean '\(meant)'?"), message)
        }
        let none = error(recipe, overrides: ["stages.0.supervised.zzzzzzzz=1"])
        XCTAssertTrue(none.contains("unknown key 'zzzzzzzz'. Valid keys here: "), none)
    }

    func testASetOnTheWrongStageKindSaysWhichStageIsWhich() {
        let pretrain = "name: t\nstages:\n  - pretrain:\n      objective: {kind: mae}\n  - knn:\n  - finetune:\n"
        let other = error(pretrain, overrides: ["stages.0.finetune.epochs=1"])
        XCTAssertTrue(other.contains("stage 0 is pretrain, not finetune; stage 2 is finetune: --set stages.2.finetune.epochs=..."), other)
        let none = error(pretrain, overrides: ["stages.0.supervised.epochs=1"])
        XCTAssertTrue(none.contains("stage 0 is pretrain, not supervised; the stages are 0 pretrain, 1 knn, 2 finetune, so --set stages.0.pretrain.epochs=... changes stage 0"), none)
        let index = error(pretrain, overrides: ["stages.7.knn.k=3"])
        XCTAssertTrue(index.contains("'7' is not an index of this list of 3 (0 to 2)"), index)
    }

    func testLimitsAreRefusedNotClamped() {
        XCTAssertTrue(error(recipe, overrides: ["data.test_subset=20000"]).contains("has 10000 test images, so a subset of 20000 cannot be drawn; use at most 10000"))
        XCTAssertTrue(error(recipe, overrides: ["data.train_subset=70000"]).contains("has 60000 training images"))
        let k = error(recipe, overrides: ["stages.1.knn.k=5000"])
        XCTAssertTrue(k.contains("stages.1.knn.k: k is 5000 but there are 1000 training images to vote; use at most 1000"), k)
    }

    func testNoSwiftInTheWords() {
        let cases = [("stages.0.supervised.betas=0.9", "expected a list, found '0.9'"), ("data=3", "data: expected a mapping, found '3'"),
                     ("seed=-1", "expected a whole number of 0 or more, found '-1' (the seed starts every random stream")]
        for (override, expected) in cases {
            let message = error(recipe, overrides: [override])
            XCTAssertTrue(message.contains(expected), message)
            for word in ["Sequence", "Mapping", "Optional", "Swift", "Array<", "...", "UInt64"] { XCTAssertFalse(message.contains(word), message) }
        }
    }

    func testMP3RefusesLearnedPositionsUnlessAsked() throws {
        let mp3 = "name: t\nstages:\n  - pretrain:\n      objective: {kind: mp3}\n"
        XCTAssertTrue(error(mp3).contains("mp3 trains without positions, so the vit encoder's learned position table stays random"))
        XCTAssertNoThrow(try RecipeLoader.parse(mp3.replacingOccurrences(of: "{kind: mp3}", with: "{kind: mp3, allow_learned_positions: true}"), file: "r.yaml"))
        XCTAssertNoThrow(try RecipeLoader.parse(mp3 + "encoder: {kind: simple-vit}\n", file: "r.yaml"))
    }

    func testLARSIsAnOptimizer() throws {
        let parsed = try RecipeLoader.parse(recipe, file: "r.yaml", overrides: ["stages.0.supervised.optimizer=lars"])
        let stage = try XCTUnwrap(parsed.stages[0].settings as? SupervisedStage)
        XCTAssertTrue(stage.settings.training.makeOptimizer([Parameter(.zeros([2, 2]))]) is LARS)
    }

    /// Outside the repository the recipes are found through the executable's checkout, and a
    /// missing one says where it was looked for; WORKBENCH_THREADS errors look like every other.
    func testCommandLineHintsAndOneErrorStyle() throws {
        let elsewhere = NSTemporaryDirectory()
        let validate = try WorkbenchProcess.run(["validate", "recipes/supervised.yaml"], in: elsewhere)
        XCTAssertEqual(validate.status, 0, validate.error)
        let missing = try WorkbenchProcess.run(["validate", "recipes/nope.yaml"], in: elsewhere)
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.error.contains("no such recipe file; a path is looked up from the current folder"), missing.error)
        XCTAssertTrue(missing.error.contains("the recipes there are recipes/byol.yaml"), missing.error)
        let threads = try WorkbenchProcess.run(["list"], in: elsewhere, environment: ["WORKBENCH_THREADS": "abc"])
        XCTAssertEqual(threads.status, 1)
        XCTAssertTrue(threads.error.hasPrefix("Error: WORKBENCH_THREADS=\"abc\" is not a thread count"), threads.error)
    }

    /// `inspect` reads weights files too (`extract --out` into a new folder: RunTests).
    func testInspectReadsWeightsFiles() throws {
        let folder = NSTemporaryDirectory() + "inspect-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let weights = folder + "/w.safetensors"
        try WeightFiles.write(["blocks.0.weight": .zeros([3, 2]), "bias": .zeros([2])], metadata: ["stage": "pretrain"], to: weights)
        let inspect = try WorkbenchProcess.run(["inspect", weights], in: folder)
        XCTAssertEqual(inspect.status, 0, inspect.error)
        for text in ["safetensors, 2 tensors, 8 values", "@stage = pretrain", "blocks.0.weight  F32 3 x 2", "bias  F32 2"] {
            XCTAssertTrue(inspect.output.contains(text), inspect.output)
        }
    }
}
