import Data
import Foundation
import TensorCore
import XCTest

final class DataTests: XCTestCase {
    func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("data-\(getpid())-\(name)").path
    }

    func testFashionMNISTLoadsBothSplits() throws {
        let train = try FashionMNIST.load(.train)
        let test = try FashionMNIST.load(.test)
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(test.count, 10000)
        XCTAssertEqual(train.imageShape, [1, 28, 28])
        XCTAssertEqual(train.label(at: 0), 9, "the first training image is an ankle boot")
        XCTAssertEqual(test.label(at: 0), 9)
        // The pixel mean over the training set is the published normalisation constant.
        var total = 0.0
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 784)
        defer { buffer.deallocate() }
        for i in 0..<60000 {
            train.copyImage(at: i, into: buffer)
            for k in 0..<784 { total += Double(buffer[k]) }
        }
        XCTAssertEqual(total / Double(60000 * 784), Double(FashionMNIST.mean), accuracy: 1e-4)
    }

    func testMissingFilesNameThePathAndTheFix() {
        XCTAssertThrowsError(try FashionMNIST.load(.train, directory: "/nonexistent/fmnist")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("/nonexistent/fmnist/train-images-idx3-ubyte.gz"), text)
            XCTAssertTrue(text.contains("train-labels-idx1-ubyte.gz"), text)
        }
        XCTAssertThrowsError(try IDXArray.read(path: "/nonexistent/x.gz", missingHint: "Install it with: apt-get install dataset-fashion-mnist")) { error in
            XCTAssertTrue("\(error)".contains("apt-get install dataset-fashion-mnist"), "\(error)")
        }
    }

    func testTruncatedGzipIsAClearError() throws {
        let source = FashionMNIST.defaultDirectory + "/t10k-images-idx3-ubyte.gz"
        let data = try XCTUnwrap(FileManager.default.contents(atPath: source))
        let path = temporaryPath("truncated.gz")
        defer { unlink(path) }
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try IDXArray.read(path: path)) { error in
            guard case DataError.corrupt(let p, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
        }
    }

    func testWrongMagicAndShortHeaderAreClearErrors() throws {
        let path = temporaryPath("bad.idx")
        defer { unlink(path) }
        for (bytes, fragment) in [([UInt8](arrayLiteral: 1, 2, 3, 4, 5), "magic"), ([0, 0, 8, 2, 0, 0], "header ends"),
                                  ([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0], "only unsigned bytes"),
                                  ([0, 0, 8, 1, 0, 0, 0, 3, 7], "promises 3 bytes")] {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try IDXArray.read(path: path)) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(error) should mention \(fragment)")
            }
        }
    }

    func smallDataset() -> ByteImageDataset {
        // 10 images of 1x2x3 whose pixels encode the image index.
        let pixels = (0..<10).flatMap { i in (0..<6).map { UInt8(i * 10 + $0) } }
        return ByteImageDataset(name: "toy", imageShape: [1, 2, 3], classCount: 10, pixels: pixels, labels: (0..<10).map(UInt8.init))
    }

    func testLoaderShufflesDeterministicallyAndCoversEveryImage() throws {
        let loader = DataLoader(smallDataset(), batchSize: 4, shuffle: true, dropLast: false, mean: [0], std: [1], seed: 3)
        let first = try loader.allBatches().map(\.indices)
        XCTAssertEqual(first.map(\.count), [4, 4, 2])
        XCTAssertEqual(first.flatMap { $0 }.sorted(), Array(0..<10))
        let second = try loader.allBatches().map(\.indices)
        XCTAssertNotEqual(first, second, "each epoch has its own order")
        let again = DataLoader(smallDataset(), batchSize: 4, shuffle: true, dropLast: false, mean: [0], std: [1], seed: 3)
        XCTAssertEqual(try again.allBatches().map(\.indices), first, "same seed, same order")
        let dropping = DataLoader(smallDataset(), batchSize: 4, shuffle: false, dropLast: true, mean: [0], std: [1], seed: 0)
        XCTAssertEqual(try dropping.allBatches().map(\.indices), [[0, 1, 2, 3], [4, 5, 6, 7]])
    }

    static func threadCount() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("Threads:") } ?? ""
        return Int(line.split(separator: "\t").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? -1
    }

    func testStoppingEarlyEndsThePrefetchThread() throws {
        let loader = DataLoader(smallDataset(), batchSize: 1, shuffle: false, dropLast: false, mean: [0], std: [1], seed: 0, prefetch: 1)
        let before = Self.threadCount()
        for _ in 0..<5 {
            let iterator = loader.batches()
            XCTAssertEqual(try iterator.next()?.labels.count, 1)
        }
        // Each dropped iterator cancelled its queue, and its thread, blocked on a full queue, ended.
        let deadline = Date().addingTimeInterval(5)
        while Self.threadCount() > before && Date() < deadline { usleep(10_000) }
        // At most as many as before: threads other tests left behind (a finished loader's, the
        // pool's) may end meanwhile, five leaked prefetch threads would not.
        XCTAssertLessThanOrEqual(Self.threadCount(), before, "prefetch threads outlived their iterators")
    }

    func testNormalisationLabelsAndFlips() throws {
        let plain = DataLoader(smallDataset(), batchSize: 10, shuffle: false, dropLast: false, mean: [0.5], std: [0.25], seed: 0)
        let batch = try plain.makeBatch(0, of: Array(0..<10), epoch: 0)
        XCTAssertEqual(batch.images.shape, [10, 1, 2, 3])
        XCTAssertEqual(batch.labels, Array(0..<10))
        XCTAssertEqual(batch.images.scalars[7], ((Float(11) / 255) - 0.5) / 0.25, accuracy: 1e-6)
        let flipping = DataLoader(smallDataset(), batchSize: 10, shuffle: false, dropLast: false, mean: [0], std: [1], horizontalFlip: true, seed: 0)
        let flipped = try flipping.makeBatch(0, of: Array(0..<10), epoch: 0).images.scalars
        var flips = 0
        for i in 0..<10 {
            let row = Array(flipped[(i * 6)..<(i * 6 + 3)]).map { Int(($0 * 255).rounded()) }
            if row == [i * 10 + 2, i * 10 + 1, i * 10] { flips += 1 } else { XCTAssertEqual(row, [i * 10, i * 10 + 1, i * 10 + 2]) }
        }
        XCTAssertGreaterThan(flips, 0)
        XCTAssertLessThan(flips, 10)
        XCTAssertEqual(try flipping.makeBatch(0, of: Array(0..<10), epoch: 0).images.scalars, flipped, "flips are seeded")
    }

    func testSubsets() {
        let data = smallDataset()
        XCTAssertEqual(Subset(first: 3, of: data).count, 3)
        XCTAssertEqual(Subset(first: 3, of: data).label(at: 2), 2)
        let sample = Subset(sample: 4, of: data, seed: 1)
        XCTAssertEqual(Set(sample.indices).count, 4)
        XCTAssertEqual(sample.indices, Subset(sample: 4, of: data, seed: 1).indices)
    }
}
