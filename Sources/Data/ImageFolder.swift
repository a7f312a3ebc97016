import Foundation
import TensorCore

/// A folder of image files with torchvision's ImageFolder semantics: the classes are the sorted
/// names of the subfolders (a class's label its position in that order), each class's files are
/// found by a sorted recursive walk (following links), and extensions match case-insensitively.
/// An unlabelled folder (no class subfolders needed) gives every image under it, label -1.
/// Files are read and decoded on demand, converted to RGB (or gray) as PIL's convert does, and
/// made `imageShape` by the evaluation `transform`; `cache` keeps decoded images in memory.
public final class ImageFolder: Dataset, @unchecked Sendable {
    /// What a walk found: the files, their labels and the class names.
    public struct Listing: Sendable {
        public var root: String
        public var classNames: [String]
        public var files: [String]
        public var labels: [Int32]
        /// Files passed over because of their extension (with up to three examples).
        public var ignored: Int
        public var ignoredExamples: [String]
    }

    public let name: String
    public let listing: Listing
    public let channels: Int
    public let transform: ImageTransform?
    private var cached: [DecodedImage?]
    private let caching: Bool
    private let lock = NSLock()

    public init(_ listing: Listing, name: String, channels: Int, transform: ImageTransform, cache: Bool = false) {
        precondition(channels == 1 || channels == 3, "an image folder gives 1 or 3 channels")
        self.listing = listing
        self.name = name
        self.channels = channels
        self.transform = transform
        cached = cache ? Array(repeating: nil, count: listing.files.count) : []
        caching = cache
    }

    public var count: Int { listing.files.count }
    public var imageShape: [Int] { [channels, transform!.size, transform!.size] }
    public var classCount: Int { Swift.max(listing.classNames.count, 1) }
    public func label(at index: Int) -> Int { Int(listing.labels[index]) }
    public var path: String { listing.root }
    public func file(_ index: Int) -> String { listing.files[index] }

    /// Reads and decodes image `index` (the error names the file).
    public func decoded(_ index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> (image: DecodedRegion, storedHeight: Int, storedWidth: Int) {
        if caching {
            lock.lock()
            let hit = cached[index]
            lock.unlock()
            if let hit {
                _ = request(hit.height, hit.width)
                return (DecodedRegion(whole: hit), hit.height, hit.width)
            }
        }
        let path = listing.files[index]
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.corrupt(path: path, reason: "cannot be read (\(FileManager.default.fileExists(atPath: path) ? "permission denied" : "it no longer exists"))")
        }
        do {
            return try data.withUnsafeBytes { bytes in
                // The transform plans on the stored size; a cached image is kept whole.
                let decoded = try decoder.decodeRegion(bytes) { h, w in
                    let asked = request(h, w)
                    return caching ? .whole : asked
                }
                var region = decoded.region
                region.image = channels == 3 ? region.image.rgb() : region.image.gray()
                if caching {
                    lock.lock()
                    cached[index] = region.image
                    lock.unlock()
                }
                return (region, decoded.storedHeight, decoded.storedWidth)
            }
        } catch let error as ImageDecodingError {
            throw DataError.corrupt(path: path, reason: error.reason)
        }
    }

    public func image(at index: Int, decoder: ImageDecoder, request: (Int, Int) -> DecodeRequest) throws -> SourceImage {
        let (image, h, w) = try decoded(index, decoder: decoder, request: request)
        return SourceImage(decoded: image, storedHeight: h, storedWidth: w)
    }

    /// `box` of interleaved bytes as channel-first floats in [0, 1] (the whole image by default).
    public static func planar(_ image: DecodedImage, box: Augment.Box? = nil) -> AugmentImage {
        let box = box ?? Augment.Box(top: 0, left: 0, height: image.height, width: image.width)
        let (c, n, bw) = (image.channels, box.width * box.height, box.width)
        var pixels = [Float](repeating: 0, count: c * n)
        pixels.withUnsafeMutableBufferPointer { out in
            image.pixels.withUnsafeBufferPointer { src in
                let o = out.baseAddress!
                for y in 0..<box.height {
                    let s = src.baseAddress! + ((box.top + y) * image.width + box.left) * c
                    let row = y * bw
                    if c == 1 {
                        for x in 0..<bw { o[row + x] = Float(s[x]) * (1 / 255) }
                    } else {
                        for x in 0..<bw {
                            o[row + x] = Float(s[3 * x]) * (1 / 255)
                            o[n + row + x] = Float(s[3 * x + 1]) * (1 / 255)
                            o[2 * n + row + x] = Float(s[3 * x + 2]) * (1 / 255)
                        }
                    }
                }
            }
        }
        return AugmentImage(channels: c, height: box.height, width: box.width, pixels: pixels)
    }

    // MARK: Listing

