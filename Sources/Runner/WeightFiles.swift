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

    /// Writes in the native format.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        try native.write(tensors, metadata: metadata, to: path)
    }
}
