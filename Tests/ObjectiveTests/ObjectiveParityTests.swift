import Encoders
import Foundation
import NN
import Objectives
import Store
import TensorCore
import TestSupport
import XCTest

/// SimMIM and MPP loaded with vit-pytorch 1.7.14's weights and given its masks give vit-pytorch's
/// loss and gradients (fixtures from tools/make_fixtures.py, computed in float64).
final class ObjectiveParityTests: XCTestCase {
    func fixture(_ name: String) throws -> [String: Tensor] { try loadFixture(name, from: .module) }

    /// Loads `f` into `objective`, runs `loss` on the fixture's x, and compares the loss and every
    /// gradient (parameters vit-pytorch leaves without one must have none here either).
    func check(_ name: String, _ objective: Module, _ f: [String: Tensor], extra: Set<String>, loss: (Tensor) -> Tensor) throws {
        let unused = try objective.load(f)
        XCTAssertEqual(Set(unused), Set(f.keys.filter { $0.hasPrefix("grad.") || $0 == "x" || $0 == "loss" || extra.contains($0) }),
                       "every fixture weight maps to a parameter")
        let x = f["x"]!.requiringGrad()
        let value = loss(x)
        assertClose("\(name) loss", [Double(value.item)], f["loss"]!.scalars.map(Double.init), tolerance: 1e-5)
        value.backward()
        var checked = 0
        for (key, p) in objective.namedParameters() {
            guard let expected = f["grad." + key] else {
                XCTAssertNil(p.grad.map { $0.scalars.contains { $0 != 0 } == true ? $0 : nil } ?? nil, "\(name): \(key) has no gradient in vit-pytorch")
                continue
            }
            let actual = try XCTUnwrap(p.grad, "\(name): no gradient for \(key)")
            assertClose("\(name) grad \(key)", actual.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-4)
            checked += 1
        }
        if let expected = f["grad.x"] {
            assertClose("\(name) grad x", x.grad!.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-4)
        } else {
            XCTAssertTrue(x.grad?.scalars.allSatisfy { $0 == 0 } ?? true, "\(name): the images get no gradient")
        }
        XCTAssertEqual(checked, f.keys.filter { $0.hasPrefix("grad.") && $0 != "grad.x" }.count)
    }

    static var encoderConfig: ViTConfig {
        var c = ViTConfig()
        (c.imageHeight, c.imageWidth, c.patchHeight, c.patchWidth, c.channels) = (8, 8, 2, 2, 2)
        (c.dim, c.depth, c.heads, c.dimHead, c.mlpDim, c.numClasses) = (16, 2, 2, 8, 32, 5)
        return c
    }

    func testSimMIMMatchesVitPytorch() throws {
        let f = try fixture("simmim")
        var config = SimMIM.Config()
        (config.maskingRatio, config.vitPytorchScale) = (0.5, true)
        let simmim = SimMIM(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config, patchSize: 2,
                            imageSize: (8, 8), initializer: Initializer(seed: 1), maskSeed: 0)
        let perm = f["perm"]!.scalars.map { Int($0) }
        let mask = PatchMask(permutations: (0..<3).map { Array(perm[($0 * 16)..<($0 * 16 + 16)]) }, maskedCount: 8)
        try check("simmim", simmim, f, extra: ["perm"]) { simmim.forward($0, mask: mask).loss }
    }

    func testSimMIMOfficialLossIsTheMeanOverMaskedPixelsAndMasksCoverSquares() throws {
        var config = SimMIM.Config()
        (config.maskingRatio, config.maskPatchSize) = (0.5, 4)
        let simmim = SimMIM(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config, patchSize: 2,
                            imageSize: (8, 8), initializer: Initializer(seed: 1), maskSeed: 0)
        let mask = simmim.randomMask(batch: 4, rng: RandomStream(seed: 9, purpose: "t"))
        XCTAssertEqual(mask.masked.shape, [4, 8], "2 of the 4 mask squares, 4 patches each")
        for b in 0..<4 {
            let patches = Set(mask.masked.values[(b * 8)..<(b * 8 + 8)])
            for p in patches {  // each masked patch's 2x2 square is masked whole
                let (r, c) = (p / 4, p % 4)
                let square = [0, 1].flatMap { dr in [0, 1].map { dc in ((r / 2) * 2 + dr) * 4 + (c / 2) * 2 + dc } }
                XCTAssertTrue(square.allSatisfy(patches.contains), "patch \(p) of image \(b)")
            }
        }
        let x = Tensor.randn([4, 2, 8, 8], rng: RandomStream(seed: 2, purpose: "x"))
        let out = simmim.forward(x, mask: mask)
        let expected = zip(out.predicted.scalars, out.target.scalars).map { Double(abs($0 - $1)) }.reduce(0, +) / Double(out.target.count)
        XCTAssertEqual(Double(out.loss.item), expected, accuracy: 1e-5)
    }

