import Data
import Foundation
import Store
import TensorCore
import TestSupport
import XCTest

/// Each transform against torchvision 0.29's output for the same parameters
/// (tools/make_fixtures.py, augment.safetensors), and the random draws against their definitions.
final class AugmentationTests: XCTestCase {
    static let fixture: [String: Tensor] = {
        return try! loadFixture("augment", from: .module)
    }()

    func image(_ key: String) -> AugmentImage {
        let t = Self.fixture[key]!
        return AugmentImage(channels: t.shape[0], height: t.shape[1], width: t.shape[2], pixels: t.scalars)
    }

    func assertMatches(_ got: AugmentImage, _ key: String, accuracy: Float = 2e-6, file: StaticString = #filePath, line: UInt = #line) {
        let want = Self.fixture[key]!
        XCTAssertEqual([got.channels, got.height, got.width], want.shape, key, file: file, line: line)
        let worst = zip(got.pixels, want.scalars).map { Swift.abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(worst, accuracy, "\(key): max difference \(worst)", file: file, line: line)
    }

    func testResizedCropMatchesTorchvisionAntialiasedBilinear() {
        // Downscaling, upscaling, identity, mixed and a thin box.
        for i in 0..<5 {
            let p = Self.fixture["crop\(i).params"]!.scalars.map { Int($0) }
            let out = Augment.resizedCrop(image("img3"), box: .init(top: p[0], left: p[1], height: p[2], width: p[3]), outHeight: p[4], outWidth: p[5])
            assertMatches(out, "crop\(i)")
        }
    }

    func testColourTransformsMatchTorchvision() {
        for tag in ["3", "1"] {
            var b = image("img\(tag)"); Augment.adjustBrightness(&b, factor: 1.3); assertMatches(b, "brightness\(tag)")
            var c = image("img\(tag)"); Augment.adjustContrast(&c, factor: 0.6); assertMatches(c, "contrast\(tag)")
            var c2 = image("img\(tag)"); Augment.adjustContrast(&c2, factor: 1.8); assertMatches(c2, "contrast_up\(tag)")
            var f = image("img\(tag)"); Augment.flipHorizontal(&f); assertMatches(f, "hflip\(tag)", accuracy: 0)
            var s = image("img\(tag)"); Augment.solarize(&s, threshold: 0.5); assertMatches(s, "solarize\(tag)", accuracy: 0)
            var g3 = image("img\(tag)"); Augment.gaussianBlur(&g3, kernelSize: 3, sigma: 1.3); assertMatches(g3, "blur3_\(tag)")
            var g5 = image("img\(tag)"); Augment.gaussianBlur(&g5, kernelSize: 5, sigma: 0.7); assertMatches(g5, "blur5_\(tag)")
        }
        var s = image("img3"); Augment.adjustSaturation(&s, factor: 1.7); assertMatches(s, "saturation3")
        var d = image("img3"); Augment.adjustSaturation(&d, factor: 0.3); assertMatches(d, "desaturation3")
        var h = image("img3"); Augment.adjustHue(&h, shift: 0.23); assertMatches(h, "hue3", accuracy: 1e-5)
        var hn = image("img3"); Augment.adjustHue(&hn, shift: -0.41); assertMatches(hn, "hue_neg3", accuracy: 1e-5)
        var g = image("img3"); Augment.grayscale(&g); assertMatches(g, "gray3")
        // Saturation, hue and grayscale leave a gray image as it is (torchvision: "match PIL").
        var gray = image("img1")
        Augment.adjustSaturation(&gray, factor: 0.2); Augment.adjustHue(&gray, shift: 0.3); Augment.grayscale(&gray)
        XCTAssertEqual(gray, image("img1"))
    }

    func testCropBoxesFollowTheirDistribution() {
        let rng = RandomStream(seed: 3, purpose: "test")
        var areas: [Double] = []
        for _ in 0..<4000 {
            let box = Augment.cropBox(height: 28, width: 28, scale: (0.05, 0.4), ratio: (3.0 / 4, 4.0 / 3), rng: rng)
            XCTAssertTrue(box.top >= 0 && box.left >= 0 && box.top + box.height <= 28 && box.left + box.width <= 28, "\(box)")
            let aspect = Double(box.width) / Double(box.height)
            // Rounding to whole pixels moves the ratio and area a little past their ranges.
            XCTAssertTrue(aspect > 0.5 && aspect < 2, "\(box)")
            areas.append(Double(box.width * box.height) / 784)
        }
        let mean = areas.reduce(0, +) / Double(areas.count)
        XCTAssertEqual(mean, 0.225, accuracy: 0.02, "area fraction is uniform on (0.05, 0.4)")
        XCTAssertTrue(areas.min()! > 0.02 && areas.max()! < 0.48)
        // Every position is reachable: the corners of small boxes cover the image.
        let tops = Set((0..<2000).map { _ in Augment.cropBox(height: 28, width: 28, scale: (0.05, 0.06), ratio: (1, 1), rng: rng).top })
        XCTAssertEqual(tops.min(), 0)
        XCTAssertEqual(tops.max(), 28 - 6)
        // No box fits (ratio far outside what the image allows): the central crop, clamped to the ratio.
        let fallback = Augment.cropBox(height: 10, width: 40, scale: (0.9, 1), ratio: (0.2, 0.5), rng: rng)
        XCTAssertEqual(fallback, .init(top: 0, left: 17, height: 10, width: 5))
    }

    func testColorJitterAppliesItsFactorsInARandomOrder() {
        // With only brightness, the result is the image times one factor in [0.6, 1.4].
        let spec = ColorJitter(probability: 1, brightness: 0.4, contrast: 0, saturation: 0, hue: 0)
        var img = AugmentImage(channels: 1, height: 2, width: 2, pixels: [0.1, 0.2, 0.3, 0.4])
        spec.apply(&img, rng: RandomStream(seed: 1))
        let factor = img.pixels[0] / 0.1
        XCTAssertTrue(factor >= 0.6 && factor <= 1.4, "\(factor)")
        for (a, b) in zip(img.pixels, [0.1, 0.2, 0.3, 0.4] as [Float]) { XCTAssertEqual(a, Swift.min(b * factor, 1), accuracy: 1e-6) }
        // All four on an RGB image: the orders differ between draws, and the output stays in [0, 1].
        let all = ColorJitter(probability: 1, brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2)
        let rng = RandomStream(seed: 2)
        for _ in 0..<50 {
            var x = image("img3")
            all.apply(&x, rng: rng)
            XCTAssertTrue(x.pixels.allSatisfy { $0 >= 0 && $0 <= 1 })
        }
    }

    func testViewPipelineIsSeededAndShapedPerView() {
        var global = ViewAugmentation(size: 28, scale: (0.4, 1))
        global.jitter = ColorJitter(probability: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1)
        (global.grayscale, global.blur, global.solarize) = (0.2, 1, 0.2)
        var local = ViewAugmentation(size: 12, scale: (0.05, 0.4))
        local.blur = 0.5
        let pipeline = ViewPipeline(views: [global, global, local, local, local])
        let rng = RandomStream(seed: 9)
        let images = (0..<4).map { _ in AugmentImage(channels: 1, height: 28, width: 28, pixels: (0..<784).map { _ in rng.nextFloat() }) }
        let a = pipeline.makeViews(images: images, mean: [0.5], std: [0.25], rng: RandomStream(seed: 1))
        let b = pipeline.makeViews(images: images, mean: [0.5], std: [0.25], rng: RandomStream(seed: 1))
        let c = pipeline.makeViews(images: images, mean: [0.5], std: [0.25], rng: RandomStream(seed: 2))
        XCTAssertEqual(a.map(\.shape), [[4, 1, 28, 28], [4, 1, 28, 28], [4, 1, 12, 12], [4, 1, 12, 12], [4, 1, 12, 12]])
        XCTAssertEqual(a.map(\.scalars), b.map(\.scalars), "same seed, same views")
        XCTAssertNotEqual(a[0].scalars, c[0].scalars)
        XCTAssertNotEqual(a[0].scalars, a[1].scalars, "two global views of one image differ")
        // Normalised: pixels in [0, 1] map into [-2, 2].
        XCTAssertTrue(a.allSatisfy { $0.scalars.allSatisfy { $0 >= -2 && $0 <= 2 } })
    }

    func testLoaderMakesViewsOnItsThreadDeterministically() throws {
        let pixels = (0..<(10 * 64)).map { UInt8(truncatingIfNeeded: $0 * 37) }
        let data = ByteImageDataset(name: "toy", imageShape: [1, 8, 8], classCount: 2, pixels: pixels, labels: (0..<10).map { UInt8($0 % 2) })
        func epoch() throws -> [[Float]] {
            let loader = DataLoader(data, batchSize: 4, shuffle: true, dropLast: true, mean: [0.5], std: [0.5], seed: 4)
            loader.views = ViewPipeline(views: [ViewAugmentation(size: 8, scale: (0.3, 1)), ViewAugmentation(size: 4, scale: (0.1, 0.5))])
            var out: [[Float]] = []
            for batch in try loader.allBatches() {
                XCTAssertEqual(batch.views.map { $0.shape }, [[4, 1, 8, 8], [4, 1, 4, 4]])
                out += batch.views.map { $0.scalars }
            }
            return out
        }
        XCTAssertEqual(try epoch(), try epoch())
    }
}
