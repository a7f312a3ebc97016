import CWorkbenchZlib
import Foundation

/// Errors reading data sets; each names the file and what to do.
public enum DataError: Error, CustomStringConvertible {
    case missingFile(path: String, hint: String)
    case corrupt(path: String, reason: String)

    public var description: String {
        switch self {
        case let .missingFile(path, hint): return "data file \(path) does not exist. \(hint)"
        case let .corrupt(path, reason): return "data file \(path) is corrupt or truncated: \(reason)"
        }
    }
}

/// An array read from an IDX file (the MNIST format): unsigned bytes and their dimensions.
public struct IDXArray {
    public let dimensions: [Int]
    public let bytes: [UInt8]

    /// Reads an IDX file, gzip-compressed (through zlib) or plain. Only unsigned-byte data (type
    /// 0x08), the type of every MNIST-format image and label file, is accepted.
    public static func read(path: String, missingHint: String = "") throws -> IDXArray {
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError.missingFile(path: path, hint: missingHint)
        }
        let data = try inflate(path: path)
        guard data.count >= 4 else { throw DataError.corrupt(path: path, reason: "shorter than the 4-byte IDX magic number") }
        guard data[0] == 0, data[1] == 0 else { throw DataError.corrupt(path: path, reason: "the IDX magic number must start with two zero bytes") }
        guard data[2] == 0x08 else {
            throw DataError.corrupt(path: path, reason: String(format: "element type 0x%02x; only unsigned bytes (0x08) are supported", data[2]))
        }
        let rank = Int(data[3])
        guard rank >= 1, data.count >= 4 + 4 * rank else { throw DataError.corrupt(path: path, reason: "the header ends before its \(rank) dimensions") }
        var dims: [Int] = []
        for i in 0..<rank {
            let o = 4 + 4 * i
            dims.append(Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3]))
        }
        let expected = dims.reduce(1, *)
        let payload = data.count - 4 - 4 * rank
        guard payload == expected else {
            throw DataError.corrupt(path: path, reason: "the header promises \(expected) bytes of data (dimensions \(dims)) but the file holds \(payload)")
        }
        return IDXArray(dimensions: dims, bytes: Array(data[(4 + 4 * rank)...]))
    }

    /// The dimensions in a file's header, reading no more than the header.
    public static func readHeader(path: String) throws -> [Int] {
        guard let file = gzopen(path, "rb") else { throw DataError.corrupt(path: path, reason: "cannot be opened") }
        defer { gzclose(file) }
        var head = [UInt8](repeating: 0, count: 4 + 4 * 8)
        let n = head.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
        guard n >= 4, head[0] == 0, head[1] == 0, head[2] == 0x08 else { throw DataError.corrupt(path: path, reason: "not an IDX file of unsigned bytes") }
        let rank = Int(head[3])
        guard rank >= 1, rank <= 8, Int(n) >= 4 + 4 * rank else { throw DataError.corrupt(path: path, reason: "the header ends early") }
        return (0..<rank).map { i in let o = 4 + 4 * i; return Int(head[o]) << 24 | Int(head[o + 1]) << 16 | Int(head[o + 2]) << 8 | Int(head[o + 3]) }
    }

    /// The whole file, decompressed when it is gzip (zlib reads plain files unchanged).
    static func inflate(path: String) throws -> [UInt8] {
        guard let file = gzopen(path, "rb") else { throw DataError.corrupt(path: path, reason: "cannot be opened") }
        defer { gzclose(file) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if n < 0 {
                var code: Int32 = 0
                let message = gzerror(file, &code).map { String(cString: $0) } ?? "read error"
                throw DataError.corrupt(path: path, reason: "gzip: \(message)")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
        }
        // zlib stops quietly at a truncated gzip stream; its end-of-stream check tells.
        if gzdirect(file) == 0, out.isEmpty {
            throw DataError.corrupt(path: path, reason: "the gzip stream holds no data")
        }
        return out
    }
}
