import Encoders
import Foundation
import NN
import Store
import TensorCore
import TestSupport
import XCTest

/// A ViT and a SimpleViT loaded with vit-pytorch 1.7.14's weights (by state_dict name) give
/// vit-pytorch's logits and gradients (fixtures from tools/make_fixtures.py, float64 PyTorch).
final class ViTParityTests: XCTestCase {
    static var config: ViTConfig {
        var c = ViTConfig()
        (c.imageHeight, c.imageWidth, c.patchHeight, c.patchWidth, c.channels) = (8, 8, 4, 4, 2)
        (c.dim, c.depth, c.heads, c.dimHead, c.mlpDim, c.numClasses) = (16, 2, 2, 8, 32, 5)
        return c
    }

    func testViTWithClassTokenPooling() throws {
        try check(ViT(Self.config, initializer: Initializer(seed: 0)), fixture: "vit_cls")
    }

    /// The recorded attention probabilities are the ones the forward pass uses: the blocks run
    /// while recording give the same tokens as the plain forward, and every row is a distribution.
    func testAttentionMapsMatchTheForwardPass() throws {
        let vit = ViT(Self.config, initializer: Initializer(seed: 0))
        try vit.load(fixture("vit_cls"))
        let x = try fixture("vit_cls")["x"]!
        let maps = vit.attentionMaps(x)
        XCTAssertEqual(maps.count, 2)
        XCTAssertEqual(maps[0].shape, [3, 2, 5, 5])
        var h = vit.inputTokens(x)
        for (i, block) in vit.transformer.layers.enumerated() {
            let (next, probabilities) = block.recordingAttention(h)
            XCTAssertEqual(probabilities.scalars, maps[i].scalars)
            let (_, direct) = block.attention(h, returnProbabilities: true)
            XCTAssertEqual(direct!.scalars, probabilities.scalars)
            h = next
        }
        XCTAssertEqual(vit.transformer.norm(h).scalars, vit.hidden(x, layer: "tokens").scalars)
        for row in stride(from: 0, to: maps[1].count, by: 5) {
            XCTAssertEqual(maps[1].scalars[row..<(row + 5)].reduce(0, +), 1, accuracy: 1e-5)
        }
    }

    static var cvtConfig: CvTConfig {
        var c = CvTConfig()
        (c.imageSize, c.channels, c.numClasses, c.dimHead) = (28, 1, 5, 64)
        c.stages = [CvTStage(embDim: 8, embKernel: 7, embStride: 4, heads: 1, depth: 1), CvTStage(embDim: 12, embKernel: 3, embStride: 2, heads: 2, depth: 1),
                    CvTStage(embDim: 16, embKernel: 3, embStride: 2, heads: 2, depth: 2)]
        return c
    }

    /// vit-pytorch 1.7.14's CvT (convolutional token embeddings, depthwise-separable q/k/v
    /// projections with batch norm in training mode, strided keys and values), by state_dict name.
    func testCvTMatchesVitPytorch() throws {
        try check(CvT(Self.cvtConfig, initializer: Initializer(seed: 0)), fixture: "cvt")
    }

