import Foundation
import TensorCore

/// One image being augmented: channel-first floats in [0, 1].
public struct AugmentImage: Equatable {
    public var channels: Int, height: Int, width: Int
    public var pixels: [Float]

    public init(channels: Int, height: Int, width: Int, pixels: [Float]) {
        precondition(pixels.count == channels * height * width, "AugmentImage: \(pixels.count) pixels for \(channels)x\(height)x\(width)")
        (self.channels, self.height, self.width, self.pixels) = (channels, height, width, pixels)
    }

    public var plane: Int { height * width }
}

/// The image transforms of the siamese objectives, each with torchvision's semantics on float
/// tensors in [0, 1] (the tests compare them with torchvision's output). Every transform takes
/// its parameters explicitly; `ViewAugmentation` draws them.
public enum Augment {
    /// A crop box: top-left corner and size in pixels.
    public struct Box: Equatable, Sendable {
        public var top, left, height, width: Int
        public init(top: Int, left: Int, height: Int, width: Int) { (self.top, self.left, self.height, self.width) = (top, left, height, width) }
    }

    /// torchvision's RandomResizedCrop.get_params: up to ten draws of an area fraction in `scale`
    /// and a log-uniform aspect ratio in `ratio` until the box fits, else the central crop
    /// clamped to the ratio range. Sizes round half to even, as Python's round.
    public static func cropBox(height: Int, width: Int, scale: (Double, Double), ratio: (Double, Double), rng: RandomStream) -> Box {
        let area = Double(height * width)
        let logRatio = (Foundation.log(ratio.0), Foundation.log(ratio.1))
        for _ in 0..<10 {
            let target = area * (scale.0 + (scale.1 - scale.0) * rng.nextDouble())
            let aspect = Foundation.exp(logRatio.0 + (logRatio.1 - logRatio.0) * rng.nextDouble())
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let top = rng.nextInt(below: height - h + 1)
                let left = rng.nextInt(below: width - w + 1)
                return Box(top: top, left: left, height: h, width: w)
            }
        }
        let inRatio = Double(width) / Double(height)
        var (w, h) = (width, height)
        if inRatio < Swift.min(ratio.0, ratio.1) {
            h = Int((Double(w) / Swift.min(ratio.0, ratio.1)).rounded(.toNearestOrEven))
        } else if inRatio > Swift.max(ratio.0, ratio.1) {
            w = Int((Double(h) * Swift.max(ratio.0, ratio.1)).rounded(.toNearestOrEven))
        }
        return Box(top: (height - h) / 2, left: (width - w) / 2, height: h, width: w)
    }

    /// Antialiased resampling weights along one axis, as PIL and torch's
    /// `interpolate(..., mode='bilinear', antialias=True)`: a triangle (or PIL's bicubic) filter widened by the
    /// downscaling factor, normalised over the taps inside the input. Output i reads inputs
    /// first[i] ..< first[i] + taps (relative to the crop's start), weighted by weights[i * taps ...].
    struct AxisWeights {
        /// Output i reads inputs first[i] ..< first[i] + count[i] with weights[i * taps ..< i * taps + count[i]]
        /// (the filter's zero weights at both ends left out).
        let first: [Int]
        let count: [Int]
        let taps: Int
        let weights: [Float]

        init(input: Int, output: Int, filter: ResizeFilter = .bilinear) {
            let scale = Double(input) / Double(output)
            let support = (scale >= 1 ? scale : 1) * filter.support
            let invScale = scale >= 1 ? 1 / scale : 1
            let taps = Int(support.rounded(.up)) * 2 + 1
            var first = [Int](repeating: 0, count: output), count = [Int](repeating: 0, count: output)
            var weights = [Float](repeating: 0, count: output * taps)
            var row = [Double](repeating: 0, count: taps)
            for i in 0..<output {
                let center = scale * (Double(i) + 0.5)
                let lo = Swift.max(Int(center - support + 0.5), 0)
                let size = Swift.min(Swift.min(Int(center + support + 0.5), input) - lo, taps)
                var total = 0.0
                for j in 0..<taps { row[j] = 0 }
                for j in 0..<Swift.max(size, 0) {
                    let x = (Double(j + lo) - center + 0.5) * invScale
                    row[j] = filter.weight(x)
                    total += row[j]
                }
                var start = 0, end = Swift.max(size, 0)
                while start < end && row[start] == 0 { start += 1 }
                while end > start && row[end - 1] == 0 { end -= 1 }
                first[i] = lo + start
                count[i] = end - start
                for j in start..<end { weights[i * taps + j - start] = Float(total != 0 ? row[j] / total : row[j]) }
            }
            (self.first, self.count, self.taps, self.weights) = (first, count, taps, weights)
        }
    }

    /// Crops `box` out of `image` and resizes it to (outHeight, outWidth) with antialiased
    /// bilinear resampling (torchvision's resized_crop on a float tensor, antialias=True).
    public static func resizedCrop(_ image: AugmentImage, box: Box, outHeight: Int, outWidth: Int) -> AugmentImage {
        precondition(box.top >= 0 && box.left >= 0 && box.top + box.height <= image.height && box.left + box.width <= image.width,
                     "crop box \(box) outside a \(image.height)x\(image.width) image")
        return Resample.apply(image, box: box, resizedHeight: outHeight, resizedWidth: outWidth,
                              window: Box(top: 0, left: 0, height: outHeight, width: outWidth), filter: .bilinear)
    }

    /// Mirrors the image left to right.
    public static func flipHorizontal(_ image: inout AugmentImage) {
        let w = image.width
        image.pixels.withUnsafeMutableBufferPointer { p in
            for row in 0..<(image.channels * image.height) {
                let r = p.baseAddress! + row * w
                for x in 0..<(w / 2) { (r[x], r[w - 1 - x]) = (r[w - 1 - x], r[x]) }
            }
        }
    }

    /// torchvision's rgb_to_grayscale: 0.2989 R + 0.587 G + 0.114 B (one plane; a gray image is
    /// its own luminance).
    static func luminance(_ image: AugmentImage) -> [Float] {
        if image.channels == 1 { return image.pixels }
        let n = image.plane
        return image.pixels.withUnsafeBufferPointer { p in
            (0..<n).map { i in 0.2989 * p[i] + 0.587 * p[n + i] + 0.114 * p[2 * n + i] }
        }
    }

    /// clamp(factor * x + (1 - factor) * other, 0, 1), torchvision's _blend.
    static func blend(_ image: inout AugmentImage, factor: Float, other: (Int) -> Float) {
        let n = image.plane
        image.pixels.withUnsafeMutableBufferPointer { p in
            for ch in 0..<image.channels {
                for i in 0..<n {
                    let v = factor * p[ch * n + i] + (1 - factor) * other(i)
                    p[ch * n + i] = Swift.min(Swift.max(v, 0), 1)
                }
            }
        }
    }

    /// Multiplies by `factor`, clamped to [0, 1] (adjust_brightness).
    public static func adjustBrightness(_ image: inout AugmentImage, factor: Float) {
        blend(&image, factor: factor) { _ in 0 }
    }

    /// Blends with the mean luminance of the image (adjust_contrast).
    public static func adjustContrast(_ image: inout AugmentImage, factor: Float) {
        let gray = luminance(image)
        let mean = Float(gray.reduce(0.0) { $0 + Double($1) } / Double(gray.count))
        blend(&image, factor: factor) { _ in mean }
    }

    /// Blends with the per-pixel luminance (adjust_saturation); a gray image is unchanged.
    public static func adjustSaturation(_ image: inout AugmentImage, factor: Float) {
        guard image.channels == 3 else { return }
        let gray = luminance(image)
        blend(&image, factor: factor) { gray[$0] }
    }

    /// Rotates the hue by `shift` turns (adjust_hue, shift in [-0.5, 0.5]) through torchvision's
    /// HSV conversion; a gray image is unchanged.
    public static func adjustHue(_ image: inout AugmentImage, shift: Float) {
        guard image.channels == 3 else { return }
        let n = image.plane
        image.pixels.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                let (r, g, b) = (p[i], p[n + i], p[2 * n + i])
                let maxc = Swift.max(r, g, b), minc = Swift.min(r, g, b)
                let equal = maxc == minc
                let cr = maxc - minc
                let s = cr / (equal ? 1 : maxc)
                let divisor = equal ? 1 : cr
                let rc = (maxc - r) / divisor, gc = (maxc - g) / divisor, bc = (maxc - b) / divisor
                var h: Float
                if maxc == r { h = bc - gc } else if maxc == g { h = 2 + rc - bc } else { h = 4 + gc - rc }
                h = fmodf(h / 6 + 1, 1)
                h += shift
                h -= h.rounded(.down)
                let v = maxc
                let sector = (h * 6).rounded(.down)
                let f = h * 6 - sector
                let pp = Swift.min(Swift.max(v * (1 - s), 0), 1)
                let q = Swift.min(Swift.max(v * (1 - s * f), 0), 1)
                let t = Swift.min(Swift.max(v * (1 - s * (1 - f)), 0), 1)
                switch ((Int(sector) % 6) + 6) % 6 {
                case 0: (p[i], p[n + i], p[2 * n + i]) = (v, t, pp)
                case 1: (p[i], p[n + i], p[2 * n + i]) = (q, v, pp)
                case 2: (p[i], p[n + i], p[2 * n + i]) = (pp, v, t)
                case 3: (p[i], p[n + i], p[2 * n + i]) = (pp, q, v)
                case 4: (p[i], p[n + i], p[2 * n + i]) = (t, pp, v)
                default: (p[i], p[n + i], p[2 * n + i]) = (v, pp, q)
                }
            }
        }
    }

    /// Replaces every channel with the luminance (RandomGrayscale keeps the channel count).
    public static func grayscale(_ image: inout AugmentImage) {
        guard image.channels == 3 else { return }
        let gray = luminance(image)
        let n = image.plane
        for ch in 0..<3 { image.pixels.replaceSubrange((ch * n)..<((ch + 1) * n), with: gray) }
    }

    /// torchvision's gaussian_blur: a normalised 1-D Gaussian of `kernelSize` taps on
    /// linspace(-(k-1)/2, (k-1)/2) in both directions, reflect padding (kernelSize odd).
    public static func gaussianBlur(_ image: inout AugmentImage, kernelSize: Int, sigma: Float) {
        precondition(kernelSize % 2 == 1 && kernelSize > 0, "gaussian blur needs an odd kernel size")
        let half = kernelSize / 2
        var kernel = (0..<kernelSize).map { k -> Float in
            let x = Float(k) - Float(kernelSize - 1) * 0.5
            return Foundation.exp(-0.5 * (x / sigma) * (x / sigma))
        }
        let total = kernel.reduce(0, +)
        kernel = kernel.map { $0 / total }
        let (h, w) = (image.height, image.width)
        precondition(half < h && half < w, "a \(kernelSize)-tap blur needs images larger than \(half) pixels")
        func reflect(_ i: Int, _ n: Int) -> Int { i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i) }
        var tmp = [Float](repeating: 0, count: h * w)
        image.pixels.withUnsafeMutableBufferPointer { p in
            tmp.withUnsafeMutableBufferPointer { t in
                for ch in 0..<image.channels {
                    let plane = p.baseAddress! + ch * h * w
                    for y in 0..<h {
                        for x in 0..<w {
                            var s: Float = 0
                            for k in 0..<kernelSize { s += kernel[k] * plane[y * w + reflect(x + k - half, w)] }
                            t[y * w + x] = s
                        }
                    }
                    for y in 0..<h {
                        for x in 0..<w {
                            var s: Float = 0
                            for k in 0..<kernelSize { s += kernel[k] * t[reflect(y + k - half, h) * w + x] }
                            plane[y * w + x] = s
                        }
                    }
                }
            }
        }
    }

    /// Inverts every value at or above `threshold` (torchvision's solarize on floats).
    public static func solarize(_ image: inout AugmentImage, threshold: Float) {
        for i in image.pixels.indices where image.pixels[i] >= threshold { image.pixels[i] = 1 - image.pixels[i] }
    }
}

