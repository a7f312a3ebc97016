import Foundation
import TensorCore
import ZIPFoundation

/// Errors reading a PyTorch checkpoint; each names the file.
public enum TorchCheckpointError: Error, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case refusedGlobal(path: String, name: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformed(path, reason): return "\(path) is not a valid PyTorch checkpoint: \(reason)"
        case let .refusedGlobal(path, name):
            return "\(path) asks for the Python global '\(name)', which a state_dict never holds; the workbench reads only tensors, "
                + "numbers, strings and dictionaries from a pickle and never runs code from a file. Save the weights alone "
                + "(torch.save(model.state_dict(), path)) or as safetensors"
        }
    }
}

/// PyTorch's checkpoint format (torch.save since 1.6): a zip archive holding `NAME/data.pkl`, a
/// pickle of the saved object whose tensors refer to storages by persistent id, and the raw
/// little-endian storages as `NAME/data/KEY`. Read with a restricted unpickler that accepts only
/// what a state_dict holds (OrderedDict, tensors rebuilt by torch._utils._rebuild_tensor_v2 from
/// typed storages, numbers, strings, None) and refuses every other global, so it never runs code.
/// Nested dictionaries ({"state_dict": {...}, "epoch": 3}) come back flattened with dotted
/// names ("state_dict.blocks.0.weight"); values that are not tensors are dropped.
public enum TorchCheckpoint {
    /// Every tensor of the file, as Float32.
    public static func read(path: String) throws -> [String: Tensor] {
        let archive: Archive
        do { archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .read) } catch {
            throw TorchCheckpointError.unreadable(path: path, reason: "not a zip archive (\(error))")
        }
        guard let pickleEntry = archive.first(where: { $0.path.hasSuffix("data.pkl") && $0.type == .file }) else {
            throw TorchCheckpointError.malformed(path: path, reason: "the archive has no data.pkl (a checkpoint of torch older than 1.6, or not a checkpoint)")
        }
        let root = String(pickleEntry.path.dropLast("data.pkl".count))
        if let order = archive[root + "byteorder"], String(decoding: try entryData(archive, order, path: path, limit: 16), as: UTF8.self) != "little" {
            throw TorchCheckpointError.malformed(path: path, reason: "its storages are big-endian; save it on a little-endian machine")
        }
        let pickle = try entryData(archive, pickleEntry, path: path, limit: 1 << 30)
        var storages: [String: StorageBytes] = [:]
        let value = try Unpickler(data: pickle, path: path) { key, dtype in
            if let known = storages[key] { return known }
            guard let entry = archive[root + "data/" + key] else {
                throw TorchCheckpointError.malformed(path: path, reason: "storage \(key) is missing from the archive")
            }
            let bytes = StorageBytes(dtype: dtype, data: try entryData(archive, entry, path: path, limit: 1 << 36))
            storages[key] = bytes
            return bytes
        }.load()
        var tensors: [String: Tensor] = [:]
        try flatten(value, prefix: "", into: &tensors, path: path)
        return tensors
    }

    /// The archive's tensors' names, dtypes and shapes (reading the whole file: a pickle has no
    /// separate header).
    public static func entries(path: String) throws -> [(name: String, dtype: String, shape: [Int])] {
        try read(path: path).map { ($0.key, "F32", $0.value.shape) }
    }

    static func entryData(_ archive: Archive, _ entry: Entry, path: String, limit: UInt64) throws -> Data {
        guard entry.uncompressedSize <= limit else { throw TorchCheckpointError.malformed(path: path, reason: "\(entry.path) is implausibly large") }
        var data = Data()
        // The header's size is the file's word, not a fact: reserve no more than 64 MiB on it.
        data.reserveCapacity(Int(Swift.min(entry.uncompressedSize, 1 << 26)))
        do {
            _ = try archive.extract(entry, skipCRC32: false) { data.append($0) }
        } catch {
            throw TorchCheckpointError.malformed(path: path, reason: "\(entry.path) cannot be read (\(error)); the file may be truncated")
        }
        return data
    }

    static func flatten(_ value: PickleValue, prefix: String, into tensors: inout [String: Tensor], path: String) throws {
        switch value {
        case .tensor(let t): tensors[prefix.isEmpty ? "tensor" : String(prefix.dropLast())] = t
        case .dict(let d):
            for (key, item) in d.pairs {
                let name: String
                switch key {
                case .string(let s): name = s
                case .int(let i): name = String(i)
                default: continue
                }
                try flatten(item, prefix: prefix + name + ".", into: &tensors, path: path)
            }
        default: break
        }
    }
}

