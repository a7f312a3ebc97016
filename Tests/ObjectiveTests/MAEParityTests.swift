import Encoders
import Foundation
import NN
import Objectives
import Store
import TensorCore
import TestSupport
import XCTest

/// MAE loaded with vit-pytorch 1.7.14's weights and given its mask gives vit-pytorch's loss and
/// gradients (fixtures from tools/make_fixtures.py, computed in float64).
final class MAEParityTests: XCTestCase {
    /// The fixtures' ViT: 8x8 images of 2 channels, patch 2, dim 16, depth 2.
    static var encoderConfig: ViTConfig { ObjectiveParityTests.encoderConfig }

    func check(_ name: String, decoderDim: Int) throws {
        let f = try loadFixture(name, from: .module)
        var config = MAE.Config()
        (config.decoderDim, config.decoderDepth, config.decoderHeads, config.decoderDimHead) = (decoderDim, 1, 2, 8)
        let mae = MAE(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config,
                      initializer: Initializer(seed: 1), maskSeed: 0)
        let unused = try mae.load(f)
        XCTAssertEqual(Set(unused), Set(f.keys.filter { $0.hasPrefix("grad.") || ["x", "loss", "perm"].contains($0) }),
                       "every fixture weight maps to an MAE parameter")
        XCTAssertEqual(mae.encToDec == nil, decoderDim == 16, "no projection when the widths agree (nn.Identity)")
        let perm = f["perm"]!.scalars.map { Int($0) }
        let mask = PatchMask(permutations: (0..<3).map { Array(perm[($0 * 16)..<($0 * 16 + 16)]) }, maskedCount: 12)
        let x = f["x"]!.requiringGrad()
        let loss = mae.forward(x, mask: mask).loss
        assertClose("\(name) loss", [Double(loss.item)], f["loss"]!.scalars.map(Double.init), tolerance: 1e-5)
        loss.backward()
        var checked = 0
        for (key, p) in mae.namedParameters() {
            let expected = f["grad." + key]
            // cls_token and pos_embedding[0] get no gradient in vit-pytorch's MAE (it never encodes the class token).
            if expected == nil { XCTAssertTrue(key.hasSuffix("cls_token") || key.contains("mlp_head"), key); continue }
            let actual = try XCTUnwrap(p.grad, "no gradient for \(key)")
            assertClose("\(name) grad \(key)", actual.scalars.map(Double.init), expected!.scalars.map(Double.init), tolerance: 1e-4)
            checked += 1
        }
        assertClose("\(name) grad x", x.grad!.scalars.map(Double.init), f["grad.x"]!.scalars.map(Double.init), tolerance: 1e-4)
        XCTAssertEqual(checked, f.keys.filter { $0.hasPrefix("grad.") }.count - 1)
    }

    func testMAEWithDecoderProjection() throws { try check("mae", decoderDim: 12) }

    func testMAEWithEqualWidthsHasNoProjection() throws { try check("mae_identity", decoderDim: 16) }

    func testNormPixLossTargetsAreNormalisedPerPatch() throws {
        var config = MAE.Config()
        (config.decoderDim, config.decoderDepth, config.decoderHeads, config.decoderDimHead, config.normPixLoss) = (16, 1, 2, 8, true)
        let mae = MAE(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config,
                      initializer: Initializer(seed: 1), maskSeed: 0)
        let x = Tensor.randn([2, 2, 8, 8], rng: RandomStream(seed: 4, purpose: "x"))
        let mask = PatchMask.random(batch: 2, count: 16, ratio: 0.75, rng: RandomStream(seed: 5, purpose: "mask"))
        let target = mae.forward(x, mask: mask).target.scalars
        for row in 0..<(target.count / 8) {
            let v = target[(row * 8)..<(row * 8 + 8)].map(Double.init)
            let mean = v.reduce(0, +) / 8
            let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 7
            XCTAssertEqual(mean, 0, accuracy: 1e-5)
            XCTAssertEqual(variance, 1, accuracy: 1e-3)
        }
    }
}
