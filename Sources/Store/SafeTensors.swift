import Foundation
import TensorCore

/// Errors reading or writing safetensors files; each names the file.
public enum SafeTensorsError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case unsupportedType(path: String, name: String, dtype: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformed(path, reason): return "\(path) is not a valid safetensors file: \(reason)"
        case let .unsupportedType(path, name, dtype):
            return "\(path): tensor '\(name)' has dtype \(dtype); only F32, F64, I64 and I32 are supported"
        }
    }
}

/// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header
/// mapping names to dtype, shape and byte offsets, then the raw little-endian data.
public enum SafeTensors {
    /// Reads every tensor of a file. F64, I64 and I32 tensors are converted to Float32.
    public static func read(path: String) throws -> [String: Tensor] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafeTensorsError.unreadable(path: path, reason: "no such file or not readable")
        }
        return try parse(data, path: path)
    }

    /// The `__metadata__` strings of a file's header (empty when it has none).
    public static func metadata(path: String) throws -> [String: String] {
        try header(path: path)["__metadata__"] as? [String: String] ?? [:]
    }

    /// Every tensor's name, dtype (as stored: F32, F64, ...) and shape, from the header alone.
    public static func entries(path: String) throws -> [(name: String, dtype: String, shape: [Int])] {
        try header(path: path).compactMap { name, value in
            guard name != "__metadata__" else { return nil }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String, let shape = entry["shape"] as? [Int] else {
                throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' lacks dtype or shape")
            }
            return (name, dtype, shape)
        }
    }

    /// The JSON header, read without the data.
    static func header(path: String) throws -> [String: Any] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SafeTensorsError.unreadable(path: path, reason: "no such file or not readable")
        }
        defer { try? handle.close() }
        let prefix = handle.readData(ofLength: 8)
        guard prefix.count == 8 else { throw SafeTensorsError.malformed(path: path, reason: "shorter than its 8-byte header length") }
        let headerLength = prefix.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 0, headerLength < 100_000_000 else { throw SafeTensorsError.malformed(path: path, reason: "header length \(headerLength)") }
        let headerData = handle.readData(ofLength: headerLength)
        guard headerData.count == headerLength, let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw SafeTensorsError.malformed(path: path, reason: "header is not a JSON object")
        }
        return header
    }

    static func parse(_ data: Data, path: String) throws -> [String: Tensor] {
        guard data.count >= 8 else { throw SafeTensorsError.malformed(path: path, reason: "shorter than its 8-byte header length") }
        let headerLength = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        guard headerLength > 0, 8 + headerLength <= data.count else {
            throw SafeTensorsError.malformed(path: path, reason: "header length \(headerLength) exceeds the file size \(data.count)")
        }
        let headerData = data.subdata(in: 8..<(8 + headerLength))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw SafeTensorsError.malformed(path: path, reason: "header is not a JSON object")
        }
        let payloadStart = 8 + headerLength
        var result: [String: Tensor] = [:]
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' lacks dtype, shape or data_offsets")
            }
            let n = shape.reduce(1, *)
            let width: Int
            switch dtype {
            case "F32", "I32": width = 4
            case "F64", "I64": width = 8
            default: throw SafeTensorsError.unsupportedType(path: path, name: name, dtype: dtype)
            }
            let lo = payloadStart + offsets[0], hi = payloadStart + offsets[1]
            guard offsets[0] >= 0, hi <= data.count, hi - lo == n * width else {
                throw SafeTensorsError.malformed(path: path, reason: "entry '\(name)' has offsets \(offsets) that do not fit shape \(shape)")
            }
            let storage = Storage(uninitializedCount: n)
            data.withUnsafeBytes { raw in
                let src = raw.baseAddress! + lo
                for i in 0..<n {
                    switch dtype {
                    case "F32": storage.base[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                    case "I32": storage.base[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                    case "F64": storage.base[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
                    default: storage.base[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                    }
                }
            }
            result[name] = Tensor(shape: shape, storage: storage)
        }
        return result
    }

    /// Writes Float32 tensors under their names, through a temporary file renamed into place, so
    /// a crash never leaves half a file at `path`.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.count]] as [String: Any]
            offset += 4 * t.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names {
            let t = tensors[name]!
            for v in t.storage.buffer { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        }
        let tmp = path + ".tmp-\(getpid())"
        do {
            try out.write(to: URL(fileURLWithPath: tmp))
            if rename(tmp, path) != 0 {
                throw SafeTensorsError.unreadable(path: path, reason: String(cString: strerror(errno)))
            }
        } catch {
            unlink(tmp)
            throw SafeTensorsError.unreadable(path: path, reason: "cannot write: \(error)")
        }
    }
}
