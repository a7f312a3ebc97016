import Data
import Foundation

/// `augment:` inside a BYOL, DINO or EsViT objective: how the views are made (the Data layer's
/// transforms, on the loader's thread). Two global views, then `local_crops` local ones; `blur`
/// and `solarize` give the probability for the first global, the second global and the local views.
public struct AugmentSection: RecipeSection, Equatable {
    public var globalSize: Int?
    public var globalScale = [0.4, 1.0]
    public var localCrops = 0
    /// nil: the global views' size.
    public var localSize: Int?
    public var localScale = [0.05, 0.4]
    public var ratio = [3.0 / 4.0, 4.0 / 3.0]
    public var flip = 0.5
    public var jitter = [0.4, 0.4, 0.2, 0.1]
    public var jitterP = 0.8
    public var grayscale = 0.2
    public var blur = [1.0, 0.1, 0.5]
    public var blurKernel = 3
    public var blurSigma = [0.1, 2.0]
    public var solarize = [0.0, 0.2, 0.0]

    public init() {}

    static let areaRange = Check<[Double]>.that({ $0.count == 2 && $0[0] > 0 && $0[0] <= $0[1] && $0[1] <= 1 }) { _ in
        "give [low, high] area fractions with 0 < low <= high <= 1, e.g. [0.4, 1.0]"
    }
    static let threeProbabilities = Check<[Double]>.that({ $0.count == 3 && $0.allSatisfy { (0...1).contains($0) } }) { _ in
        "give three probabilities: first global view, second global view, local views, e.g. [1.0, 0.1, 0.5]"
    }
    static let positiveOrNull = Check<Int?>.that({ ($0 ?? 1) > 0 }) { _ in "must be positive" }

    public static let fields: [Field<AugmentSection>] = [
        .value("global_size", \.globalSize, "side of the global views in pixels; null: data.image_size", positiveOrNull),
        .value("global_scale", \.globalScale, "area fractions of the global crops", areaRange),
        .value("local_crops", \.localCrops, "local views per image", .nonNegative),
        .value("local_size", \.localSize, "side of the local views in pixels; null: the global size", positiveOrNull),
        .value("local_scale", \.localScale, "area fractions of the local crops", areaRange),
        .value("ratio", \.ratio, "aspect ratios of the crops", .that({ $0.count == 2 && $0[0] > 0 && $0[0] <= $0[1] }) { _ in
            "give [low, high] aspect ratios, e.g. [0.75, 1.3333]"
        }),
        .value("flip", \.flip, "probability of a horizontal flip", .probability),
        .value("jitter", \.jitter, "colour jitter strengths [brightness, contrast, saturation, hue] (gray images: the first two)",
               .that({ $0.count == 4 && $0.allSatisfy { $0 >= 0 } && $0[3] <= 0.5 }) { _ in
                   "give [brightness, contrast, saturation, hue] strengths (hue at most 0.5), e.g. [0.4, 0.4, 0.2, 0.1]"
               }),
        .value("jitter_p", \.jitterP, "probability of the colour jitter", .probability),
        .value("grayscale", \.grayscale, "probability of converting to gray", .probability),
        .value("blur", \.blur, "Gaussian blur probability for global view 1, global view 2, the local views", threeProbabilities),
        .value("blur_kernel", \.blurKernel, "blur kernel side in pixels (odd)", .that({ $0 > 0 && $0 % 2 == 1 }) { _ in "must be an odd number of pixels, e.g. 3" }),
        .value("blur_sigma", \.blurSigma, "range of the blur's sigma", .that({ $0.count == 2 && $0[0] > 0 && $0[0] <= $0[1] }) { _ in
            "give [low, high] with 0 < low <= high, e.g. [0.1, 2.0]"
        }),
        .value("solarize", \.solarize, "solarisation probability for global view 1, global view 2, the local views", threeProbabilities),
    ]

    /// The pipeline for images of `imageSize`: two global views, then the local ones.
    public func pipeline(imageSize: Int) -> ViewPipeline {
        func view(_ size: Int, _ scale: [Double], _ kind: Int) -> ViewAugmentation {
            var v = ViewAugmentation(size: size, scale: (scale[0], scale[1]))
            v.ratio = (ratio[0], ratio[1])
            v.flip = flip
            v.jitter = ColorJitter(probability: jitterP, brightness: jitter[0], contrast: jitter[1], saturation: jitter[2], hue: jitter[3])
            v.grayscale = grayscale
            (v.blur, v.blurKernel, v.blurSigma) = (blur[kind], blurKernel, (blurSigma[0], blurSigma[1]))
            v.solarize = solarize[kind]
            return v
        }
        let g = globalSize ?? imageSize
        return ViewPipeline(views: [view(g, globalScale, 0), view(g, globalScale, 1)]
                            + Array(repeating: view(localSize ?? g, localScale, 2), count: localCrops))
    }

    /// Sizes must split into the encoder's patches and be large enough for the blur.
    func validate(_ recipe: Recipe) throws {
        // Patch encoders need whole patches; a CvT takes any size its strides do not shrink to nothing.
        let patch = recipe.encoder.settings.patchSize ?? 1
        let global = globalSize ?? recipe.data.imageSize
        for (key, size) in [("global_size", global), ("local_size", localSize ?? global)] where key == "global_size" || localCrops > 0 {
            if size % patch != 0 {
                throw RecipeIssue(path: ["augment", key], message: "\(size) pixels do not split into the encoder's \(patch)-pixel patches; use a multiple of \(patch)")
            }
            // Any encoder's own limits at this size (CrossViT's two patch sizes, CCT's and T2T-ViT's strides).
            var input = recipe.encoderInput
            input.imageSize = size
            if let (_, problem) = recipe.encoder.settings.check(input) {
                throw RecipeIssue(path: ["augment", key], message: "\(size)-pixel views do not fit the \(recipe.encoder.kind) encoder: \(problem)")
            }
            if blurKernel / 2 >= size {
                throw RecipeIssue(path: ["augment", "blur_kernel"], message: "a \(blurKernel)-pixel blur needs views larger than \(blurKernel / 2) pixels (\(key) is \(size))")
            }
        }
    }

}
