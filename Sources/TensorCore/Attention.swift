/// A boolean attention mask broadcast over (batch..., N, M): where each batch-head pair's (N, M)
/// plane starts, and its row and column strides. Holds the mask's storage alive for backward.
public struct AttentionMask {
    let storage: Storage
    let pairOffsets: [Int]
    let rowStride: Int, colStride: Int

    /// Whether query i of pair p may attend to key j.
    @inline(__always)
    func allows(_ p: Int, _ i: Int, _ j: Int) -> Bool {
        storage.base[pairOffsets[p] + i * rowStride + j * colStride] != 0
    }

    init(_ mask: Tensor, batch: [Int], n: Int, m: Int) {
        let full = batch + [n, m]
        precondition(Broadcast.shape(mask.shape, full) == full, "attention: mask \(mask.shape) does not broadcast to \(full)")
        let strides = Broadcast.strides(of: mask.shape, in: full)
        storage = mask.storage
        rowStride = strides[full.count - 2]
        colStride = strides[full.count - 1]
        pairOffsets = (0..<product(batch)).map { p in
            var rem = p, off = 0
            for a in stride(from: batch.count - 1, through: 0, by: -1) {
                off += (rem % batch[a]) * strides[a]
                rem /= batch[a]
            }
            return off
        }
    }
}

/// Where each (batch, head) pair's matrix lives in a buffer: pair p = b * heads + h starts at
/// `start + b * batchStride + h * headStride`, and its rows are `rowStride` floats apart. This
/// lets attention read q, k, v straight out of a packed projection (B, N, 3 * heads * dimHead)
/// and write heads straight into (B, N, heads * dimHead), with no copies.
public struct HeadLayout {
    public var start: Int
    public var batchStride: Int
    public var headStride: Int
    public var rowStride: Int
    public var heads: Int

    public init(start: Int = 0, batchStride: Int, headStride: Int, rowStride: Int, heads: Int) {
        (self.start, self.batchStride, self.headStride, self.rowStride, self.heads) = (start, batchStride, headStride, rowStride, heads)
    }

    /// Contiguous (pairs, rows, width) matrices.
    public static func contiguous(rows: Int, width: Int) -> HeadLayout {
        HeadLayout(batchStride: rows * width, headStride: 0, rowStride: width, heads: 1)
    }

    @inline(__always)
    func offset(_ pair: Int) -> Int { start + (pair / heads) * batchStride + (pair % heads) * headStride }
}