/// A storage's raw bytes and element type, as torch.save wrote them.
final class StorageBytes {
    let dtype: String
    let data: Data
    init(dtype: String, data: Data) { (self.dtype, self.data) = (dtype, data) }

    static let widths = ["FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                         "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1]

    var width: Int { Self.widths[dtype] ?? 4 }
    var count: Int { data.count / width }

    /// Element `i` as a Float (the caller checks bounds).
    func element(_ i: Int, _ raw: UnsafeRawBufferPointer) -> Float {
        let o = i * width
        switch dtype {
        case "FloatStorage": return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
        case "DoubleStorage": return Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt64.self))))
        case "HalfStorage": return Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self))))
        case "BFloat16Storage": return Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt16.self))) << 16)
        case "LongStorage": return Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self)))
        case "IntStorage": return Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int32.self)))
        case "ShortStorage": return Float(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int16.self)))
        case "CharStorage": return Float(Int8(bitPattern: raw[o]))
        default: return Float(raw[o])
        }
    }
}

/// A mutable container (lists and dictionaries are shared through the pickle's memo).
final class PickleDict {
    var pairs: [(PickleValue, PickleValue)] = []
}

final class PickleList {
    var items: [PickleValue] = []
}

indirect enum PickleValue {
    case none, bool(Bool), int(Int), float(Double), string(String), bytes(Data)
    case list(PickleList), dict(PickleDict), tuple([PickleValue])
    case global(String)
    case storage(StorageBytes)
    case tensor(Tensor)
    case mark
}

/// The pickle virtual machine, restricted to what a state_dict needs (protocols 2 to 5).
struct Unpickler {
    let data: Data
    let path: String
    /// Fetches a storage by its key and type name ("FloatStorage").
    let storage: (String, String) throws -> StorageBytes

