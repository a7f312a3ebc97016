import Encoders
import Foundation
import NN
import TensorCore

/// EsViT, Efficient Self-supervised Vision Transformers (Li et al. 2021, "Efficient
/// Self-supervised Vision Transformers for Representation Learning", microsoft/esvit).
///
/// DINO's view-level loss on the pooled feature plus a region-level loss on the encoder's token
/// map (a multi-stage encoder's last stage, e.g. CvT's "tokens"): each student region predicts the
/// distribution of the teacher region most similar to it (cosine similarity of the backbone
/// features), through a second DINO head with its own centre. Official mode: all crops for the
/// student, global ones for the teacher, every (teacher crop, other student crop) pair, loss =
/// (view + region) / 2 averaged over the pairs (the region term weighted by `regionWeight`). `vitPytorch` reproduces vit-pytorch 1.7.14's
/// EsViTTrainer (local crops to the student, global to the teacher, raw dot-product matching,
/// its heads, including the L2Norm over the region axis of its region projector).
public final class EsViT: Module, Objective {
    public struct Config: Sendable {
        public var dino = DINO.Config()
        /// The token map (B, n, C) the regions come from; "pooled" is its mean.
        public var regionLayer = "tokens"
        /// The region loss's weight against the view loss: loss = (view + weight * region) / 2.
        public var regionWeight = 1.0
        public init() {}

        public static var vitPytorchDefaults: Config {
            var c = Config()
            c.dino = .vitPytorchDefaults
            return c
        }
    }

    public let config: Config
    public let student: any HiddenLayerEncoder
    public let studentViewHead: DINOHead
    public let studentRegionHead: DINOHead
    public let teacher: any HiddenLayerEncoder
    public let teacherViewHead: DINOHead
    public let teacherRegionHead: DINOHead
    public let viewCenter: Buffer
    public let regionCenter: Buffer
    var pendingCenters: (Tensor, Tensor)?
    var currentTeacherTemperature: Float

    public init(student: any HiddenLayerEncoder, teacher: any HiddenLayerEncoder, imageShape: [Int], config: Config, initializer: Initializer) {
        self.config = config
        self.student = student
        self.teacher = teacher
        let shape = hiddenShape(student, layer: config.regionLayer, imageShape: imageShape)
        precondition(shape.count == 3, "EsViT needs a token map (B, n, C) as its region layer, '\(config.regionLayer)' is \(shape)")
        let width = shape[2]
        let d = config.dino
        func head(_ axis: Int) -> DINOHead {
            DINOHead(inputDim: width, outDim: d.outDim, hiddenDim: d.hiddenDim, bottleneckDim: d.bottleneckDim, layers: d.headLayers,
                     normLastLayer: d.normLastLayer, vitPytorch: d.vitPytorch, normAxis: axis, initializer: initializer)
        }
        studentViewHead = head(-1)
        studentRegionHead = head(d.vitPytorch ? 1 : -1)
        teacherViewHead = head(-1)
        teacherRegionHead = head(d.vitPytorch ? 1 : -1)
        viewCenter = Buffer(.zeros([1, d.outDim]))
        regionCenter = Buffer(.zeros([1, d.outDim]))
        currentTeacherTemperature = Float(d.teacherTemperature(epoch: 0))
        super.init()
        Teacher.initialize(teacher, from: student)
        Teacher.initialize(teacherViewHead, from: studentViewHead)
        Teacher.initialize(teacherRegionHead, from: studentRegionHead)
    }

    public override var stateNames: [String: String] {
        ["student": "student_encoder.net", "studentViewHead": "student_encoder.view_projector",
         "studentRegionHead": "student_encoder.region_projector", "teacher": "teacher_encoder.net",
         "teacherViewHead": "teacher_encoder.view_projector", "teacherRegionHead": "teacher_encoder.region_projector",
         "viewCenter": "teacher_view_centers", "regionCenter": "teacher_region_centers"]
    }

    /// EsViT evaluates the teacher, as DINO does.
    public var trainedEncoder: any HiddenLayerEncoder { teacher }