    func testCvTHiddenLayers() {
        let cvt = CvT(Self.cvtConfig, initializer: Initializer(seed: 0))
        XCTAssertFalse((cvt as Any) is any PatchTokenEncoder, "a CvT is not patch-based")
        let x = Tensor.randn([2, 1, 28, 28], rng: RandomStream(seed: 1))
        let out = cvt.hiddenOutputs(x, layers: ["tokens", "pooled", "logits", "stages.0", "stages.1"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 7, 7])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 12, 4, 4])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 16], "the last stage's 2x2 map as 4 region tokens")
        XCTAssertEqual(out["pooled"]!.shape, [2, 16])
        XCTAssertEqual(out["logits"]!.shape, [2, 5])
        // pooled is the mean of the region tokens; smaller crops run too (12 px -> 3 -> 2 -> 1).
        assertClose("pooled", out["pooled"]!.scalars.map(Double.init), out["tokens"]!.mean(axis: 1).scalars.map(Double.init), tolerance: 1e-6)
        XCTAssertEqual(cvt.hidden(Tensor.randn([2, 1, 12, 12], rng: RandomStream(seed: 2)), layer: "tokens").shape, [2, 1, 16])
        XCTAssertTrue(cvt.namedParameters().map(\.0).contains("layers.2.2.layers.1.0.to_kv.net.0.weight"))
    }

    /// EsViT's CvT option: a LayerNorm over the last stage's channels before tokens and pooling.
    func testCvTFinalNorm() {
        var config = Self.cvtConfig
        config.finalNorm = true
        let plain = CvT(Self.cvtConfig, initializer: Initializer(seed: 0))
        let normed = CvT(config, initializer: Initializer(seed: 0))
        XCTAssertEqual(normed.namedParameters().map(\.0).filter { $0.hasPrefix("norm.") }, ["norm.g", "norm.b"])
        XCTAssertFalse(plain.namedParameters().contains { $0.0.hasPrefix("norm.") })
        let x = Tensor.randn([2, 1, 28, 28], rng: RandomStream(seed: 1))
        let a = plain.hiddenOutputs(x, layers: ["tokens", "stages.2"]), b = normed.hiddenOutputs(x, layers: ["tokens", "pooled", "stages.2"])
        assertClose("stages.2", b["stages.2"]!.scalars.map(Double.init), a["stages.2"]!.scalars.map(Double.init), tolerance: 0)
        // Each region token of the normed CvT is its plain token standardised over the 16 channels.
        assertClose("normed tokens", b["tokens"]!.scalars.map(Double.init), DArray(a["tokens"]!).mapRows(DArray.standardizedRow).data,
                    tolerance: 1e-5)
        assertClose("pooled", b["pooled"]!.scalars.map(Double.init), b["tokens"]!.mean(axis: 1).scalars.map(Double.init), tolerance: 1e-6)
    }

    func testViTWithMeanPooling() throws {
        var c = Self.config
        c.pool = .mean
        try check(ViT(c, initializer: Initializer(seed: 0)), fixture: "vit_mean")
    }

    func testSimpleViT() throws {
        try check(SimpleViT(Self.config, initializer: Initializer(seed: 0)), fixture: "simple_vit")
    }

    /// vit-pytorch MP3's cross-attention: queries from x, keys and values from a context.
    func testCrossAttentionMatchesMP3() throws {
        let f = try fixture("mp3_cross_attention")
        let layer = Attention(dim: 16, heads: 2, dimHead: 8, crossAttention: true, initializer: Initializer(seed: 0))
        let unused = try layer.load(f)
        XCTAssertEqual(Set(unused), Set(f.keys.filter { $0.hasPrefix("grad.") || ["x", "context", "out", "out_weight"].contains($0) }))
        let x = f["x"]!.requiringGrad(), context = f["context"]!.requiringGrad()
        let (y, _) = layer(x, context: context)
        assertClose("cross-attention out", y.scalars.map(Double.init), f["out"]!.scalars.map(Double.init), tolerance: 1e-5)
        (y * f["out_weight"]!).sum().backward()
        for (key, p) in layer.namedParameters() {
            assertClose("grad \(key)", p.grad!.scalars.map(Double.init), f["grad." + key]!.scalars.map(Double.init), tolerance: 1e-4)
        }
        assertClose("grad x", x.grad!.scalars.map(Double.init), f["grad.x"]!.scalars.map(Double.init), tolerance: 1e-4)
        assertClose("grad context", context.grad!.scalars.map(Double.init), f["grad.context"]!.scalars.map(Double.init), tolerance: 1e-4)
    }

    func testRectangularImagesAndPatches() {
        var c = Self.config
        (c.imageHeight, c.imageWidth, c.patchHeight, c.patchWidth) = (8, 12, 4, 3)
        let model = ViT(c, initializer: Initializer(seed: 0))
        XCTAssertEqual(model.patchCount, 8)
        let x = Tensor.randn([2, 2, 8, 12], rng: RandomStream(seed: 4))
        XCTAssertEqual(model.patchify(x).shape, [2, 8, 24])
        // Patch (row 1, column 2) holds pixels rows 4..<8, columns 6..<9, channels last.
        let p = model.patchify(x).scalars
        let patch = 1 * 4 + 2
        XCTAssertEqual(p[(0 * 8 + patch) * 24 + 0], x.scalars[0 * 96 + 4 * 12 + 6])
        XCTAssertEqual(p[(0 * 8 + patch) * 24 + 1], x.scalars[1 * 96 + 4 * 12 + 6])
        XCTAssertEqual(p[(0 * 8 + patch) * 24 + 2], x.scalars[0 * 96 + 4 * 12 + 7])
        XCTAssertEqual(model(x).shape, [2, 5])
        var bad = c
        bad.patchWidth = 5
        XCTAssertNotNil(bad.problem)
    }

    func testParameterNamesFollowVitPytorch() {
        let names = ViT(Self.config, initializer: Initializer(seed: 0)).namedParameters().map(\.0)
        XCTAssertEqual(Array(names.prefix(8)), ["to_patch_embedding.1.weight", "to_patch_embedding.1.bias",
                                                "to_patch_embedding.2.weight", "to_patch_embedding.2.bias",
                                                "to_patch_embedding.3.weight", "to_patch_embedding.3.bias",
                                                "pos_embedding", "cls_token"])
        XCTAssertTrue(names.contains("transformer.layers.1.0.to_qkv.weight"))
        XCTAssertTrue(names.contains("transformer.layers.0.1.net.4.bias"))
        XCTAssertTrue(names.contains("transformer.norm.weight"))
        XCTAssertEqual(names.last, "mlp_head.bias")
    }

    func testHiddenLayersAndShapes() {
        let model = ViT(Self.config, initializer: Initializer(seed: 0))
        XCTAssertEqual(model.hiddenLayerNames, ["tokens", "pooled", "logits", "blocks.0", "blocks.1"])
        let x = Tensor.randn([3, 2, 8, 8], rng: RandomStream(seed: 1))
        let out = model.hiddenOutputs(x, layers: ["tokens", "pooled", "blocks.1"])
        XCTAssertEqual(out["tokens"]?.shape, [3, 5, 16])
        XCTAssertEqual(out["pooled"]?.shape, [3, 16])
        XCTAssertEqual(out["blocks.1"]?.shape, [3, 5, 16])
        XCTAssertNil(out["logits"])
        XCTAssertEqual(model.patchify(x).shape, [3, 4, 32])
        XCTAssertEqual(model.encodeTokens(model.embedPatches(model.patchify(x)) + model.patchPositions()).shape, [3, 4, 16])
    }

    func testFreezingAndEvalMode() {
        let model = ViT(Self.config, initializer: Initializer(seed: 0))
        model.transformer.setFrozen(true)
        let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 1))
        model(x).sum().backward()
        XCTAssertNil(model.transformer.layers[0].attention.toQKV!.weight.grad)
        XCTAssertNotNil(model.mlpHead.weight.grad)
        model.eval()
        XCTAssertFalse(model.transformer.layers[1].feedForward.isTraining)
    }
}

