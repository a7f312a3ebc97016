import Data
import Encoders
import Foundation
import NN
import Objectives
import Store
import TensorCore
import TestSupport
import XCTest

/// BYOL and DINO loaded with the reference weights and given the reference views give the
/// reference loss, gradients, EMA teacher and centre (fixtures from tools/make_fixtures.py, float64):
/// vit-pytorch 1.7.14's Dino, the official DINO loss and head, byol-pytorch 0.9.1's BYOL.
final class SiameseParityTests: XCTestCase {
    func fixture(_ name: String) throws -> [String: Tensor] { try loadFixture(name, from: .module) }

    static func vit(image: Int, channels: Int) -> ViT {
        var c = ViTConfig()
        (c.imageHeight, c.imageWidth, c.patchHeight, c.patchWidth, c.channels) = (image, image, 4, 4, channels)
        (c.dim, c.depth, c.heads, c.dimHead, c.mlpDim, c.numClasses) = (16, 1, 2, 8, 32, 5)
        return ViT(c, initializer: Initializer(seed: 0))
    }

    /// Loads the fixture, runs `loss`, compares the loss and every gradient; returns the fixture.
    func check(_ name: String, _ objective: Module, _ f: [String: Tensor], loss: () -> Tensor) throws {
        let unused = try objective.load(f)
        XCTAssertEqual(unused.filter { !($0.hasPrefix("grad.") || $0.hasPrefix("after.") || $0.hasPrefix("view") || ["loss", "new_center"].contains($0)) },
                       [], "every fixture weight maps to a parameter or buffer")
        let value = loss()
        assertClose("\(name) loss", [Double(value.item)], f["loss"]!.scalars.map(Double.init), tolerance: 1e-5)
        value.backward()
        var checked = 0
        for (key, p) in objective.namedParameters() {
            guard let expected = f["grad." + key] else {
                XCTAssertTrue(p.grad?.scalars.allSatisfy { $0 == 0 } ?? true, "\(name): \(key) has no gradient in the reference")
                continue
            }
            let actual = try XCTUnwrap(p.grad, "\(name): no gradient for \(key)")
            checked += 1
            if expected.scalars.allSatisfy({ Swift.abs($0) < 1e-12 }) {
                // Structurally zero (a bias before a batch norm, a shift the norm removes): float32
                // leaves rounding noise far below the model's gradient scale.
                let scale = f.filter { $0.key.hasPrefix("grad.") }.values.flatMap { $0.scalars.map { Swift.abs($0) } }.max()!
                XCTAssertLessThan(actual.scalars.map { Swift.abs($0) }.max()!, 1e-5 * scale, "\(name): \(key) must be zero")
                continue
            }
            assertClose("\(name) grad \(key)", actual.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-4)
        }
        XCTAssertEqual(checked, f.keys.filter { $0.hasPrefix("grad.") }.count, "\(name): every reference gradient compared")
        XCTAssertGreaterThan(checked, 10)
    }

    /// The teacher's parameters (and any tensor named in `also`) after one EMA update.
    func checkAfterUpdate(_ name: String, _ objective: Module, _ f: [String: Tensor], prefix: String, also: [String: (Tensor, Double)] = [:]) {
        var compared = 0
        let state = objective.stateDict()
        for (key, p) in objective.namedParameters() where key.hasPrefix(prefix) {
            guard let expected = f["after." + key] else { XCTFail("\(name): no reference for \(key) after the update"); continue }
            assertClose("\(name) after \(key)", p.value.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-5)
            compared += 1
        }
        for (key, (expected, tolerance)) in also {
            // Centres average the teacher's outputs, whose float32 error grows through a deep encoder.
            assertClose("\(name) after \(key)", state[key]!.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: tolerance)
        }
        XCTAssertGreaterThan(compared, 10)
    }

    func testDINOMatchesVitPytorchDino() throws {
        let f = try fixture("dino_vitpytorch")
        var config = DINO.Config.vitPytorchDefaults
        (config.outDim, config.hiddenDim, config.headLayers) = (24, 32, 3)
        let dino = DINO(student: Self.vit(image: 8, channels: 3), teacher: Self.vit(image: 8, channels: 3), imageShape: [3, 8, 8],
                        config: config, initializer: Initializer(seed: 1))
        let views = (0..<4).map { f["view\($0)"]! }
        try check("dino (vit-pytorch)", dino, f) { dino.loss(views: views).loss }
        dino.afterStep(0, of: 10)
        checkAfterUpdate("dino (vit-pytorch)", dino, f, prefix: "teacher_encoder.", also: ["teacher_centers": (f["after.teacher_centers"]!, 1e-4)])
    }

