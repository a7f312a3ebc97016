import CHDF5
import Foundation

/// An HDF5 call that failed, naming the file and the object.
public struct HDF5Error: Error, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

/// Element types the wrapper stores: float32, float64, int64, int32 and uint8.
public protocol HDF5Scalar {
    static var hdf5Type: hid_t { get }
    static var zero: Self { get }
}
extension Float: HDF5Scalar { public static var hdf5Type: hid_t { chdf5_native_float() }; public static var zero: Float { 0 } }
extension Double: HDF5Scalar { public static var hdf5Type: hid_t { chdf5_native_double() }; public static var zero: Double { 0 } }
extension Int64: HDF5Scalar { public static var hdf5Type: hid_t { chdf5_native_int64() }; public static var zero: Int64 { 0 } }
extension Int32: HDF5Scalar { public static var hdf5Type: hid_t { chdf5_native_int32() }; public static var zero: Int32 { 0 } }
extension UInt8: HDF5Scalar { public static var hdf5Type: hid_t { chdf5_native_uint8() }; public static var zero: UInt8 { 0 } }

/// An attribute's value as read back.
public enum HDF5Value: Equatable, CustomStringConvertible {
    case string(String)
    case integers([Int64])
    case reals([Double])

    public var description: String {
        switch self {
        case .string(let s): return s.contains("\n") ? "<\(s.split(separator: "\n").count) lines of text>" : "\"\(s)\""
        case .integers(let v): return v.count == 1 ? "\(v[0])" : "\(v)"
        case .reals(let v): return v.count == 1 ? "\(v[0])" : "\(v)"
        }
    }
}

/// The project's thin wrapper over libhdf5: files, groups, attributes, fixed and extendable
/// (chunked along the first axis) datasets of numbers and strings. Objects close their HDF5
/// handles when released; a file's objects keep it open.
public class HDF5Object {
    let id: hid_t
    public let file: String
    public let name: String
    let owner: HDF5Object?

    init(id: hid_t, file: String, name: String, owner: HDF5Object?) {
        self.id = id
        self.file = file
        self.name = name
        self.owner = owner
    }

    func fail(_ what: String) -> HDF5Error { HDF5Error(path: file, message: "\(what) (object \(name.isEmpty ? "/" : name))") }

    // MARK: attributes

    public func setAttribute(_ key: String, _ value: String) throws {
        try removeAttribute(key)
        let type = stringType()
        defer { H5Tclose(type) }
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(id, key, type, space, chdf5_p_default(), chdf5_p_default())
        guard attribute >= 0 else { throw fail("cannot create attribute '\(key)'") }
        defer { H5Aclose(attribute) }
        let status = value.withCString { chars -> herr_t in
            var pointer: UnsafePointer<CChar>? = chars
            return withUnsafePointer(to: &pointer) { H5Awrite(attribute, type, $0) }
        }
        guard status >= 0 else { throw fail("cannot write attribute '\(key)'") }
    }

    public func setAttribute(_ key: String, _ value: Int) throws { try setAttribute(key, [Int64(value)], scalar: true) }
    public func setAttribute(_ key: String, _ value: Double) throws { try setAttribute(key, [value], scalar: true) }
    public func setAttribute<T: HDF5Scalar>(_ key: String, _ values: [T]) throws { try setAttribute(key, values, scalar: false) }

