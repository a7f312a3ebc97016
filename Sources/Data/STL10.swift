import Foundation

/// STL-10 (Coates et al. 2011), the binary version (stl10_binary): 96x96 RGB images stored as
/// uint8 planes (red, green, blue), each plane in column-major order; labels 1-10 in their own
/// files (made 0-9 here); 5000 training and 8000 test images, 100000 unlabelled ones, and ten
/// predefined folds of 1000 training images (fold_indices.txt, 0-based). Images are read from the
/// files when the loader asks for them (the unlabelled file alone is 2.8 GB).
public enum STL10 {
    public static let side = 96
    static let imageBytes = 3 * 96 * 96
    public static let classNames = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    public static let files = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
    public static let unlabelledFile = "unlabeled_X.bin"

    /// The training images (all, or one of the ten folds) and the test images.
    public static func load(directory: String, fold: Int?) throws -> (train: Dataset, test: Dataset) {
        let train = try ImageRecordFile(path: "\(directory)/train_X.bin", labels: try labels("\(directory)/train_y.bin"), name: "stl10-train")
        let test = try ImageRecordFile(path: "\(directory)/test_X.bin", labels: try labels("\(directory)/test_y.bin"), name: "stl10-test")
        guard let fold else { return (train, test) }
        let path = "\(directory)/fold_indices.txt"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw DataError.missingFile(path: path, hint: "STL-10's folds are listed in fold_indices.txt beside train_X.bin.")
        }
        let lines = text.split(whereSeparator: \.isNewline)
        guard fold < lines.count else { throw DataError.corrupt(path: path, reason: "it lists \(lines.count) folds, not fold \(fold)") }
        let indices = try lines[fold].split(separator: " ").map { part -> Int in
            guard let i = Int(part), i >= 0, i < train.count else { throw DataError.corrupt(path: path, reason: "fold \(fold) names image '\(part)' of \(train.count)") }
            return i
        }
        return (IndexedSubset(indices: indices, of: train), test)
    }

    /// The 100000 unlabelled images (label -1).
    public static func unlabelled(directory: String) throws -> Dataset {
        try ImageRecordFile(path: "\(directory)/\(unlabelledFile)", labels: nil, name: "stl10-unlabelled")
    }

    static func labels(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.missingFile(path: path, hint: "An STL-10 folder (stl10_binary) holds \(files.joined(separator: ", ")).")
        }
        let labels = [UInt8](data)
        if let bad = labels.first(where: { $0 < 1 || $0 > 10 }) { throw DataError.corrupt(path: path, reason: "label \(bad); STL-10's labels are 1 to 10") }
        return labels.map { $0 - 1 }
    }
}

/// Images of STL-10's layout read from a file on demand: fixed 3x96x96 records, planes stored
/// column-major, with labels (or none: -1).
struct ImageRecordFile: StoredImageDataset {
    let name: String
    let path: String
    let count: Int
    let labels: [UInt8]?
    let descriptor: FileDescriptorBox
    var imageShape: [Int] { [3, STL10.side, STL10.side] }
    var classCount: Int { 10 }

    init(path: String, labels: [UInt8]?, name: String) throws {
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int else {
            throw DataError.missingFile(path: path, hint: "An STL-10 folder (stl10_binary) holds \(STL10.files.joined(separator: ", ")).")
        }
        guard size % STL10.imageBytes == 0, size > 0 else {
            throw DataError.corrupt(path: path, reason: "\(size) bytes is not a whole number of \(STL10.imageBytes)-byte 96x96 RGB images")
        }
        count = size / STL10.imageBytes
        if let labels, labels.count != count {
            throw DataError.corrupt(path: path, reason: "\(count) images but \(labels.count) labels in its _y file")
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError.corrupt(path: path, reason: "cannot be opened: \(String(cString: strerror(errno)))") }
        (self.name, self.path, self.labels, descriptor) = (name, path, labels, FileDescriptorBox(fd))
    }

    func label(at index: Int) -> Int { labels.map { Int($0[index]) } ?? -1 }

    func copyImage(at index: Int, into out: UnsafeMutablePointer<Float>) {
        let side = STL10.side
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: STL10.imageBytes) { buffer in
            let read = pread(descriptor.fd, buffer.baseAddress, STL10.imageBytes, off_t(index * STL10.imageBytes))
            // A file cut short after it was opened reads as black rather than trapping.
            if read < STL10.imageBytes { for i in Swift.max(read, 0)..<STL10.imageBytes { buffer[i] = 0 } }
            for c in 0..<3 {
                let plane = c * side * side
                for row in 0..<side {
                    for col in 0..<side { out[plane + row * side + col] = Float(buffer[plane + col * side + row]) * (1 / 255) }
                }
            }
        }
    }
}

/// A file descriptor closed when the last data set holding it goes.
final class FileDescriptorBox: @unchecked Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// Chosen items of a data set (STL-10's folds), in the given order.
struct IndexedSubset: Dataset {
    let indices: [Int]
    let base: Dataset
    init(indices: [Int], of base: Dataset) { (self.indices, self.base) = (indices, base) }
    var name: String { base.name }
    var count: Int { indices.count }
    var imageShape: [Int] { base.imageShape }
    var classCount: Int { base.classCount }
    func label(at index: Int) -> Int { base.label(at: indices[index]) }
    var transform: ImageTransform? { base.transform }
    func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        try base.image(at: indices[index], decoder: decoder, request: request)
    }
    func sourceIndex(at index: Int) -> Int { base.sourceIndex(at: indices[index]) }
}

/// One data set after another (STL-10's training images, then its unlabelled ones).
public struct Concatenation: Dataset {
    public let parts: [Dataset]
    public init(_ parts: [Dataset]) { self.parts = parts }
    public var name: String { parts.map(\.name).joined(separator: "+") }
    public var count: Int { parts.reduce(0) { $0 + $1.count } }
    public var imageShape: [Int] { parts[0].imageShape }
    public var classCount: Int { parts[0].classCount }
    func locate(_ index: Int) -> (Dataset, Int) {
        var i = index
        for part in parts {
            if i < part.count { return (part, i) }
            i -= part.count
        }
        return (parts[parts.count - 1], i)
    }
    public func label(at index: Int) -> Int { let (d, i) = locate(index); return d.label(at: i) }
    public var transform: ImageTransform? { parts[0].transform }
    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        let (d, i) = locate(index)
        return try d.image(at: i, decoder: decoder, request: request)
    }
    public func sourceIndex(at index: Int) -> Int { index }
}