    func testDINOOfficialMultiCropLossMatchesTheReference() throws {
        let f = try fixture("dino_official")
        var config = DINO.Config()
        (config.outDim, config.hiddenDim, config.bottleneckDim, config.headLayers) = (24, 20, 10, 3)
        (config.studentTemperature, config.teacherTemperature, config.warmupTeacherTemperatureEpochs, config.freezeLastLayerEpochs) = (0.1, 0.055, 0, 0)
        let dino = DINO(student: Self.vit(image: 12, channels: 1), teacher: Self.vit(image: 12, channels: 1), imageShape: [1, 12, 12],
                        config: config, initializer: Initializer(seed: 1))
        // Two 12-pixel global crops and three 8-pixel local ones (their position grid resized bicubically).
        let views = (0..<5).map { f["view\($0)"]! }
        try check("dino (official)", dino, f) { dino.loss(views: views).loss }
        dino.afterStep(0, of: 10)
        assertClose("dino centre", dino.center.value.scalars.map(Double.init), f["new_center"]!.scalars.map(Double.init), tolerance: 1e-5)
    }

    func testDINOFreezesItsLastLayerAndWarmsUpTheTeacherTemperature() throws {
        var config = DINO.Config()
        (config.outDim, config.hiddenDim, config.bottleneckDim, config.headLayers) = (24, 20, 10, 3)
        (config.warmupTeacherTemperatureEpochs, config.freezeLastLayerEpochs) = (3, 1)
        for (epoch, expected) in [(0, 0.04), (1, 0.055), (2, 0.07), (3, 0.07), (9, 0.07)] {
            XCTAssertEqual(config.teacherTemperature(epoch: epoch), expected, accuracy: 1e-12, "np.linspace(0.04, 0.07, 3), then 0.07")
        }
        let dino = DINO(student: Self.vit(image: 12, channels: 1), teacher: Self.vit(image: 12, channels: 1), imageShape: [1, 12, 12],
                        config: config, initializer: Initializer(seed: 1))
        let rng = RandomStream(seed: 3, purpose: "views")
        let views = [12, 12, 8].map { Tensor.randn([3, 1, $0, $0], rng: rng) }
        let lastV = dino.studentHead.lastLayer!.weightV
        XCTAssertTrue(dino.studentHead.lastLayer!.weightG.isFrozen, "norm_last_layer: g stays 1")
        dino.willStep(0, of: 40, stepsPerEpoch: 10)
        dino.loss(views: views).loss.backward()
        XCTAssertNil(lastV.grad, "epoch 1: the last layer is frozen")
        XCTAssertNotNil(dino.studentHead.mlp.namedParameters().first!.1.grad)
        dino.zeroGrad()
        dino.willStep(10, of: 40, stepsPerEpoch: 10)
        dino.loss(views: views).loss.backward()
        XCTAssertNotNil(lastV.grad, "epoch 2: the last layer trains")
        // The teacher never receives gradients and is not among the trainable parameters.
        XCTAssertTrue(dino.teacher.parameters.allSatisfy { $0.isFrozen && $0.grad == nil })
        XCTAssertTrue(dino.teacherHead.parameters.allSatisfy { $0.isFrozen && $0.grad == nil })
    }

    func testBYOLMatchesByolPytorch() throws {
        let f = try fixture("byol")
        var config = BYOL.Config()
        (config.projectionSize, config.projectionHiddenSize, config.momentum, config.momentumSchedule) = (12, 20, 0.99, .constant)
        let byol = BYOL(online: Self.vit(image: 8, channels: 3), target: Self.vit(image: 8, channels: 3), imageShape: [3, 8, 8],
                        config: config, initializer: Initializer(seed: 1))
        try check("byol", byol, f) { byol.loss(views: [f["view0"]!, f["view1"]!]).loss }
        byol.afterStep(0, of: 10)
        checkAfterUpdate("byol", byol, f, prefix: "target_encoder.")
    }

    static func smallCvT(channels: Int) -> CvT {
        var c = CvTConfig()
        (c.imageSize, c.channels, c.numClasses, c.dimHead) = (28, channels, 5, 64)
        c.stages = [CvTStage(embDim: 8, embKernel: 7, embStride: 4, heads: 1, depth: 1), CvTStage(embDim: 12, embKernel: 3, embStride: 2, heads: 2, depth: 1),
                    CvTStage(embDim: 16, embKernel: 3, embStride: 2, heads: 2, depth: 1)]
        return CvT(c, initializer: Initializer(seed: 0))
    }

