import Foundation
import TensorCore

/// A file format of named weight tensors (a state_dict). A format is recognised from the first
/// bytes of a file, not from its name, so that a renamed or extension-less file still reads.
public protocol WeightFormat {
    /// The name users see ("safetensors").
    static var name: String { get }
    static var summary: String { get }
    /// The file extension the workbench gives files of this format.
    static var fileExtension: String { get }
    /// Whether a file that starts with `prefix` (up to 256 bytes) and is `fileSize` bytes long is
    /// in this format.
    static func recognizes(prefix: [UInt8], fileSize: Int) -> Bool
    /// Every tensor of the file, as Float32.
    static func read(path: String) throws -> [String: Tensor]
    /// Every tensor's name, stored dtype and shape, without reading the data.
    static func entries(path: String) throws -> [(name: String, dtype: String, shape: [Int])]
    /// The file's string metadata (empty when the format has none).
    static func metadata(path: String) throws -> [String: String]
    /// Writes `tensors` with `metadata`, atomically (a reader never sees half a file).
    static func write(_ tensors: [String: Tensor], metadata: [String: String], to path: String) throws
}

extension SafeTensors: WeightFormat {
    public static let name = "safetensors"
    public static let summary = "Hugging Face safetensors (what the workbench writes; timm and vit-pytorch state_dicts saved with safetensors)"
    public static let fileExtension = "safetensors"

    /// An 8-byte little-endian header length that fits the file, then a JSON object.
    public static func recognizes(prefix: [UInt8], fileSize: Int) -> Bool {
        guard prefix.count > 8 else { return false }
        let length = prefix[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        return length > 1 && length <= UInt64(Swift.max(fileSize - 8, 0)) && prefix[8] == UInt8(ascii: "{")
    }
}
