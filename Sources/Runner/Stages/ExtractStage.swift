import Data
import Encoders
import Evaluation
import Foundation
import NN
import Store
import TensorCore

/// `extract`: features of a hidden layer for every image of the chosen splits, to
/// embeddings.h5 (`embeddings_2.h5` for a second extract stage, and so on).
public struct ExtractStage: Stage {
    public static let kind = "extract"
    public static let summary = "write a hidden layer's features of the train/test splits to embeddings.h5"

    public var hiddenLayer = "pooled"
    public var splits = ["train", "test"]
    public var batchSize = 1000

    public init() {}

    public static let fields: [Field<ExtractStage>] = [
        .value("hidden_layer", \.hiddenLayer, "the features written"),
        .value("splits", \.splits, "train and/or test", .that({ !$0.isEmpty && $0.allSatisfy { ["train", "test"].contains($0) } }) {
            "splits are a list of train and/or test, got [\($0.joined(separator: ", "))]"
        }),
        .value("batch_size", \.batchSize, "images per batch", .positive),
    ]

    public func validate(_ recipe: Recipe) throws { try checkHiddenLayer(hiddenLayer, recipe) }

    public func run(_ context: RunContext) throws -> [String: Double] {
        let file = context.stageName.replacingOccurrences(of: "extract", with: "embeddings") + ".h5"
        let path = "\(context.directory)/\(file)"
        let data = context.data
        let sets = splits.map { ($0, $0 == "train" ? data.train : data.test) }
        let attributes = ["encoder": RecipeLoader.yamlFragment(context.recipe.encoder), "hidden_layer": hiddenLayer,
                          "checkpoint": "in memory, after stage \(context.stageIndex > 0 ? context.recipe.stageNames[context.stageIndex - 1] : "none (random init)")",
                          "recipe": RecipeLoader.yaml(context.recipe), "workbench_version": WorkbenchInfo.version,
                          "git_commit": WorkbenchInfo.gitCommit]
        let summary = try Embeddings.extract(context.encoder, layer: hiddenLayer, splits: sets, mean: data.mean, std: data.std,
                                             batchSize: batchSize, classNames: data.classNames, to: path, attributes: attributes,
                                             integerAttributes: ["seed": Int(truncatingIfNeeded: context.recipe.seed)])
        context.log("\(context.stageName): \(summary.map { "\($0.split) \($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ", ")) '\(hiddenLayer)' features -> \(file)")
        return ["images": Double(summary.reduce(0) { $0 + $1.shape[0] })]
    }
}