    static let allowedGlobals: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "builtins.dict",
    ]

    init(data: Data, path: String, storage: @escaping (String, String) throws -> StorageBytes) {
        (self.data, self.path, self.storage) = (data, path, storage)
    }

    func fail(_ reason: String) -> TorchCheckpointError { .malformed(path: path, reason: "data.pkl: \(reason)") }

    func load() throws -> PickleValue {
        try data.withUnsafeBytes { raw -> PickleValue in
            var position = 0
            var stack: [PickleValue] = []
            var memo: [Int: PickleValue] = [:]
            func byte() throws -> UInt8 {
                guard position < raw.count else { throw fail("ends early") }
                defer { position += 1 }
                return raw[position]
            }
            func bytes(_ n: Int) throws -> UnsafeRawBufferPointer {
                guard n >= 0, n <= raw.count - position else { throw fail("ends early") }
                defer { position += n }
                return UnsafeRawBufferPointer(rebasing: raw[position..<(position + n)])
            }
            func uint(_ n: Int) throws -> Int {
                let b = try bytes(n)
                return b.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            }
            func line() throws -> String {
                guard let end = raw[position...].firstIndex(of: 10) else { throw fail("ends early") }
                defer { position = end + 1 }
                return String(decoding: UnsafeRawBufferPointer(rebasing: raw[position..<end]), as: UTF8.self)
            }
            func pop() throws -> PickleValue {
                guard let v = stack.popLast() else { throw fail("pops an empty stack") }
                return v
            }
            func popMark() throws -> [PickleValue] {
                guard let m = stack.lastIndex(where: { if case .mark = $0 { return true } else { return false } }) else { throw fail("no mark") }
                let items = Array(stack[(m + 1)...])
                stack.removeSubrange(m...)
                return items
            }
            func global(_ module: String, _ name: String) throws -> PickleValue {
                let full = "\(module).\(name)"
                if module == "torch" && StorageBytes.widths[name] != nil { return .global(full) }
                guard Self.allowedGlobals.contains(full) else { throw TorchCheckpointError.refusedGlobal(path: path, name: full) }
                return .global(full)
            }
            func setItems(_ target: PickleValue, _ items: [PickleValue]) throws {
                guard case .dict(let d) = target, items.count % 2 == 0 else { throw fail("SETITEMS on something that is not a dictionary") }
                for i in stride(from: 0, to: items.count, by: 2) {
                    if let index = d.pairs.firstIndex(where: { keyEqual($0.0, items[i]) }) { d.pairs[index].1 = items[i + 1] } else {
                        d.pairs.append((items[i], items[i + 1]))
                    }
                }
            }
            func call(_ callable: PickleValue, _ arguments: PickleValue) throws -> PickleValue {
                guard case .global(let name) = callable, case .tuple(let args) = arguments else { throw fail("calls something that is not an allowed global") }
                switch name {
                case "collections.OrderedDict", "builtins.dict":
                    let d = PickleDict()
                    return .dict(d)
                case "torch._utils._rebuild_parameter":
                    guard let first = args.first else { throw fail("_rebuild_parameter without a tensor") }
                    return first
                case "torch._utils._rebuild_tensor_v2":
                    return try rebuildTensor(args)
                default:
                    throw TorchCheckpointError.refusedGlobal(path: path, name: name)
                }
            }
            func rebuildTensor(_ args: [PickleValue]) throws -> PickleValue {
                guard args.count >= 4, case .storage(let s) = args[0], case .int(let offset) = args[1],
                      case .tuple(let sizeValues) = args[2], case .tuple(let strideValues) = args[3] else {
                    throw fail("a tensor without storage, offset, size and stride")
                }
                let size = try sizeValues.map { v -> Int in guard case .int(let n) = v, n >= 0 else { throw fail("a negative or non-integer size") }; return n }
                let stride = try strideValues.map { v -> Int in guard case .int(let n) = v, n >= 0 else { throw fail("a negative or non-integer stride") }; return n }
                guard size.count == stride.count, size.count <= 8 else { throw fail("size and stride disagree") }
                let (count, overflow) = size.reduce((1, false)) { acc, n in let r = acc.0.multipliedReportingOverflow(by: n); return (r.partialValue, acc.1 || r.overflow) }
                guard !overflow, count <= 1 << 31 else { throw fail("a tensor of implausible size \(size)") }
                // The largest element index the view reaches must lie inside the storage.
                let last = count == 0 ? -1 : offset + zip(size, stride).reduce(0) { $0 + ($1.0 - 1) * $1.1 }
                guard offset >= 0, last < s.count else { throw fail("a tensor of size \(size) reaches past its storage of \(s.count) elements") }
                let values = Storage(uninitializedCount: Swift.max(count, 1))
                s.data.withUnsafeBytes { source in
                    var index = [Int](repeating: 0, count: size.count)
                    for i in 0..<count {
                        var at = offset
                        for d in 0..<size.count { at += index[d] * stride[d] }
                        values.base[i] = s.element(at, source)
                        var d = size.count - 1
                        while d >= 0 { index[d] += 1; if index[d] < size[d] { break }; index[d] = 0; d -= 1 }
                    }
                }
                return .tensor(Tensor(shape: size, storage: values))
            }

            var steps = 0
            while true {
                steps += 1
                guard steps < 50_000_000, stack.count < 1_000_000 else { throw fail("too large") }
                let op = try byte()
                switch op {
                case 0x80: _ = try byte()                                      // PROTO
                case 0x95: _ = try bytes(8)                                    // FRAME
                case 0x2E: return try pop()                                    // STOP
                case 0x28: stack.append(.mark)                                 // MARK
                case 0x4E: stack.append(.none)                                 // NONE
                case 0x88: stack.append(.bool(true))                           // NEWTRUE
                case 0x89: stack.append(.bool(false))                          // NEWFALSE
                case 0x4B: stack.append(.int(try uint(1)))                     // BININT1
                case 0x4D: stack.append(.int(try uint(2)))                     // BININT2
                case 0x4A: stack.append(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))  // BININT
                case 0x8A:                                                     // LONG1
                    let n = Int(try byte())
                    guard n <= 8 else { throw fail("an integer too large for a tensor's size") }
                    let b = try bytes(n)
                    var v: Int64 = 0
                    for (i, x) in b.enumerated() { v |= Int64(x) << (8 * Int64(i)) }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 { v -= Int64(1) << (8 * Int64(n)) }
                    stack.append(.int(Int(v)))
                case 0x47:                                                     // BINFLOAT (big-endian)
                    let b = try bytes(8)
                    stack.append(.float(Double(bitPattern: b.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
                case 0x58: stack.append(.string(String(decoding: try bytes(try uint(4)), as: UTF8.self)))   // BINUNICODE
                case 0x8C: stack.append(.string(String(decoding: try bytes(try uint(1)), as: UTF8.self)))   // SHORT_BINUNICODE
                case 0x8D: stack.append(.string(String(decoding: try bytes(try uint(8)), as: UTF8.self)))   // BINUNICODE8
                case 0x42: stack.append(.bytes(Data(try bytes(try uint(4)))))  // BINBYTES
                case 0x43: stack.append(.bytes(Data(try bytes(try uint(1)))))  // SHORT_BINBYTES
                case 0x5D: stack.append(.list(PickleList()))                   // EMPTY_LIST
                case 0x7D: stack.append(.dict(PickleDict()))                   // EMPTY_DICT
                case 0x29: stack.append(.tuple([]))                            // EMPTY_TUPLE
                case 0x74: stack.append(.tuple(try popMark()))                 // TUPLE
                case 0x85: stack.append(.tuple([try pop()]))                   // TUPLE1
                case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b]))         // TUPLE2
                case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c]))   // TUPLE3
                case 0x71: guard let top = stack.last else { throw fail("memo of nothing") }; memo[try uint(1)] = top    // BINPUT
                case 0x72: guard let top = stack.last else { throw fail("memo of nothing") }; memo[try uint(4)] = top    // LONG_BINPUT
                case 0x94: guard let top = stack.last else { throw fail("memo of nothing") }; memo[memo.count] = top     // MEMOIZE
                case 0x68, 0x6A:                                               // BINGET, LONG_BINGET
                    let key = try uint(op == 0x68 ? 1 : 4)
                    guard let v = memo[key] else { throw fail("refers to memo \(key), never stored") }
                    stack.append(v)
                case 0x63:                                                     // GLOBAL
                    let module = try line(), name = try line()
                    stack.append(try global(module, name))
                case 0x93:                                                     // STACK_GLOBAL
                    guard case .string(let name) = try pop(), case .string(let module) = try pop() else { throw fail("STACK_GLOBAL without names") }
                    stack.append(try global(module, name))
                case 0x52:                                                     // REDUCE
                    let arguments = try pop(), callable = try pop()
                    stack.append(try call(callable, arguments))
                case 0x81:                                                     // NEWOBJ
                    let arguments = try pop(), callable = try pop()
                    stack.append(try call(callable, arguments))
                case 0x62: _ = try pop()                                       // BUILD: an OrderedDict's _metadata; dropped
                case 0x51:                                                     // BINPERSID
                    guard case .tuple(let id) = try pop(), id.count >= 3, case .string("storage") = id[0],
                          case .global(let type) = id[1], case .string(let key) = id[2] else {
                        throw fail("a persistent id that is not a storage")
                    }
                    stack.append(.storage(try storage(key, String(type.split(separator: ".").last ?? ""))))
                case 0x73:                                                     // SETITEM
                    let value = try pop(), key = try pop()
                    guard let target = stack.last else { throw fail("SETITEM on nothing") }
                    try setItems(target, [key, value])
                case 0x75:                                                     // SETITEMS
                    let items = try popMark()
                    guard let target = stack.last else { throw fail("SETITEMS on nothing") }
                    try setItems(target, items)
                case 0x61:                                                     // APPEND
                    let value = try pop()
                    guard case .list(let l)? = stack.last else { throw fail("APPEND to something that is not a list") }
                    l.items.append(value)
                case 0x65:                                                     // APPENDS
                    let items = try popMark()
                    guard case .list(let l)? = stack.last else { throw fail("APPENDS to something that is not a list") }
                    l.items += items
                default:
                    throw fail("opcode 0x\(String(op, radix: 16)) at byte \(position - 1) is not one a state_dict needs")
                }
            }
        }
    }
}

