import Foundation
import Store
import TensorCore
import TestSupport
import XCTest

/// Parity with PyTorch (fixtures from tools/make_fixtures.py, computed in float64 by PyTorch
/// 2.15 and vit-pytorch 1.7.14). Forward values must agree within 1e-5 and gradients within
/// 1e-4, each relative to |expected| + max|expected| of the tensor (see `assertClose`).
final class PyTorchParityTests: XCTestCase {
    /// A fixture's tensors, with every parameter and the input turned into leaves.
    struct Fixture {
        let tensors: [String: Tensor]
        var leaves: [String: Tensor] = [:]

        init(_ name: String) throws {
            tensors = try loadFixture(name, from: .module)
            for (k, v) in tensors where !k.hasPrefix("grad.") && k != "out" && k != "out_weight" {
                leaves[k] = v.requiringGrad()
            }
        }

        subscript(_ key: String) -> Tensor { leaves[key]! }

        /// Back-propagates sum(out * out_weight), then compares out and every stored gradient.
        func check(_ out: Tensor, file: StaticString = #filePath, line: UInt = #line) {
            let expected = tensors["out"]!
            XCTAssertEqual(out.shape, expected.shape, file: file, line: line)
            assertClose("forward", out.scalars.map(Double.init), expected.scalars.map(Double.init), tolerance: 1e-5, file: file, line: line)
            (out * tensors["out_weight"]!).sum().backward()
            var checked = 0
            for (key, leaf) in leaves {
                guard let g = tensors["grad." + key] else { continue }
                guard let actual = leaf.grad else { XCTFail("no gradient for \(key)", file: file, line: line); continue }
                assertClose("grad \(key)", actual.scalars.map(Double.init), g.scalars.map(Double.init), tolerance: 1e-4, file: file, line: line)
                checked += 1
            }
            XCTAssertEqual(checked, tensors.keys.filter { $0.hasPrefix("grad.") }.count, file: file, line: line)
        }
    }

    func testLinearGELULayerNormChain() throws {
        let f = try Fixture("linear_gelu_layernorm")
        let h = Tensor.linear(f["x"], weight: f["linear.weight"], bias: f["linear.bias"]).gelu()
        f.check(h.layerNorm(weight: f["norm.weight"], bias: f["norm.bias"]))
    }

    func testSoftmaxCrossEntropy() throws {
        let f = try Fixture("softmax_cross_entropy")
        let labels = f.tensors["labels"]!.scalars.map { Int($0) }
        let soft = f.tensors["soft_targets"]!
        for (name, targets, smoothing) in [("hard", ClassTargets.labels(labels), Float(0)),
                                            ("smoothed", .labels(labels), 0.1), ("soft", .probabilities(soft), 0.05)] {
            let logits = f.tensors["logits"]!.copy().requiringGrad()
            let loss = logits.crossEntropy(targets, labelSmoothing: smoothing)
            assertClose("loss \(name)", [Double(loss.item)], f.tensors["loss." + name]!.scalars.map(Double.init), tolerance: 1e-5)
            loss.backward()
            assertClose("grad \(name)", logits.grad!.scalars.map(Double.init),
                        f.tensors["grad.logits." + name]!.scalars.map(Double.init), tolerance: 1e-4)
        }
    }

    /// vit-pytorch 1.7.14's Attention: LayerNorm, bias-free qkv, softmax(q k^T / sqrt(d)) v, output projection.
    static func attention(_ x: Tensor, _ p: (String) -> Tensor, heads: Int) -> Tensor {
        let (b, n) = (x.shape[0], x.shape[1])
        let h = x.layerNorm(weight: p("norm.weight"), bias: p("norm.bias"))
        let qkv = Tensor.linear(h, weight: p("to_qkv.weight")).chunked(3, axis: -1)
        let inner = qkv[0].shape[2]
        let split = qkv.map { $0.reshaped([b, n, heads, inner / heads]).permuted([0, 2, 1, 3]) }
        let o = Tensor.scaledDotProductAttention(query: split[0], key: split[1], value: split[2]).output
        let merged = o.permuted([0, 2, 1, 3]).reshaped([b, n, inner])
        return Tensor.linear(merged, weight: p("to_out.0.weight"), bias: p("to_out.0.bias"))
    }

    func testViTAttention() throws {
        let f = try Fixture("vit_attention")
        f.check(Self.attention(f["x"], { f[$0] }, heads: 4))
    }

    func testViTTransformerBlock() throws {
        let f = try Fixture("vit_transformer_block")
        var x = f["x"]
        x = Self.attention(x, { f["layers.0.0." + $0] }, heads: 4) + x
        let ff = { (k: String) in f["layers.0.1.net." + k] }
        let h = Tensor.linear(x.layerNorm(weight: ff("0.weight"), bias: ff("0.bias")), weight: ff("1.weight"), bias: ff("1.bias")).gelu()
        x = Tensor.linear(h, weight: ff("4.weight"), bias: ff("4.bias")) + x
        f.check(x.layerNorm(weight: f["norm.weight"], bias: f["norm.bias"]))
    }
}