/// Fused scaled-dot-product attention, llm.c style: per (batch, head) pair, scores by sgemm,
/// masked softmax in place, then the weighted sum of values by sgemm. The probabilities
/// (pairs, N, M) are kept for the backward pass.
public enum AttentionKernels {
    /// out = softmax(q k^T * scale, masked) v for every pair; q is (N, d), k (M, d), v (M, dv) and
    /// out (N, dv) per pair, placed by their layouts. probs (pairs, N, M) is written.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ outLayout: HeadLayout, _ probs: UnsafeMutablePointer<Float>,
                               _ q: UnsafePointer<Float>, _ qLayout: HeadLayout, _ k: UnsafePointer<Float>, _ kLayout: HeadLayout,
                               _ v: UnsafePointer<Float>, _ vLayout: HeadLayout,
                               pairs: Int, n: Int, m: Int, d: Int, dv: Int, scale: Float, mask: AttentionMask?) {
        forPairs(pairs, work: n * m * (d + dv)) { p in
            let s = probs + p * n * m
            BLAS.gemm(false, true, n, m, d, scale, q + qLayout.offset(p), qLayout.rowStride, k + kLayout.offset(p), kLayout.rowStride, 0, s, m)
            if let mask {
                for i in 0..<n { for j in 0..<m where !mask.allows(p, i, j) { s[i * m + j] = -.infinity } }
            }
            for i in 0..<n { SoftmaxKernels.softmaxRow(s + i * m, s + i * m, m) }
            BLAS.gemm(false, false, n, dv, m, 1, s, m, v + vLayout.offset(p), vLayout.rowStride, 0, out + outLayout.offset(p), outLayout.rowStride)
        }
    }

    /// Adds the gradients of q, k, v (in their layouts) given dout and the saved probabilities;
    /// with `beta` 0 it writes them instead, not reading dq, dk, dv (fresh buffers every element
    /// of which one pair's product writes: a packed projection's gradient). `betaKV`, when given,
    /// is dk's and dv's (keys and values packed apart from the queries).
    public static func backward(_ dq: UnsafeMutablePointer<Float>?, _ dk: UnsafeMutablePointer<Float>?, _ dv: UnsafeMutablePointer<Float>?,
                                _ dout: UnsafePointer<Float>, _ outLayout: HeadLayout, _ probs: UnsafePointer<Float>,
                                _ q: UnsafePointer<Float>, _ qLayout: HeadLayout, _ k: UnsafePointer<Float>, _ kLayout: HeadLayout,
                                _ v: UnsafePointer<Float>, _ vLayout: HeadLayout,
                                pairs: Int, n: Int, m: Int, d: Int, dvWidth: Int, scale: Float, mask: AttentionMask?,
                                beta: Float = 1, betaKV: Float? = nil) {
        let betaKV = betaKV ?? beta
        forPairs(pairs, work: 2 * n * m * (d + dvWidth)) { p in
            let pp = probs + p * n * m, go = dout + outLayout.offset(p)
            if let dv {
                // dV (M, dv) += P^T (M, N) . dO (N, dv)
                BLAS.gemm(true, false, m, dvWidth, n, 1, pp, m, go, outLayout.rowStride, betaKV, dv + vLayout.offset(p), vLayout.rowStride)
            }
            guard dq != nil || dk != nil else { return }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: n * m) { buf in
                let ds = buf.baseAddress!
                // dP (N, M) = dO (N, dv) . V^T
                BLAS.gemm(false, true, n, m, dvWidth, 1, go, outLayout.rowStride, v + vLayout.offset(p), vLayout.rowStride, 0, ds, m)
                for i in 0..<n {
                    let pr = pp + i * m, dr = ds + i * m
                    let dot = vdot(pr, dr, m)
                    for j in 0..<m { dr[j] = scale * pr[j] * (dr[j] - dot) }
                }
                // Masked scores are constants (-inf): no gradient reaches q or k through them, even
                // in a fully masked row whose weights were set uniform.
                if let mask {
                    for i in 0..<n { for j in 0..<m where !mask.allows(p, i, j) { ds[i * m + j] = 0 } }
                }
                if let dq { BLAS.gemm(false, false, n, d, m, 1, ds, m, k + kLayout.offset(p), kLayout.rowStride, beta, dq + qLayout.offset(p), qLayout.rowStride) }
                if let dk { BLAS.gemm(true, false, m, d, n, 1, ds, m, q + qLayout.offset(p), qLayout.rowStride, betaKV, dk + kLayout.offset(p), kLayout.rowStride) }
            }
        }
    }

    /// Runs `body` for every pair, split across threads when there is enough work (BLAS runs
    /// single-threaded inside each pair).
    static func forPairs(_ pairs: Int, work: Int, _ body: (Int) -> Void) {
        let perChunk = Swift.max(1, 200_000 / Swift.max(work, 1))
        Parallel.forChunks(pairs, grain: perChunk) { r in for p in r { body(p) } }
    }
}