func keyEqual(_ a: PickleValue, _ b: PickleValue) -> Bool {
    switch (a, b) {
    case let (.string(x), .string(y)): return x == y
    case let (.int(x), .int(y)): return x == y
    default: return false
    }
}

extension TorchCheckpoint: WeightFormat {
    public static let name = "pytorch"
    public static let summary = "torch.save files (.pt, .pth: a zip holding a pickle), read without running any code from them"
    public static let fileExtension = "pt"

    /// A zip archive (local file header "PK\u{3}\u{4}") that is not a NumPy .npz.
    public static func recognizes(prefix: [UInt8], fileSize: Int) -> Bool {
        guard prefix.count >= 4 && prefix[0] == 0x50 && prefix[1] == 0x4B && prefix[2] == 3 && prefix[3] == 4 else { return false }
        return !(firstZipEntryName(prefix)?.hasSuffix(".npy") ?? false)
    }

    public static func metadata(path: String) throws -> [String: String] { [:] }

    /// Writes `tensors` as torch.save writes a state_dict (an OrderedDict of float32 tensors),
    /// which `torch.load(path, weights_only=True)` reads. Metadata has no place in the format and is
    /// dropped. Written under a temporary name and renamed.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String], to path: String) throws {
        let names = tensors.keys.sorted()
        let root = "archive/"
        var pickle = TorchPickleWriter()
        pickle.stateDict(names.map { ($0, tensors[$0]!.shape) })
        do {
            let archive = try Archive(data: Data(), accessMode: .create)
            let fixed = Date(timeIntervalSince1970: 946_684_800)
            func add(_ name: String, _ data: Data) throws {
                try archive.addEntry(with: root + name, type: .file, uncompressedSize: Int64(data.count), modificationDate: fixed,
                                     compressionMethod: .none) { position, size in data.subdata(in: Int(position)..<(Int(position) + size)) }
            }
            try add("data.pkl", pickle.bytes)
            try add("byteorder", Data("little".utf8))
            for (i, name) in names.enumerated() {
                let t = tensors[name]!
                var data = Data(count: t.count * 4)
                data.withUnsafeMutableBytes { out in
                    for k in 0..<t.count { out.storeBytes(of: t.base[k].bitPattern.littleEndian, toByteOffset: 4 * k, as: UInt32.self) }
                }
                try add("data/\(i)", data)
            }
            try add("version", Data("3\n".utf8))
            guard let bytes = archive.data else { throw TorchCheckpointError.unreadable(path: path, reason: "the archive was not made") }
            let temporary = path + ".tmp-\(getpid())"
            try bytes.write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, path) == 0 else {
                try? FileManager.default.removeItem(atPath: temporary)
                throw TorchCheckpointError.unreadable(path: path, reason: String(cString: strerror(errno)))
            }
        } catch let error as TorchCheckpointError {
            throw error
        } catch {
            throw TorchCheckpointError.unreadable(path: path, reason: "cannot write it: \(error)")
        }
    }
}

