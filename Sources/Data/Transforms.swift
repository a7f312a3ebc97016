import Foundation
import TensorCore

/// The resampling filters of PIL's resize (and torchvision's Resize on PIL images), both
/// antialiased: widened by the downscaling factor.
public enum ResizeFilter: String, Sendable, CaseIterable {
    case bilinear, bicubic

    /// Half-width of the filter at scale 1.
    var support: Double { self == .bilinear ? 1 : 2 }

    /// PIL's filters: the triangle, and the cubic convolution with a = -0.5.
    func weight(_ x: Double) -> Double {
        switch self {
        case .bilinear: return Swift.max(0, 1 - Swift.abs(x))
        case .bicubic:
            let a = -0.5, t = Swift.abs(x)
            if t < 1 { return ((a + 2) * t - (a + 3)) * t * t + 1 }
            if t < 2 { return (((t - 5) * t + 8) * t - 4) * a }
            return 0
        }
    }
}

extension ResizeFilter {
    /// The antialiased resampling of one axis of `input` samples to `output` as a dense
    /// (output, input) matrix: PIL's weights, which are torch's interpolate(antialias=True).
    public func matrix(input: Int, output: Int) -> [Float] {
        let w = Augment.AxisWeights(input: input, output: output, filter: self)
        var out = [Float](repeating: 0, count: output * input)
        for i in 0..<output { for j in 0..<w.count[i] { out[i * input + w.first[i] + j] = w.weights[i * w.taps + j] } }
        return out
    }
}

/// How an image of any size becomes the (C, size, size) image an encoder sees, with
/// torchvision's semantics on PIL images:
/// - `center`: Resize(resize) on the shorter side (the longer one int(resize * long / short)),
///   then CenterCrop(size), the evaluation transform (resize = floor(size / crop_pct), timm's
///   convention; torchvision's ImageNet recipe is resize 256 for size 224, crop_pct 0.875);
/// - `randomResizedCrop`: RandomResizedCrop(size, scale, ratio), the training transform.
public struct ImageTransform: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case center(resize: Int)
        case randomResizedCrop(scale: [Double], ratio: [Double])
    }

    public var size: Int
    public var kind: Kind
    public var filter: ResizeFilter

    public init(size: Int, kind: Kind, filter: ResizeFilter = .bilinear) {
        (self.size, self.kind, self.filter) = (size, kind, filter)
    }

    /// The evaluation transform for crop fraction `cropPct` (1: resize straight to `size`).
    public static func center(size: Int, cropPct: Double, filter: ResizeFilter = .bilinear) -> ImageTransform {
        ImageTransform(size: size, kind: .center(resize: Int((Double(size) / cropPct).rounded(.down))), filter: filter)
    }

    /// Whether images of height x width come out unchanged (a stored data set at its own size).
    public func isIdentity(height: Int, width: Int) -> Bool {
        if case .center(let resize) = kind { return resize == size && height == size && width == size }
        return false
    }

    /// torchvision's Resize(int) output size (height, width) for an image of height x width.
    public static func resized(height: Int, width: Int, shorter: Int) -> (height: Int, width: Int) {
        if width <= height { return (Int(Double(shorter) * Double(height) / Double(width)), shorter) }
        return (shorter, Int(Double(shorter) * Double(width) / Double(height)))
    }

    /// The crop of a stored height x width image this transform reads, drawing from `rng` for the
    /// random crop: the source box, the size it is resized to, and the window of that resized
    /// image kept (the centre crop).
    public func plan(height: Int, width: Int, rng: RandomStream?) -> Plan {
        switch kind {
        case .center(let resize):
            let (rh, rw) = Self.resized(height: height, width: width, shorter: resize)
            let top = Int((Double(rh - size) / 2).rounded(.toNearestOrEven)), left = Int((Double(rw - size) / 2).rounded(.toNearestOrEven))
            return Plan(box: Augment.Box(top: 0, left: 0, height: height, width: width), resizedHeight: rh, resizedWidth: rw,
                        window: Augment.Box(top: top, left: left, height: size, width: size))
        case .randomResizedCrop(let scale, let ratio):
            let box = Augment.cropBox(height: height, width: width, scale: (scale[0], scale[1]), ratio: (ratio[0], ratio[1]),
                                      rng: rng ?? RandomStream(seed: 0, purpose: "crop"))
            return Plan(box: box, resizedHeight: size, resizedWidth: size, window: Augment.Box(top: 0, left: 0, height: size, width: size))
        }
    }

    /// A transform's plan: resize `box` of the source to resizedHeight x resizedWidth and keep `window`.
    public struct Plan: Equatable, Sendable {
        public var box: Augment.Box
        public var resizedHeight: Int, resizedWidth: Int
        public var window: Augment.Box

        public init(box: Augment.Box, resizedHeight: Int, resizedWidth: Int, window: Augment.Box) {
            (self.box, self.resizedHeight, self.resizedWidth, self.window) = (box, resizedHeight, resizedWidth, window)
        }

        /// The JPEG reduction (1, 2, 4, 8) that keeps the box at least as large as its resized size,
        /// so the DCT-domain downscale replaces part of the resampling (only when the box is at
        /// least twice the output).
        public var reduction: Int {
            ImageDecoder.reductions.last { d in box.height / d >= resizedHeight && box.width / d >= resizedWidth } ?? 1
        }

        /// The plan for the same image decoded at (height, width) instead of (storedHeight, storedWidth).
        public func scaled(fromHeight storedHeight: Int, width storedWidth: Int, toHeight height: Int, width: Int) -> Plan {
            guard storedHeight != height || storedWidth != width else { return self }
            let sy = Double(height) / Double(storedHeight), sx = Double(width) / Double(storedWidth)
            let top = Swift.min(Int((Double(box.top) * sy).rounded()), height - 1)
            let left = Swift.min(Int((Double(box.left) * sx).rounded()), width - 1)
            let h = Swift.max(1, Swift.min(Int((Double(box.height) * sy).rounded()), height - top))
            let w = Swift.max(1, Swift.min(Int((Double(box.width) * sx).rounded()), width - left))
            var plan = self
            plan.box = Augment.Box(top: top, left: left, height: h, width: w)
            return plan
        }
    }

    /// Applies `plan` to `image` (float planar, in [0, 1]): the box resized with this filter, then
    /// the window. Bicubic results are clamped to [0, 1], as PIL's 8-bit resampling is.
    public func apply(_ plan: Plan, to image: AugmentImage) -> AugmentImage {
        let box = plan.box, window = plan.window
        if box == Augment.Box(top: 0, left: 0, height: image.height, width: image.width) && plan.resizedHeight == image.height
            && plan.resizedWidth == image.width && window == box { return image }
        return Resample.apply(image, box: box, resizedHeight: plan.resizedHeight, resizedWidth: plan.resizedWidth, window: window,
                              filter: filter)
    }
}