extension Tensor {
    /// softmax(q k^T * scale + mask) v over the last two axes of q (..., N, d), k (..., M, d) and
    /// v (..., M, dv). `mask`, broadcastable to (..., N, M), is non-zero where a query may attend
    /// (as a boolean `attn_mask` in PyTorch); a row with nothing to attend to gets uniform weights.
    /// With `returnProbabilities` the attention weights (..., N, M) come back too, as constants.
    public static func scaledDotProductAttention(query q: Tensor, key k: Tensor, value v: Tensor,
                                                 mask: Tensor? = nil, scale: Float? = nil,
                                                 returnProbabilities: Bool = false) -> (output: Tensor, probabilities: Tensor?) {
        precondition(q.rank >= 2 && k.rank == q.rank && v.rank == q.rank, "attention: q, k, v need the same rank >= 2")
        let batch = Array(q.shape.dropLast(2))
        precondition(Array(k.shape.dropLast(2)) == batch && Array(v.shape.dropLast(2)) == batch,
                     "attention: batch axes of \(q.shape), \(k.shape), \(v.shape) differ")
        let n = q.shape[q.rank - 2], d = q.shape[q.rank - 1]
        let m = k.shape[k.rank - 2], dv = v.shape[v.rank - 1]
        precondition(k.shape[k.rank - 1] == d && v.shape[v.rank - 2] == m, "attention: k must be (..., M, \(d)) and v (..., M, dv)")
        let pairs = product(batch)
        let s = scale ?? 1 / Float(d).squareRoot()
        let out = Storage(uninitializedCount: pairs * n * dv)
        let probs = Storage(uninitializedCount: pairs * n * m)
        let plane = mask.map { AttentionMask($0, batch: batch, n: n, m: m) }
        let qL = HeadLayout.contiguous(rows: n, width: d), kL = HeadLayout.contiguous(rows: m, width: d)
        let vL = HeadLayout.contiguous(rows: m, width: dv), oL = HeadLayout.contiguous(rows: n, width: dv)
        AttentionKernels.forward(out.base, oL, probs.base, q.base, qL, k.base, kL, v.base, vL, pairs: pairs, n: n, m: m, d: d, dv: dv,
                                 scale: s, mask: plane)
        let output = makeResult(shape: batch + [n, dv], storage: out, inputs: [q, k, v]) {
            { g in
                AttentionKernels.backward(q.node?.accumulator(), k.node?.accumulator(), v.node?.accumulator(), g.base, oL,
                                          probs.base, q.base, qL, k.base, kL, v.base, vL, pairs: pairs, n: n, m: m, d: d, dvWidth: dv,
                                          scale: s, mask: plane)
            }
        }
        return (output, returnProbabilities ? Tensor(shape: batch + [n, m], storage: Storage(copying: probs.base, count: probs.count)) : nil)
    }
}

extension Tensor {
    /// Multi-head self-attention straight from a packed projection, without copies: `qkv`
    /// (B, N, 3 * heads * dimHead) holds [q | k | v], each with heads side by side (as
    /// vit-pytorch's `to_qkv(x).chunk(3)` then 'b n (h d) -> b h n d'). Returns (B, N, heads *
    /// dimHead), heads side by side ('b h n d -> b n (h d)'), and optionally the probabilities
    /// (B, heads, N, N) as constants.
    public static func multiHeadSelfAttention(packedQKV qkv: Tensor, heads: Int, scale: Float? = nil,
                                              returnProbabilities: Bool = false) -> (output: Tensor, probabilities: Tensor?) {
        precondition(qkv.rank == 3 && qkv.shape[2] % (3 * heads) == 0, "multiHeadSelfAttention: qkv must be (B, N, 3 * heads * dimHead), got \(qkv.shape)")
        let (b, n) = (qkv.shape[0], qkv.shape[1])
        let inner = qkv.shape[2] / 3, dh = inner / heads
        let qL = HeadLayout(start: 0, batchStride: n * 3 * inner, headStride: dh, rowStride: 3 * inner, heads: heads)
        var kL = qL, vL = qL
        kL.start = inner
        vL.start = 2 * inner
        return headsInPlace(queries: qkv, qL, keysValues: qkv, kL, vL, b: b, n: n, m: n, heads: heads, dimHead: dh, scale: scale,
                            returnProbabilities: returnProbabilities)
    }

