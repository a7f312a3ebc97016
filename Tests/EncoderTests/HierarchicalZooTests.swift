import Encoders
import Foundation
import NN
import TensorCore
import TestSupport
import XCTest

/// The zoo's hierarchical encoders (issue 23) loaded with vit-pytorch 1.7.14's weights by
/// state_dict name give its logits (1e-5) and every gradient (1e-4) (fixtures from
/// tools/make_zoo2_fixtures.py, float64), and expose their stages as maps.
final class HierarchicalZooTests: XCTestCase {
    func testPiTMatchesVitPytorch() throws {
        var config = PiTConfig()
        (config.imageSize, config.channels, config.numClasses, config.patchSize, config.dim) = (12, 2, 5, 4, 8)
        (config.depth, config.heads, config.dimHead, config.mlpDim) = ([1, 2, 1], [1, 2, 2], 4, 16)
        let model = PiT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "pit")
        XCTAssertEqual(model.hiddenLayerNames, ["tokens", "pooled", "logits", "stages.0", "stages.1", "stages.2"])
        let x = Tensor.randn([2, 2, 12, 12], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "stages.2", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 5, 5])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 16, 3, 3])
        XCTAssertEqual(out["stages.2"]!.shape, [2, 32, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 32])
        XCTAssertEqual(out["pooled"]!.shape, [2, 32])
        // "tokens" is the last stage's map flattened position by position.
        let map = out["stages.2"]!.scalars, tokens = out["tokens"]!.scalars
        XCTAssertEqual(tokens[1 * 32 + 3], map[3 * 4 + 1])
        // Smaller images (DINO's local crops) resize the position grid: 8 px gives 3x3 tokens.
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 6, purpose: "x")), layer: "stages.0").shape, [2, 8, 3, 3])

        (config.imageSize, config.channels, config.patchSize, config.depth, config.heads, config.dimHead) = (8, 3, 2, [1, 1], [1], 8)
        try check(PiT(config, initializer: Initializer(seed: 0)), fixture: "pit_2")
    }

    func testNesTMatchesVitPytorch() throws {
        var config = NesTConfig()
        (config.imageSize, config.channels, config.numClasses, config.patchSize, config.dim, config.heads) = (16, 2, 5, 2, 8, 2)
        (config.hierarchies, config.blockRepeats, config.mlpMult) = (3, [1, 2, 1], 2)
        let model = NesT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "nest")
        XCTAssertEqual(model.hiddenLayerNames, ["tokens", "pooled", "logits", "stages.0", "stages.1", "stages.2"])
        let x = Tensor.randn([2, 2, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "stages.2", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 8, 8])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 16, 4, 4])
        XCTAssertEqual(out["stages.2"]!.shape, [2, 32, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 32])
        XCTAssertEqual(out["pooled"]!.shape, [2, 32])
        XCTAssertEqual(out["tokens"]!.scalars[1 * 32 + 3], out["stages.2"]!.scalars[3 * 4 + 1])
        // A smaller image (8 px: a 4x4 map in 4x4 blocks of 1x1) resizes the block's position grid.
        XCTAssertEqual(model.hidden(Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 6, purpose: "x")), layer: "stages.0").shape, [2, 8, 4, 4])
        XCTAssertNotNil(config.problem(imageSide: 12), "a 6x6 map does not split into 4x4 blocks")

        (config.imageSize, config.channels, config.heads, config.hierarchies, config.blockRepeats) = (12, 3, 1, 2, [1])
        try check(NesT(config, initializer: Initializer(seed: 0)), fixture: "nest_2")
    }

    func testMaxViTMatchesVitPytorch() throws {
        var config = MaxViTConfig()
        (config.imageSize, config.channels, config.numClasses, config.dim, config.depth, config.dimHead) = (16, 2, 5, 8, [1, 2], 4)
        (config.dimConvStem, config.windowSize, config.expansionRate, config.shrinkageRate, config.dropout) = (6, 2, 2, 0.25, 0)
        let model = MaxViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "maxvit")
        XCTAssertEqual(model.hiddenLayerNames, ["tokens", "pooled", "logits", "stages.0", "stages.1"])
        let x = Tensor.randn([2, 2, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 4, 4])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 16, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 16])
        XCTAssertEqual(out["tokens"]!.scalars[1 * 16 + 3], out["stages.1"]!.scalars[3 * 4 + 1])
        XCTAssertNotNil(config.problem(imageSide: 12), "a 12-pixel image leaves a 3x3 map, which 2x2 windows do not split")
        XCTAssertEqual(config.problem(imageSide: 12)?.key, "window_size")
    }

    func testLeViTMatchesVitPytorch() throws {
        var config = LeViTConfig()
        (config.imageSize, config.channels, config.numClasses, config.stages) = (32, 3, 5, 2)
        (config.dims, config.depths, config.heads, config.mlpMult, config.dimKey, config.dimValue) = ([8, 12], [2, 1], [2, 3], 2, 4, 6)
        let model = LeViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "levit", tolerance: .fewValuesPerBatchNorm)
        let x = Tensor.randn([2, 3, 32, 32], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 2, 2])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 12, 1, 1])
        XCTAssertEqual(out["tokens"]!.shape, [2, 1, 12])
        // A smaller image (a 12-pixel crop: a 1x1 map) reads the tables made for 2x2.
        XCTAssertEqual(model.hidden(Tensor.randn([2, 3, 12, 12], rng: RandomStream(seed: 6, purpose: "x")), layer: "stages.0").shape, [2, 8, 1, 1])

        // 1.7.14 at 28 px: a 1x1 bias table broadcast over the 2x2 map.
        (config.imageSize, config.dims, config.depths, config.heads, config.dimValue, config.biasGrid) = (28, [8], [1], [2], 4, .vitPytorch1714)
        XCTAssertEqual(config.tableSide, 1)
        try check(LeViT(config, initializer: Initializer(seed: 0)), fixture: "levit_28", tolerance: .fewValuesPerBatchNorm)
        config.biasGrid = .exact
        XCTAssertEqual(config.tableSide, 2)
        XCTAssertEqual(LeViT(config, initializer: Initializer(seed: 0)).backbone[0].layers[0].attention.posBias.weight.shape, [4, 2])
        // The attention output's BatchNorm starts at 0 in residual blocks; in the downsampling one
        // at 1 (the official code), or at 0 as 1.7.14 starts it.
        let paper = LeViT(config, initializer: Initializer(seed: 0))
        XCTAssertEqual(paper.backbone[0].layers[0].attention.outNorm.weight.value.scalars.max(), 0)
        XCTAssertEqual(paper.backbone[1].layers[0].attention.outNorm.weight.value.scalars.min(), 1)
        config.outNormInit = .vitPytorch1714
        XCTAssertEqual(LeViT(config, initializer: Initializer(seed: 0)).backbone[1].layers[0].attention.outNorm.weight.value.scalars.max(), 0)
    }

    func testMobileViTMatchesVitPytorch() throws {
        var config = MobileViTConfig()
        (config.imageSize, config.inputChannels, config.numClasses, config.dims, config.depths) = (64, 3, 5, [8, 8, 12], [1, 2, 1])
        (config.channels, config.expansion, config.patchSize) = ([4, 4, 8, 8, 8, 8, 12, 12, 16, 16, 24], 2, 2)
        let model = MobileViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "mobilevit", tolerance: .fewValuesPerBatchNorm)
        let x = Tensor.randn([2, 3, 64, 64], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "stages.2", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 8, 8])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 12, 4, 4])
        XCTAssertEqual(out["stages.2"]!.shape, [2, 16, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 16])
        XCTAssertEqual(out["pooled"]!.shape, [2, 24])
        XCTAssertEqual(config.problem(imageSide: 28)?.key, "patch_size", "at 28 px the last block's 1x1 map has no 2x2 patches")

        (config.imageSize, config.dims, config.depths, config.channels, config.expansion, config.patchSize) =
            (16, [8, 8, 8], [1, 1, 1], [4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 16], 1, 1)
        try check(MobileViT(config, initializer: Initializer(seed: 0)), fixture: "mobilevit_e1", tolerance: .fewValuesPerBatchNorm)
    }

    func testSepViTMatchesVitPytorch() throws {
        var config = SepViTConfig()
        (config.imageSize, config.channels, config.numClasses, config.dim, config.depth) = (16, 2, 5, 8, [1, 2])
        (config.heads, config.windowSize, config.dimHead, config.ffMult) = ([2], [2], 4, 2)
        let model = SepViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "sepvit")
        let x = Tensor.randn([2, 2, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 4, 4])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 16, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 4, 16])

        // 1.7.14 ignores window_size and dim_head: one 7x7 window at 28 px, heads 32 wide.
        (config.imageSize, config.depth, config.heads, config.windowSize, config.arguments) = (28, [1], [1], [3], .vitPytorch1714)
        XCTAssertNil(config.problem(imageSide: 28))
        let legacy = SepViT(config, initializer: Initializer(seed: 0))
        try check(legacy, fixture: "sepvit_1714")
        config.arguments = .paper
        XCTAssertEqual(config.problem(imageSide: 28)?.key, "window_size", "a 7x7 map does not split into 3x3 windows")
    }

    func testTwinsSVTMatchesVitPytorch() throws {
        var config = TwinsConfig()
        (config.imageSize, config.channels, config.numClasses, config.heads, config.dimHead, config.mlpMult) = (16, 3, 5, 2, 8, 2)
        config.stages = [TwinsStage(embDim: 4, patchSize: 2, localPatchSize: 4, globalK: 2, depth: 1),
                         TwinsStage(embDim: 8, patchSize: 2, localPatchSize: 2, globalK: 2, depth: 1),
                         TwinsStage(embDim: 8, patchSize: 2, localPatchSize: 2, globalK: 2, depth: 2),
                         TwinsStage(embDim: 12, patchSize: 2, localPatchSize: 1, globalK: 1, depth: 1)]
        let model = TwinsSVT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "twins")
        let x = Tensor.randn([2, 3, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.3", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 4, 8, 8])
        XCTAssertEqual(out["stages.3"]!.shape, [2, 12, 1, 1])
        XCTAssertEqual(out["tokens"]!.shape, [2, 1, 12])
        XCTAssertEqual(config.problem(imageSide: 12)?.key, "twins_stages", "a 6x6 map does not split into 4x4 windows")
        XCTAssertNil(TwinsConfig().problem(imageSide: 28))
    }

    func testScalableViTMatchesVitPytorch() throws {
        var config = ScalableViTConfig()
        (config.imageSize, config.channels, config.numClasses, config.dim, config.depth, config.heads) = (32, 2, 5, 8, [2, 1], [2, 1])
        (config.reductionFactor, config.windowSize, config.iwsaDimKey, config.iwsaDimValue) = ([2, 1], [4, 0], [4], [4, 6])
        (config.ssaDimKey, config.ssaDimValue, config.ffExpansionFactor) = ([4, 8], [4], 2)
        let paper = ScalableViT(config, initializer: Initializer(seed: 0))
        try check(paper, fixture: "scalable_vit")
        let x = Tensor.randn([2, 2, 32, 32], rng: RandomStream(seed: 5, purpose: "x"))
        let out = paper.hiddenOutputs(x, layers: ["stages.0", "stages.1", "tokens"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 8, 8])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 16, 4, 4])
        XCTAssertEqual(out["tokens"]!.shape, [2, 16, 16])
        // 1.7.14 runs the second feed-forward before the windowed attention.
        config.blockOrder = .vitPytorch1714
        try check(ScalableViT(config, initializer: Initializer(seed: 0)), fixture: "scalable_vit_1714")
        var windowed = ScalableViTConfig()
        windowed.windowSize = [7, 0]
        XCTAssertEqual(windowed.problem(imageSide: 12)?.key, "window_size", "a 3x3 map does not split into 7x7 windows")
        XCTAssertNil(ScalableViTConfig().problem(imageSide: 12))
    }

    func testCrossFormerMatchesVitPytorch() throws {
        var config = CrossFormerConfig()
        (config.imageSize, config.channels, config.numClasses) = (16, 2, 5)
        config.stages = [CrossFormerStage(dim: 32, depth: 1, globalWindowSize: 2, localWindowSize: 4, kernelSizes: [2, 4, 6], stride: 2),
                         CrossFormerStage(dim: 32, depth: 1, globalWindowSize: 2, localWindowSize: 2, kernelSizes: [2], stride: 2),
                         CrossFormerStage(dim: 32, depth: 1, globalWindowSize: 1, localWindowSize: 2, kernelSizes: [2], stride: 2),
                         CrossFormerStage(dim: 32, depth: 1, globalWindowSize: 1, localWindowSize: 1, kernelSizes: [2], stride: 2)]
        let paper = CrossFormer(config, initializer: Initializer(seed: 0))
        try check(paper, fixture: "crossformer")
        let x = Tensor.randn([2, 2, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = paper.hiddenOutputs(x, layers: ["stages.0", "stages.3", "tokens"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 32, 8, 8])
        XCTAssertEqual(out["stages.3"]!.shape, [2, 32, 1, 1])
        // 1.7.14 reads the biases at the wrong offsets.
        config.biasIndex = .vitPytorch1714
        try check(CrossFormer(config, initializer: Initializer(seed: 0)), fixture: "crossformer_1714")
        XCTAssertNil(CrossFormerConfig().problem(imageSide: 28))
    }

    func testRegionViTMatchesVitPytorch() throws {
        var config = RegionViTConfig()
        (config.imageSize, config.channels, config.numClasses, config.dims, config.depths) = (16, 3, 5, [8, 8, 12, 12], [1, 2, 1, 1])
        (config.windowSize, config.heads, config.dimHead) = (2, 2, 4)
        let model = RegionViT(config, initializer: Initializer(seed: 0))
        try check(model, fixture: "regionvit")
        let x = Tensor.randn([2, 3, 16, 16], rng: RandomStream(seed: 5, purpose: "x"))
        let out = model.hiddenOutputs(x, layers: ["stages.0", "stages.1", "tokens", "pooled"])
        XCTAssertEqual(out["stages.0"]!.shape, [2, 8, 4, 4])
        XCTAssertEqual(out["stages.1"]!.shape, [2, 8, 2, 2])
        XCTAssertEqual(out["tokens"]!.shape, [2, 1, 12])
        XCTAssertEqual(out["pooled"]!.shape, [2, 12])
        (config.dims, config.depths, config.tokenizeLocal3Conv, config.usePEG) = ([8, 8, 8, 8], [1, 1, 1, 1], true, true)
        try check(RegionViT(config, initializer: Initializer(seed: 0)), fixture: "regionvit_3conv_peg")
        XCTAssertEqual(RegionViTConfig().problem(imageSide: 12)?.key, "window_size", "12 pixels do not split into 28-pixel regions")
    }
}
