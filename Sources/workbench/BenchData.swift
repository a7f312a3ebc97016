import ArgumentParser
import Data
import Foundation
import Runner
import TensorCore

/// `workbench bench-data`: the data pipeline's throughput: decode + RandomResizedCrop + flip +
/// normalise over an image folder, one worker and all of them, and 32-pixel CIFAR-style crops
/// from memory. tools/bench_torchvision_data.py measures torchvision on the same files.
struct BenchData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-data",
        abstract: "Measure the data pipeline: images/s per thread and with all workers.",
        discussion: """
            FOLDER is an image folder (one subfolder per class, as torchvision's ImageFolder; \
            tools/make_photo_folder.py writes one from scikit-image's photographs). Every image is \
            read, decoded (JPEG: DCT-domain reduced when the crop allows), RandomResizedCrop'd to \
            --size with scale (0.08, 1), flipped with probability 0.5 and normalised, in batches of \
            --batch. Then the same for 32-pixel RGB images held in memory (CIFAR's case).
            """)

    @Argument(help: "An image folder (class subfolders).")
    var folder: String

    @Option(help: "Output side in pixels.")
    var size = 224

    @Option(help: "Workers for the all-workers figure (default: the machine's cores).")
    var workers: Int?

    @Option(help: "Images per batch.")
    var batch = 64

    @Option(help: "Passes over the folder per measurement (the best is reported).")
    var passes = 3

    func run() throws {
        try reportingUserErrors {
            let listing = try ImageFolder.list(root: folder, labelled: true)
            let folderSet = ImageFolder(listing, name: "bench", channels: 3, transform: .center(size: size, cropPct: 0.875))
            let all = workers ?? ProcessInfo.processInfo.activeProcessorCount
            print("workbench bench-data: \(listing.files.count) images in \(listing.classNames.count) classes under \(folder)")
            func measure(_ dataset: Dataset, size: Int, workers: Int, batch: Int) throws -> Double {
                var best = 0.0
                for pass in 0..<passes {
                    let loader = DataLoader(dataset, batchSize: batch, shuffle: true, dropLast: false, mean: [0.485, 0.456, 0.406],
                                            std: [0.229, 0.224, 0.225], horizontalFlip: true, seed: UInt64(pass), prefetch: 2 * workers, workers: workers)
                    loader.trainTransform = ImageTransform(size: size, kind: .randomResizedCrop(scale: [0.08, 1], ratio: [0.75, 4.0 / 3]))
                    let start = DispatchTime.now().uptimeNanoseconds
                    let batches = loader.batches()
                    var images = 0
                    while let b = try batches.next() { images += b.labels.count }
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    best = Swift.max(best, Double(images) / seconds)
                }
                return best
            }
            let one = try measure(folderSet, size: size, workers: 1, batch: batch)
            let many = try measure(folderSet, size: size, workers: all, batch: batch)
            print(String(format: "folder, RandomResizedCrop(%d): %8.1f img/s with 1 worker, %8.1f img/s with %d workers", size, one, many, all))
            let count = 20_000
            let rng = RandomStream(seed: 1, purpose: "bench-data")
            let pixels = (0..<(count * 3072)).map { _ in UInt8(truncatingIfNeeded: rng.nextInt(below: 256)) }
            let cifar = ByteImageDataset(name: "cifar-like", imageShape: [3, 32, 32], classCount: 10, pixels: pixels,
                                         labels: (0..<count).map { UInt8($0 % 10) })
            let small1 = try measure(cifar, size: 32, workers: 1, batch: 256)
            let smallN = try measure(cifar, size: 32, workers: all, batch: 256)
            print(String(format: "memory 32x32, RandomResizedCrop(32): %8.0f img/s with 1 worker, %8.0f img/s with %d workers", small1, smallN, all))
        }
    }
}
