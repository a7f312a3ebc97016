import Foundation

/// CIFAR-10 and CIFAR-100 (Krizhevsky 2009), the binary versions: fixed-size records of a label
/// byte (CIFAR-100: coarse, then fine) and 3072 bytes of 32x32 pixels, red, green and blue planes
/// in row order, which is already the (C, H, W) layout the loader wants.
public enum CIFAR {
    public enum Variant: Sendable, Equatable {
        case cifar10
        /// `fine`: the 100 classes; else the 20 superclasses.
        case cifar100(fine: Bool)

        public var recordSize: Int { self == .cifar10 ? 3073 : 3074 }
        public var files: (train: [String], test: [String]) {
            self == .cifar10 ? ((1...5).map { "data_batch_\($0).bin" }, ["test_batch.bin"]) : (["train.bin"], ["test.bin"])
        }
        var namesFile: String {
            switch self {
            case .cifar10: return "batches.meta.txt"
            case .cifar100(let fine): return fine ? "fine_label_names.txt" : "coarse_label_names.txt"
            }
        }
        var classCount: Int {
            switch self {
            case .cifar10: return 10
            case .cifar100(let fine): return fine ? 100 : 20
            }
        }
    }

    /// CIFAR-10's classes, for a folder without batches.meta.txt.
    public static let cifar10Names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// The files a folder must hold.
    public static func requiredFiles(_ variant: Variant) -> [String] { variant.files.train + variant.files.test }

    /// Both splits and the class names (from the folder's names file, else CIFAR-10's or numbers).
    public static func load(_ variant: Variant, directory: String) throws -> (train: ByteImageDataset, test: ByteImageDataset, classNames: [String]) {
        let names = classNames(variant, directory: directory)
        let prefix = variant == .cifar10 ? "cifar10" : "cifar100"
        return (try read(variant.files.train, variant, directory: directory, name: "\(prefix)-train"),
                try read(variant.files.test, variant, directory: directory, name: "\(prefix)-test"), names)
    }

    public static func classNames(_ variant: Variant, directory: String) -> [String] {
        let path = "\(directory)/\(variant.namesFile)"
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if names.count == variant.classCount { return names }
        }
        return variant == .cifar10 ? cifar10Names : (0..<variant.classCount).map(String.init)
    }

    static func read(_ files: [String], _ variant: Variant, directory: String, name: String) throws -> ByteImageDataset {
        let size = variant.recordSize
        var pixels: [UInt8] = [], labels: [UInt8] = []
        for file in files {
            let path = "\(directory)/\(file)"
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DataError.missingFile(path: path, hint: "A CIFAR folder holds \(requiredFiles(variant).joined(separator: ", ")) (the binary version).")
            }
            guard !data.isEmpty, data.count % size == 0 else {
                throw DataError.corrupt(path: path, reason: "\(data.count) bytes is not a whole number of \(size)-byte records; is it the binary version of \(variant == .cifar10 ? "CIFAR-10" : "CIFAR-100")?")
            }
            let records = data.count / size
            pixels.reserveCapacity(pixels.count + records * 3072)
            try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                for r in 0..<records {
                    let base = r * size
                    let label: UInt8
                    switch variant {
                    case .cifar10: label = raw[base]
                    case .cifar100(let fine): label = fine ? raw[base + 1] : raw[base]
                    }
                    guard Int(label) < variant.classCount else {
                        throw DataError.corrupt(path: path, reason: "record \(r) has label \(label); \(variant.classCount) classes go from 0 to \(variant.classCount - 1)")
                    }
                    labels.append(label)
                    pixels.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[(base + size - 3072)..<(base + size)]))
                }
            }
        }
        return ByteImageDataset(name: name, imageShape: [3, 32, 32], classCount: variant.classCount, pixels: pixels, labels: labels)
    }
}
