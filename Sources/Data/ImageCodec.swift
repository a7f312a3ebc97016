import CCodecs
import CTurboJPEG
import CWebP
import Foundation

/// A decoded image: 8-bit samples, rows top to bottom, channels interleaved (1: gray, 3: RGB).
public struct DecodedImage: Equatable {
    public var width: Int, height: Int, channels: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "DecodedImage: \(pixels.count) bytes for \(width)x\(height)x\(channels)")
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }

    /// PIL's convert("RGB") of a gray image (the value repeated), or the image itself.
    public func rgb() -> DecodedImage {
        guard channels == 1 else { return self }
        var out = [UInt8](repeating: 0, count: pixels.count * 3)
        for i in pixels.indices { (out[3 * i], out[3 * i + 1], out[3 * i + 2]) = (pixels[i], pixels[i], pixels[i]) }
        return DecodedImage(width: width, height: height, channels: 3, pixels: out)
    }

    /// PIL's convert("L") of an RGB image: (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
    public func gray() -> DecodedImage {
        guard channels == 3 else { return self }
        var out = [UInt8](repeating: 0, count: width * height)
        for i in out.indices {
            let v = 19595 * Int(pixels[3 * i]) + 38470 * Int(pixels[3 * i + 1]) + 7471 * Int(pixels[3 * i + 2]) + 0x8000
            out[i] = UInt8(v >> 16)
        }
        return DecodedImage(width: width, height: height, channels: 1, pixels: out)
    }
}

/// A decoded part of an image: `image` holds rows top ..< top + image.height and columns
/// left ..< left + image.width of the (perhaps reduced) fullHeight x fullWidth image.
public struct DecodedRegion {
    public var image: DecodedImage
    public var top: Int, left: Int
    public var fullHeight: Int, fullWidth: Int

    public init(whole image: DecodedImage) {
        (self.image, top, left, fullHeight, fullWidth) = (image, 0, 0, image.height, image.width)
    }

    public init(image: DecodedImage, top: Int, left: Int, fullHeight: Int, fullWidth: Int) {
        (self.image, self.top, self.left, self.fullHeight, self.fullWidth) = (image, top, left, fullHeight, fullWidth)
    }
}

/// The image formats an image folder may hold, recognised from the first bytes.
public enum ImageFormat: String, Sendable, CaseIterable {
    case jpeg = "JPEG", png = "PNG", webp = "WebP", bmp = "BMP", pnm = "PPM/PGM"

    /// The extensions torchvision's ImageFolder accepts that the workbench decodes (lower case).
    public static let extensions: Set<String> = ["jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm"]

    public static func sniff(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
        func starts(_ magic: [UInt8], at offset: Int = 0) -> Bool {
            bytes.count >= offset + magic.count && magic.enumerated().allSatisfy { bytes[offset + $0.offset] == $0.element }
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .webp }
        if starts(Array("BM".utf8)) { return .bmp }
        if starts([0x50]) && bytes.count > 1 && (bytes[1] == 0x35 || bytes[1] == 0x36) { return .pnm }
        return nil
    }
}