/// The supervised update loop against PyTorch: same initial weights, same batches, three AdamW
/// steps (lr 1e-3, weight decay 0.05 on every parameter) on a per-step cosine schedule.
final class TrainingParityTests: XCTestCase {
    func testAdamWStepsMatchTorch() throws {
        let f = try loadFixture("vit_adamw_steps", from: .module)
        var config = ViTParityTests.config
        config.channels = 1
        let model = ViT(config, initializer: Initializer(seed: 0))
        let initial = Dictionary(uniqueKeysWithValues: f.filter { $0.key.hasPrefix("init.") }.map { (String($0.key.dropFirst(5)), $0.value) })
        XCTAssertEqual(try model.load(initial), [])
        let optimizer = AdamW(model.parameters, learningRate: 1e-3, weightDecay: 0.05, decayAll: true)
        let schedule = CosineSchedule(base: 1e-3, totalSteps: 3)
        for step in 0..<3 {
            optimizer.learningRate = Float(schedule.value(at: step))
            let labels = f["batch\(step).y"]!.scalars.map { Int($0) }
            let loss = model(f["batch\(step).x"]!).crossEntropy(.labels(labels))
            XCTAssertEqual(loss.item, f["batch\(step).loss"]!.item, accuracy: 1e-5, "loss at step \(step)")
            optimizer.zeroGrad()
            loss.backward()
            optimizer.step()
        }
        for (name, p) in model.namedParameters() {
            let start = initial[name]!.scalars, expected = f["final." + name]!.scalars
            let ours = zip(p.value.scalars, start).map { Double($0 - $1) }
            let theirs = zip(expected, start).map { Double($0 - $1) }
            assertClose("update of \(name)", ours, theirs, tolerance: 1e-3)
        }
    }
}

/// Loading a vit-pytorch fixture by state_dict name and comparing logits and gradients (shared by
/// the zoo's parity tests).
extension XCTestCase {
    func fixture(_ name: String) throws -> [String: Tensor] { try loadFixture(name, from: .module) }

