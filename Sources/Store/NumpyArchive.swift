import Foundation
import TensorCore
import ZIPFoundation

/// Errors reading a NumPy .npz archive; each names the file and the array.
public enum NumpyArchiveError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, array: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformed(path, array, reason): return "\(path): array '\(array)' \(reason)"
        }
    }
}

/// NumPy's .npz (np.savez, savez_compressed): a zip of .npy arrays, each a magic string, a
/// header dictionary (descr, fortran_order, shape) and the raw data. Google's original ViT
/// checkpoints are such files (`embedding/kernel`, `Transformer/encoderblock_0/...`). Arrays of
/// float32, float64, float16 and integers are read as Float32, in C order.
public enum NumpyArchive {
    public static func read(path: String) throws -> [String: Tensor] {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw NumpyArchiveError.unreadable(path: path, reason: "not a zip archive (\(error))")
        }
        var arrays: [String: Tensor] = [:]
        for entry in archive where entry.type == .file && entry.path.hasSuffix(".npy") {
            let name = String(entry.path.dropLast(4))
            guard entry.uncompressedSize < 1 << 34 else { throw NumpyArchiveError.malformed(path: path, array: name, reason: "is implausibly large") }
            var data = Data()
            do { _ = try archive.extract(entry) { data.append($0) } } catch {
                throw NumpyArchiveError.malformed(path: path, array: name, reason: "cannot be read (\(error)); the file may be truncated")
            }
            arrays[name] = try parse(data, path: path, array: name)
        }
        return arrays
    }

    /// Every array's shape, from the .npy headers alone (each entry is read only up to the end of
    /// its header).
    public static func shapes(path: String) throws -> [String: [Int]] {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw NumpyArchiveError.unreadable(path: path, reason: "not a zip archive (\(error))")
        }
        struct HeaderRead: Error {}
        var shapes: [String: [Int]] = [:]
        for entry in archive where entry.type == .file && entry.path.hasSuffix(".npy") {
            let name = String(entry.path.dropLast(4))
            var head = Data()
            do {
                _ = try archive.extract(entry, bufferSize: 4096, skipCRC32: true) { chunk in
                    head.append(chunk)
                    if (try? header(head, path: path, array: name)) != nil { throw HeaderRead() }
                }
            } catch is HeaderRead {
            } catch {
                throw NumpyArchiveError.malformed(path: path, array: name, reason: "cannot be read (\(error)); the file may be truncated")
            }
            shapes[name] = try header(head, path: path, array: name).shape
        }
        return shapes
    }

    public static func entries(path: String) throws -> [(name: String, dtype: String, shape: [Int])] {
        try read(path: path).map { ($0.key, "F32", $0.value.shape) }
    }

    /// A .npy header: dtype, order, shape, and where the data starts.
    static func header(_ data: Data, path: String, array: String) throws -> (descr: String, fortran: Bool, shape: [Int], offset: Int) {
        func fail(_ reason: String) -> NumpyArchiveError { .malformed(path: path, array: array, reason: reason) }
        let bytes = [UInt8](data.prefix(1 << 20))
        guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else { throw fail("is not a .npy array") }
        let major = bytes[6]
        let (headerLength, start): (Int, Int) = major == 1 ? (Int(bytes[8]) | Int(bytes[9]) << 8, 10)
            : bytes.count >= 12 ? (Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24, 12) : (-1, 0)
        guard headerLength > 0, start + headerLength <= bytes.count else { throw fail("has a header that does not fit the file") }
        let header = String(decoding: bytes[start..<(start + headerLength)], as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return String(header[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        }
        guard let descrText = value("descr"), let q1 = descrText.firstIndex(of: "'"),
              let q2 = descrText[descrText.index(after: q1)...].firstIndex(of: "'") else { throw fail("has no dtype") }
        let descr = String(descrText[descrText.index(after: q1)..<q2])
        let fortran = value("fortran_order")?.hasPrefix("True") ?? false
        guard let shapeText = value("shape"), let open = shapeText.firstIndex(of: "("), let close = shapeText.firstIndex(of: ")"), open < close else {
            throw fail("has no shape")
        }
        let shape = try shapeText[shapeText.index(after: open)..<close].split(separator: ",").map { part -> Int in
            guard let n = Int(part.trimmingCharacters(in: .whitespaces)), n >= 0 else { throw fail("has a shape that is not whole numbers") }
            return n
        }
        return (descr, fortran, shape, start + headerLength)
    }

    /// One .npy file.
    static func parse(_ data: Data, path: String, array: String) throws -> Tensor {
        func fail(_ reason: String) -> NumpyArchiveError { .malformed(path: path, array: array, reason: reason) }
        let (descr, fortran, shape, offset) = try header(data, path: path, array: array)
        let bytes = [UInt8](data)
        let (count, overflow) = shape.reduce((1, false)) { acc, n in let r = acc.0.multipliedReportingOverflow(by: n); return (r.partialValue, acc.1 || r.overflow) }
        let widths = ["<f4": 4, "<f8": 8, "<f2": 2, "<i8": 8, "<i4": 4, "|u1": 1, "|i1": 1, "|b1": 1]
        guard let width = widths[descr] else { throw fail("has dtype \(descr); only little-endian floats and integers are read") }
        guard !overflow, count <= (bytes.count - offset) / width, count * width == bytes.count - offset else {
            throw fail("holds \(bytes.count - offset) bytes of data for shape \(shape) of \(descr)")
        }
        let storage = Storage(uninitializedCount: Swift.max(count, 1))
        bytes.withUnsafeBytes { raw in
            let src = raw.baseAddress! + offset
            for i in 0..<count {
                switch descr {
                case "<f4": storage.base[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                case "<f8": storage.base[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                case "<f2": storage.base[i] = Float(Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
                case "<i8": storage.base[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                case "<i4": storage.base[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                case "|i1": storage.base[i] = Float(Int8(bitPattern: src.load(fromByteOffset: i, as: UInt8.self)))
                default: storage.base[i] = Float(src.load(fromByteOffset: i, as: UInt8.self))
                }
            }
        }
        // Column-major data is the C-order array of the reversed shape, axes reversed.
        guard fortran && shape.count > 1 else { return Tensor(shape: shape, storage: storage) }
        let reversed = Tensor(shape: Array(shape.reversed()), storage: storage).permuted(Array((0..<shape.count).reversed()))
        return Tensor(shape: shape, reversed.scalars)
    }
}

/// The name of the first entry of a zip whose first bytes are `prefix` (its local file header).
func firstZipEntryName(_ prefix: [UInt8]) -> String? {
    guard prefix.count >= 30, prefix[0] == 0x50, prefix[1] == 0x4B, prefix[2] == 3, prefix[3] == 4 else { return nil }
    let length = Int(prefix[26]) | Int(prefix[27]) << 8
    guard 30 + length <= prefix.count else { return nil }
    return String(decoding: prefix[30..<(30 + length)], as: UTF8.self)
}

extension NumpyArchive: WeightFormat {
    public static let name = "npz"
    public static let summary = "NumPy .npz archives (Google's original ViT checkpoints, read into timm-vit's names)"
    public static let fileExtension = "npz"

    /// A zip whose first entry is a .npy array.
    public static func recognizes(prefix: [UInt8], fileSize: Int) -> Bool { firstZipEntryName(prefix)?.hasSuffix(".npy") ?? false }

    public static func metadata(path: String) throws -> [String: String] { [:] }

    public static func write(_ tensors: [String: Tensor], metadata: [String: String], to path: String) throws {
        throw NumpyArchiveError.unreadable(path: path, reason: "the workbench does not write .npz files; export safetensors or .pt")
    }
}