/// Colour jitter: with probability `probability`, brightness, contrast, saturation and hue
/// factors drawn uniformly (brightness in [max(0, 1 - b), 1 + b], hue in [-h, h]) and applied in
/// a random order, as torchvision's ColorJitter. On gray images only brightness and contrast act.
public struct ColorJitter: Equatable, Sendable {
    public var probability: Double
    public var brightness: Double, contrast: Double, saturation: Double, hue: Double
    public init(probability: Double, brightness: Double, contrast: Double, saturation: Double, hue: Double) {
        (self.probability, self.brightness, self.contrast, self.saturation, self.hue) = (probability, brightness, contrast, saturation, hue)
    }

    public func apply(_ image: inout AugmentImage, rng: RandomStream) {
        let order = rng.permutation(4)
        func factor(_ amount: Double) -> Float { Float(Swift.max(0, 1 - amount) + (1 + amount - Swift.max(0, 1 - amount)) * rng.nextDouble()) }
        let b = factor(brightness), c = factor(contrast), s = factor(saturation)
        let h = Float(-hue + 2 * hue * rng.nextDouble())
        for op in order {
            switch op {
            case 0 where brightness > 0: Augment.adjustBrightness(&image, factor: b)
            case 1 where contrast > 0: Augment.adjustContrast(&image, factor: c)
            case 2 where saturation > 0: Augment.adjustSaturation(&image, factor: s)
            case 3 where hue > 0: Augment.adjustHue(&image, shift: h)
            default: break
            }
        }
    }
}