    public func loss(_ images: Tensor) -> ObjectiveOutput {
        preconditionFailure("EsViT trains on augmented views: call loss(views:)")
    }

    /// One crop group's outputs: view logits (b, K), region logits (b, n, K) and the backbone
    /// region features (b, n, C) as constants (for matching).
    struct Outputs {
        var view: Tensor, region: Tensor, features: Tensor
        func crop(_ i: Int, of count: Int) -> Outputs {
            let b = view.shape[0] / count
            return Outputs(view: view.slice(axis: 0, start: i * b, length: b), region: region.slice(axis: 0, start: i * b, length: b),
                           features: features.slice(axis: 0, start: i * b, length: b))
        }
    }

    func outputs(_ encoder: any HiddenLayerEncoder, _ viewHead: DINOHead, _ regionHead: DINOHead, _ x: Tensor) -> Outputs {
        let tokens = encoder.hidden(x, layer: config.regionLayer)
        let (b, n, c) = (tokens.shape[0], tokens.shape[1], tokens.shape[2])
        let region = config.dino.vitPytorch ? regionHead(tokens) : regionHead(tokens.reshaped([b * n, c])).reshaped([b, n, config.dino.outDim])
        return Outputs(view: viewHead(tokens.mean(axis: 1)), region: region, features: tokens.detached())
    }

    /// The crops' outputs, each size run as one batch (official) or every crop alone (vit-pytorch,
    /// whose separate forwards give batch norms per-crop statistics).
    func outputs(_ views: [Tensor], student isStudent: Bool) -> [Outputs] {
        let (encoder, viewHead, regionHead) = isStudent ? (student, studentViewHead, studentRegionHead) : (teacher, teacherViewHead, teacherRegionHead)
        if config.dino.vitPytorch { return views.map { outputs(encoder, viewHead, regionHead, $0) } }
        return sizeGroups(views).flatMap { range in
            let group = outputs(encoder, viewHead, regionHead, batch(views, range))
            return (0..<range.count).map { group.crop($0, of: range.count) }
        }
    }

    /// The teacher region probabilities (b, nt, K) gathered at each student region's best match
    /// (b, ns, K): cosine similarity of the normalised features (official) or the raw dot product
    /// (vit-pytorch).
    func matchedTargets(_ teacherProbs: Tensor, teacherFeatures: Tensor, studentFeatures: Tensor) -> Tensor {
        let (b, nt, k) = (teacherProbs.shape[0], teacherProbs.shape[1], teacherProbs.shape[2])
        let ns = studentFeatures.shape[1]
        let s = config.dino.vitPytorch ? studentFeatures : studentFeatures.l2Normalized()
        let t = config.dino.vitPytorch ? teacherFeatures : teacherFeatures.l2Normalized()
        let similarity = Tensor.matmul(s, t, transposeB: true)  // (b, ns, nt)
        let out = Storage(uninitializedCount: b * ns * k)
        for bi in 0..<b {
            for i in 0..<ns {
                let row = similarity.base + (bi * ns + i) * nt
                var best = 0
                for j in 1..<Swift.max(nt, 1) where row[j] > row[best] { best = j }
                (out.base + (bi * ns + i) * k).update(from: teacherProbs.base + (bi * nt + best) * k, count: k)
            }
        }
        return Tensor(shape: [b, ns, k], storage: out)
    }

    func crossEntropy(_ target: Tensor, _ studentLogits: Tensor) -> Tensor {
        let scaled = studentLogits / Float(config.dino.studentTemperature)
        let logProbs = config.dino.vitPytorch ? (scaled.softmax() + 1e-20).log() : scaled.logSoftmax()
        return (target * logProbs).sum(axis: -1).mean() * -1
    }

