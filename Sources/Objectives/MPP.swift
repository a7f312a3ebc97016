import Encoders
import NN
import TensorCore

/// Masked patch prediction, the self-supervised objective of the ViT paper (Dosovitskiy et al.
/// 2021, section 4.6 and appendix B.1), as vit-pytorch 1.7.14's `MPP`: choose ceil(maskProb * n)
/// patches per image; replace each chosen patch by another patch of the same image with
/// probability randomPatchProb / (1 - replaceProb), then (independently) by a learned mask patch
/// with probability replaceProb, in pixel space before the patch embedding; encode with the class
/// token; classify each chosen patch's mean colour, quantised to `bits` bits per channel
/// (2^(bits * channels) classes), with cross-entropy.
public final class MPP: Module, Objective {
    public struct Config: Codable, Equatable, Sendable {
        public var maskProb = 0.15
        public var replaceProb = 0.5
        public var randomPatchProb = 0.5
        public var outputChannelBits = 3
        public var maxPixelValue = 1.0
        public init() {}
    }

    /// Which patches are chosen, which get a random patch (and which one), which the mask patch
    /// (the last three count only where a patch is chosen).
    public struct Corruption {
        public var chosen: [Bool]
        public var random: [Bool]
        public var randomSource: [Int]
        public var replace: [Bool]
        public init(chosen: [Bool], random: [Bool], randomSource: [Int], replace: [Bool]) {
            (self.chosen, self.random, self.randomSource, self.replace) = (chosen, random, randomSource, replace)
        }
    }

    public let config: Config
    public let encoder: any PatchTokenEncoder
    public let toBits: Linear
    public let maskToken: Parameter
    /// Undo the data normalisation for the colour targets.
    let mean: [Float], std: [Float]
    let channels: Int
    let stream: RandomStream

    public init(encoder: any PatchTokenEncoder, config: Config, channels: Int, mean: [Float], std: [Float], initializer: Initializer,
                seed: UInt64) {
        self.config = config
        self.encoder = encoder
        self.channels = channels
        self.mean = mean
        self.std = std
        toBits = Linear(encoder.dim, 1 << (config.outputChannelBits * channels), initializer: initializer)
        maskToken = Parameter(initializer.embedding([1, 1, encoder.patchDim]), decays: false)
        stream = RandomStream(seed: seed, purpose: "mpp corruption")
    }

    public var trainedEncoder: any HiddenLayerEncoder { encoder }
    public var randomStreams: [String: RandomStream] { ["mpp corruption": stream] }

    public func randomCorruption(batch: Int, rng: RandomStream) -> Corruption {
        let n = encoder.patchCount
        let chosenCount = Int((config.maskProb * Double(n)).rounded(.up))
        var chosen = [Bool](repeating: false, count: batch * n)
        for b in 0..<batch { for i in rng.permutation(n).prefix(chosenCount) { chosen[b * n + i] = true } }
        let randomProb = config.randomPatchProb / (1 - config.replaceProb)
        let random = (0..<(batch * n)).map { chosen[$0] && config.randomPatchProb > 0 && Double(rng.nextFloat()) < randomProb }
        let source = (0..<(batch * n)).map { _ in rng.nextInt(below: n) }
        let replace = (0..<(batch * n)).map { chosen[$0] && Double(rng.nextFloat()) < config.replaceProb }
        return Corruption(chosen: chosen, random: random, randomSource: source, replace: replace)
    }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        // Drawn for the global batch and cut to this process's rows when spread over processes.
        let local = images.shape[0], n = encoder.patchCount
        let (offset, global) = Distributed.drawRows(local: local)
        var corruption = randomCorruption(batch: global, rng: stream)
        if global != local {
            let r = (offset * n) ..< ((offset + local) * n)
            corruption = Corruption(chosen: Array(corruption.chosen[r]), random: Array(corruption.random[r]),
                                    randomSource: Array(corruption.randomSource[r]), replace: Array(corruption.replace[r]))
        }
        return ObjectiveOutput(loss: forward(images, corruption: corruption))
    }

    /// The colour class of every patch: mean colour per channel (pixels un-normalised, clamped to
    /// maxPixelValue) quantised as torch.bucketize over (bin, 2 bin, ..., max), channels combined
    /// as digits in base 2^bits.
    public func colourClasses(_ images: Tensor) -> [Int] {
        let (b, c, h, w) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3])
        let p = Int(Double(encoder.patchDim / c).squareRoot())
        let (gh, gw) = (h / p, w / p)
        let levels = 1 << config.outputChannelBits
        let bin = config.maxPixelValue / Double(levels)
        let boundaries = stride(from: bin, to: config.maxPixelValue, by: bin).map { Float($0) }
        let x = images.scalars
        var classes = [Int](repeating: 0, count: b * gh * gw)
        for n in 0..<b { for gy in 0..<gh { for gx in 0..<gw {
            var label = 0, digit = 1
            for ch in 0..<c {
                let m = mean[mean.count == 1 ? 0 : ch], s = std[std.count == 1 ? 0 : ch]
                var sum: Float = 0
                for y in 0..<p { for xx in 0..<p {
                    sum += Swift.min(x[((n * c + ch) * h + gy * p + y) * w + gx * p + xx] * s + m, Float(config.maxPixelValue))
                } }
                let average = sum / Float(p * p)
                label += boundaries.filter { $0 < average }.count * digit
                digit *= levels
            }
            classes[(n * gh + gy) * gw + gx] = label
        } } }
        return classes
    }

    public func forward(_ images: Tensor, corruption: Corruption) -> Tensor {
        let patches = encoder.patchify(images).detached()
        let (b, n, d) = (patches.shape[0], patches.shape[1], patches.shape[2])
        // Random patches (from the uncorrupted image), then the mask patch where chosen.
        let original = patches.scalars
        var corrupted = original
        for i in 0..<(b * n) where corruption.chosen[i] && corruption.random[i] {
            let source = (i / n) * n + corruption.randomSource[i]
            for k in 0..<d { corrupted[i * d + k] = original[source * d + k] }
        }
        let replace = Tensor(shape: [b, n, 1], (0..<(b * n)).map { corruption.chosen[$0] && corruption.replace[$0] ? 1 : 0 })
        let input = Tensor.where(replace, maskToken.value, Tensor(shape: [b, n, d], corrupted))
        var tokens = encoder.embedPatches(input) + encoder.patchPositions()
        let prefix = encoder.prefixTokens(batch: b)
        if let prefix { tokens = Tensor.concat([prefix, tokens], axis: 1) }
        var encoded = encoder.encodeTokens(tokens)
        if let prefix { encoded = encoded.slice(axis: 1, start: prefix.shape[1], length: n) }
        let chosen = corruption.chosen.enumerated().filter(\.element).map(\.offset)
        let logits = toBits(encoded).reshaped([b * n, -1]).gather(axis: 0, index: IndexTensor(shape: [chosen.count], chosen))
        let targets = colourClasses(images)
        return logits.crossEntropy(.labels(chosen.map { targets[$0] }))
    }
}
