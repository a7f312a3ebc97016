import ArgumentParser
import Data
import Encoders
import Foundation
import Runner
import TensorCore

/// `workbench predict`: class scores of image files from a checkpoint's classifier, as
/// mmpretrain's inference_model: the preprocessing the checkpoint's run used (resize to
/// image_size / crop_pct, centre crop, channels, mean and std), softmax, top-k class names.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify image files (JPEG, PNG, WebP, BMP, PPM/PGM) with a checkpoint's encoder and head.",
        discussion: """
            The checkpoint is any weights file the workbench wrote; its metadata names the encoder, the data settings \
            (image_size, crop_pct, interpolation, channels, mean, std: the evaluation transform of the run) and the class \
            names. The head is trained by a supervised or finetune stage: a checkpoint from before one gives a warning. \
            Folders are searched recursively for images, in sorted order. A file that does not decode is reported and \
            skipped; the exit status is then 1.
            Example: workbench predict --checkpoint runs/supervised/20261203-101500/checkpoints/encoder.safetensors shoe.png photos/
            """)

    @Option(help: "A checkpoint written by the workbench.") var checkpoint: String
    @Argument(help: "Image files or folders of them.") var images: [String]
    @Option(help: "How many classes to list per image.") var top = 5
    @Flag(help: "Print one JSON document (a list of {file, predictions: [{class, index, score}]}) instead of text.") var json = false
    @Option(name: .customLong("batch-size")) var batchSize = 64

    func run() throws {
        var failed = false
        try reportingUserErrors {
            guard top > 0 else { throw RunError("--top must be positive, not \(top)") }
            guard batchSize > 0 else { throw RunError("--batch-size must be positive, not \(batchSize)") }
            guard !images.isEmpty else { throw RunError("give at least one image file or folder") }
            let (state, metadata, section, data) = try WeightFiles.workbenchCheckpoint(path: checkpoint)
            let names: [String] = {
                if let text = metadata["class_names"], let decoded = try? JSONDecoder().decode([String].self, from: Data(text.utf8)), !decoded.isEmpty {
                    return decoded
                }
                if let known = data.source.classNames(path: data.path) { return known }
                let classes = state.first { $0.key.hasSuffix("head.weight") || $0.key.hasSuffix("head.1.weight") }?.value.shape[0] ?? 10
                return (0..<classes).map(String.init)
            }()
            guard section.hiddenLayerNames.contains("logits") else { throw RunError("\(checkpoint): a \(section.kind) encoder has no classifier head (no 'logits' layer)") }
            let (encoder, _) = section.make(EncoderInput(imageSize: data.imageSize, channels: data.channels, classes: names.count), seed: 0)
            do { try encoder.load(state) } catch { throw RunError("\(checkpoint) does not fit its encoder: \(error)") }
            encoder.eval()
            if metadata["head", default: "untrained"] == "untrained" {
                FileHandle.standardError.write(Data("warning: \(checkpoint) comes from before any supervised or finetune stage, so its classifier head was never trained; the scores say nothing about the classes\n".utf8))
            }
            let files = try imageFiles()
            let filter = ResizeFilter(rawValue: data.interpolation) ?? .bilinear
            let transform = ImageTransform.center(size: data.imageSize, cropPct: data.cropPct, filter: filter)
            let mean = data.mean.map { Float($0) }, std = data.std.map { Float($0) }
            let decoder = ImageDecoder()
            let c = data.channels, side = data.imageSize
            var results: [(String, [(String, Int, Float)])] = []
            for first in stride(from: 0, to: files.count, by: batchSize) {
                var pixels: [Float] = [], kept: [String] = []
                for file in files[first..<Swift.min(first + batchSize, files.count)] {
                    do {
                        let image = try load(file, transform: transform, channels: c, decoder: decoder)
                        for ch in 0..<c {
                            let m = mean[mean.count == 1 ? 0 : ch], s = std[std.count == 1 ? 0 : ch]
                            pixels += image.pixels[(ch * side * side)..<((ch + 1) * side * side)].map { ($0 - m) / s }
                        }
                        kept.append(file)
                    } catch {
                        failed = true
                        FileHandle.standardError.write(Data("\(file): \(error)\n".utf8))
                    }
                }
                guard !kept.isEmpty else { continue }
                let x = Tensor(shape: [kept.count, c, side, side], pixels)
                let probabilities = Autograd.noGrad { encoder.hidden(x, layer: "logits").softmax() }
                let k = Swift.min(top, names.count)
                for (row, file) in kept.enumerated() {
                    let scores = Array(UnsafeBufferPointer(start: probabilities.base + row * names.count, count: names.count))
                    let best = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(k)
                    results.append((file, best.map { (names[$0], $0, scores[$0]) }))
                }
            }
            if json {
                let list = results.map { file, predictions in
                    ["file": file, "predictions": predictions.map { ["class": $0.0, "index": $0.1, "score": Double($0.2)] as [String: Any] }] as [String: Any]
                }
                let text = try JSONSerialization.data(withJSONObject: list, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: text, as: UTF8.self))
            } else {
                for (file, predictions) in results {
                    print("\(file): " + predictions.map { String(format: "%@ %.4f", $0.0, $0.2) }.joined(separator: ", "))
                }
            }
        }
        if failed { throw ExitCode(1) }
    }

    /// The files given, and the images under the folders given (sorted walk), in order.
    func imageFiles() throws -> [String] {
        var files: [String] = []
        for path in images {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw RunError("\(path) does not exist") }
            if isDirectory.boolValue {
                do {
                    files += try ImageFolder.list(root: path, labelled: false).files
                } catch let error as DataError { throw RunError(error.description) }
            } else {
                files.append(path)
            }
        }
        return files
    }

    /// One file through the evaluation transform: (C, side, side) floats in [0, 1].
    func load(_ file: String, transform: ImageTransform, channels: Int, decoder: ImageDecoder) throws -> AugmentImage {
        guard let bytes = FileManager.default.contents(atPath: file) else { throw RunError("cannot be read") }
        var decoded = try bytes.withUnsafeBytes { try decoder.decode($0) }
        decoded = channels == 3 ? decoded.rgb() : decoded.gray()
        let image = ImageFolder.planar(decoded)
        return transform.apply(transform.plan(height: image.height, width: image.width, rng: nil), to: image)
    }
}