    func setAttribute<T: HDF5Scalar>(_ key: String, _ values: [T], scalar: Bool) throws {
        try removeAttribute(key)
        var dims = [hsize_t(values.count)]
        let space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, nil)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(id, key, T.hdf5Type, space, chdf5_p_default(), chdf5_p_default())
        guard attribute >= 0 else { throw fail("cannot create attribute '\(key)'") }
        defer { H5Aclose(attribute) }
        guard values.withUnsafeBufferPointer({ H5Awrite(attribute, T.hdf5Type, $0.baseAddress) }) >= 0 else {
            throw fail("cannot write attribute '\(key)'")
        }
    }

    public func removeAttribute(_ key: String) throws {
        if H5Aexists(id, key) > 0 && H5Adelete(id, key) < 0 { throw fail("cannot replace attribute '\(key)'") }
    }

    /// Names of every attribute, in name order.
    public var attributeNames: [String] {
        var names: [String] = []
        var index: hsize_t = 0
        while true {
            let length = H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, chdf5_p_default())
            guard length >= 0 else { break }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, buffer.count, chdf5_p_default())
            names.append(String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            index += 1
        }
        return names
    }

    public func attribute(_ key: String) throws -> HDF5Value {
        guard H5Aexists(id, key) > 0 else { throw fail("no attribute '\(key)'") }
        let attribute = H5Aopen(id, key, chdf5_p_default())
        guard attribute >= 0 else { throw fail("cannot open attribute '\(key)'") }
        defer { H5Aclose(attribute) }
        let type = H5Aget_type(attribute)
        defer { H5Tclose(type) }
        let space = H5Aget_space(attribute)
        defer { H5Sclose(space) }
        let count = Int(H5Sget_simple_extent_npoints(space))
        switch H5Tget_class(type) {
        case H5T_STRING:
            if H5Tis_variable_str(type) > 0 {
                let memType = stringType()
                defer { H5Tclose(memType) }
                var pointer: UnsafeMutablePointer<CChar>?
                guard H5Aread(attribute, memType, &pointer) >= 0, let chars = pointer else { throw fail("cannot read attribute '\(key)'") }
                defer { H5free_memory(chars) }
                return .string(String(cString: chars))
            }
            let size = H5Tget_size(type)
            var buffer = [CChar](repeating: 0, count: size * Swift.max(count, 1) + 1)
            guard H5Aread(attribute, type, &buffer) >= 0 else { throw fail("cannot read attribute '\(key)'") }
            return .string(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case H5T_INTEGER:
            var values = [Int64](repeating: 0, count: count)
            guard H5Aread(attribute, chdf5_native_int64(), &values) >= 0 else { throw fail("cannot read attribute '\(key)'") }
            return .integers(values)
        default:
            var values = [Double](repeating: 0, count: count)
            guard H5Aread(attribute, chdf5_native_double(), &values) >= 0 else { throw fail("cannot read attribute '\(key)'") }
            return .reals(values)
        }
    }

    func stringType() -> hid_t {
        let type = H5Tcopy(chdf5_c_s1())
        H5Tset_size(type, chdf5_t_variable())
        H5Tset_cset(type, H5T_CSET_UTF8)
        return type
    }
}

/// An HDF5 file. `create` truncates, `readWrite` and `readOnly` open an existing file.
public final class HDF5File: HDF5Object {
    public enum Mode { case create, readWrite, readOnly }

    public init(path: String, mode: Mode) throws {
        _ = chdf5_silence_errors()
        // No file locks: a notebook holding metrics.h5 open must not stop a run from appending to
        // it (the writer closes the file between flushes, so readers see complete states).
        let access = H5Pcreate(chdf5_p_file_access())
        defer { H5Pclose(access) }
        H5Pset_file_locking(access, false, true)
        let id: hid_t
        switch mode {
        case .create: id = H5Fcreate(path, chdf5_acc_trunc(), chdf5_p_default(), access)
        case .readWrite: id = FileManager.default.fileExists(atPath: path) ? H5Fopen(path, chdf5_acc_rdwr(), access) : -1
        case .readOnly: id = FileManager.default.fileExists(atPath: path) ? H5Fopen(path, chdf5_acc_rdonly(), access) : -1
        }
        guard id >= 0 else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw HDF5Error(path: path, message: mode == .create ? "cannot create the file (is its folder writable?)"
                            : exists ? "not an HDF5 file, or damaged" + (mode == .readWrite ? ", or not writable" : "") : "no such file")
        }
        super.init(id: id, file: path, name: "", owner: nil)
    }

    deinit { H5Fclose(id) }

    /// The root group.
    public var root: HDF5Group { HDF5Group(id: H5Gopen2(id, "/", chdf5_p_default()), file: file, name: "", owner: self) }

    /// Writes everything buffered to disk.
    public func flush() throws {
        guard H5Fflush(id, H5F_SCOPE_GLOBAL) >= 0 else { throw fail("cannot flush") }
    }
}

/// A group: a folder of groups and datasets.
public final class HDF5Group: HDF5Object {
    deinit { H5Gclose(id) }

    public func contains(_ child: String) -> Bool {
        // Each prefix of a path must exist before H5Lexists may look at the next part.
        var path = ""
        for part in child.split(separator: "/") {
            path += path.isEmpty ? String(part) : "/\(part)"
            guard H5Lexists(id, path, chdf5_p_default()) > 0 else { return false }
        }
        return !path.isEmpty
    }

    /// Opens the group `child` (a name or a relative path), creating it and its parents if needed.
    public func group(_ child: String) throws -> HDF5Group {
        if contains(child) {
            let g = H5Gopen2(id, child, chdf5_p_default())
            guard g >= 0 else { throw fail("'\(child)' is not a group") }
            return HDF5Group(id: g, file: file, name: "\(name)/\(child)", owner: self)
        }
        let links = H5Pcreate(chdf5_p_link_create())
        defer { H5Pclose(links) }
        H5Pset_create_intermediate_group(links, 1)
        let g = H5Gcreate2(id, child, links, chdf5_p_default(), chdf5_p_default())
        guard g >= 0 else { throw fail("cannot create group '\(child)'") }
        return HDF5Group(id: g, file: file, name: "\(name)/\(child)", owner: self)
    }