    /// Attention whose heads are read through layouts (queries from `q`, keys and values from
    /// `kv`, which may be the same packed tensor) and written heads side by side into (B, N,
    /// heads * dimHead). Backward writes fresh gradient buffers (every element by one pair's
    /// product) instead of adding to zeros.
    static func headsInPlace(queries q: Tensor, _ qL: HeadLayout, keysValues kv: Tensor, _ kL: HeadLayout, _ vL: HeadLayout,
                             b: Int, n: Int, m: Int, heads: Int, dimHead dh: Int, scale: Float?,
                             returnProbabilities: Bool) -> (output: Tensor, probabilities: Tensor?) {
        let inner = heads * dh
        let s = scale ?? 1 / Float(dh).squareRoot()
        let pairs = b * heads
        let oL = HeadLayout(batchStride: n * inner, headStride: dh, rowStride: inner, heads: heads)
        let out = Storage(uninitializedCount: b * n * inner)
        let probs = Storage(uninitializedCount: pairs * n * m)
        AttentionKernels.forward(out.base, oL, probs.base, q.base, qL, kv.base, kL, kv.base, vL,
                                 pairs: pairs, n: n, m: m, d: dh, dv: dh, scale: s, mask: nil)
        let packed = q.storage === kv.storage
        let output = makeResult(shape: [b, n, inner], storage: out, inputs: packed ? [q] : [q, kv]) {
            { g in
                // One packed tensor has one gradient buffer: asked for once, so that its beta is
                // 0 only when the buffer is fresh.
                let dkv = kv.node?.gemmAccumulator(), dq = packed ? dkv : q.node?.gemmAccumulator()
                AttentionKernels.backward(dq?.0, dkv?.0, dkv?.0, g.base, oL, probs.base, q.base, qL, kv.base, kL, kv.base, vL,
                                          pairs: pairs, n: n, m: m, d: dh, dvWidth: dh, scale: s, mask: nil,
                                          beta: dq?.1 ?? 1, betaKV: dkv?.1 ?? 1)
            }
        }
        return (output, returnProbabilities ? Tensor(shape: [b, heads, n, m], storage: Storage(copying: probs.base, count: probs.count)) : nil)
    }
}

extension Tensor {
    /// Multi-head attention of queries (B, N, heads * dimHead) over keys and values packed as
    /// (B, M, 2 * heads * dimHead) ([k | v], heads side by side: vit-pytorch's `to_kv(context)
    /// .chunk(2)` then 'b n (h d) -> b h n d'), read in place. Returns (B, N, heads * dimHead) and
    /// optionally the probabilities (B, heads, N, M) as constants.
    public static func multiHeadAttention(queries q: Tensor, packedKV kv: Tensor, heads: Int, scale: Float? = nil,
                                          returnProbabilities: Bool = false) -> (output: Tensor, probabilities: Tensor?) {
        precondition(q.rank == 3 && kv.rank == 3 && q.shape[0] == kv.shape[0] && kv.shape[2] == 2 * q.shape[2] && q.shape[2] % heads == 0,
                     "multiHeadAttention: queries (B, N, heads * dimHead) and keys-values (B, M, 2 * heads * dimHead), got \(q.shape) and \(kv.shape)")
        let (b, n, m, inner) = (q.shape[0], q.shape[1], kv.shape[1], q.shape[2])
        let dh = inner / heads
        let qL = HeadLayout(batchStride: n * inner, headStride: dh, rowStride: inner, heads: heads)
        let kL = HeadLayout(batchStride: m * 2 * inner, headStride: dh, rowStride: 2 * inner, heads: heads)
        var vL = kL
        vL.start = inner
        return headsInPlace(queries: q, qL, keysValues: kv, kL, vL, b: b, n: n, m: m, heads: heads, dimHead: dh, scale: scale,
                            returnProbabilities: returnProbabilities)
    }