/// Why an image could not be decoded (the data set adds the file's path).
public struct ImageDecodingError: Error, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Decodes JPEG (libjpeg-turbo's TurboJPEG, with its DCT-domain downscaling), PNG (libpng),
/// WebP (libwebp) and the uncompressed BMP and binary PPM/PGM files. Holds a TurboJPEG handle:
/// one decoder per thread. Refuses images over PIL's decompression-bomb limit (178956970 pixels).
public final class ImageDecoder {
    public static let maxPixels = 178_956_970
    private let jpeg: tjhandle?

    public init() { jpeg = tjInitDecompress() }
    deinit { if let jpeg { tjDestroy(jpeg) } }

    /// Format and size (width, height) from the header alone.
    public func header(_ bytes: UnsafeRawBufferPointer) throws -> (format: ImageFormat, width: Int, height: Int) {
        guard let format = ImageFormat.sniff(bytes) else { throw ImageDecodingError("not a JPEG, PNG, WebP, BMP or PPM/PGM image (unknown first bytes)") }
        let (w, h): (Int, Int)
        switch format {
        case .jpeg: (w, h) = try jpegHeader(bytes).size
        case .png:
            var width: UInt32 = 0, height: UInt32 = 0, c: Int32 = 0, d: Int32 = 0
            var error = [CChar](repeating: 0, count: 256)
            guard wb_png_info(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &width, &height, &c, &d, &error, 256) == 0 else {
                throw ImageDecodingError("PNG: " + String(cString: error))
            }
            (w, h) = (Int(width), Int(height))
        case .webp:
            var width: Int32 = 0, height: Int32 = 0
            guard WebPGetInfo(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &width, &height) != 0 else {
                throw ImageDecodingError("WebP: the header is not valid")
            }
            (w, h) = (Int(width), Int(height))
        case .bmp: (w, h) = try BMP.header(bytes).size
        case .pnm: (w, h) = try PNM.header(bytes).size
        }
        guard w > 0, h > 0 else { throw ImageDecodingError("\(format.rawValue): the image has no pixels (\(w)x\(h))") }
        guard w * h <= Self.maxPixels else {
            throw ImageDecodingError("\(format.rawValue): \(w)x\(h) is more than \(Self.maxPixels) pixels (a decompression bomb?)")
        }
        return (format, w, h)
    }

    /// The JPEG scale denominators (1, 2, 4, 8) that TurboJPEG decodes directly.
    public static let reductions = [1, 2, 4, 8]

    /// Decodes the image. A JPEG is decoded reduced by `reduction(width, height)` (1, 2, 4 or 8;
    /// each side becomes ceil(side / reduction)) in the DCT domain; other formats decode whole.
    public func decode(_ bytes: UnsafeRawBufferPointer, reduction: (Int, Int) -> Int = { _, _ in 1 }) throws -> DecodedImage {
        let (format, w, h) = try header(bytes)
        return try decodeWhole(bytes, format: format, width: w, height: h, reduction: reduction(w, h))
    }

    /// The whole image, its header already read.
    private func decodeWhole(_ bytes: UnsafeRawBufferPointer, format: ImageFormat, width w: Int, height h: Int, reduction: Int) throws -> DecodedImage {
        switch format {
        case .jpeg: return try decodeJPEG(bytes, reduction: reduction)
        case .png: return try decodePNG(bytes)
        case .webp: return try decodeWebP(bytes, width: w, height: h)
        case .bmp: return try BMP.decode(bytes)
        case .pnm: return try PNM.decode(bytes)
        }
    }

    /// Decodes what `request(storedHeight, storedWidth)` asks for, the header read once: a JPEG
    /// only the rows and columns (whole iMCUs) of the region, reduced in the DCT domain, through
    /// libjpeg; every other format, and a request without a region, whole.
    public func decodeRegion(_ bytes: UnsafeRawBufferPointer, _ request: (Int, Int) -> DecodeRequest) throws
        -> (region: DecodedRegion, storedHeight: Int, storedWidth: Int) {
        let (format, w, h) = try header(bytes)
        let request = request(h, w)
        guard format == .jpeg, let box = request.region else {
            return (DecodedRegion(whole: try decodeWhole(bytes, format: format, width: w, height: h, reduction: request.reduction)), h, w)
        }
        let d = Self.reductions.contains(request.reduction) ? request.reduction : 1
        let (fh, fw) = ((h + d - 1) / d, (w + d - 1) / d)
        let sy = Double(fh) / Double(h), sx = Double(fw) / Double(w)
        // The region in reduced coordinates, a pixel wider than the crop's rounded mapping.
        let y0 = Swift.max(0, Int((Double(box.top) * sy).rounded(.down)) - 1)
        let y1 = Swift.min(fh, Int((Double(box.top + box.height) * sy).rounded(.up)) + 1)
        let x0 = Swift.max(0, Int((Double(box.left) * sx).rounded(.down)) - 1)
        let x1 = Swift.min(fw, Int((Double(box.left + box.width) * sx).rounded(.up)) + 1)
        guard y1 > y0, x1 > x0 else { return (DecodedRegion(whole: try decodeWhole(bytes, format: format, width: w, height: h, reduction: d)), h, w) }
        var buffer = [UInt8](repeating: 0, count: (y1 - y0) * fw * 4)
        var error = [CChar](repeating: 0, count: 256)
        var outX: Int32 = 0, outCols: Int32 = 0, channels: Int32 = 0
        let status = buffer.withUnsafeMutableBufferPointer { out in
            wb_jpeg_decode_region(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, Int32(d), Int32(y0), Int32(y1 - y0), Int32(x0), Int32(x1 - x0),
                                  out.baseAddress, out.count, &outX, &outCols, &channels, &error, 256)
        }
        guard status == 0 else { throw ImageDecodingError("JPEG: " + String(cString: error)) }
        let (cols, c) = (Int(outCols), Int(channels))
        buffer.removeSubrange(((y1 - y0) * cols * c)...)
        var image = DecodedImage(width: cols, height: y1 - y0, channels: c, pixels: buffer)
        if c == 4 { image = Self.cmykToRGB(image) }
        return (DecodedRegion(image: image, top: y0, left: Int(outX), fullHeight: fh, fullWidth: fw), h, w)
    }

    /// PIL's CMYK to RGB of an Adobe (inverted) CMYK JPEG: R = C * K / 255 on the stored values.
    static func cmykToRGB(_ image: DecodedImage) -> DecodedImage {
        let n = image.width * image.height
        var rgb = [UInt8](repeating: 0, count: n * 3)
        for i in 0..<n {
            let k = Int(image.pixels[4 * i + 3])
            for ch in 0..<3 {
                let v = Int(image.pixels[4 * i + ch]) * k + 128
                rgb[3 * i + ch] = UInt8((v + (v >> 8)) >> 8)
            }
        }
        return DecodedImage(width: image.width, height: image.height, channels: 3, pixels: rgb)
    }

    private func jpegError() -> String {
        String(cString: tjGetErrorStr2(jpeg))
    }

    private func jpegHeader(_ bytes: UnsafeRawBufferPointer) throws -> (size: (Int, Int), colorspace: Int32) {
        guard let jpeg else { throw ImageDecodingError("JPEG: TurboJPEG could not start") }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(jpeg, bytes.bindMemory(to: UInt8.self).baseAddress, UInt(bytes.count), &width, &height, &subsampling, &colorspace) == 0 else {
            throw ImageDecodingError("JPEG: " + jpegError())
        }
        return ((Int(width), Int(height)), colorspace)
    }

    private func decodeJPEG(_ bytes: UnsafeRawBufferPointer, reduction: Int) throws -> DecodedImage {
        let ((w, h), colorspace) = try jpegHeader(bytes)
        let d = Self.reductions.contains(reduction) ? reduction : 1
        let (sw, sh) = ((w + d - 1) / d, (h + d - 1) / d)
        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let gray = colorspace == Int32(TJCS_GRAY.rawValue)
        let channels = cmyk ? 4 : (gray ? 1 : 3)
        let format = cmyk ? TJPF_CMYK : (gray ? TJPF_GRAY : TJPF_RGB)
        var pixels = [UInt8](repeating: 0, count: sw * sh * channels)
        let status = pixels.withUnsafeMutableBufferPointer { out in
            tjDecompress2(jpeg, bytes.bindMemory(to: UInt8.self).baseAddress, UInt(bytes.count), out.baseAddress,
                          Int32(sw), 0, Int32(sh), format.rawValue, TJFLAG_LIMITSCANS)
        }
        if status != 0 {
            let message = jpegError()
            // Warnings leave a usable image, except a file that ends early (PIL: "image file is truncated").
            if tjGetErrorCode(jpeg) != TJERR_WARNING.rawValue || message.contains("Premature end") {
                throw ImageDecodingError("JPEG: " + message + (message.contains("Premature end") ? " (the file is truncated)" : ""))
            }
        }
        let image = DecodedImage(width: sw, height: sh, channels: channels, pixels: pixels)
        return cmyk ? Self.cmykToRGB(image) : image
    }

    private func decodePNG(_ bytes: UnsafeRawBufferPointer) throws -> DecodedImage {
        var width: UInt32 = 0, height: UInt32 = 0, c: Int32 = 0, d: Int32 = 0
        var error = [CChar](repeating: 0, count: 256)
        let data = bytes.bindMemory(to: UInt8.self).baseAddress
        guard wb_png_info(data, bytes.count, &width, &height, &c, &d, &error, 256) == 0 else { throw ImageDecodingError("PNG: " + String(cString: error)) }
        let (w, h, channels) = (Int(width), Int(height), Int(c))
        var raw = [UInt8](repeating: 0, count: w * h * channels * Int(d) / 8)
        let status = raw.withUnsafeMutableBufferPointer { wb_png_decode(data, bytes.count, $0.baseAddress, $0.count, &error, 256) }
        guard status == 0 else { throw ImageDecodingError("PNG: " + String(cString: error)) }
        guard d == 16 else { return DecodedImage(width: w, height: h, channels: channels, pixels: raw) }
        // 16-bit gray opens in PIL as mode I;16, whose convert("RGB") clips every value above 255.
        var pixels = [UInt8](repeating: 0, count: w * h)
        for i in pixels.indices {
            let v = Int(raw[2 * i]) << 8 | Int(raw[2 * i + 1])
            pixels[i] = UInt8(Swift.min(v, 255))
        }
        return DecodedImage(width: w, height: h, channels: 1, pixels: pixels)
    }

    private func decodeWebP(_ bytes: UnsafeRawBufferPointer, width: Int, height: Int) throws -> DecodedImage {
        var features = WebPBitstreamFeatures()
        guard WebPGetFeatures(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, &features) == VP8_STATUS_OK else {
            throw ImageDecodingError("WebP: the header is not valid")
        }
        guard features.has_animation == 0 else { throw ImageDecodingError("WebP: animated WebP files are not supported; save one frame") }
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        let result = pixels.withUnsafeMutableBufferPointer {
            WebPDecodeRGBInto(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count, $0.baseAddress, $0.count, Int32(width * 3))
        }
        guard result != nil else { throw ImageDecodingError("WebP: the image data is corrupt or truncated") }
        return DecodedImage(width: width, height: height, channels: 3, pixels: pixels)
    }
}

/// Reads fields of little- and big-endian files with bounds checks.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    func u8(_ o: Int) throws -> Int {
        guard o >= 0, o < bytes.count else { throw ImageDecodingError("the file ends early (truncated)") }
        return Int(bytes[o])
    }
    func le16(_ o: Int) throws -> Int {
        let lo = try u8(o), hi = try u8(o + 1)
        return lo | hi << 8
    }
    func le32(_ o: Int) throws -> Int {
        let lo = try le16(o), hi = try le16(o + 2)
        return lo | hi << 16
    }
    func le32s(_ o: Int) throws -> Int { Int(Int32(truncatingIfNeeded: UInt32(try le32(o)))) }
}