/// Feature extraction to HDF5, shared by the extract stage and `workbench extract`.
public enum Embeddings {
    /// Writes `/<split>/features` (N, ...) float32, `/<split>/labels` (N,) int64 and
    /// `/<split>/indices` (N,) int64 (positions in the original data set) for each split, with
    /// `attributes` on the root. The file is written under a temporary name and renamed.
    /// `/SPLIT/attention` (n, depth, heads, T, T) float32: every block's attention probabilities
    /// for the first n images (token 0 is the class token when the encoder has one), and
    /// `/SPLIT/images` (n, C, H, W) float32 pixels in [0, 1], as vit-pytorch's Recorder records them.
    static func writeAttention(_ encoder: some PatchTransformer, dataset: Dataset, count: Int, mean: [Float], std: [Float],
                               into group: HDF5Group) throws {
        let loader = DataLoader(Subset(first: count, of: dataset), batchSize: count, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
        guard let batch = try loader.batches().next() else { return }
        let maps = Autograd.noGrad { encoder.attentionMaps(batch.images) }
        let (heads, tokens) = (maps[0].shape[1], maps[0].shape[2])
        let perImage = heads * tokens * tokens
        var values = [Float](repeating: 0, count: count * maps.count * perImage)
        for (layer, map) in maps.enumerated() {
            for image in 0..<count {
                let source = UnsafeBufferPointer(start: map.base + image * perImage, count: perImage)
                let offset = (image * maps.count + layer) * perImage
                values.replaceSubrange(offset..<(offset + perImage), with: source)
            }
        }
        try group.write("attention", values, shape: [count, maps.count, heads, tokens, tokens])
        try group.write("images", pixels(batch.images, mean: mean, std: std), shape: batch.images.shape)
    }

    @discardableResult
    public static func extract(_ encoder: some HiddenLayerEncoder, layer: String, splits: [(String, Dataset)], mean: [Float], std: [Float],
                               batchSize: Int, classNames: [String], to path: String,
                               attributes: [String: String], integerAttributes: [String: Int] = [:],
                               attentionImages: Int = 0) throws -> [(split: String, shape: [Int])] {
        let temporary = path + ".tmp-\(getpid())"
        var summary: [(String, [Int])] = []
        do {
            let file = try HDF5File(path: temporary, mode: .create)
            for (key, value) in attributes { try file.root.setAttribute(key, value) }
            for (key, value) in integerAttributes { try file.root.setAttribute(key, value) }
            try file.root.writeStrings("class_names", classNames)
            let wasTraining = encoder.isTraining
            encoder.eval()
            defer { encoder.train(wasTraining) }
            for (split, dataset) in splits {
                let group = try file.root.group(split)
                var features: HDF5Dataset?
                var rowShape: [Int] = []
                var labels: [Int64] = [], indices: [Int64] = []
                func append(_ rows: [Float], shape: [Int]) throws {
                    if features == nil {
                        rowShape = shape
                        features = try group.createExtendable("features", of: Float.self, rowShape: rowShape,
                                                              chunkRows: Swift.max(1, 65536 / Swift.max(1, rowShape.reduce(1, *))))
                    }
                    try features!.append(rows)
                }
                if Distributed.isMultiProcess {
                    // Spread over processes: chunks of batchSize images per process, each process
                    // extracting its share of a chunk, gathered on every process in order.
                    let span = batchSize * Distributed.size
                    for start in stride(from: 0, to: dataset.count, by: span) {
                        let range = start ..< Swift.min(start + span, dataset.count)
                        let (rows, shape) = try sharedHidden(encoder, layer: layer, dataset: dataset, range: range, mean: mean, std: std,
                                                             batchSize: batchSize)
                        try append(rows, shape: shape)
                        labels += range.map { Int64(dataset.label(at: $0)) }
                        indices += range.map { Int64(dataset.sourceIndex(at: $0)) }
                    }
                } else {
                    let loader = DataLoader(dataset, batchSize: batchSize, shuffle: false, dropLast: false, mean: mean, std: std, seed: 0)
                    let batches = loader.batches()
                    while let batch = try batches.next() {
                        let output = Autograd.noGrad { encoder.hidden(batch.images, layer: layer) }
                        try append(Array(UnsafeBufferPointer(start: output.base, count: output.count)), shape: Array(output.shape.dropFirst()))
                        labels += batch.labels.map { Int64($0) }
                        indices += batch.indices.map { Int64(dataset.sourceIndex(at: $0)) }
                    }
                }
                try group.write("labels", labels)
                try group.write("indices", indices)
                if attentionImages > 0, let transformer = encoder as? any PatchTransformer {
                    try writeAttention(transformer, dataset: dataset, count: Swift.min(attentionImages, dataset.count), mean: mean, std: std, into: group)
                }
                try group.setAttribute("dataset", dataset.name)
                summary.append((split, [labels.count] + rowShape))
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw RunError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return summary
    }
}

/// Normalised images (B, C, H, W) back to pixels: x * std + mean per channel, optionally clamped
/// to [0, 1] (for predictions, which may overshoot).
func pixels(_ images: Tensor, mean: [Float], std: [Float], clamped: Bool = false) -> [Float] {
    let channels = images.shape[1], plane = images.shape[2] * images.shape[3]
    return images.scalars.enumerated().map { i, v in
        let c = (i / plane) % channels
        let x = v * std[std.count == 1 ? 0 : c] + mean[mean.count == 1 ? 0 : c]
        return clamped ? Swift.min(1, Swift.max(0, x)) : x
    }
}