    /// einsum('b h i j, h g -> b g i j'): attention maps (B, h, N, M) mixed across heads by a
    /// (h, g) matrix (talking heads, re-attention), without moving the maps: per image, the
    /// product W^T (g, h) x maps (h, N M). The maps' gradient is W dOut per image; W's, the sum
    /// over images of maps dOut^T, accumulated in image order.
    public static func mixingHeads(_ maps: Tensor, _ weights: Tensor) -> Tensor {
        precondition(maps.rank == 4 && weights.rank == 2 && weights.shape[0] == maps.shape[1],
                     "mixingHeads: maps \(maps.shape) do not fit weights \(weights.shape)")
        let (b, h, g) = (maps.shape[0], maps.shape[1], weights.shape[1])
        let l = maps.shape[2] * maps.shape[3]
        let out = Storage(uninitializedCount: b * g * l)
        let grain = Swift.max(1, b / Swift.max(Parallel.threads, 1))
        let (a, w, o) = (maps.base, weights.base, out.base)
        Parallel.forChunks(b, grain: grain) { r in
            for i in r { BLAS.gemm(true, false, g, l, h, 1, w, g, a + i * h * l, l, 0, o + i * g * l, l) }
        }
        return makeResult(shape: [b, g, maps.shape[2], maps.shape[3]], storage: out, inputs: [maps, weights]) {
            { grad in
                let gp = grad.base
                if let nm = maps.node {
                    let (ga, beta) = nm.gemmAccumulator()
                    Parallel.forChunks(b, grain: grain) { r in
                        for i in r { BLAS.gemm(false, false, h, l, g, 1, w, g, gp + i * g * l, l, beta, ga + i * h * l, l) }
                    }
                }
                if let nw = weights.node {
                    let (gw, beta) = nw.gemmAccumulator()
                    for i in 0..<b { BLAS.gemm(false, true, h, g, l, 1, a + i * h * l, l, gp + i * g * l, l, i == 0 ? beta : 1, gw, g) }
                }
            }
        }
    }
}

extension Tensor {
    /// The attention logits of every head, q k^T * scale, read straight from projections whose
    /// heads sit side by side: q (B, N, heads * d) and k (B, M, heads * d) give (B, heads, N, M)
    /// (vit-pytorch's 'b n (h d) -> b h n d' then einsum('b h i d, b h j d -> b h i j'), no copies).
    public static func headScores(_ q: Tensor, _ k: Tensor, heads: Int, scale: Float) -> Tensor {
        precondition(q.rank == 3 && k.rank == 3 && q.shape[0] == k.shape[0] && q.shape[2] == k.shape[2] && q.shape[2] % heads == 0,
                     "headScores: q \(q.shape) and k \(k.shape) must be (B, N, heads * d) and (B, M, heads * d)")
        let (b, n, m, inner) = (q.shape[0], q.shape[1], k.shape[1], q.shape[2])
        let d = inner / heads
        let qL = HeadLayout(batchStride: n * inner, headStride: d, rowStride: inner, heads: heads)
        let kL = HeadLayout(batchStride: m * inner, headStride: d, rowStride: inner, heads: heads)
        let out = Storage(uninitializedCount: b * heads * n * m)
        let (qp, kp, o) = (q.base, k.base, out.base)
        AttentionKernels.forPairs(b * heads, work: n * m * d) { p in
            BLAS.gemm(false, true, n, m, d, scale, qp + qL.offset(p), inner, kp + kL.offset(p), inner, 0, o + p * n * m, m)
        }
        return makeResult(shape: [b, heads, n, m], storage: out, inputs: [q, k]) {
            { g in
                let gp = g.base
                let dq = q.node?.accumulator(), dk = k.node?.accumulator()
                AttentionKernels.forPairs(b * heads, work: 2 * n * m * d) { p in
                    // dQ (N, d) += scale dS K;  dK (M, d) += scale dS^T Q
                    if let dq { BLAS.gemm(false, false, n, d, m, scale, gp + p * n * m, m, kp + kL.offset(p), inner, 1, dq + qL.offset(p), inner) }
                    if let dk { BLAS.gemm(true, false, m, d, n, scale, gp + p * n * m, m, qp + qL.offset(p), inner, 1, dk + kL.offset(p), inner) }
                }
            }
        }
    }

