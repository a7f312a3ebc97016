import Encoders
import Foundation
import NN
import Store
import TensorCore
import TestSupport
import XCTest

/// The zoo's encoders loaded with vit-pytorch 1.7.14's weights by state_dict name give its logits
/// (1e-5) and every parameter's gradient (1e-4) (fixtures from tools/make_zoo_fixtures.py, float64).
final class ZooParityTests: XCTestCase {
    func testDeepViTMatchesVitPytorch() throws {
        try check(DeepViT(ViTParityTests.config, initializer: Initializer(seed: 0)), fixture: "deepvit")
        var mean = ViTParityTests.config
        mean.pool = .mean
        try check(DeepViT(mean, initializer: Initializer(seed: 0)), fixture: "deepvit_mean")
    }

    func testParallelViTMatchesVitPytorch() throws {
        try check(ParallelViT(ViTParityTests.config, initializer: Initializer(seed: 0)), fixture: "parallel_vit")
        var mean = ViTParityTests.config
        mean.pool = .mean
        try check(ParallelViT(mean, branches: 3, initializer: Initializer(seed: 0)), fixture: "parallel_vit_3")
    }

    func testViTForSmallDatasetsMatchesVitPytorch() throws {
        try check(SmallDatasetViT(ViTParityTests.config, initializer: Initializer(seed: 0)), fixture: "vit_small_datasets")
    }

    func testCaiTMatchesVitPytorch() throws {
        var config = ViTParityTests.config
        config.channels = 3
        try check(CaiT(config, initializer: Initializer(seed: 0)), fixture: "cait")
    }