    func testMPPMatchesVitPytorch() throws {
        let f = try fixture("mpp")
        var config = MPP.Config()
        config.maskProb = 0.3
        let mpp = MPP(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config, channels: 2,
                      mean: [0.3, 0.4], std: [0.5, 0.25], initializer: Initializer(seed: 1), seed: 0)
        // vit-pytorch's MPP calls its encoder `transformer`.
        func rename(_ key: String) -> String {
            for (old, new) in [("grad.transformer.", "grad.encoder."), ("transformer.", "encoder.")] where key.hasPrefix(old) {
                return new + key.dropFirst(old.count)
            }
            return key
        }
        let renamed = Dictionary(uniqueKeysWithValues: f.map { (rename($0.key), $0.value) })
        let corruption = MPP.Corruption(chosen: f["chosen"]!.scalars.map { $0 != 0 }, random: f["random"]!.scalars.map { $0 != 0 },
                                        randomSource: f["sources"]!.scalars.map { Int($0) }, replace: f["replace"]!.scalars.map { $0 != 0 })
        try check("mpp", mpp, renamed, extra: ["chosen", "random", "replace", "sources"]) { mpp.forward($0, corruption: corruption) }
    }

    /// MP3 against vit-pytorch's MP3 with a LayerNorm added after its transformer (see
    /// tools/make_fixtures.py): cross-attention through the ViT's packed to_qkv.
    func testMP3MatchesVitPytorch() throws {
        let f = try fixture("mp3")
        let encoder = ViT(Self.encoderConfig, initializer: Initializer(seed: 0))
        let mp3 = MP3(encoder: encoder, config: MP3.Config(), initializer: Initializer(seed: 1), maskSeed: 0)
        // The fixture has no class token, positions or classification head (MP3 uses none).
        var state = f
        for (key, value) in mp3.stateDict() where state[key] == nil { state[key] = value }
        let perm = f["perm"]!.scalars.map { Int($0) }
        let mask = PatchMask(permutations: (0..<3).map { Array(perm[($0 * 16)..<($0 * 16 + 16)]) }, maskedCount: 12)
        try check("mp3", mp3, state, extra: ["perm"]) { mp3.forward($0, mask: mask).loss }
        XCTAssertNil(encoder.posEmbedding.grad, "MP3 uses no position embedding")
    }

    func testMPPColourClassesQuantiseMeanColours() {
        var config = MPP.Config()
        config.outputChannelBits = 2
        let mpp = MPP(encoder: ViT(Self.encoderConfig, initializer: Initializer(seed: 0)), config: config, channels: 2,
                      mean: [0], std: [1], initializer: Initializer(seed: 1), seed: 0)
        // Channel 0 of the first patch averages 0.3 (bin 1 of 4), channel 1 averages 0.9 (bin 3);
        // 0.5 sits exactly on a boundary and belongs to the bin below it (torch.bucketize).
        var pixels = [Float](repeating: 0, count: 2 * 64)
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] { pixels[y * 8 + x] = 0.3; pixels[64 + y * 8 + x] = 0.9 }
        for (y, x) in [(0, 2), (0, 3), (1, 2), (1, 3)] { pixels[y * 8 + x] = 0.5; pixels[64 + y * 8 + x] = 2 }
        let classes = mpp.colourClasses(Tensor(shape: [1, 2, 8, 8], pixels))
        XCTAssertEqual(classes[0], 1 + 3 * 4)
        XCTAssertEqual(classes[1], 1 + 3 * 4, "0.5 is bin 1; 2 is clamped to 1.0, bin 3")
        XCTAssertEqual(classes[2], 0)
    }
}