    /// Self-attention with an additive bias on the logits, softmax(q k^T * scale + bias) v per head,
    /// from a packed projection (B, N, 3 * heads * d) (q, k, v side by side, each 'b n (h d)'), the
    /// bias (heads, N, N) shared by the batch: relative-position biases (MaxViT, CrossFormer, LeViT,
    /// RegionViT). The bias gets its gradient, so a learned table behind it trains. Returns
    /// (B, N, heads * d).
    /// `dropout`, if given, is applied to the attention weights (nn.Dropout after the softmax).
    public static func biasedSelfAttention(packedQKV qkv: Tensor, heads: Int, bias: Tensor, scale: Float? = nil,
                                           dropout: ((Tensor) -> Tensor)? = nil) -> Tensor {
        let (n, width) = (qkv.shape[1], qkv.shape[2])
        precondition(qkv.rank == 3 && width % (3 * heads) == 0 && bias.shape == [heads, n, n],
                     "biasedSelfAttention: qkv \(qkv.shape) must be (B, N, 3 * heads * d) and bias \(bias.shape) (heads, N, N)")
        let inner = width / 3
        let q = qkv.slice(axis: 2, start: 0, length: inner), k = qkv.slice(axis: 2, start: inner, length: inner)
        let v = qkv.slice(axis: 2, start: 2 * inner, length: inner)
        let logits = headScores(q, k, heads: heads, scale: scale ?? 1 / Float(inner / heads).squareRoot()) + bias.reshaped([1, heads, n, n])
        let weights = logits.softmax()
        return headWeightedValues(dropout.map { $0(weights) } ?? weights, v)
    }

    /// Attention weights (B, heads, N, M) applied to values v (B, M, heads * d), the heads written
    /// side by side into (B, N, heads * d) (einsum('b h i j, b h j d -> b h i d') then
    /// 'b h n d -> b n (h d)', no copies).
    public static func headWeightedValues(_ weights: Tensor, _ v: Tensor) -> Tensor {
        precondition(weights.rank == 4 && v.rank == 3 && weights.shape[0] == v.shape[0] && weights.shape[3] == v.shape[1]
                     && v.shape[2] % weights.shape[1] == 0,
                     "headWeightedValues: weights \(weights.shape) and v \(v.shape) must be (B, heads, N, M) and (B, M, heads * d)")
        let (b, heads, n, m, inner) = (weights.shape[0], weights.shape[1], weights.shape[2], weights.shape[3], v.shape[2])
        let d = inner / heads
        let vL = HeadLayout(batchStride: m * inner, headStride: d, rowStride: inner, heads: heads)
        let oL = HeadLayout(batchStride: n * inner, headStride: d, rowStride: inner, heads: heads)
        let out = Storage(uninitializedCount: b * n * inner)
        let (wp, vp, o) = (weights.base, v.base, out.base)
        AttentionKernels.forPairs(b * heads, work: n * m * d) { p in
            BLAS.gemm(false, false, n, d, m, 1, wp + p * n * m, m, vp + vL.offset(p), inner, 0, o + oL.offset(p), inner)
        }
        return makeResult(shape: [b, n, inner], storage: out, inputs: [weights, v]) {
            { g in
                let gp = g.base
                let dw = weights.node?.accumulator(), dv = v.node?.accumulator()
                AttentionKernels.forPairs(b * heads, work: 2 * n * m * d) { p in
                    // dW (N, M) += dO V^T;  dV (M, d) += W^T dO
                    if let dw { BLAS.gemm(false, true, n, m, d, 1, gp + oL.offset(p), inner, vp + vL.offset(p), inner, 1, dw + p * n * m, m) }
                    if let dv { BLAS.gemm(true, false, m, d, n, 1, wp + p * n * m, m, gp + oL.offset(p), inner, 1, dv + vL.offset(p), inner) }
                }
            }
        }
    }
}