/// How one view of an image is made: a random resized crop to `size`, then (each with its
/// probability) a horizontal flip, colour jitter, grayscale, Gaussian blur and solarisation,
/// in the order of DINO's and BYOL's pipelines.
public struct ViewAugmentation: Equatable, Sendable {
    public var size: Int
    public var scale: (Double, Double)
    public var ratio: (Double, Double) = (3.0 / 4.0, 4.0 / 3.0)
    public var flip: Double = 0.5
    public var jitter: ColorJitter? = nil
    public var grayscale: Double = 0
    public var blur: Double = 0
    public var blurKernel: Int = 3
    public var blurSigma: (Double, Double) = (0.1, 2.0)
    public var solarize: Double = 0
    public var solarizeThreshold: Float = 0.5

    public init(size: Int, scale: (Double, Double)) {
        self.size = size
        self.scale = scale
    }

    public static func == (a: ViewAugmentation, b: ViewAugmentation) -> Bool {
        a.size == b.size && a.scale == b.scale && a.ratio == b.ratio && a.flip == b.flip && a.jitter == b.jitter
            && a.grayscale == b.grayscale && a.blur == b.blur && a.blurKernel == b.blurKernel && a.blurSigma == b.blurSigma
            && a.solarize == b.solarize && a.solarizeThreshold == b.solarizeThreshold
    }

