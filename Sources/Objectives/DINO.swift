import Encoders
import Foundation
import NN
import TensorCore

/// DINO's projection head. Official (Caron et al. 2021, facebookresearch/dino's DINOHead): an MLP
/// (Linear, GELU, ..., Linear to a bottleneck), L2 normalisation, then a weight-normalised linear
/// layer without bias to `outDim`. vit-pytorch 1.7.14's: Linear and GELU pairs, L2 normalisation,
/// and a plain Linear to `outDim`. Names follow each reference's state_dict.
public final class DINOHead: Module {
    public let mlp: Sequential
    public let lastLayer: WeightNormLinear?
    let vitPytorch: Bool

    /// Official: `layers` linear layers in the MLP (hidden width `hiddenDim`, last one to
    /// `bottleneckDim`). vit-pytorch: `layers - 1` Linear+GELU pairs of width `hiddenDim`, then the
    /// output Linear (its `projection_layers`).
    /// `normAxis`: the axis vit-pytorch's L2Norm normalises (its `dim=1`, which for EsViT's
    /// region tokens (B, n, hidden) is the token axis).
    public init(inputDim: Int, outDim: Int, hiddenDim: Int, bottleneckDim: Int, layers: Int, normLastLayer: Bool,
                vitPytorch: Bool, normAxis: Int = -1, initializer: Initializer) {
        precondition(layers >= 2, "a DINO head needs at least 2 layers")
        self.vitPytorch = vitPytorch
        var seq: [any Layer] = []
        if vitPytorch {
            var width = inputDim
            for _ in 0..<(layers - 1) {
                seq += [headLinear(width, hiddenDim, official: false, initializer: initializer), GELU()]
                width = hiddenDim
            }
            seq += [L2Norm(eps: 1e-6, axis: normAxis), headLinear(hiddenDim, outDim, official: false, initializer: initializer)]
            lastLayer = nil
        } else {
            var width = inputDim
            for _ in 0..<(layers - 1) {
                seq += [headLinear(width, hiddenDim, official: true, initializer: initializer), GELU()]
                width = hiddenDim
            }
            seq.append(headLinear(hiddenDim, bottleneckDim, official: true, initializer: initializer))
            lastLayer = WeightNormLinear(bottleneckDim, outDim, trainableNorm: !normLastLayer, initializer: initializer)
        }
        mlp = Sequential(seq)
    }

    public override var stateNames: [String: String] { vitPytorch ? ["mlp": "net"] : [:] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = mlp(x)
        guard let lastLayer else { return h }
        return lastLayer(h.l2Normalized())
    }
}

/// DINO, self-distillation with no labels (Caron et al. 2021, "Emerging Properties in
/// Self-Supervised Vision Transformers", facebookresearch/dino).
///
/// The student sees every crop (2 global, N local), the teacher only the global ones; each
/// student crop predicts the teacher's centred, sharpened distribution of the other global crops:
/// loss = mean over pairs (teacher crop q, student crop v != q) of
/// H(softmax((t_q - c) / tau_t), softmax(s_v / tau_s)). The centre c follows the teacher's batch
/// mean (momentum 0.9); the teacher follows the student by EMA (0.996 -> 1 on a cosine); tau_t
/// warms up from 0.04 to 0.07; the last layer of the head is frozen for the first epoch.
///
/// `vitPytorch` reproduces vit-pytorch 1.7.14's Dino instead: views are (global 1, global 2,
/// local 1, local 2), the student sees only the two local crops and the teacher the two global
/// ones, loss = (H(t_1, s_2) + H(t_2, s_1)) / 2 with log(p + 1e-20), constant EMA, its head.
public final class DINO: Module, Objective {
    public struct Config: Sendable {
        public var hiddenLayer = "pooled"
        public var outDim = 4096
        public var hiddenDim = 2048
        public var bottleneckDim = 256
        public var headLayers = 3
        public var normLastLayer = true
        public var studentTemperature = 0.1
        public var teacherTemperature = 0.07
        public var warmupTeacherTemperature = 0.04
        /// One epoch of warmup: main_dino.py defaults to 0 (its help text says 30, for 100-epoch
        /// runs); the workbench's short runs warm the teacher up over their first epoch.
        public var warmupTeacherTemperatureEpochs = 1
        public var centerMomentum = 0.9
        public var teacherMomentum = 0.996
        public var momentumSchedule = MomentumSchedule.cosine
        public var freezeLastLayerEpochs = 1
        public var globalCrops = 2
        public var vitPytorch = false
        public init() {}

