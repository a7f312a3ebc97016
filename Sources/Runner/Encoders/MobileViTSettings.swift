import Encoders
import NN

/// `encoder: {kind: mobilevit}`: vit-pytorch 1.7.14's MobileViT (Mehta and Rastegari 2022):
/// inverted residuals and MobileViT blocks (local convolutions, a transformer across patches,
/// fusion). Convolutional throughout, so only the view objectives (byol, dino, esvit) and the
/// evaluation stages take it.
public struct MobileViTSettings: EncoderSettings {
    public static let kind = "mobilevit"
    public static let summary = "MobileViT (Mehta and Rastegari 2022): inverted residuals and unfold-transformer-fold blocks; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let isHierarchical = true
    public static let notPatchTokenReason = "its stem and inverted residuals convolve the whole image, so there are no patch tokens to hide"

    public var config = MobileViTConfig()

    public init() {}

    public static let fields: [Field<MobileViTSettings>] = [
        .value("channels", \.config.channels, "the 11 convolution widths (vit-pytorch's channels; default MobileViT-XXS's)"),
        .value("dims", \.config.dims, "the three MobileViT blocks' transformer widths"),
        .value("depths", \.config.depths, "the three MobileViT blocks' transformer depths"),
        .value("expansion", \.config.expansion, "the inverted residuals' expansion", .positive),
        .value("kernel_size", \.config.kernelSize, "the MobileViT blocks' n x n convolutions (3: vit-pytorch pads them by 1)", .positive),
        .value("patch_size", \.config.patchSize, "side of the patches whose same-place positions a block's transformer attends across; must divide the three blocks' maps (1 at 28 px)", .positive),
    ]

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    func config(for input: EncoderInput) -> MobileViTConfig {
        var c = config
        (c.imageSize, c.inputChannels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return c
    }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        config(for: input).problem(imageSide: input.imageSize)
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        MobileViT(config(for: input), initializer: initializer)
    }

    public func pytorchModel(_ input: EncoderInput) -> String? {
        let c = config
        func tuple(_ v: [Int]) -> String { "(\(v.map(String.init).joined(separator: ", ")))" }
        let call = "vit_pytorch.mobile_vit.MobileViT(image_size=(\(input.imageSize), \(input.imageSize)), dims=\(tuple(c.dims)), channels=\(tuple(c.channels)), num_classes=\(input.classes), expansion=\(c.expansion), kernel_size=\(c.kernelSize), patch_size=(\(c.patchSize), \(c.patchSize)), depths=\(tuple(c.depths)))"
        return input.channels == 3 ? call : call + " (1.7.14 hard-codes 3 input channels in conv1)"
    }
}
