import Encoders
import NN
import TensorCore

/// What one batch of an objective produced: the loss on the tape and named diagnostics.
public struct ObjectiveOutput {
    public let loss: Tensor
    public var diagnostics: [String: Double]
    public init(loss: Tensor, diagnostics: [String: Double] = [:]) {
        self.loss = loss
        self.diagnostics = diagnostics
    }
}

/// A self-supervised objective: a Module that holds the encoder (and its own heads, decoder or
/// teacher) and maps a batch of images to a scalar loss.
public protocol Objective: Module {
    /// The encoder the objective trains (what the stages after pretraining use).
    var trainedEncoder: any HiddenLayerEncoder { get }
    /// The loss of a batch of normalised images (B, C, H, W).
    func loss(_ images: Tensor) -> ObjectiveOutput
    /// The loss of a batch given as augmented views (one tensor (B, C, h, w) per view), for the
    /// objectives that learn from views (BYOL, DINO, EsViT). The masked objectives use the first.
    func loss(views: [Tensor]) -> ObjectiveOutput
    /// Called before every step (schedules that depend on the epoch move here).
    func willStep(_ step: Int, of totalSteps: Int, stepsPerEpoch: Int)
    /// Called after every optimizer step (EMA teachers move here), with the step just taken.
    func afterStep(_ step: Int, of totalSteps: Int)
    /// The random streams the objective draws from (masks, ...), saved in checkpoints by name.
    var randomStreams: [String: RandomStream] { get }
    /// For objectives that predict pixels: the images with their masked patches blanked, and the
    /// reconstruction (visible patches kept, masked ones predicted), both shaped like `images`.
    func reconstructions(_ images: Tensor, rng: RandomStream) -> (masked: Tensor, reconstruction: Tensor)?
}

extension Objective {
    public func loss(views: [Tensor]) -> ObjectiveOutput { loss(views[0]) }
    public func willStep(_ step: Int, of totalSteps: Int, stepsPerEpoch: Int) {}
    public func afterStep(_ step: Int, of totalSteps: Int) {}
    public var randomStreams: [String: RandomStream] { [:] }
    public func reconstructions(_ images: Tensor, rng: RandomStream) -> (masked: Tensor, reconstruction: Tensor)? { nil }
}

/// Per-sample random permutations of `count` positions, split into the first `masked` (the
/// masked positions) and the rest (the visible ones), as vit-pytorch's
/// `torch.rand(batch, n).argsort(dim=-1)` split does.
public struct PatchMask {
    public let batch: Int
    public let count: Int
    public let masked: IndexTensor
    public let visible: IndexTensor

    public init(permutations: [[Int]], maskedCount: Int) {
        precondition(!permutations.isEmpty && maskedCount > 0 && maskedCount < permutations[0].count, "mask between 1 and n-1 patches")
        batch = permutations.count
        count = permutations[0].count
        masked = IndexTensor(shape: [batch, maskedCount], permutations.flatMap { $0[..<maskedCount] })
        visible = IndexTensor(shape: [batch, count - maskedCount], permutations.flatMap { $0[maskedCount...] })
    }

    /// A fresh random mask of round-down(ratio * count) patches per sample.
    public static func random(batch: Int, count: Int, ratio: Double, rng: RandomStream) -> PatchMask {
        PatchMask(permutations: (0..<batch).map { _ in rng.permutation(count) }, maskedCount: Int(ratio * Double(count)))
    }

    /// Samples `rows` of the mask.
    public func rows(_ rows: Range<Int>) -> PatchMask {
        let (m, v) = (masked.shape[1], visible.shape[1])
        return PatchMask(batch: rows.count, count: count,
                         masked: IndexTensor(shape: [rows.count, m], Array(masked.values[(rows.lowerBound * m)..<(rows.upperBound * m)])),
                         visible: IndexTensor(shape: [rows.count, v], Array(visible.values[(rows.lowerBound * v)..<(rows.upperBound * v)])))
    }

    init(batch: Int, count: Int, masked: IndexTensor, visible: IndexTensor) {
        (self.batch, self.count, self.masked, self.visible) = (batch, count, masked, visible)
    }

    /// The mask of a training step's `local` images: drawn for the global batch and cut to this
    /// process's rows when the step is spread over processes (see Distributed.stepRows), so that
    /// an image's mask does not depend on the number of processes.
    public static func forStep(local: Int, _ draw: (Int) -> PatchMask) -> PatchMask {
        let (offset, global) = Distributed.drawRows(local: local)
        let mask = draw(global)
        return global == local ? mask : mask.rows(offset ..< offset + local)
    }
}

/// Rows of an embedding table (n, d) picked by `index` (B, m): (B, m, d), as nn.Embedding.
func embeddingLookup(_ table: Tensor, _ index: IndexTensor) -> Tensor {
    table.gather(axis: 0, index: IndexTensor(shape: [index.values.count], index.values)).reshaped(index.shape + [table.shape[1]])
}