    public func loss(views: [Tensor]) -> ObjectiveOutput {
        let vitPytorch = config.dino.vitPytorch
        let globals = vitPytorch ? Array(views[0..<2]) : Array(views[0..<config.dino.globalCrops])
        let studentViews = vitPytorch ? Array(views[2..<4]) : views
        precondition(!vitPytorch || views.count == 4, "vit-pytorch's EsViT takes 4 views: global 1, global 2, local 1, local 2")
        let teacherOut = Autograd.noGrad { outputs(globals, student: false) }
        let studentOut = outputs(studentViews, student: true)
        let temperature = currentTeacherTemperature
        let (viewTargets, regionTargets) = Autograd.noGrad {
            (teacherOut.map { (($0.view - viewCenter.value) / temperature).softmax() },
             teacherOut.map { (($0.region - regionCenter.value) / temperature).softmax() })
        }
        // (teacher crop, student crop) pairs: vit-pytorch pairs teacher 1 with student 2 and 2 with 1.
        let pairs: [(Int, Int)] = vitPytorch ? [(0, 1), (1, 0)]
            : (0..<globals.count).flatMap { q in studentViews.indices.filter { $0 != q }.map { (q, $0) } }
        var viewLoss: Tensor?, regionLoss: Tensor?
        var entropy = 0.0
        for (q, v) in pairs {
            let view = crossEntropy(viewTargets[q], studentOut[v].view)
            let matched = Autograd.noGrad {
                matchedTargets(regionTargets[q], teacherFeatures: teacherOut[q].features, studentFeatures: studentOut[v].features)
            }
            let region = crossEntropy(matched, studentOut[v].region)
            entropy += viewTargets[q].meanRowEntropy() + matched.meanRowEntropy()
            viewLoss = viewLoss.map { $0 + view } ?? view
            regionLoss = regionLoss.map { $0 + region } ?? region
        }
        let scale = 1 / Float(pairs.count)
        let (batchView, batchRegion) = Autograd.noGrad {
            (Tensor.concat(teacherOut.map(\.view), axis: 0).mean(axis: 0, keepDims: true),
             Tensor.concat(teacherOut.map { $0.region.reshaped([$0.region.shape[0] * $0.region.shape[1], config.dino.outDim]) }, axis: 0)
                .mean(axis: 0, keepDims: true))
        }
        // Over the global batch when the run is spread over processes.
        pendingCenters = (Teacher.globalMean(batchView, rows: teacherOut.reduce(0) { $0 + $1.view.shape[0] }),
                          Teacher.globalMean(batchRegion, rows: teacherOut.reduce(0) { $0 + $1.region.shape[0] * $1.region.shape[1] }))
        let v = viewLoss! * scale, r = regionLoss! * scale
        let weighted = config.regionWeight == 1 ? r : r * Float(config.regionWeight)
        return ObjectiveOutput(loss: (v + weighted) * 0.5, diagnostics: ["view_loss": Double(v.item), "region_loss": Double(r.item),
                                                                       "teacher_temperature": Double(temperature),
                                                                       "teacher_entropy": entropy * 0.5 * Double(scale)])
    }

    public func willStep(_ step: Int, of totalSteps: Int, stepsPerEpoch: Int) {
        let epoch = step / Swift.max(stepsPerEpoch, 1)
        currentTeacherTemperature = Float(config.dino.teacherTemperature(epoch: epoch))
        let frozen = epoch < config.dino.freezeLastLayerEpochs
        studentViewHead.lastLayer?.gradientsStopped = frozen
        studentRegionHead.lastLayer?.gradientsStopped = frozen
    }

    public func afterStep(_ step: Int, of totalSteps: Int) {
        let m = Float(config.dino.momentumSchedule.value(base: config.dino.teacherMomentum, step: step, totalSteps: totalSteps))
        Teacher.update(teacher, from: student, momentum: m)
        Teacher.update(teacherViewHead, from: studentViewHead, momentum: m)
        Teacher.update(teacherRegionHead, from: studentRegionHead, momentum: m)
        if let (view, region) = pendingCenters {
            Teacher.movingAverage(viewCenter.value, toward: view, momentum: Float(config.dino.centerMomentum))
            Teacher.movingAverage(regionCenter.value, toward: region, momentum: Float(config.dino.centerMomentum))
            pendingCenters = nil
        }
    }
}