    /// The view of `image`, drawing every random choice from `rng` in a fixed order.
    public func apply(_ image: AugmentImage, rng: RandomStream) -> AugmentImage {
        let box = Augment.cropBox(height: image.height, width: image.width, scale: scale, ratio: ratio, rng: rng)
        var view = Augment.resizedCrop(image, box: box, outHeight: size, outWidth: size)
        if rng.nextDouble() < flip { Augment.flipHorizontal(&view) }
        if let jitter, rng.nextDouble() < jitter.probability { jitter.apply(&view, rng: rng) }
        if rng.nextDouble() < grayscale { Augment.grayscale(&view) }
        if rng.nextDouble() < blur {
            let sigma = Float(blurSigma.0 + (blurSigma.1 - blurSigma.0) * rng.nextDouble())
            Augment.gaussianBlur(&view, kernelSize: blurKernel, sigma: sigma)
        }
        if rng.nextDouble() < solarize { Augment.solarize(&view, threshold: solarizeThreshold) }
        return view
    }
}

/// The views an objective trains on (DINO's 2 global + N local crops, BYOL's 2 views): each
/// image of a batch becomes one image per entry of `views`, normalised with mean and std.
public struct ViewPipeline: Equatable, Sendable {
    public var views: [ViewAugmentation]
    public init(views: [ViewAugmentation]) { self.views = views }

    /// The views of a batch (one tensor (B, C, size, size) per view), normalised per channel;
    /// draws from `rng` image by image, view by view.
    public func makeViews(images: [AugmentImage], mean: [Float], std: [Float], rng: RandomStream) -> [Tensor] {
        makeViews(images: images, mean: mean, std: std, rngs: images.map { _ in rng })
    }

    /// The same with one stream per image (`rngs[k]` draws image k's views, view by view), so an
    /// image's views do not depend on the images before it in the batch.
    public func makeViews(images: [AugmentImage], mean: [Float], std: [Float], rngs: [RandomStream]) -> [Tensor] {
        precondition(rngs.count == images.count, "makeViews: one stream per image")
        let c = images.first?.channels ?? 1
        let storages = views.map { Storage(uninitializedCount: images.count * c * $0.size * $0.size) }
        for (k, image) in images.enumerated() {
            for (v, spec) in views.enumerated() {
                let view = spec.apply(image, rng: rngs[k])
                let n = view.plane
                let out = storages[v].base + k * c * n
                for ch in 0..<c {
                    let m = mean[mean.count == 1 ? 0 : ch], s = 1 / std[std.count == 1 ? 0 : ch]
                    for i in 0..<n { out[ch * n + i] = (view.pixels[ch * n + i] - m) * s }
                }
            }
        }
        return zip(views, storages).map { spec, storage in Tensor(shape: [images.count, c, spec.size, spec.size], storage: storage) }
    }
}
