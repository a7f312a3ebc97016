import ArgumentParser
import Data
import Encoders
import Foundation
import Runner
import Store
import TensorCore

/// `workbench list`: what a recipe can name.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stages, objectives, encoders, data sets, weight formats and recipes available.")

    @Flag(help: "Print the recipe reference (every key of every section, its default and meaning) as the README's Markdown.")
    var reference = false

    func run() throws {
        if reference { return print(RecipeReference.markdown(), terminator: "") }
        let names = StageRegistry.kinds.map { $0.kind } + ObjectiveRegistry.kinds.map { $0.kind } + EncoderRegistry.kinds.map { $0.kind }
            + DataSetRegistry.kinds.map { $0.kind } + WeightFormatRegistry.formats.map { $0.name }
        let width = Swift.max(14, (names.map(\.count).max() ?? 0) + 1)
        func row(_ what: String, _ name: String, _ summary: String) {
            print("\(what.padding(toLength: 10, withPad: " ", startingAt: 0)) \(name.padding(toLength: width, withPad: " ", startingAt: 0)) \(summary)")
        }
        for stage in StageRegistry.kinds { row("stage", stage.kind, stage.summary) }
        for objective in ObjectiveRegistry.kinds { row("objective", objective.kind, objective.summary) }
        for encoder in EncoderRegistry.kinds {
            row("encoder", encoder.kind, encoder.summary)
            // Staged encoders: their maps at the defaults, for a 28x28 gray image.
            if encoder.isHierarchical {
                let section = EncoderSection(encoder.init())
                let input = EncoderInput(imageSize: 28, channels: 1, classes: 10)
                if section.settings.check(input) == nil { row("", "", "at 28x28x1: " + section.hiddenShapesLine(input)) }
            }
        }
        for dataset in DataSetRegistry.kinds { row("data set", dataset.kind, "\(dataset.summary), from \(dataset.defaultPath)") }
        for format in WeightFormatRegistry.formats { row("weights", format.name, format.summary) }
        let folder = RecipeLoader.find("recipes") ?? "Recipes"
        // Recipes/*.yaml, then the encoder zoo's Recipes/zoo/*.yaml.
        for sub in ["", "zoo/"] {
            for file in ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/" + sub)) ?? []).filter({ $0.hasSuffix(".yaml") }).sorted() {
                let name = (try? RecipeLoader.load(path: "\(folder)/\(sub)\(file)")).map { "\($0.stages.map(\.kind).joined(separator: " -> "))" } ?? "(does not validate)"
                print("recipe     recipes/\((sub + file).padding(toLength: 30, withPad: " ", startingAt: 0)) \(name)")
            }
        }
    }
}