    func testEsViTMatchesVitPytorchOnACvT() throws {
        let f = try fixture("esvit_vitpytorch")
        var config = EsViT.Config.vitPytorchDefaults
        (config.dino.outDim, config.dino.hiddenDim, config.dino.headLayers) = (24, 20, 3)
        let esvit = EsViT(student: Self.smallCvT(channels: 3), teacher: Self.smallCvT(channels: 3), imageShape: [3, 28, 28], config: config,
                          initializer: Initializer(seed: 1))
        let views = (0..<4).map { f["view\($0)"]! }
        try check("esvit (vit-pytorch)", esvit, f) { esvit.loss(views: views).loss }
        esvit.afterStep(0, of: 10)
        checkAfterUpdate("esvit (vit-pytorch)", esvit, f, prefix: "teacher_encoder.",
                         also: ["teacher_view_centers": (f["after.teacher_view_centers"]!, 1e-4),
                                // Ill-conditioned at element 22: vit-pytorch itself, run in float32,
                                // misses its float64 fixture there by 1.8e-5 (the view centres: 1e-7);
                                // this engine by 0.8e-4 to 1.4e-4, depending on the convolutions'
                                // summation order.
                                "teacher_region_centers": (f["after.teacher_region_centers"]!, 3e-4)])
    }

    func testEsViTOfficialLossMatchesTheReference() throws {
        let f = try fixture("esvit_official")
        var config = EsViT.Config()
        (config.dino.outDim, config.dino.hiddenDim, config.dino.bottleneckDim, config.dino.headLayers) = (24, 20, 10, 3)
        (config.dino.studentTemperature, config.dino.teacherTemperature, config.dino.warmupTeacherTemperatureEpochs) = (0.1, 0.04, 0)
        config.dino.freezeLastLayerEpochs = 0
        let esvit = EsViT(student: Self.smallCvT(channels: 1), teacher: Self.smallCvT(channels: 1), imageShape: [1, 28, 28], config: config,
                          initializer: Initializer(seed: 1))
        // Two 28-pixel global crops (2x2 regions) and two 12-pixel local ones (1 region).
        let views = (0..<4).map { f["view\($0)"]! }
        try check("esvit (official)", esvit, f) { esvit.loss(views: views).loss }
    }

    /// region_weight scales the region term alone: loss = (view + w * region) / 2, with the same
    /// view and region losses as at weight 1 (the same weights and views).
    func testEsViTRegionWeightScalesTheRegionLossAlone() throws {
        let f = try fixture("esvit_official")
        let views = (0..<4).map { f["view\($0)"]! }
        var results: [(loss: Double, view: Double, region: Double)] = []
        for weight in [1.0, 2.5] {
            var config = EsViT.Config()
            (config.dino.outDim, config.dino.hiddenDim, config.dino.bottleneckDim, config.dino.headLayers) = (24, 20, 10, 3)
            config.regionWeight = weight
            let esvit = EsViT(student: Self.smallCvT(channels: 1), teacher: Self.smallCvT(channels: 1), imageShape: [1, 28, 28], config: config,
                              initializer: Initializer(seed: 1))
            let out = esvit.loss(views: views)
            results.append((Double(out.loss.item), out.diagnostics["view_loss"]!, out.diagnostics["region_loss"]!))
        }
        XCTAssertEqual(results[0].view, results[1].view)
        XCTAssertEqual(results[0].region, results[1].region)
        XCTAssertGreaterThan(results[0].region, 0.1)
        XCTAssertEqual(results[0].loss, (results[0].view + results[0].region) / 2, accuracy: 1e-5)
        XCTAssertEqual(results[1].loss, (results[1].view + 2.5 * results[1].region) / 2, accuracy: 1e-5)
    }

    func testMomentumFollowsAHalfCosineToOne() {
        XCTAssertEqual(Teacher.cosineMomentum(base: 0.996, step: 0, totalSteps: 100), 0.996, accuracy: 1e-12)
        XCTAssertEqual(Teacher.cosineMomentum(base: 0.996, step: 50, totalSteps: 100), 0.998, accuracy: 1e-12)
        XCTAssertEqual(Teacher.cosineMomentum(base: 0.996, step: 100, totalSteps: 100), 1, accuracy: 1e-12)
        XCTAssertEqual(MomentumSchedule.constant.value(base: 0.9, step: 70, totalSteps: 100), 0.9)
    }

    func testPositionGridResizeMatchesTorchBicubic() throws {
        // The dino_official fixture exercises it through the loss; here the matrix itself: rows sum
        // to 1 and resizing to the same size is the identity.
        let same = bicubicResizeMatrix(from: (3, 3), to: (3, 3))
        XCTAssertEqual(same.scalars, (0..<81).map { $0 / 9 == $0 % 9 ? 1 : 0 })
        let down = bicubicResizeMatrix(from: (7, 7), to: (3, 3))
        XCTAssertEqual(down.shape, [9, 49])
        for r in 0..<9 { XCTAssertEqual(down.scalars[(r * 49)..<(r * 49 + 49)].reduce(0, +), 1, accuracy: 1e-5) }
    }
}