extension Tensor {
    /// Cross-covariance attention's logits (XCiT, El-Nouby et al. 2021) read straight from the
    /// packed projection qkv (B, N, 3 * heads * d): per head, q and k are L2-normalised along the
    /// tokens (each of the d channels over N, F.normalize(dim = -1) of 'b h d n'), then their
    /// (d, d) Gram matrix q^T k. Returns (B, heads, d, d); no permuted copies of q or k are made.
    /// The v third of qkv gets no gradient here (crossCovarianceValues reads it).
    public static func crossCovarianceLogits(packedQKV qkv: Tensor, heads: Int, eps: Float = 1e-12) -> Tensor {
        precondition(qkv.rank == 3 && qkv.shape[2] % (3 * heads) == 0,
                     "crossCovarianceLogits: qkv \(qkv.shape) must be (B, N, 3 * heads * d)")
        let (b, n, width) = (qkv.shape[0], qkv.shape[1], qkv.shape[2])
        let inner = width / 3, d = inner / heads
        // q^ and k^ side by side (B, N, 2 * inner), and the norms (B, 2 * inner), kept for backward.
        let normalized = Storage(uninitializedCount: b * n * 2 * inner)
        let norms = Storage(uninitializedCount: b * 2 * inner)
        let out = Storage(uninitializedCount: b * heads * d * d)
        let (x, o) = (qkv.base, out.base)
        let (y, nr) = (normalized.base, norms.base)
        AttentionKernels.forPairs(b * heads, work: 3 * n * d * d) { p in
            let (i, h) = (p / heads, p % heads)
            for part in 0..<2 {
                let column = part * inner + h * d
                XCAKernels.normalizeColumns(x + i * n * width + column, rowStride: width, y + i * n * 2 * inner + column,
                                            outRowStride: 2 * inner, norms: nr + i * 2 * inner + column, rows: n, columns: d, eps: eps)
            }
            let qh = y + i * n * 2 * inner + h * d
            BLAS.gemm(true, false, d, d, n, 1, qh, 2 * inner, qh + inner, 2 * inner, 0, o + p * d * d, d)
        }
        return makeResult(shape: [b, heads, d, d], storage: out, inputs: [qkv]) {
            { g in
                // The saved q^, k^ and norms, held alive by this closure.
                let (y, nr) = (normalized.base, norms.base)
                let gp = g.base
                let dx = qkv.node!.accumulator()
                let scratch = Storage(uninitializedCount: b * n * 2 * inner)
                let s = scratch.base
                AttentionKernels.forPairs(b * heads, work: 4 * n * d * d) { p in
                    let (i, h) = (p / heads, p % heads)
                    let qh = y + i * n * 2 * inner + h * d, kh = qh + inner
                    let dqh = s + i * n * 2 * inner + h * d, dkh = dqh + inner
                    // S = q^T k: dq (N, d) = k dS^T, dk (N, d) = q dS.
                    BLAS.gemm(false, true, n, d, d, 1, kh, 2 * inner, gp + p * d * d, d, 0, dqh, 2 * inner)
                    BLAS.gemm(false, false, n, d, d, 1, qh, 2 * inner, gp + p * d * d, d, 0, dkh, 2 * inner)
                    for part in 0..<2 {
                        let column = part * inner + h * d
                        XCAKernels.normalizeColumnsBackward(s + i * n * 2 * inner + column, y + i * n * 2 * inner + column, rowStride: 2 * inner,
                                                            norms: nr + i * 2 * inner + column, into: dx + i * n * width + column,
                                                            outRowStride: width, rows: n, columns: d, eps: eps)
                    }
                }
            }
        }
    }