/// Pickle protocol 2 for a state_dict of float32 tensors, as torch.save writes it: storages by
/// persistent id ('storage', torch.FloatStorage, key, 'cpu', numel), tensors rebuilt by
/// torch._utils._rebuild_tensor_v2 (contiguous strides, no gradient).
struct TorchPickleWriter {
    var bytes = Data([0x80, 0x02])

    mutating func op(_ code: UInt8) { bytes.append(code) }
    mutating func global(_ module: String, _ name: String) { op(0x63); bytes.append(Data("\(module)\n\(name)\n".utf8)) }
    mutating func string(_ s: String) {
        let utf8 = Data(s.utf8)
        op(0x58)
        withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(utf8)
    }
    mutating func int(_ n: Int) {
        op(0x4A)
        withUnsafeBytes(of: Int32(n).littleEndian) { bytes.append(contentsOf: $0) }
    }
    mutating func tuple(_ items: [Int]) { op(0x28); for n in items { int(n) }; op(0x74) }
    mutating func orderedDict() { global("collections", "OrderedDict"); op(0x29); op(0x52) }

    mutating func stateDict(_ entries: [(String, [Int])]) {
        orderedDict()
        op(0x28)
        for (key, (name, shape)) in entries.enumerated() {
            string(name)
            global("torch._utils", "_rebuild_tensor_v2")
            op(0x28)
            op(0x28); string("storage"); global("torch", "FloatStorage"); string(String(key)); string("cpu"); int(shape.reduce(1, *)); op(0x74)
            op(0x51)
            int(0)
            tuple(shape)
            var strides = [Int](repeating: 1, count: shape.count)
            for d in Swift.stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
            tuple(strides)
            op(0x89)
            orderedDict()
            op(0x74)
            op(0x52)
        }
        op(0x75)
        op(0x2E)
    }
}
