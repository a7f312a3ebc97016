import Foundation
import Store
import TensorCore

/// Reading and writing weight files through `WeightFormatRegistry`: a file's format is recognised
/// from its content; the workbench writes its own files in `native`.
public enum WeightFiles {
    /// The format the workbench writes checkpoints and exports in.
    public static let native: any WeightFormat.Type = SafeTensors.self

    /// The format of the file at `path`, or a RunError naming the file and the formats known.
    public static func format(of path: String) throws -> any WeightFormat.Type {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RunError("cannot read \(path): no such file or not readable")
        }
        defer { try? handle.close() }
        let prefix = [UInt8](handle.readData(ofLength: 256))
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard let format = WeightFormatRegistry.formats.first(where: { $0.recognizes(prefix: prefix, fileSize: size) }) else {
            let names = WeightFormatRegistry.formats.map { $0.name }.joined(separator: ", ")
            throw RunError("\(path) is not a weight file the workbench reads (formats: \(names))")
        }
        return format
    }

    /// Every tensor of the file, whatever its format.
    public static func read(path: String) throws -> [String: Tensor] { try format(of: path).read(path: path) }

    /// The file's metadata, whatever its format.
    public static func metadata(path: String) throws -> [String: String] { try format(of: path).metadata(path: path) }

    /// The encoder's state_dict in a checkpoint the workbench wrote: the tensors under its
    /// `encoder_prefix` (DINO's teacher, BYOL's online network, MAE's encoder), or, in files written
    /// before that metadata existed, under the first of those prefixes the file has; with the
    /// file's metadata.
    public static func encoderState(path: String) throws -> (state: [String: Tensor], metadata: [String: String]) {
        let metadata = try self.metadata(path: path)
        var weights = try read(path: path)
        let known = ["teacher_encoder.net.", "online_encoder.net.", "encoder."]
        if let prefix = metadata["encoder_prefix"] ?? known.first(where: { p in weights.keys.contains { $0.hasPrefix(p) } }), !prefix.isEmpty {
            weights = Dictionary(uniqueKeysWithValues: weights.filter { $0.key.hasPrefix(prefix) }.map { (String($0.key.dropFirst(prefix.count)), $0.value) })
        }
        return (weights, metadata)
    }

    /// A checkpoint the workbench wrote: the encoder's state (`encoderState`) and the encoder and
    /// data sections its metadata records, or a RunError naming the file.
    public static func workbenchCheckpoint(path: String) throws -> (state: [String: Tensor], metadata: [String: String],
                                                                   encoder: EncoderSection, data: DataSection) {
        let (state, metadata) = try encoderState(path: path)
        guard let encoderYAML = metadata["encoder"], let dataYAML = metadata["data"] else {
            throw RunError("\(path) does not say which encoder it holds (no 'encoder' metadata); use a checkpoint the workbench wrote")
        }
        return (state, metadata, try RecipeLoader.section(EncoderSection.self, yaml: encoderYAML, file: "\(path) (metadata 'encoder')"),
                try RecipeLoader.section(DataSection.self, yaml: dataYAML, file: "\(path) (metadata 'data')"))
    }

    /// The format whose file extension `path` has (.safetensors, .pt, .pth), or nil.
    public static func format(forExtension path: String) -> (any WeightFormat.Type)? {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "pth" { return TorchCheckpoint.self }
        return WeightFormatRegistry.formats.first { $0.fileExtension == ext }
    }

    /// Writes in the native format.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        try native.write(tensors, metadata: metadata, to: path)
    }
}