        /// vit-pytorch 1.7.14's Dino defaults (its head has `projection_layers` = headLayers).
        public static var vitPytorchDefaults: Config {
            var c = Config()
            (c.vitPytorch, c.outDim, c.hiddenDim, c.headLayers) = (true, 65336, 256, 4)
            (c.studentTemperature, c.teacherTemperature, c.warmupTeacherTemperatureEpochs) = (0.9, 0.04, 0)
            (c.teacherMomentum, c.momentumSchedule, c.centerMomentum, c.freezeLastLayerEpochs) = (0.9, .constant, 0.9, 0)
            return c
        }

        /// The teacher temperature of `epoch`: np.linspace(warmup, final, warmup epochs), then final.
        public func teacherTemperature(epoch: Int) -> Double {
            let w = warmupTeacherTemperatureEpochs
            guard epoch < w else { return teacherTemperature }
            return w == 1 ? warmupTeacherTemperature
                : warmupTeacherTemperature + (teacherTemperature - warmupTeacherTemperature) * Double(epoch) / Double(w - 1)
        }
    }

    public let config: Config
    public let student: any HiddenLayerEncoder
    public let studentHead: DINOHead
    public let teacher: any HiddenLayerEncoder
    public let teacherHead: DINOHead
    public let center: Buffer
    var pendingCenter: Tensor?
    var currentTeacherTemperature: Float

    /// `teacher` is a second encoder of the student's architecture; its values are overwritten.
    /// `imageShape` (C, H, W) is the global crops' shape.
    public init(student: any HiddenLayerEncoder, teacher: any HiddenLayerEncoder, imageShape: [Int], config: Config, initializer: Initializer) {
        self.config = config
        self.student = student
        self.teacher = teacher
        let width = hiddenWidth(student, layer: config.hiddenLayer, imageShape: imageShape)
        func head() -> DINOHead {
            DINOHead(inputDim: width, outDim: config.outDim, hiddenDim: config.hiddenDim, bottleneckDim: config.bottleneckDim,
                     layers: config.headLayers, normLastLayer: config.normLastLayer, vitPytorch: config.vitPytorch, initializer: initializer)
        }
        studentHead = head()
        teacherHead = head()
        center = Buffer(.zeros([1, config.outDim]))
        currentTeacherTemperature = Float(config.teacherTemperature(epoch: 0))
        super.init()
        Teacher.initialize(teacher, from: student)
        Teacher.initialize(teacherHead, from: studentHead)
    }

    public override var stateNames: [String: String] {
        ["student": "student_encoder.net", "studentHead": "student_encoder.projector", "teacher": "teacher_encoder.net",
         "teacherHead": "teacher_encoder.projector", "center": "teacher_centers"]
    }

