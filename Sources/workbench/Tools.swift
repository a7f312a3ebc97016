import ArgumentParser
import Data
import Encoders
import Foundation
import Runner
import Store

/// `workbench list`: what a recipe can name.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stages, objectives, encoders, data sets, weight formats and recipes available.")

    @Flag(help: "Print the recipe reference (every key of every section, its default and meaning) as the README's Markdown.")
    var reference = false

    func run() throws {
        if reference { return print(RecipeReference.markdown(), terminator: "") }
        func row(_ what: String, _ name: String, _ summary: String) {
            print("\(what.padding(toLength: 10, withPad: " ", startingAt: 0)) \(name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(summary)")
        }
        for stage in StageRegistry.kinds { row("stage", stage.kind, stage.summary) }
        for objective in ObjectiveRegistry.kinds { row("objective", objective.kind, objective.summary) }
        for encoder in EncoderRegistry.kinds { row("encoder", encoder.kind, encoder.summary) }
        for dataset in DataSetRegistry.kinds { row("data set", dataset.kind, "\(dataset.summary), from \(dataset.defaultPath)") }
        for format in WeightFormatRegistry.formats { row("weights", format.name, format.summary) }
        let folder = RecipeLoader.resolvePath("recipes") ?? "Recipes"
        for file in ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter({ $0.hasSuffix(".yaml") }).sorted() {
            let name = (try? RecipeLoader.load(path: "\(folder)/\(file)")).map { "\($0.stages.map(\.kind).joined(separator: " -> "))" } ?? "(does not validate)"
            print("recipe     recipes/\(file.padding(toLength: 20, withPad: " ", startingAt: 0)) \(name)")
        }
    }
}

/// `workbench inspect FILE.h5`: the tree of an HDF5 file with shapes and attributes.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the groups, datasets (shape, type) and attributes of an HDF5 file.")

    @Argument(help: "A metrics.h5 or embeddings.h5 file.") var file: String
    @Flag(help: "Print long text attributes (the recipe) in full.") var full = false

    func run() throws {
        try reportingUserErrors {
            let h5 = try HDF5File(path: file, mode: .readOnly)
            print("\(file)")
            try show(h5.root, indent: "  ")
        }
    }

    func show(_ object: HDF5Object, indent: String) throws {
        for key in object.attributeNames {
            let value = try object.attribute(key)
            if full, case .string(let text) = value, text.contains("\n") {
                print("\(indent)@\(key):")
                for line in text.split(separator: "\n", omittingEmptySubsequences: false) { print("\(indent)    \(line)") }
            } else {
                print("\(indent)@\(key) = \(value)")
            }
        }
        guard let group = object as? HDF5Group else { return }
        for name in group.childNames {
            switch try group.child(name) {
            case .group(let child):
                print("\(indent)\(name)/")
                try show(child, indent: indent + "  ")
            case .dataset(let dataset):
                print("\(indent)\(name)  \(dataset.elementType) \(dataset.shape.map(String.init).joined(separator: " x "))")
                try show(dataset, indent: indent + "  ")
            }
        }
    }
}

/// `workbench extract`: embeddings of a checkpoint's encoder, outside a recipe.
struct Extract: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a hidden layer's features of a checkpoint's encoder to HDF5.",
        discussion: "The checkpoint is a weights file the workbench wrote (checkpoints/encoder.safetensors, best.safetensors); its metadata names the encoder and data settings.")

    @Option(help: "A checkpoint written by the workbench.") var checkpoint: String
    @Option(help: "The data set's folder (default: the one in the checkpoint's metadata).") var data: String?
    @Option(name: .customLong("hidden-layer"), help: "pooled, tokens, logits or blocks.i.") var hiddenLayer = "pooled"
    @Option(help: "train, test or both.") var split = "both"
    @Option(help: "The output HDF5 file.") var out: String
    @Option(name: .customLong("batch-size")) var batchSize = 1000
    @Flag(help: "Also record every block's attention probabilities for the first images of each split (as vit-pytorch's Recorder).")
    var attention = false
    @Option(name: .customLong("attention-images"), help: "How many images --attention records.") var attentionImages = 16

    func run() throws {
        try reportingUserErrors {
            guard ["train", "test", "both"].contains(split) else { throw RunError("--split must be train, test or both, not '\(split)'") }
            let metadata = try WeightFiles.metadata(path: checkpoint)
            guard let encoderYAML = metadata["encoder"], let dataYAML = metadata["data"] else {
                throw RunError("\(checkpoint) does not say which encoder it holds (no 'encoder' metadata); use a checkpoint the workbench wrote")
            }
            let encoderSection = try RecipeLoader.section(EncoderSection.self, yaml: encoderYAML, file: "\(checkpoint) (metadata 'encoder')")
            var dataSection = try RecipeLoader.section(DataSection.self, yaml: dataYAML, file: "\(checkpoint) (metadata 'data')")
            if let data { dataSection.path = data }
            (dataSection.trainSubset, dataSection.testSubset) = (nil, nil)
            guard encoderSection.hiddenLayerNames.contains(hiddenLayer) else {
                throw RunError("the encoder has no hidden layer '\(hiddenLayer)'; its layers: \(encoderSection.hiddenLayerNames.joined(separator: ", "))")
            }
            let loaded = try RunData.load(dataSection, seed: 0, recipeFile: "--data")
            let (encoder, _) = encoderSection.make(loaded.encoderInput, seed: 0)
            do {
                // Pretraining checkpoints (best.safetensors, s*-step*/model.safetensors) hold the
                // objective: its encoder's weights are the ones under "encoder.".
                var weights = try WeightFiles.read(path: checkpoint)
                if weights.keys.contains(where: { $0.hasPrefix("encoder.") }) {
                    weights = Dictionary(uniqueKeysWithValues: weights.filter { $0.key.hasPrefix("encoder.") }
                        .map { (String($0.key.dropFirst("encoder.".count)), $0.value) })
                }
                try encoder.load(weights)
            } catch {
                throw RunError("\(checkpoint) does not fit its encoder: \(error)")
            }
            let splits = split == "both" ? [("train", loaded.train), ("test", loaded.test)] : [(split, split == "train" ? loaded.train : loaded.test)]
            let summary = try Embeddings.extract(encoder, layer: hiddenLayer, splits: splits, mean: loaded.mean, std: loaded.std,
                                                 batchSize: batchSize, classNames: loaded.classNames, to: out,
                                                 attributes: ["encoder": encoderYAML, "hidden_layer": hiddenLayer, "checkpoint": checkpoint,
                                                              "workbench_version": WorkbenchInfo.version, "git_commit": WorkbenchInfo.gitCommit],
                                                 attentionImages: attention ? attentionImages : 0)
            print("\(out): " + summary.map { "\($0.split) \($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ", "))
        }
    }
}
