import ArgumentParser
import Foundation
import TensorCore

/// `workbench bench`: the engine's kernels against raw OpenBLAS sgemm and memory bandwidth, all
/// measured in one run so that the ratios compare like with like.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the tensor engine's kernels against raw sgemm and memory bandwidth.",
        discussion: """
            Products at ViT shapes (8192 tokens = batch 256 x 32, dim 192, MLP 768): raw cblas_sgemm \
            for the three products a linear layer's forward and backward need, against the engine's \
            linear forward+backward (bias, tape and allocation included). Layernorm, softmax and GELU \
            in GB/s against a memcpy of the same size; attention at batch 256, 3 heads, 50 tokens, dim 64.
            """)

    @Option(help: "Timed repetitions per measurement (the median is reported).")
    var repeats = 15

    @Option(help: "Rows (tokens) of the product and element-wise shapes.")
    var rows = 8192

    func run() throws {
        try reportingUserErrors { try requireCounts([("--repeats", repeats), ("--rows", rows)]) }
        let rng = RandomStream(seed: 0, purpose: "bench")
        print("workbench bench: \(Parallel.threads) threads, \(repeats) repeats, median times")
        print("")
        print("products           raw sgemm (3 products)      linear fwd+bwd       ratio")
        var worstRatio = Double.infinity
        for (inF, outF) in [(192, 768), (768, 192), (192, 192)] {
            let x = Tensor.randn([rows, inF], rng: rng)
            let w = Tensor.randn([outF, inF], std: 0.05, rng: rng)
            let b = Tensor.zeros([outF])
            let dy = Tensor.randn([rows, outF], rng: rng)
            let flops = 3 * 2 * Double(rows) * Double(inF) * Double(outF)
            let dx = Storage(uninitializedCount: rows * inF), dw = Storage(uninitializedCount: outF * inF)
            let y = Storage(uninitializedCount: rows * outF)
            let xl = x.requiringGrad(), wl = w.requiringGrad(), bl = b.requiringGrad()
            let (raw, engine) = interleavedMedians({
                sgemm(false, true, rows, outF, inF, 1, x.base, inF, w.base, inF, 0, y.base, outF)
                sgemm(false, false, rows, inF, outF, 1, dy.base, outF, w.base, inF, 0, dx.base, inF)
                sgemm(true, false, outF, inF, rows, 1, dy.base, outF, x.base, inF, 0, dw.base, inF)
            }, {
                let out = Tensor.linear(xl, weight: wl, bias: bl)
                out.backward(gradient: dy)
                xl.zeroGrad(); wl.zeroGrad(); bl.zeroGrad()
            })
            let ratio = raw / engine
            worstRatio = min(worstRatio, ratio)
            print(String(format: "(%d x %3d) x (%3d x %3d)  %6.1f GFLOP/s %7.2f ms   %6.1f GFLOP/s %7.2f ms   %.3f",
                         rows, inF, inF, outF, flops / raw / 1e9, raw * 1e3, flops / engine / 1e9, engine * 1e3, ratio))
        }
        print(String(format: "linear fwd+bwd reaches %.1f%% of raw sgemm at its worst shape (target: 85%%)", worstRatio * 100))

        print("")
        print("memory-bound kernels (\(rows) x 768)         time     GB/s   copy GB/s   of copy")
        let n = rows * 768
        let src = Tensor.randn([rows, 768], rng: rng), dst = Storage(uninitializedCount: n)
        // The bandwidth reference: a copy of the same size on the same threads, run alternately
        // with each kernel.
        let copy = {
            Parallel.forChunks(n, grain: 1 << 16) { r in (dst.base + r.lowerBound).update(from: src.base + r.lowerBound, count: r.count) }
        }
        func row(_ name: String, bytesPerElement: Double, _ kernel: () -> Void) {
            let (copySeconds, seconds) = interleavedMedians(copy, kernel)
            let gbs = bytesPerElement * Double(n) / seconds / 1e9
            let copyGBs = 8 * Double(n) / copySeconds / 1e9
            let label = name.padding(toLength: 34, withPad: " ", startingAt: 0)
            print(label + String(format: "%7.2f ms %8.1f %10.1f %8.0f%%", seconds * 1e3, gbs, copyGBs, 100 * gbs / copyGBs))
        }
        let gamma = Tensor.ones([768]), beta = Tensor.zeros([768])
        let mean = Storage(uninitializedCount: rows), rstd = Storage(uninitializedCount: rows)
        row("layernorm forward", bytesPerElement: 8) {
            LayerNormKernels.forward(dst.base, mean.base, rstd.base, src.base, gamma.base, beta.base, rows: rows, c: 768, eps: 1e-5)
        }
        let dgamma = Storage(count: 768), dbeta = Storage(count: 768)
        let dout = Tensor.randn([rows, 768], rng: rng)
        row("layernorm backward", bytesPerElement: 12) {
            LayerNormKernels.backward(dst.base, dgamma.base, dbeta.base, dout.base, src.base, gamma.base, mean.base, rstd.base, rows: rows, c: 768)
        }
        row("softmax forward (rows of 768)", bytesPerElement: 8) { SoftmaxKernels.forward(dst.base, src.base, rows: rows, n: 768) }
        row("softmax backward", bytesPerElement: 12) { SoftmaxKernels.backward(dst.base, src.base, dout.base, rows: rows, n: 768) }
        row("GELU forward (erf)", bytesPerElement: 8) { GELUKernels.forward(dst.base, src.base, n, approximateTanh: false) }
        row("GELU backward (erf)", bytesPerElement: 12) { GELUKernels.backward(dst.base, src.base, dout.base, n, approximateTanh: false) }
        row("GELU forward (tanh)", bytesPerElement: 8) { GELUKernels.forward(dst.base, src.base, n, approximateTanh: true) }
        row("GELU forward, naive libm erff", bytesPerElement: 8) {
            let s = src.base, d = dst.base
            for i in 0..<n { d[i] = GELUKernels.referenceForward(s[i], approximateTanh: false) }
        }
        print("")
        let (batch, heads, tokens, dim) = (256, 3, 50, 64)
        let q = Tensor.randn([batch, heads, tokens, dim], rng: rng).requiringGrad()
        let k = Tensor.randn([batch, heads, tokens, dim], rng: rng).requiringGrad()
        let v = Tensor.randn([batch, heads, tokens, dim], rng: rng).requiringGrad()
        let dAttention = Tensor.randn([batch, heads, tokens, dim], rng: rng)
        let fwd = median { _ = Autograd.noGrad { Tensor.scaledDotProductAttention(query: q, key: k, value: v) } }
        let both = median {
            Tensor.scaledDotProductAttention(query: q, key: k, value: v).output.backward(gradient: dAttention)
            q.zeroGrad(); k.zeroGrad(); v.zeroGrad()
        }
        let attnFlops = 2 * 2 * Double(batch * heads * tokens * tokens * dim)
        print(String(format: "attention (B %d, H %d, N %d, d %d): forward %.2f ms (%.1f GFLOP/s), forward+backward %.2f ms (%.1f GFLOP/s)",
                     batch, heads, tokens, dim, fwd * 1e3, attnFlops / fwd / 1e9, both * 1e3, 3 * attnFlops / both / 1e9))
    }

    func interleavedMedians(_ first: () -> Void, _ second: () -> Void) -> (Double, Double) {
        interleavedMedianSeconds(repeats: repeats, first, second)
    }

    func median(_ body: () -> Void) -> Double { medianSeconds(repeats: repeats, body) }
}