    /// Names of the direct children, in name order.
    public var childNames: [String] {
        var info = H5G_info_t()
        guard H5Gget_info(id, &info) >= 0 else { return [] }
        return (0..<info.nlinks).compactMap { index in
            let length = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, chdf5_p_default())
            guard length >= 0 else { return nil }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, buffer.count, chdf5_p_default())
            return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    public enum Child { case group(HDF5Group), dataset(HDF5Dataset) }

    /// Opens a child of either kind.
    public func child(_ childName: String) throws -> Child {
        let object = H5Oopen(id, childName, chdf5_p_default())
        guard object >= 0 else { throw fail("no object '\(childName)'") }
        let path = "\(name)/\(childName)"
        switch H5Iget_type(object) {
        case H5I_GROUP: return .group(HDF5Group(id: object, file: file, name: path, owner: self))
        case H5I_DATASET: return .dataset(HDF5Dataset(id: object, file: file, name: path, owner: self))
        default:
            H5Oclose(object)
            throw fail("'\(childName)' is neither a group nor a dataset")
        }
    }

    public func dataset(_ childName: String) throws -> HDF5Dataset {
        guard contains(childName) else { throw fail("no dataset '\(childName)'") }
        let d = H5Dopen2(id, childName, chdf5_p_default())
        guard d >= 0 else { throw fail("'\(childName)' is not a dataset") }
        return HDF5Dataset(id: d, file: file, name: "\(name)/\(childName)", owner: self)
    }

    /// Removes a child link (the space is reclaimed only when the file is repacked).
    public func remove(_ childName: String) throws {
        guard contains(childName) else { return }
        guard H5Ldelete(id, childName, chdf5_p_default()) >= 0 else { throw fail("cannot remove '\(childName)'") }
    }

    /// A fixed-size dataset holding `values` with `shape` (replacing any dataset of that name).
    @discardableResult
    public func write<T: HDF5Scalar>(_ childName: String, _ values: [T], shape: [Int]? = nil, compress: Bool = false) throws -> HDF5Dataset {
        let shape = shape ?? [values.count]
        guard shape.reduce(1, *) == values.count else { throw fail("dataset '\(childName)': \(values.count) values do not fill shape \(shape)") }
        try remove(childName)
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        defer { H5Sclose(space) }
        let properties = H5Pcreate(chdf5_p_dataset_create())
        defer { H5Pclose(properties) }
        if compress && values.count > 0 {
            var chunk = dims
            chunk[0] = hsize_t(Swift.max(1, Swift.min(shape[0], (1 << 16) / Swift.max(1, values.count / Swift.max(shape[0], 1)))))
            H5Pset_chunk(properties, Int32(chunk.count), &chunk)
            H5Pset_deflate(properties, 4)
        }
        let links = H5Pcreate(chdf5_p_link_create())
        defer { H5Pclose(links) }
        H5Pset_create_intermediate_group(links, 1)
        let d = H5Dcreate2(id, childName, T.hdf5Type, space, links, properties, chdf5_p_default())
        guard d >= 0 else { throw fail("cannot create dataset '\(childName)'") }
        let dataset = HDF5Dataset(id: d, file: file, name: "\(name)/\(childName)", owner: self)
        if !values.isEmpty {
            guard values.withUnsafeBufferPointer({ H5Dwrite(d, T.hdf5Type, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(), $0.baseAddress) }) >= 0 else {
                throw fail("cannot write dataset '\(childName)'")
            }
        }
        return dataset
    }

    /// A one-dimensional dataset of UTF-8 strings.
    @discardableResult
    public func writeStrings(_ childName: String, _ values: [String]) throws -> HDF5Dataset {
        try remove(childName)
        var dims = [hsize_t(values.count)]
        let space = H5Screate_simple(1, &dims, nil)
        defer { H5Sclose(space) }
        let type = stringType()
        defer { H5Tclose(type) }
        let d = H5Dcreate2(id, childName, type, space, chdf5_p_default(), chdf5_p_default(), chdf5_p_default())
        guard d >= 0 else { throw fail("cannot create dataset '\(childName)'") }
        let dataset = HDF5Dataset(id: d, file: file, name: "\(name)/\(childName)", owner: self)
        let copies = values.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        var pointers = copies.map { UnsafePointer<CChar>($0) }
        guard values.isEmpty || H5Dwrite(d, type, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(), &pointers) >= 0 else {
            throw fail("cannot write dataset '\(childName)'")
        }
        return dataset
    }