/// `workbench inspect FILE.h5`: the tree of an HDF5 file with shapes and attributes.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the groups, datasets (shape, type) and attributes of an HDF5 file, or the tensors and metadata of a weights file.")

    @Argument(help: "A metrics.h5 or embeddings.h5 file, or a checkpoint (safetensors).") var file: String
    @Flag(help: "Print long text attributes (the recipe) in full.") var full = false

    func run() throws {
        try reportingUserErrors {
            guard FileManager.default.isReadableFile(atPath: file) else { throw RunError("\(file): no such file or not readable") }
            if let format = try? WeightFiles.format(of: file) { return try showWeights(format) }
            let h5: HDF5File
            do { h5 = try HDF5File(path: file, mode: .readOnly) } catch {
                throw RunError("\(file) is neither an HDF5 file nor a weights file the workbench reads (\(WeightFormatRegistry.formats.map { $0.name }.joined(separator: ", ")))")
            }
            print("\(file)")
            try show(h5.root, indent: "  ")
        }
    }

    /// A weights file: its format, every tensor (name, dtype, shape) and its metadata.
    func showWeights(_ format: any WeightFormat.Type) throws {
        let entries = try format.entries(path: file)
        let parameters = entries.reduce(0) { $0 + $1.shape.reduce(1, *) }
        print("\(file)  \(format.name), \(counted(entries.count, "tensor")), \(parameters) values")
        for (key, value) in try format.metadata(path: file).sorted(by: { $0.key < $1.key }) {
            if value.contains("\n") && !full {
                print("  @\(key) = \(value.split(separator: "\n").first ?? "")  ... (\(value.split(separator: "\n").count) lines; --full prints them)")
            } else if value.contains("\n") {
                print("  @\(key):")
                for line in value.split(separator: "\n", omittingEmptySubsequences: false) { print("      \(line)") }
            } else {
                print("  @\(key) = \(value)")
            }
        }
        for entry in entries.sorted(by: { $0.name < $1.name }) {
            print("  \(entry.name)  \(entry.dtype) \(entry.shape.map(String.init).joined(separator: " x "))")
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
        discussion: "Any weights file the workbench wrote: checkpoints/encoder.safetensors, encoder-STAGE.safetensors, best.safetensors or a step folder's model.safetensors (for DINO and EsViT the teacher, for BYOL the online network). Its metadata names the encoder and data settings; the run's subsets apply unless --all-images.")

    @Option(help: "A checkpoint written by the workbench.") var checkpoint: String
    @Option(help: "The data set's folder (default: the one in the checkpoint's metadata).") var data: String?
    @Option(name: .customLong("hidden-layer"), help: "pooled, tokens, logits or blocks.i.") var hiddenLayer = "pooled"
    @Option(help: "train, test or both.") var split = "both"
    @Option(help: "The output HDF5 file (its folder is created when missing).") var out: String
    @Flag(name: .customLong("all-images"), help: "Every image of each split, not the run's data.train_subset / test_subset.")
    var allImages = false
    @Option(name: .customLong("batch-size")) var batchSize = 1000
    @Flag(help: "Also record every block's attention probabilities for the first images of each split (as vit-pytorch's Recorder).")
    var attention = false
    @Option(name: .customLong("attention-images"), help: "How many images --attention records.") var attentionImages = 16

    func run() throws {
        try reportingUserErrors {
            guard ["train", "test", "both"].contains(split) else { throw RunError("--split must be train, test or both, not '\(split)'") }
            let (weights, metadata, encoderSection, recorded) = try WeightFiles.workbenchCheckpoint(path: checkpoint)
            var dataSection = recorded
            if let data { dataSection.path = data }
            // The run's own subsets unless told otherwise, so a notebook's extract matches the run.
            if allImages { (dataSection.trainSubset, dataSection.testSubset) = (nil, nil) }
            guard encoderSection.hiddenLayerNames.contains(hiddenLayer) else {
                throw RunError("the encoder has no hidden layer '\(hiddenLayer)'; its layers: \(encoderSection.hiddenLayerNames.joined(separator: ", "))")
            }
            let loaded = try RunData.load(dataSection, seed: 0, recipeFile: "--data")
            let (encoder, _) = encoderSection.make(loaded.encoderInput, seed: 0)
            do {
                // Pretraining checkpoints hold the objective; encoderState finds its encoder.
                try encoder.load(weights)
            } catch {
                throw RunError("\(checkpoint) does not fit its encoder: \(error)")
            }
            let splits = split == "both" ? [("train", loaded.train), ("test", loaded.test)] : [(split, split == "train" ? loaded.train : loaded.test)]
            let folder = URL(fileURLWithPath: out).deletingLastPathComponent().path
            do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
                throw RunError("cannot create \(folder) for --out \(out): \(error.localizedDescription)")
            }
            let summary = try Embeddings.extract(encoder, layer: hiddenLayer, splits: splits, mean: loaded.mean, std: loaded.std,
                                                 batchSize: batchSize, classNames: loaded.classNames, to: out,
                                                 attributes: ["encoder": metadata["encoder", default: ""], "hidden_layer": hiddenLayer,
                                                              "checkpoint": URL(fileURLWithPath: checkpoint).standardizedFileURL.path,
                                                              "workbench_version": WorkbenchInfo.version, "git_commit": WorkbenchInfo.gitCommit],
                                                 integerAttributes: metadata["seed"].flatMap { Int($0) }.map { ["seed": $0] } ?? [:],
                                                 attentionImages: attention ? attentionImages : 0)
            print("\(out): " + summary.map { "\($0.split) \($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ", "))
        }
    }
}

/// `workbench export`: a checkpoint's encoder as a file PyTorch loads.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint's encoder for PyTorch: safetensors, or a torch .pt file that torch.load(..., weights_only=True) reads.",
        discussion: """
            vit, simple-vit and cvt encoders have vit-pytorch 1.7.14's state_dict keys (--to vit-pytorch), timm-vit has timm's
            (--to timm), so the file loads with strict=True into that library's model of the same configuration (printed).
            The format follows --out's extension: .safetensors, .pt or .pth.
            Example: workbench export --checkpoint runs/mae/20261203-101500/checkpoints/encoder-pretrain.safetensors --to vit-pytorch --out mae.pt
            """)

    @Option(help: "A checkpoint the workbench wrote (any of them: encoder.safetensors, encoder-STAGE.safetensors, best.safetensors, ...).")
    var checkpoint: String
    @Option(help: "vit-pytorch (vit, simple-vit, cvt encoders) or timm (timm-vit).") var to = "vit-pytorch"
    @Option(help: "The file to write: .safetensors, .pt or .pth.") var out: String

    func run() throws {
        try reportingUserErrors {
            guard ["vit-pytorch", "timm"].contains(to) else { throw RunError("--to must be vit-pytorch or timm, not '\(to)'") }
            guard let format = WeightFiles.format(forExtension: out) else {
                throw RunError("--out \(out): give a .safetensors, .pt or .pth file name")
            }
            let (state, metadata, section, data) = try WeightFiles.workbenchCheckpoint(path: checkpoint)
            let names = type(of: section.settings).namesOf
            guard names == to else {
                // The layers differ (vit-pytorch's patch LayerNorms and bias-free qkv, timm's conv embedding and qkv bias): no renaming turns one into the other.
                throw RunError("\(checkpoint) holds a \(section.kind) encoder, whose weights are \(names)'s; export it --to \(names). For timm weights, train the encoder as kind: timm-vit")
            }
            // Built and loaded strictly first: what is written is exactly the encoder's state_dict.
            let classes = data.source.classNames(path: data.path)?.count ?? state.first { $0.key.hasSuffix("head.weight") }?.value.shape[0] ?? 10
            let (encoder, _) = section.make(EncoderInput(imageSize: data.imageSize, channels: data.channels, classes: classes), seed: 0)
            do { try encoder.load(state) } catch { throw RunError("\(checkpoint) does not fit its encoder: \(error)") }
            let folder = URL(fileURLWithPath: out).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            var exported = encoder.stateDict()
            // torch's BatchNorm also holds num_batches_tracked, which strict loading asks for.
            for name in exported.keys where name.hasSuffix(".running_mean") {
                exported[String(name.dropLast(".running_mean".count)) + ".num_batches_tracked"] = Tensor(shape: [], [0])
            }
            try format.write(exported, metadata: ["format": "pt", "encoder": metadata["encoder", default: ""], "source": checkpoint], to: out)
            print("\(out): \(counted(exported.count, "tensor")) (\(format.name)), \(names) names")
            print("load it with: \(pytorchLoadLine(section, data: data, classes: classes, file: out, format: format))")
        }
    }

    /// The Python line that builds vit-pytorch's model for this encoder and loads the file strictly.
    func pytorchLoadLine(_ section: EncoderSection, data: DataSection, classes: Int, file: String, format: any WeightFormat.Type) -> String {
        let load = format == TorchCheckpoint.self ? "torch.load('\(file)', weights_only=True)" : "safetensors.torch.load_file('\(file)')"
        let model = section.settings.pytorchModel(EncoderInput(imageSize: data.imageSize, channels: data.channels, classes: classes))
            ?? "\(type(of: section.settings).namesOf)'s \(section.kind) of the recipe's configuration"
        return "\(model).load_state_dict(\(load), strict=True)"
    }
}

