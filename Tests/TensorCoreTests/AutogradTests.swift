import Foundation
import TensorCore
import TestSupport
import XCTest

/// The tape's contract: recording, release, no-grad, detach, accumulation, flat memory and
/// bit-exact determinism.
/// glibc's malloc_trim (malloc.h is not in the Glibc module): returns free heap pages to the OS.
@_silgen_name("malloc_trim") func mallocTrim(_ pad: Int) -> Int32

final class AutogradTests: XCTestCase {
    override func setUp() { Autograd.discardTape() }

    func testBackwardReleasesTheTapeAndIntermediateGradients() {
        let w = Tensor(shape: [3], [1, 2, 3], requiresGrad: true)
        let h = w * w
        let loss = h.sum()
        XCTAssertEqual(Autograd.tapeLength, 3, "mul, sum over the axis, reshape to a scalar")
        loss.backward()
        XCTAssertEqual(Autograd.tapeLength, 0)
        XCTAssertEqual(w.grad?.scalars, [2, 4, 6])
        XCTAssertNil(h.grad, "intermediate gradients are freed once used")
    }

    func testGradientsAccumulateUntilZeroed() {
        let w = Tensor(shape: [2], [1, -1], requiresGrad: true)
        (w * 3).sum().backward()
        (w * 2).sum().backward()
        XCTAssertEqual(w.grad?.scalars, [5, 5])
        w.zeroGrad()
        XCTAssertNil(w.grad)
        (w * 4).sum().backward()
        XCTAssertEqual(w.grad?.scalars, [4, 4])
    }