    /// `tolerance` scales the bars (logits 1e-5, gradients 1e-4 relative to the largest value):
    /// `.fewValuesPerBatchNorm` for fixtures whose BatchNorms normalise a handful of values per
    /// channel, where float32 rounding is amplified (see `ParityTolerance`).
    func check(_ model: some HiddenLayerEncoder, fixture name: String, tolerance: ParityTolerance = .standard,
               file: StaticString = #filePath, line: UInt = #line) throws {
        var f = try fixture(name)
        // The fixtures hold parameters only; batch-norm statistics (unused in training mode) stay the model's.
        for (key, buffer) in model.namedBuffers() where f[key] == nil { f[key] = buffer.value }
        let unused = try model.load(f)
        XCTAssertEqual(Set(unused), Set(f.keys.filter { $0.hasPrefix("grad.") || ["x", "out", "out_weight"].contains($0) }),
                       "every fixture weight maps to a model parameter", file: file, line: line)
        let x = f["x"]!.requiringGrad()
        let logits = model.hidden(x, layer: "logits")
        assertClose("\(name) logits", logits.scalars.map(Double.init), f["out"]!.scalars.map(Double.init), tolerance: 1e-5 * tolerance.factor, file: file, line: line)
        (logits * f["out_weight"]!).sum().backward()
        var checked = 0
        for (key, p) in model.namedParameters() {
            guard let expected = f["grad." + key] else {
                // Unused by this input in PyTorch too (SepViT's window-token projection with a single
                // window): torch leaves no gradient, and the engine must have none or zeros.
                XCTAssertTrue(p.grad.map { $0.scalars.allSatisfy { $0 == 0 } } ?? true, "\(name): \(key) has a gradient, the fixture none", file: file, line: line)
                continue
            }
            let actual = try XCTUnwrap(p.grad, "no gradient for \(key)", file: file, line: line)
            checked += 1
            if expected.scalars.allSatisfy({ Swift.abs($0) < 1e-10 }) {
                // Structurally zero (a shift that a following batch norm removes): float32 leaves
                // rounding noise, which must stay far below the model's gradient scale.
                let scale = f.filter { $0.key.hasPrefix("grad.") }.values.flatMap { $0.scalars.map { Swift.abs($0) } }.max()!
                XCTAssertLessThan(actual.scalars.map { Swift.abs($0) }.max()!, 1e-4 * scale, "\(name): \(key) must be zero", file: file, line: line)
                continue
            }
            let tensorScale = expected.scalars.map { Swift.abs(Double($0)) }.max()!
            let modelScale = f.filter { $0.key.hasPrefix("grad.") }.values.flatMap { $0.scalars.map { Swift.abs(Double($0)) } }.max()!
            if tensorScale < 1e-5 * modelScale {
                // A gradient five orders below the model's (queries behind a nearly saturated softmax):
                // float32 rounding is then large relative to it, so it is held to the model's scale.
                let worst = zip(actual.scalars, expected.scalars).map { Swift.abs(Double($0) - Double($1)) }.max()!
                XCTAssertLessThan(worst, 1e-8 * modelScale, "\(name): \(key)", file: file, line: line)
                continue
            }
            assertClose("\(name) grad \(key)", actual.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-4 * tolerance.factor, file: file, line: line)
        }
        assertClose("\(name) grad x", x.grad!.scalars.map(Double.init), f["grad.x"]!.scalars.map(Double.init), tolerance: 1e-4 * tolerance.factor, file: file, line: line)
        XCTAssertEqual(checked, f.keys.filter { $0.hasPrefix("grad.") }.count - 1, file: file, line: line)
    }
}

/// How far an encoder's float32 logits and gradients may sit from its float64 fixture.
struct ParityTolerance {
    let factor: Double
    /// Logits within 1e-5 and gradients within 1e-4 of the largest value.
    static let standard = ParityTolerance(factor: 1)
    /// Ten times that, for LeViT and MobileViT fixtures: at their small sizes a BatchNorm
    /// normalises three values per channel (LeViT's 1x1 last stage, batch 3) or a few more, so the
    /// float32 rounding of the products before it comes out hundreds of times larger, and how
    /// large depends on the OpenBLAS core's summation order. Measured (logits, relative): levit
    /// 1.6e-6 on Haswell's kernels, 3.6e-6 on Prescott's, 1.5e-5 on SkylakeX's (its gradients up to
    /// 2.5e-4); mobilevit_e1 1.6e-6, 1.9e-5, 2.6e-6; the other zoo fixtures stay below 3e-7 on all three.
    static let fewValuesPerBatchNorm = ParityTolerance(factor: 10)
}