/// `workbench views`: the images a recipe's stages see, before normalisation, to look at the
/// augmentations before spending hours on them.
struct Views: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the first images of each split as the recipe's stages see them (before normalisation) to HDF5.",
        discussion: """
            /SPLIT/eval (N, C, H, W): what the evaluation stages read. /SPLIT/STAGE/view_K (N, C, s, s): each view of each \
            pretrain stage's view pipeline (BYOL, DINO, EsViT), drawn from the stream (seed, "views"); a stage without views \
            (the masked objectives) trains on the eval images, flipped at random. Pixels are in [0, 1]; the root's mean and std \
            attributes are the normalisation the stages apply next. Notebooks/views.ipynb shows them.
            """)

    @Argument(help: "The recipe (YAML).") var recipe: String
    @Option(name: .customLong("set"), help: ArgumentHelp("Override a key: dotted.path=value.", valueName: "key=value")) var overrides: [String] = []
    @Option(help: "Images per split.") var count = 8
    @Option(help: "The output HDF5 file.") var out: String

    func run() throws {
        try reportingUserErrors {
            guard count > 0 else { throw RunError("--count must be positive, not \(count)") }
            let loaded = try RecipeLoader.load(path: recipe, overrides: overrides)
            let file = RecipeLoader.find(recipe) ?? recipe
            try RunData.check(loaded.data, recipeFile: file)
            let data = try RunData.load(loaded.data, seed: loaded.seed, recipeFile: file)
            let folder = URL(fileURLWithPath: out).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let temporary = out + ".tmp-\(getpid())"
            do {
                let h5 = try HDF5File(path: temporary, mode: .create)
                try h5.root.setAttribute("recipe", loaded.name)
                try h5.root.setAttribute("mean", loaded.data.mean)
                try h5.root.setAttribute("std", loaded.data.std)
                try h5.root.writeStrings("class_names", data.classNames)
                for (split, dataset) in [("train", data.train), ("test", data.test)] {
                    let n = Swift.min(count, dataset.count)
                    let shape = dataset.imageShape
                    // The evaluation transform's images, and the stored images the views are cut from.
                    let loader = DataLoader(dataset, batchSize: 1, shuffle: false, dropLast: false, mean: [0], std: [1], seed: 0)
                    let decoder = ImageDecoder()
                    var images: [AugmentImage] = []
                    var pixels: [Float] = []
                    for i in 0..<n {
                        let (image, source) = try loader.transformed(i, decoder: decoder, crops: nil, keepSource: true)
                        pixels += image.pixels
                        images.append(source!)
                    }
                    let group = try h5.root.group(split)
                    try group.write("eval", pixels, shape: [n] + shape)
                    try group.write("labels", (0..<n).map { Int64(dataset.label(at: $0)) })
                    for (index, entry) in loaded.stages.enumerated() {
                        guard let stage = entry.settings as? PretrainStage, let pipeline = stage.objective.views(loaded) else { continue }
                        let views = pipeline.makeViews(images: images, mean: [0], std: [1], rng: RandomStream(seed: loaded.seed &+ UInt64(index), purpose: "views"))
                        let stageGroup = try group.group(loaded.stageNames[index])
                        for (k, view) in views.enumerated() { try stageGroup.write("view_\(k)", view.scalars, shape: view.shape) }
                        try stageGroup.setAttribute("sizes", pipeline.views.map { Int64($0.size) })
                    }
                }
            } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                throw error
            }
            guard rename(temporary, out) == 0 else { throw RunError("cannot write \(out): \(String(cString: strerror(errno)))") }
            print("\(out): the first \(counted(count, "image")) of each split as the stages of \(loaded.name) see them")
        }
    }
}