    /// DINO evaluates the teacher (the paper's Table 9; the reference recipe does too).
    public var trainedEncoder: any HiddenLayerEncoder { teacher }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        preconditionFailure("DINO trains on augmented views: call loss(views:)")
    }

    func studentOutput(_ x: Tensor) -> Tensor { studentHead(flatFeatures(student.hidden(x, layer: config.hiddenLayer))) }
    func teacherOutput(_ x: Tensor) -> Tensor { teacherHead(flatFeatures(teacher.hidden(x, layer: config.hiddenLayer))) }

    public func loss(views: [Tensor]) -> ObjectiveOutput {
        config.vitPytorch ? vitPytorchLoss(views) : officialLoss(views)
    }

    /// The official multi-crop loss: views[0 ..< globalCrops] are the global crops.
    func officialLoss(_ views: [Tensor]) -> ObjectiveOutput {
        let g = config.globalCrops
        precondition(views.count > g - 1 && g >= 1, "DINO needs \(g) global views and any number of local ones")
        let b = views[0].shape[0]
        let teacherOut = Autograd.noGrad { forwardBySize(Array(views[0..<g]), teacherOutput) }
        let teacherProbs = Autograd.noGrad { ((teacherOut - center.value) / currentTeacherTemperature).softmax() }
        let studentLog = (forwardBySize(views, studentOutput) / Float(config.studentTemperature)).logSoftmax()
        var total: Tensor?
        var terms = 0
        for q in 0..<g {
            let target = teacherProbs.slice(axis: 0, start: q * b, length: b)
            for v in 0..<views.count where v != q {
                let term = (target * studentLog.slice(axis: 0, start: v * b, length: b)).sum()
                total = total.map { $0 + term } ?? term
                terms += 1
            }
        }
        pendingCenter = Teacher.globalMean(Autograd.noGrad { teacherOut.mean(axis: 0, keepDims: true) }, rows: teacherOut.shape[0])
        let loss = total! * (-1 / Float(terms * b))
        // The teacher's entropy is the part of the cross-entropy the student cannot lower, so loss -
        // entropy is the KL divergence it does lower (the DINO paper's Figure 7 reads both to tell
        // learning from collapse).
        return ObjectiveOutput(loss: loss, diagnostics: ["teacher_temperature": Double(currentTeacherTemperature),
                                                         "teacher_entropy": teacherProbs.meanRowEntropy()])
    }

    /// vit-pytorch 1.7.14's Dino.forward with its four crops given.
    func vitPytorchLoss(_ views: [Tensor]) -> ObjectiveOutput {
        precondition(views.count == 4, "vit-pytorch's Dino takes 4 views: global 1, global 2, local 1, local 2")
        let s1 = studentOutput(views[2]), s2 = studentOutput(views[3])
        let (t1, t2) = Autograd.noGrad { (teacherOutput(views[0]), teacherOutput(views[1])) }
        func h(_ t: Tensor, _ s: Tensor) -> Tensor {
            let teacherProbs = Autograd.noGrad { ((t - center.value) / currentTeacherTemperature).softmax() }
            let studentProbs = (s / Float(config.studentTemperature)).softmax()
            return (teacherProbs * (studentProbs + 1e-20).log()).sum(axis: -1).mean() * -1
        }
        pendingCenter = Teacher.globalMean(Autograd.noGrad { Tensor.concat([t1, t2], axis: 0).mean(axis: 0, keepDims: true) }, rows: 2 * t1.shape[0])
        return ObjectiveOutput(loss: (h(t1, s2) + h(t2, s1)) * 0.5)
    }

    public func willStep(_ step: Int, of totalSteps: Int, stepsPerEpoch: Int) {
        let epoch = step / Swift.max(stepsPerEpoch, 1)
        currentTeacherTemperature = Float(config.teacherTemperature(epoch: epoch))
        studentHead.lastLayer?.gradientsStopped = epoch < config.freezeLastLayerEpochs
    }

    /// Moves the teacher and the centre after the student's update.
    public func afterStep(_ step: Int, of totalSteps: Int) {
        let m = config.momentumSchedule.value(base: config.teacherMomentum, step: step, totalSteps: totalSteps)
        Teacher.update(teacher, from: student, momentum: Float(m))
        Teacher.update(teacherHead, from: studentHead, momentum: Float(m))
        if let batchCenter = pendingCenter {
            Teacher.movingAverage(center.value, toward: batchCenter, momentum: Float(config.centerMomentum))
            pendingCenter = nil
        }
    }
}