    /// Reshapes and residual adds hand their output's gradient to an input without copying it
    /// (`handInto`): the same tensor on both sides, a subtraction, a tensor read again after the
    /// add, and a leaf whose handed-over gradient later accumulates, all give the exact gradients.
    func testHandedOverGradientsStayExact() {
        let x = Tensor(shape: [2, 2], [1, 2, 3, 4], requiresGrad: true)
        let w = Tensor(shape: [4], [1, -1, 2, 0.5], requiresGrad: true)
        let h = x.reshaped([4])
        let y = (h * w) + h
        // z = sum(2y - h) = sum(2 h w + h): dz/dh = 2w + 1, dz/dw = 2h.
        ((y + y) - h).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [3, -1, 5, 2])
        XCTAssertEqual(w.grad?.scalars, [2, 4, 6, 8])
        x.reshaped([4]).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [4, 0, 6, 3])
        XCTAssertEqual(w.grad?.scalars, [2, 4, 6, 8])
    }

    func testNoGradAndDetachRecordNothing() {
        let w = Tensor(shape: [2], [1, 2], requiresGrad: true)
        let y = Autograd.noGrad { w * w }
        XCTAssertFalse(y.requiresGrad)
        XCTAssertEqual(Autograd.tapeLength, 0)
        let d = w.detached()
        XCTAssertFalse((d * 2).requiresGrad)
        // A detached branch contributes no gradient.
        let loss = (w * w.detached()).sum()
        loss.backward()
        XCTAssertEqual(w.grad?.scalars, [1, 2])
    }

    /// Backward must not depend on intermediate results staying referenced: their buffers go back
    /// to the pool and are handed out again before backward runs.
    func testBackwardKeepsWhatItNeedsAlive() {
        let n = 1024
        let x = randomTensor([4, n / 4], seed: 21, low: 0.1, high: 2).requiringGrad()
        let mask = Tensor(shape: [1, n / 4], (0..<(n / 4)).map { Float($0 % 2) })
        let loss = (Tensor.where(mask + 0, x.exp().sigmoid(), x.tanh().sqrt().l2Normalized())).sum()
        let churn = (0..<16).map { _ in Tensor.full([4, n / 4], 7) } + (0..<16).map { _ in Tensor.full([1, n / 4], 7) }
        loss.backward()
        XCTAssertEqual(churn.count, 32)
        checkGradients("same expression, intermediates alive", inputs: [x.detached()], engine: { xs in
            Tensor.where(mask, xs[0].exp().sigmoid(), xs[0].tanh().sqrt().l2Normalized()).sum()
        }, reference: { xs in
            let e = xs[0].map { 1 / (1 + Foundation.exp(-Foundation.exp($0))) }
            let t = xs[0].map { Foundation.tanh($0).squareRoot() }.mapRows { row in
                let norm = row.map { $0 * $0 }.reduce(0, +).squareRoot()
                return row.map { $0 / norm }
            }
            var total = 0.0
            for i in 0..<xs[0].count { total += (i % (n / 4)) % 2 == 1 ? e.data[i] : t.data[i] }
            return DArray(shape: [], [total])
        })
        let fresh = x.detached().requiringGrad()
        Tensor.where(mask, fresh.exp().sigmoid(), fresh.tanh().sqrt().l2Normalized()).sum().backward()
        XCTAssertTrue(x.grad!.scalars.map(\.bitPattern) == fresh.grad!.scalars.map(\.bitPattern),
                      "gradients differ when intermediates were released and their buffers reused")
    }

    func testNonScalarBackwardTakesASeed() {
        let w = Tensor(shape: [2], [1, 2], requiresGrad: true)
        (w * w).backward(gradient: Tensor(shape: [2], [1, 10]))
        XCTAssertEqual(w.grad?.scalars, [2, 40])
    }

    /// A small pre-norm attention + MLP block, trained with plain SGD.
    struct TinyModel {
        var params: [Tensor]
        init(seed: UInt64, dim: Int, hidden: Int) {
            let rng = RandomStream(seed: seed, purpose: "init")
            params = [
                .ones([dim], requiresGrad: true), .zeros([dim], requiresGrad: true),
                .randn([3 * dim, dim], std: 0.1, rng: rng, requiresGrad: true),
                .randn([dim, dim], std: 0.1, rng: rng, requiresGrad: true), .zeros([dim], requiresGrad: true),
                .randn([hidden, dim], std: 0.1, rng: rng, requiresGrad: true), .zeros([hidden], requiresGrad: true),
                .randn([10, hidden], std: 0.1, rng: rng, requiresGrad: true), .zeros([10], requiresGrad: true),
            ]
        }

        func loss(_ x: Tensor, labels: [Int], heads: Int, dropout: RandomStream) -> Tensor {
            let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
            let h = x.layerNorm(weight: params[0], bias: params[1])
            let qkv = Tensor.linear(h, weight: params[2]).chunked(3, axis: -1)
                .map { $0.reshaped([b, n, heads, d / heads]).permuted([0, 2, 1, 3]) }
            let a = Tensor.scaledDotProductAttention(query: qkv[0], key: qkv[1], value: qkv[2]).output
            let y = Tensor.linear(a.permuted([0, 2, 1, 3]).reshaped([b, n, d]), weight: params[3], bias: params[4]) + x
            let pooled = y.mean(axis: 1)
            let hid = Tensor.linear(pooled, weight: params[5], bias: params[6]).gelu().dropout(0.1, training: true, rng: dropout)
            return Tensor.linear(hid, weight: params[7], bias: params[8]).crossEntropy(.labels(labels), labelSmoothing: 0.1)
        }

        func sgdStep(lr: Float) {
            for p in params {
                guard let g = p.grad else { continue }
                for i in 0..<p.count { p.base[i] -= lr * g.base[i] }
                p.zeroGrad()
            }
        }
    }

    func train(steps: Int, seed: UInt64, batch: Int, tokens: Int, dim: Int, onStep: (Int) -> Void = { _ in }) -> (TinyModel, [Float]) {
        let model = TinyModel(seed: seed, dim: dim, hidden: 2 * dim)
        let data = RandomStream(seed: seed, purpose: "data")
        let dropout = RandomStream(seed: seed, purpose: "dropout")
        var losses: [Float] = []
        for step in 0..<steps {
            let x = Tensor.randn([batch, tokens, dim], rng: data)
            let labels = (0..<batch).map { _ in data.nextInt(below: 10) }
            let loss = model.loss(x, labels: labels, heads: 4, dropout: dropout)
            loss.backward()
            model.sgdStep(lr: 0.05)
            losses.append(loss.item)
            onStep(step + 1)
        }
        return (model, losses)
    }

    /// Resident bytes after glibc returns its free pages (its free lists are not the engine's memory).
    static func residentBytes() -> Int {
        _ = mallocTrim(0)
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    func testMemoryStaysFlatOverAThousandSteps() {
        var atTen = 0, atEnd = 0
        _ = train(steps: 1000, seed: 1, batch: 16, tokens: 17, dim: 32) { step in
            if step == 10 { atTen = Self.residentBytes() }
            if step == 1000 { atEnd = Self.residentBytes() }
        }
        XCTAssertGreaterThan(atTen, 0, "could not read /proc/self/statm")
        XCTAssertEqual(Autograd.tapeLength, 0)
        // About 60 ops a step: a leak of 10 bytes per op would add 600 KB over 990 steps. Measured
        // growth is about 150 KB (allocator warm-up), flat beyond step 1000.
        XCTAssertLessThan(atEnd - atTen, 512 << 10, "resident memory grew from \(atTen) to \(atEnd) bytes")
    }

    func testSameSeedGivesBitIdenticalTraining() {
        // Large enough that layernorm, bias-gradient and element-wise loops split across threads.
        let (a, lossA) = train(steps: 5, seed: 7, batch: 64, tokens: 17, dim: 64)
        let (b, lossB) = train(steps: 5, seed: 7, batch: 64, tokens: 17, dim: 64)
        XCTAssertEqual(lossA.map(\.bitPattern), lossB.map(\.bitPattern))
        for (p, q) in zip(a.params, b.params) { XCTAssertEqual(p.scalars.map(\.bitPattern), q.scalars.map(\.bitPattern)) }
        let (c, _) = train(steps: 5, seed: 8, batch: 64, tokens: 17, dim: 64)
        XCTAssertNotEqual(a.params[2].scalars, c.params[2].scalars, "another seed gives another run")
        XCTAssertLessThan(lossA.last!, lossA.first! + 1, "training is sane")
    }

    func testRandomStreamsAreIndependentAndRestorable() {
        let a = RandomStream(seed: 3, purpose: "dropout"), b = RandomStream(seed: 3, purpose: "masking")
        XCTAssertNotEqual(a.next(), b.next())
        let saved = a.stateWords
        let x = (0..<5).map { _ in a.next() }
        let restored = RandomStream(stateWords: saved)
        XCTAssertEqual((0..<5).map { _ in restored.next() }, x)
        let p = RandomStream(seed: 1).permutation(10)
        XCTAssertEqual(p.sorted(), Array(0..<10))
        var sum = 0.0, sumSq = 0.0
        let r = RandomStream(seed: 5)
        for _ in 0..<20000 { let v = Double(r.nextNormal()); sum += v; sumSq += v * v }
        XCTAssertEqual(sum / 20000, 0, accuracy: 0.03)
        XCTAssertEqual(sumSq / 20000, 1, accuracy: 0.05)
    }
}
