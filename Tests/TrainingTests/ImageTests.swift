import Data
import Foundation
import TensorCore
import TestSupport
import XCTest

/// Decoders and transforms against PIL and torchvision (tools/make_image_fixtures.py), image
/// folders with torchvision's ImageFolder semantics, and the decoders under hostile input.
final class ImageTests: XCTestCase {
    static let folder = Bundle.module.url(forResource: "images", withExtension: nil, subdirectory: "Fixtures")!.path
    static let fixture = try! loadFixture("images", from: Bundle.module)

    func bytes(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: "\(Self.folder)/\(name)")) }

    func decode(_ name: String, reduction: Int = 1) throws -> DecodedImage {
        try bytes(name).withUnsafeBytes { try ImageDecoder().decode($0) { _, _ in reduction } }
    }

    /// Largest absolute difference between decoded bytes and PIL's pixels.
    func difference(_ image: DecodedImage, _ expected: Tensor) -> Float {
        XCTAssertEqual(expected.count, image.pixels.count)
        guard expected.count == image.pixels.count else { return .infinity }
        return zip(image.pixels, expected.scalars).map { Swift.abs(Float($0) - $1) }.max() ?? 0
    }

    func testEveryFormatAndModeDecodesAsPILConvertsIt() throws {
        // Lossless formats exactly; JPEG as another libjpeg-turbo build may (Pillow bundles its
        // own); lossy WebP as another libwebp version may.
        let tolerance: [String: Float] = ["rgb.jpg": 2, "gray.jpg": 2, "cmyk.jpg": 2, "rgb.webp": 3]
        let names = ["rgb.png", "gray.png", "rgba.png", "la.png", "palette.png", "gray16.png", "bilevel.png", "rgb.jpg", "gray.jpg",
                     "cmyk.jpg", "rgb_lossless.webp", "rgba_lossless.webp", "rgb.webp", "rgb.bmp", "palette.bmp", "rgb.ppm", "gray.pgm"]
        for name in names {
            let image = try decode(name)
            XCTAssertEqual([image.width, image.height], [53, 37], name)
            let allowed = tolerance[name] ?? 0
            XCTAssertLessThanOrEqual(difference(image.rgb(), Self.fixture["\(name)/rgb"]!), allowed, "\(name) as RGB")
            XCTAssertLessThanOrEqual(difference(image.gray(), Self.fixture["\(name)/gray"]!), allowed + (image.channels == 3 ? 0 : 0), "\(name) as L")
        }
    }

    func testJPEGReducedDecodingHalvesEachSide() throws {
        let full = try decode("rgb.jpg"), half = try decode("rgb.jpg", reduction: 2), eighth = try decode("rgb.jpg", reduction: 8)
        XCTAssertEqual([half.width, half.height], [27, 19], "ceil(53 / 2), ceil(37 / 2)")
        XCTAssertEqual([eighth.width, eighth.height], [7, 5])
        // The DCT-domain half is close to an area average of the full image.
        var worst: Float = 0
        for y in 1..<17 {
            for x in 1..<25 {
                var s: Float = 0
                for dy in 0..<2 { for dx in 0..<2 { s += Float(full.pixels[3 * ((2 * y + dy) * 53 + 2 * x + dx)]) } }
                worst = Swift.max(worst, Swift.abs(s / 4 - Float(half.pixels[3 * (y * 27 + x)])))
            }
        }
        XCTAssertLessThan(worst, 40)
    }

    func testJPEGRegionDecodingGivesTheFullDecodesPixels() throws {
        let data = try bytes("rgb.jpg")
        let decoder = ImageDecoder()
        for reduction in [1, 2] {
            let full = try data.withUnsafeBytes { try decoder.decode($0) { _, _ in reduction } }
            for box in [Augment.Box(top: 5, left: 17, height: 20, width: 30), Augment.Box(top: 0, left: 0, height: 37, width: 53),
                        Augment.Box(top: 30, left: 40, height: 7, width: 13)] {
                let region = try data.withUnsafeBytes { try decoder.decodeRegion($0) { _, _ in DecodeRequest(reduction: reduction, region: box) } }.region
                XCTAssertEqual([region.fullHeight, region.fullWidth], [full.height, full.width])
                // Fancy upsampling differs in the region's outermost columns (where the crop cut
                // the chroma planes); the decoder asks for one column more than a crop reads.
                var worst = 0
                let firstColumn = region.left == 0 ? 0 : 1
                let lastColumn = region.left + region.image.width == full.width ? region.image.width : region.image.width - 1
                for y in 0..<region.image.height {
                    for x in (firstColumn * 3)..<(lastColumn * 3) {
                        let a = Int(region.image.pixels[y * region.image.width * 3 + x])
                        let b = Int(full.pixels[(region.top + y) * full.width * 3 + region.left * 3 + x])
                        worst = Swift.max(worst, Swift.abs(a - b))
                    }
                }
                XCTAssertEqual(worst, 0, "region \(box) at 1/\(reduction)")
                // The region covers the box (mapped to the reduced image).
                XCTAssertTrue(region.left == 0 || region.left < box.left / reduction, "a column of margin")
                XCTAssertLessThanOrEqual(region.top, box.top / reduction)
                XCTAssertGreaterThanOrEqual(region.top + region.image.height, (box.top + box.height) / reduction)
            }
        }
    }

    func planar(_ name: String) throws -> AugmentImage { ImageFolder.planar(try decode(name).rgb()) }

    func testResizeAndCenterCropMatchTorchvision() throws {
        let image = try planar("rgb.png")
        for filter in ResizeFilter.allCases {
            for (resize, crop) in [(20, 16), (37, 37), (48, 40), (30, 24)] {
                let transform = ImageTransform(size: crop, kind: .center(resize: resize), filter: filter)
                let out = transform.apply(transform.plan(height: image.height, width: image.width, rng: nil), to: image)
                let expected = Self.fixture["resize/\(filter.rawValue)_\(resize)_\(crop)"]!
                XCTAssertEqual([out.channels, out.height, out.width], expected.shape)
                let worst = zip(out.pixels, expected.scalars).map { Swift.abs($0 - $1) }.max()!
                // PIL rounds each pass to 8 bits; the workbench keeps floats.
                XCTAssertLessThanOrEqual(worst, 2.01 / 255, "\(filter) Resize(\(resize)) CenterCrop(\(crop))")
            }
            for (top, left, bh, bw, size) in [(3, 5, 30, 40, 16), (0, 0, 37, 53, 24), (10, 20, 9, 12, 32)] {
                let box = Augment.Box(top: top, left: left, height: bh, width: bw)
                let plan = ImageTransform.Plan(box: box, resizedHeight: size, resizedWidth: size, window: Augment.Box(top: 0, left: 0, height: size, width: size))
                let transform = ImageTransform(size: size, kind: .randomResizedCrop(scale: [0.08, 1], ratio: [0.75, 4.0 / 3]), filter: filter)
                let out = transform.apply(plan, to: image)
                let expected = Self.fixture["crop/\(filter.rawValue)_\(top)_\(left)_\(bh)_\(bw)_\(size)"]!
                let worst = zip(out.pixels, expected.scalars).map { Swift.abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(worst, 2.01 / 255, "\(filter) resized_crop \(box) -> \(size)")
            }
        }
    }

    func testRandomResizedCropBoxesHaveTorchvisionsStatistics() {
        let theirs = Self.fixture["rrc/boxes"]!.scalars
        let n = theirs.count / 4
        let rng = RandomStream(seed: 5, purpose: "crop")
        var ours: [Float] = []
        for _ in 0..<n {
            let b = Augment.cropBox(height: 80, width: 100, scale: (0.08, 1), ratio: (0.75, 4.0 / 3), rng: rng)
            ours += [Float(b.top), Float(b.left), Float(b.height), Float(b.width)]
        }
        func statistics(_ v: [Float]) -> [Double] {
            var area = 0.0, logAspect = 0.0, top = 0.0, left = 0.0, area2 = 0.0, full = 0.0
            for i in 0..<(v.count / 4) {
                let a = Double(v[4 * i + 2] * v[4 * i + 3]) / 8000
                area += a; area2 += a * a
                logAspect += Foundation.log(Double(v[4 * i + 3] / v[4 * i + 2]))
                top += Double(v[4 * i]); left += Double(v[4 * i + 1])
                if v[4 * i + 2] == 80 && v[4 * i + 3] == 100 { full += 1 }
            }
            let m = Double(v.count / 4)
            return [area / m, (area2 / m - (area / m) * (area / m)).squareRoot(), logAspect / m, top / m, left / m]
        }
        let (a, b) = (statistics(ours), statistics(theirs))
        // Standard errors over 8000 draws: area ~0.003, log aspect ~0.002, corners ~0.2 px.
        XCTAssertEqual(a[0], b[0], accuracy: 0.012, "mean area fraction")
        XCTAssertEqual(a[1], b[1], accuracy: 0.012, "spread of the area fraction")
        XCTAssertEqual(a[2], b[2], accuracy: 0.01, "mean log aspect ratio")
        XCTAssertEqual(a[3], b[3], accuracy: 0.8, "mean top")
        XCTAssertEqual(a[4], b[4], accuracy: 0.8, "mean left")
    }

    func testHostileFilesGiveErrorsNeverTraps() throws {
        // Truncations and bit flips of every fixture: each decode gives an error or an image.
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.folder).sorted()
        let decoder = ImageDecoder()
        var outcomes = (images: 0, errors: 0)
        let rng = RandomStream(seed: 11, purpose: "fuzz")
        for name in names {
            let original = [UInt8](try bytes(name))
            for k in 0..<320 {
                var variant = original
                if k < 80 {
                    variant = Array(original.prefix(k * original.count / 80))
                } else {
                    for _ in 0..<(1 + k % 8) {
                        let i = rng.nextInt(below: variant.count)
                        variant[i] ^= UInt8(1 << rng.nextInt(below: 8))
                    }
                    if k % 5 == 0 { variant[rng.nextInt(below: Swift.min(32, variant.count))] = UInt8(rng.nextInt(below: 256)) }
                }
                do {
                    let image = try variant.withUnsafeBytes { try decoder.decode($0) { _, _ in k % 3 == 0 ? 2 : 1 } }
                    XCTAssertEqual(image.pixels.count, image.width * image.height * image.channels)
                    outcomes.images += 1
                } catch is ImageDecodingError {
                    outcomes.errors += 1
                }
            }
        }
        XCTAssertEqual(outcomes.images + outcomes.errors, names.count * 320)
        XCTAssertGreaterThan(outcomes.errors, names.count * 80 / 2, "truncated files are refused")
    }

    func testHeadersAndNonImages() throws {
        let decoder = ImageDecoder()
        for (bytes, fragment) in [([UInt8]("hello".utf8), "unknown first bytes"), ([0xFF, 0xD8, 0xFF, 0xE0], "JPEG"),
                                  ([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG"), (Array("P6\n99999999999 1\n255\n".utf8), "too large")] {
            XCTAssertThrowsError(try bytes.withUnsafeBytes { try decoder.decode($0) }) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(error) should mention \(fragment)")
            }
        }
        // A PPM claiming a huge size is refused as a decompression bomb before any allocation.
        XCTAssertThrowsError(try Array("P6\n20000 20000\n255\n".utf8).withUnsafeBytes { try decoder.decode($0) }) { error in
            XCTAssertTrue("\(error)".contains("decompression bomb"), "\(error)")
        }
    }

    // MARK: Image folders

    /// A folder tree: train/{b_dog, a_cat (nested, upper-case extensions), c_empty?}, val, unlabelled.
    func makeTree(emptyClass: Bool = false, corrupt: Bool = false) throws -> String {
        let root = NSTemporaryDirectory() + "imagefolder-\(UUID().uuidString)"
        let fm = FileManager.default
        func put(_ fixture: String, _ path: String) throws {
            try fm.createDirectory(atPath: (root + "/" + path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try fm.copyItem(atPath: "\(Self.folder)/\(fixture)", toPath: "\(root)/\(path)")
        }
        try put("rgb.jpg", "train/b_dog/2.jpg")
        try put("gray.png", "train/b_dog/10.PNG")
        try put("rgb.webp", "train/a_cat/z/1.WebP")
        try put("rgb.bmp", "train/a_cat/a.bmp")
        try put("palette.png", "train/a_cat/y-1.png")
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: "\(root)/train/a_cat/notes.txt"))
        try put("rgb.ppm", "val/b_dog/x.ppm")
        try put("rgb.png", "unlabelled/p/1.png")
        try put("gray.pgm", "unlabelled/q.pgm")
        if emptyClass { try fm.createDirectory(atPath: "\(root)/train/c_empty", withIntermediateDirectories: true) }
        if corrupt { try Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).write(to: URL(fileURLWithPath: "\(root)/train/b_dog/3.jpg")) }
        return root
    }

    func testListingFollowsTorchvisionsImageFolder() throws {
        let root = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let train = try ImageFolder.list(root: "\(root)/train", labelled: true)
        XCTAssertEqual(train.classNames, ["a_cat", "b_dog"])
        // sorted(os.walk(class)): a class's own files, then its subfolders in order; files sorted.
        XCTAssertEqual(train.files.map { String($0.dropFirst(root.count + 7)) },
                       ["a_cat/a.bmp", "a_cat/y-1.png", "a_cat/z/1.WebP", "b_dog/10.PNG", "b_dog/2.jpg"])
        XCTAssertEqual(train.labels, [0, 0, 0, 1, 1])
        XCTAssertEqual(train.ignored, 1, "notes.txt")
        let unlabelled = try ImageFolder.list(root: "\(root)/unlabelled", labelled: false)
        XCTAssertEqual(unlabelled.files.map { String($0.dropFirst(root.count + 12)) }, ["q.pgm", "p/1.png"])
        XCTAssertEqual(unlabelled.labels, [-1, -1])
    }

    func testFolderProblemsNameTheFolderAndTheFix() throws {
        let root = try makeTree(emptyClass: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        XCTAssertThrowsError(try ImageFolder.list(root: "\(root)/train", labelled: true)) { error in
            XCTAssertTrue("\(error)".contains("c_empty") && "\(error)".contains("no images"), "\(error)")
        }
        XCTAssertThrowsError(try ImageFolder.list(root: "\(root)/unlabelled/p", labelled: true)) { error in
            XCTAssertTrue("\(error)".contains("no class subfolders"), "\(error)")
        }
        XCTAssertThrowsError(try ImageFolder.list(root: "\(root)/missing", labelled: true)) { error in
            XCTAssertTrue("\(error)".contains("\(root)/missing") && "\(error)".contains("does not exist"), "\(error)")
        }
    }

    func testFolderBatchesDoNotDependOnTheWorkers() throws {
        let root = try makeTree()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let listing = try ImageFolder.list(root: "\(root)/train", labelled: true)
        let folder = ImageFolder(listing, name: "t", channels: 3, transform: .center(size: 16, cropPct: 0.875))
        XCTAssertEqual(folder.imageShape, [3, 16, 16])
        func epoch(workers: Int, cache: Bool = false) throws -> [[Float]] {
            let data = cache ? ImageFolder(listing, name: "t", channels: 3, transform: .center(size: 16, cropPct: 0.875), cache: true) : folder
            let loader = DataLoader(data, batchSize: 2, shuffle: true, dropLast: false, mean: [0.5], std: [0.25], horizontalFlip: true, seed: 9, workers: workers)
            loader.trainTransform = ImageTransform(size: 16, kind: .randomResizedCrop(scale: [0.2, 1], ratio: [0.75, 4.0 / 3]))
            loader.views = ViewPipeline(views: [ViewAugmentation(size: 12, scale: (0.3, 1)), ViewAugmentation(size: 8, scale: (0.1, 0.5))])
            return try loader.allBatches().flatMap { [$0.images.scalars] + $0.views.map(\.scalars) + [$0.labels.map(Float.init)] }
        }
        let one = try epoch(workers: 1)
        XCTAssertEqual(one.count, 3 * 4, "three batches of images, two views and labels")
        XCTAssertEqual(try epoch(workers: 4), one, "4 workers give the 1-worker batches")
        XCTAssertEqual(try epoch(workers: 2, cache: true), try epoch(workers: 2, cache: true))
        // The evaluation transform of a gray file gives three equal planes (convert("RGB")).
        let gray = try folder.image(at: 3, decoder: ImageDecoder()) { _, _ in .whole }
        XCTAssertEqual(Array(gray.image.pixels[0..<gray.image.plane]), Array(gray.image.pixels[gray.image.plane..<(2 * gray.image.plane)]))
    }

    func testAnUndecodableFileNamesItselfWhenItsBatchIsMade() throws {
        let root = try makeTree(corrupt: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let folder = ImageFolder(try ImageFolder.list(root: "\(root)/train", labelled: true), name: "t", channels: 3,
                                 transform: .center(size: 16, cropPct: 1))
        let failures = verifyImages(folder, workers: 2)
        XCTAssertEqual(failures.map(\.index), [5])
        XCTAssertTrue(failures[0].message.contains("train/b_dog/3.jpg"), failures[0].message)
        let loader = DataLoader(folder, batchSize: 3, shuffle: false, dropLast: false, mean: [0], std: [1], seed: 0, workers: 2)
        let batches = loader.batches()
        XCTAssertNotNil(try batches.next())
        XCTAssertThrowsError(try batches.next()) { error in
            XCTAssertTrue("\(error)".contains("3.jpg") && "\(error)".contains("JPEG"), "\(error)")
        }
    }
}