    /// Walks `root`: class subfolders (labelled) or every image below it (unlabelled).
    public static func list(root: String, labelled: Bool) throws -> Listing {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) else {
            throw DataError.missingFile(path: root, hint: labelled
                ? "An image folder holds one subfolder of images per class, as torchvision's ImageFolder reads."
                : "An unlabelled image folder holds images (in any subfolders).")
        }
        guard isDirectory.boolValue else { throw DataError.corrupt(path: root, reason: "is a file, not a folder of images") }
        var listing = Listing(root: root, classNames: [], files: [], labels: [], ignored: 0, ignoredExamples: [])
        if labelled {
            let (_, dirs) = try entries(root)
            let classes = dirs.sorted(by: utf8Less)
            guard !classes.isEmpty else {
                throw DataError.corrupt(path: root, reason: "has no class subfolders; a labelled image folder holds one subfolder per class (train/cat/1.jpg, ...); for images without labels use it as the unlabelled folder")
            }
            var empty: [String] = []
            for (label, name) in classes.enumerated() {
                let before = listing.files.count
                try walk("\(root)/\(name)", into: &listing, label: Int32(label))
                if listing.files.count == before { empty.append(name) }
            }
            guard empty.isEmpty else {
                throw DataError.corrupt(path: root, reason: "the class folder\(empty.count == 1 ? "" : "s") \(empty.prefix(5).joined(separator: ", "))\(empty.count > 5 ? ", ..." : "") hold\(empty.count == 1 ? "s" : "") no images (.jpg .jpeg .png .webp .bmp .ppm .pgm); add images or remove \(empty.count == 1 ? "it" : "them")")
            }
            listing.classNames = classes
        } else {
            try walk(root, into: &listing, label: -1)
        }
        guard !listing.files.isEmpty else {
            throw DataError.corrupt(path: root, reason: "holds no images (.jpg .jpeg .png .webp .bmp .ppm .pgm)")
        }
        return listing
    }

    /// Python's string order (code points), which UTF-8 byte order is.
    static func utf8Less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// The files and subfolders of one folder (links followed), unsorted.
    public static func entries(_ folder: String) throws -> (files: [String], folders: [String]) {
        guard let dir = opendir(folder) else {
            throw DataError.corrupt(path: folder, reason: "cannot be listed: \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var files: [String] = [], folders: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            var type = Int32(entry.pointee.d_type)
            if type == Int32(DT_LNK) || type == Int32(DT_UNKNOWN) {
                var st = stat()
                guard stat("\(folder)/\(name)", &st) == 0 else { continue }
                type = (st.st_mode & S_IFMT) == S_IFDIR ? Int32(DT_DIR) : Int32(DT_REG)
            }
            if type == Int32(DT_DIR) { folders.append(name) } else { files.append(name) }
        }
        return (files, folders)
    }

    /// torchvision's make_dataset for one class: sorted(os.walk(folder)), each folder's files sorted.
    static func walk(_ folder: String, into listing: inout Listing, label: Int32) throws {
        var found: [(String, [String])] = []
        var stack = [folder]
        var visited = Set<[UInt64]>()
        while let dir = stack.popLast() {
            // A link back to a folder already walked is not followed again (no loops).
            var st = stat()
            guard stat(dir, &st) == 0, visited.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { continue }
            let (files, folders) = try entries(dir)
            found.append((dir, files))
            for f in folders { stack.append("\(dir)/\(f)") }
        }
        found.sort { utf8Less($0.0, $1.0) }
        for (dir, files) in found {
            for name in files.sorted(by: utf8Less) {
                let ext = name.split(separator: ".", omittingEmptySubsequences: false).count > 1
                    ? String(name[name.index(after: name.lastIndex(of: ".")!)...]).lowercased() : ""
                if ImageFormat.extensions.contains(ext) {
                    listing.files.append("\(dir)/\(name)")
                    listing.labels.append(label)
                } else {
                    listing.ignored += 1
                    if listing.ignoredExamples.count < 3 { listing.ignoredExamples.append("\(dir)/\(name)") }
                }
            }
        }
    }
}

/// Reads every image of `dataset` once on `workers` threads (each with its own decoder): the
/// ones that fail, with the message (naming the file), in index order. `progress` hears how many
/// were read, every thousand.
public func verifyImages(_ dataset: Dataset, workers: Int, progress: ((Int) -> Void)? = nil) -> [(index: Int, message: String)] {
    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var next = 0, done = 0
        var failures: [(index: Int, message: String)] = []
    }
    let n = dataset.count, tally = Tally()
    let group = DispatchGroup()
    for _ in 0..<Swift.max(1, Swift.min(workers, n)) {
        group.enter()
        let thread = Thread {
            let decoder = ImageDecoder()
            while true {
                tally.lock.lock()
                let i = tally.next
                tally.next += 1
                tally.lock.unlock()
                guard i < n else { break }
                var failure: String?
                do { _ = try dataset.image(at: i, decoder: decoder) { _, _ in .whole } } catch { failure = "\(error)" }
                tally.lock.lock()
                if let failure { tally.failures.append((i, failure)) }
                tally.done += 1
                let d = tally.done
                tally.lock.unlock()
                if d % 1000 == 0 { progress?(d) }
            }
            group.leave()
        }
        thread.start()
    }
    group.wait()
    return tally.failures.sorted { $0.index < $1.index }
}