/// BYOL and DINO train through the HiddenLayerEncoder protocol alone: a few steps with every
/// encoder, with augmented views from the Data layer, give finite losses and move the teacher.
final class SiamesePairingTests: XCTestCase {
    static func encoders() -> [(String, () -> any HiddenLayerEncoder)] {
        var c = ViTConfig()
        (c.imageHeight, c.imageWidth, c.patchHeight, c.patchWidth, c.channels) = (12, 12, 4, 4, 1)
        (c.dim, c.depth, c.heads, c.dimHead, c.mlpDim, c.numClasses) = (16, 1, 2, 8, 32, 5)
        var seed: UInt64 = 0
        func next() -> Initializer { seed += 1; return Initializer(seed: seed) }
        var simple = c
        simple.pool = .mean
        var cvt = CvTConfig()
        (cvt.imageSize, cvt.channels, cvt.dimHead) = (12, 1, 8)
        cvt.stages = [CvTStage(embDim: 8, embKernel: 3, embStride: 2, heads: 1, depth: 1), CvTStage(embDim: 12, embKernel: 3, embStride: 2, heads: 2, depth: 1)]
        return [("vit", { ViT(c, initializer: next()) }), ("simple-vit", { SimpleViT(simple, initializer: next()) }),
                ("cvt", { CvT(cvt, initializer: next()) })]
    }

    func train(_ objective: any Objective, teacher: Module, pipeline: ViewPipeline, steps: Int = 3) -> [Float] {
        let optimizer = AdamW(objective.parameters.filter { !$0.isFrozen }, learningRate: 1e-3)
        let before = teacher.parameters.map { $0.value.scalars }
        let rng = RandomStream(seed: 5, purpose: "images")
        var losses: [Float] = []
        for step in 0..<steps {
            let images = (0..<6).map { _ in AugmentImage(channels: 1, height: 12, width: 12, pixels: (0..<144).map { _ in rng.nextFloat() }) }
            let views = pipeline.makeViews(images: images, mean: [0.5], std: [0.3], rng: rng)
            objective.willStep(step, of: steps, stepsPerEpoch: 1)
            let loss = objective.loss(views: views).loss
            losses.append(loss.item)
            loss.backward()
            optimizer.step()
            optimizer.zeroGrad()
            objective.afterStep(step, of: steps)
        }
        let after = teacher.parameters.map { $0.value.scalars }
        XCTAssertNotEqual(before, after, "the teacher moved")
        XCTAssertTrue(teacher.parameters.allSatisfy { $0.grad == nil }, "the teacher never got a gradient")
        return losses
    }

    func testEachObjectiveTrainsEachEncoder() {
        for (name, make) in Self.encoders() {
            var global = ViewAugmentation(size: 12, scale: (0.4, 1))
            global.jitter = ColorJitter(probability: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1)
            let local = ViewAugmentation(size: 8, scale: (0.05, 0.4))
            var dinoConfig = DINO.Config()
            (dinoConfig.outDim, dinoConfig.hiddenDim, dinoConfig.bottleneckDim, dinoConfig.freezeLastLayerEpochs) = (32, 24, 8, 1)
            let dino = DINO(student: make(), teacher: make(), imageShape: [1, 12, 12], config: dinoConfig, initializer: Initializer(seed: 9))
            let dinoLosses = train(dino, teacher: dino.teacher, pipeline: ViewPipeline(views: [global, global, local, local]))
            XCTAssertTrue(dinoLosses.allSatisfy(\.isFinite), "dino on \(name): \(dinoLosses)")

            var byolConfig = BYOL.Config()
            (byolConfig.projectionSize, byolConfig.projectionHiddenSize) = (8, 24)
            let byol = BYOL(online: make(), target: make(), imageShape: [1, 12, 12], config: byolConfig, initializer: Initializer(seed: 9))
            let byolLosses = train(byol, teacher: byol.target, pipeline: ViewPipeline(views: [global, global]))
            XCTAssertTrue(byolLosses.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 8 }, "byol on \(name): \(byolLosses)")

            var esvitConfig = EsViT.Config()
            esvitConfig.dino = dinoConfig
            let esvit = EsViT(student: make(), teacher: make(), imageShape: [1, 12, 12], config: esvitConfig, initializer: Initializer(seed: 9))
            let esvitLosses = train(esvit, teacher: esvit.teacher, pipeline: ViewPipeline(views: [global, global, local, local]))
            XCTAssertTrue(esvitLosses.allSatisfy(\.isFinite), "esvit on \(name): \(esvitLosses)")
        }
    }
}
