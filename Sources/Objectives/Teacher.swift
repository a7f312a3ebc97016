import Encoders
import Foundation
import NN
import TensorCore

/// What the teacher-student objectives (BYOL, DINO, EsViT) share: a teacher that starts as a copy
/// of the student, is frozen (never on the tape, never in the optimizer) and follows the student
/// by an exponential moving average of its parameters.
public enum Teacher {
    /// Copies the student's parameters and buffers into `teacher` (same architecture) and freezes it.
    public static func initialize(_ teacher: Module, from student: Module) {
        let pairs = matched(teacher, student)
        for (t, s) in pairs { t.assign(s.value) }
        for ((_, t), (_, s)) in zip(teacher.namedBuffers(), student.namedBuffers()) { t.value.base.update(from: s.value.base, count: s.value.count) }
        teacher.setFrozen(true)
    }

    /// teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter (buffers,
    /// such as batch-norm statistics, stay the teacher's own, as in the reference code).
    public static func update(_ teacher: Module, from student: Module, momentum: Float) {
        for (t, s) in matched(teacher, student) { movingAverage(t.value, toward: s.value, momentum: momentum) }
    }

    /// The mean over the global batch of per-process means (B, D) -> (1, D) of `rows` rows each:
    /// DINO's and EsViT's centres across processes (one process: `localMean` itself).
    public static func globalMean(_ localMean: Tensor, rows: Int) -> Tensor {
        guard Distributed.isMultiProcess else { return localMean }
        let n = localMean.count
        var sums = (0..<n).map { Double(localMean.base[$0]) * Double(rows) } + [Double(rows)]
        sums = Distributed.sum(sums)
        return Tensor(shape: localMean.shape, (0..<n).map { Float(sums[$0] / sums[n]) })
    }

    /// target = momentum * target + (1 - momentum) * source, in place (teachers and centres).
    public static func movingAverage(_ target: Tensor, toward source: Tensor, momentum: Float) {
        precondition(target.count == source.count, "moving average of \(target.shape) toward \(source.shape)")
        let tp = target.base, sp = source.base
        let keep = momentum, take = 1 - momentum
        Parallel.forChunks(target.count, grain: 16384) { r in
            for k in r { tp[k] = keep * tp[k] + take * sp[k] }
        }
    }

    /// DINO's and BYOL's momentum schedule: a half cosine from `base` at step 0 to 1 at the last
    /// step, 1 - (1 - base) (cos(pi k / K) + 1) / 2.
    public static func cosineMomentum(base: Double, step: Int, totalSteps: Int) -> Double {
        1 - (1 - base) * (cos(Double.pi * Double(step) / Double(Swift.max(totalSteps, 1))) + 1) / 2
    }

    static func matched(_ teacher: Module, _ student: Module) -> [(Parameter, Parameter)] {
        let t = teacher.namedParameters(), s = student.namedParameters()
        precondition(t.count == s.count && zip(t, s).allSatisfy { $0.0 == $1.0 && $0.1.shape == $1.1.shape },
                     "teacher and student differ in architecture")
        return zip(t, s).map { ($0.1, $1.1) }
    }
}

/// How the teacher's EMA momentum moves over training.
public enum MomentumSchedule: String, CaseIterable, Sendable {
    /// From the base value to 1 on a half cosine (the BYOL and DINO papers).
    case cosine
    /// The base value throughout (vit-pytorch's Dino and byol-pytorch).
    case constant

    public func value(base: Double, step: Int, totalSteps: Int) -> Double {
        self == .cosine ? Teacher.cosineMomentum(base: base, step: step, totalSteps: totalSteps) : base
    }
}

/// The flat (B, features) input of a projection head from an encoder's hidden output, as
/// vit-pytorch's NetWrapper flattens it; and the head's input width for images of `imageShape`.
func flatFeatures(_ hidden: Tensor) -> Tensor {
    hidden.rank == 2 ? hidden : hidden.reshaped([hidden.shape[0], hidden.count / hidden.shape[0]])
}

func hiddenWidth(_ encoder: any HiddenLayerEncoder, layer: String, imageShape: [Int]) -> Int {
    hiddenShape(encoder, layer: layer, imageShape: imageShape).dropFirst().reduce(1, *)
}

/// The shape of `layer`'s output for a batch of 2 images of `imageShape`, probed in evaluation mode.
func hiddenShape(_ encoder: any HiddenLayerEncoder, layer: String, imageShape: [Int]) -> [Int] {
    let wasTraining = encoder.isTraining
    encoder.eval()
    defer { encoder.train(wasTraining) }
    return Autograd.noGrad { encoder.hidden(.zeros([2] + imageShape), layer: layer) }.shape
}

/// The runs of consecutive views of one size, so each size runs through the encoder as one batch
/// (the official DINO's MultiCropWrapper).
func sizeGroups(_ views: [Tensor]) -> [Range<Int>] {
    var groups: [Range<Int>] = []
    var start = 0
    while start < views.count {
        var end = start + 1
        while end < views.count && Array(views[end].shape.dropFirst()) == Array(views[start].shape.dropFirst()) { end += 1 }
        groups.append(start..<end)
        start = end
    }
    return groups
}

/// One batch of the views in `range` (no copy for a single view).
func batch(_ views: [Tensor], _ range: Range<Int>) -> Tensor {
    range.count == 1 ? views[range.lowerBound] : Tensor.concat(Array(views[range]), axis: 0)
}

/// `body` over each size group, the outputs concatenated in view order.
func forwardBySize(_ views: [Tensor], _ body: (Tensor) -> Tensor) -> Tensor {
    let outputs = sizeGroups(views).map { body(batch(views, $0)) }
    return outputs.count == 1 ? outputs[0] : Tensor.concat(outputs, axis: 0)
}

/// A Linear initialised as the official DINO head's: truncated normal (std 0.02) weights and zero
/// biases; PyTorch's defaults otherwise.
func headLinear(_ inFeatures: Int, _ outFeatures: Int, official: Bool, initializer: Initializer) -> Linear {
    let layer = Linear(inFeatures, outFeatures, initializer: initializer)
    if official {
        layer.weight.assign(initializer.truncatedNormal([outFeatures, inFeatures], std: 0.02))
        layer.bias?.assign(.zeros([outFeatures]))
    }
    return layer
}