/// Uncompressed Windows bitmaps (BI_RGB): 1, 4 and 8 bits with a palette, 24 and 32 bits, rows
/// bottom-up or top-down. Compressed and bit-field variants are refused with their names.
enum BMP {
    struct Header { var size: (Int, Int); var bits: Int; var topDown: Bool; var offset: Int; var paletteAt: Int; var colors: Int }

    static func header(_ bytes: UnsafeRawBufferPointer) throws -> Header {
        let r = ByteReader(bytes: bytes)
        let offset = try r.le32(10), infoSize = try r.le32(14)
        guard infoSize >= 40 else { throw ImageDecodingError("BMP: OS/2 bitmaps (header of \(infoSize) bytes) are not supported") }
        let width = try r.le32s(18), rawHeight = try r.le32s(22)
        let bits = try r.le16(28), compression = try r.le32(30)
        guard compression == 0 else {
            let name = [1: "RLE8", 2: "RLE4", 3: "BITFIELDS", 4: "JPEG", 5: "PNG"][compression] ?? "compression \(compression)"
            throw ImageDecodingError("BMP: \(name) bitmaps are not supported; save it uncompressed or as PNG")
        }
        guard [1, 4, 8, 24, 32].contains(bits) else { throw ImageDecodingError("BMP: \(bits)-bit bitmaps are not supported") }
        guard width > 0, rawHeight != 0, width <= 1 << 20, Swift.abs(rawHeight) <= 1 << 20 else {
            throw ImageDecodingError("BMP: invalid size \(width)x\(rawHeight)")
        }
        var colors = try r.le32(46)
        if colors == 0 && bits <= 8 { colors = 1 << bits }
        return Header(size: (width, Swift.abs(rawHeight)), bits: bits, topDown: rawHeight < 0, offset: offset, paletteAt: 14 + infoSize, colors: colors)
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> DecodedImage {
        let hd = try header(bytes)
        let r = ByteReader(bytes: bytes)
        let (w, h) = hd.size
        let stride = ((w * hd.bits + 31) / 32) * 4
        guard hd.offset >= 0, hd.offset + stride * h <= bytes.count else { throw ImageDecodingError("BMP: the file ends early (truncated)") }
        var palette: [(UInt8, UInt8, UInt8)] = []
        if hd.bits <= 8 {
            guard hd.colors <= 256 else { throw ImageDecodingError("BMP: a palette of \(hd.colors) colours") }
            for i in 0..<hd.colors {
                let o = hd.paletteAt + 4 * i
                palette.append((UInt8(try r.u8(o + 2)), UInt8(try r.u8(o + 1)), UInt8(try r.u8(o))))
            }
        }
        var pixels = [UInt8](repeating: 0, count: w * h * 3)
        for y in 0..<h {
            let row = hd.offset + (hd.topDown ? y : h - 1 - y) * stride
            for x in 0..<w {
                let out = 3 * (y * w + x)
                switch hd.bits {
                case 24, 32:
                    let o = row + x * hd.bits / 8
                    (pixels[out], pixels[out + 1], pixels[out + 2]) = (bytes[o + 2], bytes[o + 1], bytes[o])
                default:
                    let bit = x * hd.bits
                    let byte = Int(bytes[row + bit / 8])
                    let index = (byte >> (8 - hd.bits - bit % 8)) & ((1 << hd.bits) - 1)
                    guard index < palette.count else { throw ImageDecodingError("BMP: palette index \(index) outside its \(palette.count) colours") }
                    (pixels[out], pixels[out + 1], pixels[out + 2]) = palette[index]
                }
            }
        }
        return DecodedImage(width: w, height: h, channels: 3, pixels: pixels)
    }
}

/// Binary Netpbm images: P5 (gray) and P6 (RGB), 8 or 16 bits (16-bit samples keep their high
/// byte scaled as PIL does: v * 255 / maxval).
enum PNM {
    struct Header { var size: (Int, Int); var channels: Int; var maxValue: Int; var offset: Int }