    /// An empty dataset that grows along its first axis: rows of `rowShape`, chunked by `chunkRows`.
    @discardableResult
    public func createExtendable<T: HDF5Scalar>(_ childName: String, of: T.Type, rowShape: [Int] = [], chunkRows: Int = 1024) throws -> HDF5Dataset {
        var dims = [hsize_t(0)] + rowShape.map { hsize_t($0) }
        var maxDims = [chdf5_s_unlimited()] + rowShape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, &maxDims)
        defer { H5Sclose(space) }
        let properties = H5Pcreate(chdf5_p_dataset_create())
        defer { H5Pclose(properties) }
        var chunk = [hsize_t(Swift.max(1, chunkRows))] + rowShape.map { hsize_t(Swift.max($0, 1)) }
        H5Pset_chunk(properties, Int32(chunk.count), &chunk)
        let links = H5Pcreate(chdf5_p_link_create())
        defer { H5Pclose(links) }
        H5Pset_create_intermediate_group(links, 1)
        let d = H5Dcreate2(id, childName, T.hdf5Type, space, links, properties, chdf5_p_default())
        guard d >= 0 else { throw fail("cannot create dataset '\(childName)'") }
        return HDF5Dataset(id: d, file: file, name: "\(name)/\(childName)", owner: self)
    }
}

/// A dataset: its shape, element type, attributes, reads and (for extendable ones) appends.
public final class HDF5Dataset: HDF5Object {
    deinit { H5Dclose(id) }

    public var shape: [Int] {
        let space = H5Dget_space(id)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        var dims = [hsize_t](repeating: 0, count: rank)
        H5Sget_simple_extent_dims(space, &dims, nil)
        return dims.map { Int($0) }
    }

    /// "float32", "float64", "int64", "int32", "uint8", "string" or "other".
    public var elementType: String {
        let type = H5Dget_type(id)
        defer { H5Tclose(type) }
        let size = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_FLOAT: return size == 4 ? "float32" : "float64"
        case H5T_INTEGER: return H5Tget_sign(type) == H5T_SGN_NONE ? "uint\(size * 8)" : "int\(size * 8)"
        case H5T_STRING: return "string"
        default: return "other"
        }
    }

    /// Every element, converted to `T`, in row-major order.
    public func read<T: HDF5Scalar>(as: T.Type = T.self) throws -> [T] {
        var values = [T](repeating: T.zero, count: shape.reduce(1, *))
        guard values.isEmpty || values.withUnsafeMutableBufferPointer({
            H5Dread(id, T.hdf5Type, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(), $0.baseAddress)
        }) >= 0 else { throw fail("cannot read") }
        return values
    }

    public func readStrings() throws -> [String] {
        let count = shape.reduce(1, *)
        guard count > 0 else { return [] }
        let type = stringType()
        defer { H5Tclose(type) }
        var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        guard H5Dread(id, type, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(), &pointers) >= 0 else { throw fail("cannot read strings") }
        defer { pointers.forEach { if let p = $0 { H5free_memory(p) } } }
        return pointers.map { $0.map { String(cString: $0) } ?? "" }
    }

    /// Appends whole rows (values.count a multiple of the row size) along the first axis.
    public func append<T: HDF5Scalar>(_ values: [T]) throws {
        let current = shape
        let rowSize = current.dropFirst().reduce(1, *)
        guard rowSize > 0, values.count % rowSize == 0 else { throw fail("append of \(values.count) values to rows of \(rowSize)") }
        let rows = values.count / rowSize
        guard rows > 0 else { return }
        var newDims = current.map { hsize_t($0) }
        newDims[0] += hsize_t(rows)
        guard H5Dset_extent(id, &newDims) >= 0 else { throw fail("cannot extend (is it extendable?)") }
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t](repeating: 0, count: current.count)
        start[0] = hsize_t(current[0])
        var count = newDims
        count[0] = hsize_t(rows)
        H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &count, nil)
        let memSpace = H5Screate_simple(Int32(count.count), &count, nil)
        defer { H5Sclose(memSpace) }
        guard values.withUnsafeBufferPointer({ H5Dwrite(id, T.hdf5Type, memSpace, fileSpace, chdf5_p_default(), $0.baseAddress) }) >= 0 else {
            throw fail("cannot append")
        }
    }

    /// Shrinks (or grows) an extendable dataset to `rows` along its first axis.
    public func resize(rows: Int) throws {
        var dims = shape.map { hsize_t($0) }
        dims[0] = hsize_t(rows)
        guard H5Dset_extent(id, &dims) >= 0 else { throw fail("cannot resize to \(rows) rows") }
    }
}