/// Separable antialiased resampling of a box of an image to a resized size, computing only a
/// window of the result (a centre crop costs only its own pixels).
enum Resample {
    static func apply(_ image: AugmentImage, box: Augment.Box, resizedHeight: Int, resizedWidth: Int, window: Augment.Box,
                      filter: ResizeFilter) -> AugmentImage {
        let wx = Augment.AxisWeights(input: box.width, output: resizedWidth, filter: filter)
        let wy = Augment.AxisWeights(input: box.height, output: resizedHeight, filter: filter)
        let c = image.channels, (oh, ow) = (window.height, window.width)
        // The vertical pass reads only the box rows some output row needs.
        let rowLo = (window.top..<(window.top + oh)).map { wy.first[$0] }.min() ?? 0
        let rowHi = (window.top..<(window.top + oh)).map { wy.first[$0] + wy.count[$0] }.max() ?? 0
        let rowsNeeded = Swift.max(rowHi - rowLo, 0)
        var rows = [Float](repeating: 0, count: c * rowsNeeded * ow)
        var out = [Float](repeating: 0, count: c * oh * ow)
        let clamp = filter == .bicubic
        image.pixels.withUnsafeBufferPointer { srcBuffer in
        rows.withUnsafeMutableBufferPointer { tmpBuffer in
        out.withUnsafeMutableBufferPointer { dstBuffer in
        wx.weights.withUnsafeBufferPointer { wxw in
        wx.first.withUnsafeBufferPointer { wxf in
        wx.count.withUnsafeBufferPointer { wxc in
            let src = srcBuffer.baseAddress!, tmp = tmpBuffer.baseAddress!, dst = dstBuffer.baseAddress!
            let weightsX = wxw.baseAddress!, firstX = wxf.baseAddress! + window.left, countX = wxc.baseAddress! + window.left
            let tapsX = wx.taps
            for ch in 0..<c {
                for y in 0..<rowsNeeded {
                    let line = src + (ch * image.height + box.top + rowLo + y) * image.width + box.left
                    let row = tmp + (ch * rowsNeeded + y) * ow
                    for x in 0..<ow {
                        let from = line + firstX[x], w = weightsX + (window.left + x) * tapsX
                        var s: Float = 0
                        for j in 0..<countX[x] { s += from[j] * w[j] }
                        row[x] = s
                    }
                }
            }
            for ch in 0..<c {
                for y in 0..<oh {
                    let yi = window.top + y
                    let row = dst + (ch * oh + y) * ow
                    for j in 0..<wy.count[yi] {
                        let w = wy.weights[yi * wy.taps + j]
                        let from = tmp + (ch * rowsNeeded + wy.first[yi] - rowLo + j) * ow
                        for x in 0..<ow { row[x] += w * from[x] }
                    }
                    if clamp { for x in 0..<ow { row[x] = Swift.min(Swift.max(row[x], 0), 1) } }
                }
            }
        }}}}}}
        return AugmentImage(channels: c, height: oh, width: ow, pixels: out)
    }
}