    static func header(_ bytes: UnsafeRawBufferPointer) throws -> Header {
        var o = 2
        func token() throws -> Int {
            while o < bytes.count {
                if bytes[o] == UInt8(ascii: "#") { while o < bytes.count && bytes[o] != 10 { o += 1 } }
                else if [9, 10, 13, 32].contains(bytes[o]) { o += 1 } else { break }
            }
            var v = 0, digits = 0
            while o < bytes.count, (48...57).contains(bytes[o]) {
                v = v * 10 + Int(bytes[o] - 48)
                digits += 1
                o += 1
                guard v < 1 << 30 else { throw ImageDecodingError("PPM/PGM: a header number is too large") }
            }
            guard digits > 0 else { throw ImageDecodingError("PPM/PGM: the header is not valid") }
            return v
        }
        let channels = bytes[1] == UInt8(ascii: "5") ? 1 : 3
        let w = try token(), h = try token(), maxValue = try token()
        guard maxValue > 0, maxValue < 65536 else { throw ImageDecodingError("PPM/PGM: maxval \(maxValue) is outside 1...65535") }
        return Header(size: (w, h), channels: channels, maxValue: maxValue, offset: o + 1)
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> DecodedImage {
        let hd = try header(bytes)
        let (w, h) = hd.size
        let sampleBytes = hd.maxValue > 255 ? 2 : 1
        let n = w * h * hd.channels
        guard hd.offset + n * sampleBytes <= bytes.count else { throw ImageDecodingError("PPM/PGM: the file ends early (truncated)") }
        var pixels = [UInt8](repeating: 0, count: n)
        for i in 0..<n {
            let v = sampleBytes == 2 ? Int(bytes[hd.offset + 2 * i]) << 8 | Int(bytes[hd.offset + 2 * i + 1]) : Int(bytes[hd.offset + i])
            pixels[i] = hd.maxValue == 255 ? UInt8(v) : UInt8(Swift.min(255, v * 255 / hd.maxValue))
        }
        return DecodedImage(width: w, height: h, channels: hd.channels, pixels: pixels)
    }
}