    /// Cross-covariance attention's output: weights (B, heads, d, d) applied to the channels of v,
    /// read from the packed projection qkv (B, N, 3 * heads * d) (its last third), per head
    /// out (N, d) = v (N, d) W^T, written heads side by side into (B, N, heads * d)
    /// (einsum('b h i j, b h j n -> b h i n') then 'b h d n -> b n (h d)', no copies).
    public static func crossCovarianceValues(_ weights: Tensor, packedQKV qkv: Tensor) -> Tensor {
        precondition(weights.rank == 4 && qkv.rank == 3 && weights.shape[0] == qkv.shape[0] && weights.shape[2] == weights.shape[3]
                     && qkv.shape[2] == 3 * weights.shape[1] * weights.shape[2],
                     "crossCovarianceValues: weights \(weights.shape) and qkv \(qkv.shape) must be (B, heads, d, d) and (B, N, 3 * heads * d)")
        let (b, heads, d, n, width) = (weights.shape[0], weights.shape[1], weights.shape[2], qkv.shape[1], qkv.shape[2])
        let inner = heads * d
        let vL = HeadLayout(start: 2 * inner, batchStride: n * width, headStride: d, rowStride: width, heads: heads)
        let oL = HeadLayout(batchStride: n * inner, headStride: d, rowStride: inner, heads: heads)
        let out = Storage(uninitializedCount: b * n * inner)
        let (wp, vp, o) = (weights.base, qkv.base, out.base)
        AttentionKernels.forPairs(b * heads, work: n * d * d) { p in
            BLAS.gemm(false, true, n, d, d, 1, vp + vL.offset(p), width, wp + p * d * d, d, 0, o + oL.offset(p), inner)
        }
        return makeResult(shape: [b, n, inner], storage: out, inputs: [weights, qkv]) {
            { g in
                let gp = g.base
                let dw = weights.node?.accumulator(), dv = qkv.node?.accumulator()
                AttentionKernels.forPairs(b * heads, work: 2 * n * d * d) { p in
                    // dW (d, d) += dO^T V;  dV (N, d) += dO W
                    if let dw { BLAS.gemm(true, false, d, d, n, 1, gp + oL.offset(p), inner, vp + vL.offset(p), width, 1, dw + p * d * d, d) }
                    if let dv { BLAS.gemm(false, false, n, d, d, 1, gp + oL.offset(p), inner, wp + p * d * d, d, 1, dv + vL.offset(p), width) }
                }
            }
        }
    }
}

/// The column normalisation cross-covariance attention needs: each of `columns` channels of a
/// (rows, columns) block with a row stride, divided by max(its L2 norm over the rows, eps).
enum XCAKernels {
    static func normalizeColumns(_ x: UnsafePointer<Float>, rowStride: Int, _ y: UnsafeMutablePointer<Float>, outRowStride: Int,
                                 norms: UnsafeMutablePointer<Float>, rows: Int, columns: Int, eps: Float) {
        for c in 0..<columns { norms[c] = 0 }
        for r in 0..<rows {
            let xr = x + r * rowStride
            for c in 0..<columns { norms[c] += xr[c] * xr[c] }
        }
        for c in 0..<columns { norms[c] = Swift.max(norms[c].squareRoot(), eps) }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: columns) { buf in
            let inv = buf.baseAddress!
            for c in 0..<columns { inv[c] = 1 / norms[c] }
            for r in 0..<rows {
                let xr = x + r * rowStride, yr = y + r * outRowStride
                for c in 0..<columns { yr[c] = xr[c] * inv[c] }
            }
        }
    }

    /// dx += (g - y (y . g)) / norm per column (g and y share a layout); below eps the
    /// denominator is the constant eps, so there is no projection term.
    static func normalizeColumnsBackward(_ g: UnsafePointer<Float>, _ y: UnsafePointer<Float>, rowStride: Int, norms: UnsafePointer<Float>,
                                         into dx: UnsafeMutablePointer<Float>, outRowStride: Int, rows: Int, columns: Int, eps: Float) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * columns) { buf in
            let dot = buf.baseAddress!, inv = dot + columns
            for c in 0..<columns { dot[c] = 0; inv[c] = 1 / norms[c] }
            for r in 0..<rows {
                let gr = g + r * rowStride, yr = y + r * rowStride
                for c in 0..<columns { dot[c] += yr[c] * gr[c] }
            }
            for c in 0..<columns where !(norms[c] > eps) { dot[c] = 0 }
            for r in 0..<rows {
                let gr = g + r * rowStride, yr = y + r * rowStride, dr = dx + r * outRowStride
                for c in 0..<columns { dr[c] += (gr[c] - yr[c] * dot[c]) * inv[c] }
            }
        }
    }
}
