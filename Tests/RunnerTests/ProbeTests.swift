import Encoders
import Evaluation
import NN
import Runner
import Foundation
import TensorCore
import XCTest

/// The evaluation classifiers against hand-checkable answers.
final class ProbeTests: XCTestCase {
    func testKNNVotesWithExponentialWeights() {
        // Train points on the unit circle at angles 0, 0.1 (class 0) and pi/2 (class 1); the
        // test point at 0.05 is closest to class 0, the one at 1.5 to class 1.
        let angles: [Float] = [0, 0.1, .pi / 2]
        let train = Tensor(shape: [3, 2], angles.flatMap { [cos($0), sin($0)] })
        let test = Tensor(shape: [2, 2], [Float(0.05), 1.5].flatMap { [cos($0) * 3, sin($0) * 3] })  // scale must not matter
        let votes = knnClassify(train: train, trainLabels: [0, 0, 1], test: test, classes: 2, k: 2, temperature: 0.5)
        let v = votes.scalars
        // k = 2: the first test point's neighbours are both class 0.
        XCTAssertEqual(Double(v[0]), 2 * exp(Double(cos(Float(0.05))) / 0.5), accuracy: 1e-3)
        XCTAssertEqual(v[1], 0)
        // The second's are pi/2 (class 1, cos 0.0708) and 0.1 (class 0, cos(1.4)).
        XCTAssertEqual(Double(v[3]), exp(Double(cos(Float.pi / 2 - 1.5)) / 0.5), accuracy: 1e-3)
        XCTAssertEqual(Double(v[2]), exp(Double(cos(Float(1.4))) / 0.5), accuracy: 1e-3)
        XCTAssertEqual(topAccuracy(votes, labels: [0, 1]).top1, 1)
    }

    func testLBFGSFindsTheMinimumOfAQuadratic() {
        // f(x) = sum a_i (x_i - c_i)^2 with very different curvatures: L-BFGS with the
        // strong-Wolfe search must land on c.
        let a: [Float] = [1, 10, 100, 0.5], c: [Float] = [3, -2, 0.5, 7]
        var lbfgs = LBFGS(maxIterations: 50, historySize: 5)
        func quadratic(_ x: [Float]) -> (Double, [Float]) {
            var value: Double = 0
            var gradient = [Float](repeating: 0, count: 4)
            for i in 0..<4 {
                let r = x[i] - c[i]
                value += Double(a[i] * r * r)
                gradient[i] = 2 * a[i] * r
            }
            return (value, gradient)
        }
        let (x, loss) = lbfgs.minimize([0, 0, 0, 0], quadratic)
        for i in 0..<4 { XCTAssertEqual(x[i], c[i], accuracy: 1e-3) }
        XCTAssertLessThan(loss, 1e-6)
        XCTAssertLessThan(lbfgs.iterations, 50)
    }

    func testLogisticRegressionSeparatesClassesAndStandardizes() {
        let rng = RandomStream(seed: 1, purpose: "probe")
        var values: [Float] = [], labels: [Int] = []
        for i in 0..<300 {
            let label = i % 3
            labels.append(label)
            values += [Float(label) * 4 + rng.nextNormal(), 100 + 50 * rng.nextNormal(), Float(label == 1 ? 5 : 0) + rng.nextNormal()]
        }
        let features = Tensor(shape: [300, 3], values)
        let (train, test) = standardize(train: features, test: features)
        let column1 = (0..<300).map { Double(train.scalars[$0 * 3 + 1]) }
        XCTAssertEqual(column1.reduce(0, +) / 300, 0, accuracy: 1e-4)
        XCTAssertEqual((column1.map { $0 * $0 }.reduce(0, +) / 299).squareRoot(), 1, accuracy: 1e-3)
        let model = LogisticRegression.fit(train, labels: labels, classes: 3)
        XCTAssertGreaterThan(topAccuracy(model.scores(test), labels: labels).top1, 0.95)
        XCTAssertLessThan(model.loss, 0.2)
    }
}

/// Layer-wise learning-rate decay assigns each ViT parameter its layer's scale.
final class LayerDecayTests: XCTestCase {
    func testScalesFollowTheLayers() {
        var config = ViTConfig()
        (config.dim, config.depth, config.heads, config.dimHead, config.mlpDim) = (16, 3, 2, 8, 32)
        let vit = ViT(config, initializer: Initializer(seed: 0))
        let scales = Dictionary(uniqueKeysWithValues: zip(vit.namedParameters().map(\.0),
                                                          ClassifierTraining.layerScales(vit, depth: 3, decay: 0.5).map(\.1)))
        XCTAssertEqual(scales["to_patch_embedding.2.weight"], 0.0625)
        XCTAssertEqual(scales["pos_embedding"], 0.0625)
        XCTAssertEqual(scales["cls_token"], 0.0625)
        XCTAssertEqual(scales["transformer.layers.0.0.to_qkv.weight"], 0.125)
        XCTAssertEqual(scales["transformer.layers.2.1.net.4.bias"], 0.5)
        XCTAssertEqual(scales["transformer.norm.weight"], 1)
        XCTAssertEqual(scales["mlp_head.weight"], 1)
    }
}