    /// CaiT's LayerScale starts by the model's depth (the paper) or by each layer's index
    /// (vit-pytorch 1.7.14); layer dropout skips whole layers in training only, keeping one.
    func testCaiTLayerScaleAndLayerDropout() throws {
        var config = ViTParityTests.config
        config.depth = 20
        let paper = CaiT(config, initializer: Initializer(seed: 0))
        XCTAssertEqual(paper.patchTransformer.layers[0].attention.scale.value.scalars[0], 1e-5)
        XCTAssertEqual(paper.clsTransformer.layers[1].feedForward.scale.value.scalars[0], 1e-5)
        var legacy = CaiTOptions()
        legacy.layerScaleInit = .vitPytorch1714
        let old = CaiT(config, options: legacy, initializer: Initializer(seed: 0))
        XCTAssertEqual(old.patchTransformer.layers[0].attention.scale.value.scalars[0], 0.1)
        XCTAssertEqual(old.patchTransformer.layers[19].attention.scale.value.scalars[0], 1e-5)

        var dropping = CaiTOptions()
        dropping.layerDropout = 0.99
        config.depth = 2
        let model = CaiT(config, options: dropping, initializer: Initializer(seed: 0))
        for _ in 0..<20 { XCTAssertEqual(model.patchTransformer.keptLayers().filter { $0 }.count, 1) }
        model.eval()
        XCTAssertEqual(model.patchTransformer.keptLayers(), [true, true])
        XCTAssertEqual(model.hiddenLayerNames, ["tokens", "pooled", "logits", "blocks.0", "blocks.1", "class_blocks.0", "class_blocks.1"])
        let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 3, purpose: "x"))
        XCTAssertEqual(model.hidden(x, layer: "tokens").shape, [2, 4, 16])
        XCTAssertEqual(model.hidden(x, layer: "class_blocks.1").shape, [2, 16])
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 4, 4], rng: RandomStream(seed: 4, purpose: "x")), layer: "pooled").shape, [2, 16])
    }

    static var cctConfig: CCTConfig {
        var c = CCTConfig()
        (c.imageHeight, c.imageWidth, c.channels, c.numClasses) = (12, 12, 2, 5)
        (c.dim, c.depth, c.heads, c.mlpRatio, c.convLayers, c.kernelSize) = (16, 2, 2, 2, 2, 3)
        return c
    }

    func testCCTMatchesVitPytorch() throws {
        for positions in [CCTConfig.Positions.learnable, .sine] {
            var config = Self.cctConfig
            config.positions = positions
            let model = CCT(config, initializer: Initializer(seed: 0))
            XCTAssertEqual(config.grid(height: 12, width: 12).0, 3)
            model.eval()    // the fixtures are evaluation-mode (1.7.14 forces attention dropout and drop-path)
            try check(model, fixture: "cct_\(positions.rawValue)")
        }
        let table = try fixture("cct_sine_table")["table"]!
        assertClose("sine table", cctSinusoidalEmbedding(count: 49, dim: 32).scalars.map(Double.init), table.scalars.map(Double.init), tolerance: 1e-6)
    }

    /// CCT in training: drop-path and attention dropout act, smaller images get a resized table,
    /// and the named sizes set the widths.
    func testCCTTrainsAndResizes() throws {
        let model = CCT(Self.cctConfig, initializer: Initializer(seed: 0))
        let x = Tensor.randn([2, 2, 12, 12], rng: RandomStream(seed: 3, purpose: "x"))
        let a = model.hidden(x, layer: "pooled"), b = model.hidden(x, layer: "pooled")
        XCTAssertNotEqual(a.scalars, b.scalars, "dropout acts in training")
        model.eval()
        XCTAssertEqual(model.hidden(x, layer: "pooled").scalars, model.hidden(x, layer: "pooled").scalars)
        XCTAssertEqual(model.hidden(x, layer: "tokens").shape, [2, 9, 16])
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 4, purpose: "x")), layer: "tokens").shape, [2, 4, 16])
        XCTAssertEqual(CCTConfig.named.first { $0.name == "cct_7" }!.dim, 256)
    }

    func testT2TViTMatchesVitPytorch() throws {
        var config = T2TConfig()
        config.vit = ViTParityTests.config
        config.layers = [T2TLayer(kernel: 3, stride: 2), T2TLayer(kernel: 3, stride: 2)]
        try check(T2TViT(config, initializer: Initializer(seed: 0)), fixture: "t2t")
        (config.vit.imageHeight, config.vit.imageWidth, config.vit.pool) = (12, 12, .mean)
        config.layers = [T2TLayer(kernel: 7, stride: 4), T2TLayer(kernel: 3, stride: 2)]
        XCTAssertEqual(config.tokenCount, 4)
        XCTAssertEqual(config.tokenWidth, 2 * 49 * 9)
        let model = T2TViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "t2t_74_mean")
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 4, purpose: "x")), layer: "tokens").shape, [2, 2, 16])
    }

    func testRvTMatchesVitPytorch() throws {
        var config = ViTParityTests.config
        (config.patchHeight, config.patchWidth) = (2, 2)
        let model = RvT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "rvt")
        // The masked objectives' protocol: a full grid with or without the class token in front.
        let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 3, purpose: "x"))
        let tokens = model.hidden(x, layer: "tokens")
        let viaProtocol = model.encodeTokens(Tensor.concat([model.prefixTokens(batch: 2)!, model.embedPatches(model.patchify(x)) + model.patchPositions()], axis: 1))
        assertClose("rvt tokens", viaProtocol.scalars.map(Double.init), tokens.scalars.map(Double.init), tolerance: 1e-6)
        XCTAssertEqual(model.encodeTokens(model.embedPatches(model.patchify(x))).shape, [2, 16, 16])
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 4, 4], rng: RandomStream(seed: 4, purpose: "x")), layer: "pooled").shape, [2, 16])
        config.dimHead = 6
        var plain = RvTOptions()
        (plain.convolutionalQuery, plain.glu) = (false, false)
        try check(RvT(config, options: plain, initializer: Initializer(seed: 0)), fixture: "rvt_plain")
    }

    func testXCiTMatchesVitPytorch() throws {
        var config = ViTParityTests.config
        (config.patchHeight, config.patchWidth, config.channels) = (2, 2, 3)
        let model = XCiT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "xcit")
        XCTAssertEqual(model.hiddenLayerNames.suffix(2), ["class_blocks.0", "class_blocks.1"])
        model.eval()
        XCTAssertEqual(model.hidden(Tensor.randn([2, 3, 4, 4], rng: RandomStream(seed: 4, purpose: "x")), layer: "pooled").shape, [2, 16])
        // 1.7.14's LayerScale misreads `18 > depth <= 24`: its layers past 18 start at 1e-6.
        XCTAssertEqual(LayerScaleInit.vitPytorch1714.value(layer: 19, depth: 24, xcit: true), 1e-6)
        XCTAssertEqual(LayerScaleInit.paper.value(layer: 19, depth: 24, xcit: true), 1e-5)
    }

    func testCrossViTMatchesVitPytorch() throws {
        var c = CrossViTConfig()
        (c.imageSize, c.channels, c.numClasses, c.depth, c.dropout, c.embeddingDropout) = (8, 2, 5, 2, 0, 0)
        c.small = CrossViTBranch(dim: 8, patchSize: 2, depth: 1, heads: 2, mlpDim: 16, dimHead: 4)
        c.large = CrossViTBranch(dim: 16, patchSize: 4, depth: 2, heads: 2, mlpDim: 32, dimHead: 8)
        (c.crossDepth, c.crossHeads, c.crossDimHead) = (2, 2, 4)
        let model = CrossViT(c, initializer: Initializer(seed: 0))
        try check(model, fixture: "cross_vit")
        let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 3, purpose: "x"))
        XCTAssertEqual(model.hidden(x, layer: "pooled").shape, [2, 24])
        XCTAssertEqual(model.hidden(x, layer: "large_tokens").shape, [2, 5, 16])
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 4, 4], rng: RandomStream(seed: 4, purpose: "x")), layer: "tokens").shape, [2, 5, 8])
        XCTAssertEqual(c.problem(imageSize: 6), "lg_patch_size 4 does not divide 6-pixel images; both patch sizes must divide the image size")
    }

    func testSimpleViTVariantsMatchVitPytorch() throws {
        var registers = SimpleViTOptions()
        registers.registerTokens = 3
        try check(SimpleViT(ViTParityTests.config, options: registers, initializer: Initializer(seed: 0)), fixture: "simple_vit_registers")
        var qk = SimpleViTOptions()
        qk.qkNorm = true
        try check(SimpleViT(ViTParityTests.config, options: qk, initializer: Initializer(seed: 0)), fixture: "simple_vit_qk_norm")
        var dropout = SimpleViTOptions()
        dropout.patchDropout = 0.5
        let model = SimpleViT(ViTParityTests.config, options: dropout, initializer: Initializer(seed: 0))
        model.eval()
        try check(model, fixture: "simple_vit_patch_dropout")
        // In training each image keeps max(1, int(4 * 0.5)) = 2 of its 4 patch tokens, a seeded choice.
        model.train()
        let x = Tensor.randn([3, 2, 8, 8], rng: RandomStream(seed: 3, purpose: "x"))
        XCTAssertEqual(model.hidden(x, layer: "tokens").shape, [3, 2, 16])
        XCTAssertEqual(model.hidden(x, layer: "logits").shape, [3, 5])
    }

    /// The masked objectives' protocol: encoding the class token and all patches through
    /// prefixTokens / embedPatches / patchPositions / encodeTokens gives the forward's tokens, and
    /// smaller images (DINO's local crops) run with a resized position grid.
    func testTheTokenProtocolAgreesWithTheForwardPass() throws {
        for encoder in [DeepViT(ViTParityTests.config, initializer: Initializer(seed: 1)) as any ClassTokenViT,
                        ParallelViT(ViTParityTests.config, initializer: Initializer(seed: 1))] {
            let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 3, purpose: "x"))
            let tokens = encoder.hidden(x, layer: "tokens")
            let viaProtocol = encoder.encodeTokens(Tensor.concat([encoder.prefixTokens(batch: 2)!,
                                                                   encoder.embedPatches(encoder.patchify(x)) + encoder.patchPositions()], axis: 1))
            assertClose("\(type(of: encoder)) tokens", viaProtocol.scalars.map(Double.init), tokens.scalars.map(Double.init), tolerance: 1e-6)
            let small = encoder.hidden(Tensor.randn([2, 2, 4, 4], rng: RandomStream(seed: 4, purpose: "x")), layer: "pooled")
            XCTAssertEqual(small.shape, [2, 16])
            XCTAssertEqual(encoder.hiddenLayerNames, ["tokens", "pooled", "logits", "blocks.0", "blocks.1"])
        }
    }
}
