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

/// Fused scaled-dot-product attention, llm.c style: per (batch, head) pair, scores by sgemm,
/// masked softmax in place, then the weighted sum of values by sgemm. The probabilities are kept
/// for the backward pass.
public enum AttentionKernels {
    /// q (BH, N, d), k (BH, M, d), v (BH, M, dv) -> out (BH, N, dv); probs (BH, N, M) is written.
    /// With a mask, scores where it is zero are -infinity.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
                               _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                               pairs: Int, n: Int, m: Int, d: Int, dv: Int, scale: Float, mask: AttentionMask?) {
        forPairs(pairs, work: n * m * (d + dv)) { p in
            let s = probs + p * n * m
            sgemm(false, true, n, m, d, scale, q + p * n * d, d, k + p * m * d, d, 0, s, m)
            if let mask {
                for i in 0..<n { for j in 0..<m where !mask.allows(p, i, j) { s[i * m + j] = -.infinity } }
            }
            for i in 0..<n { SoftmaxKernels.softmaxRow(s + i * m, s + i * m, m) }
            sgemm(false, false, n, dv, m, 1, s, m, v + p * m * dv, dv, 0, out + p * n * dv, dv)
        }
    }

    /// Adds the gradients of q, k, v given dout (BH, N, dv) and the saved probabilities.
    public static func backward(_ dq: UnsafeMutablePointer<Float>?, _ dk: UnsafeMutablePointer<Float>?,
                                _ dv_: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>,
                                _ probs: UnsafePointer<Float>, _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>,
                                _ v: UnsafePointer<Float>, pairs: Int, n: Int, m: Int, d: Int, dv: Int, scale: Float,
                                mask: AttentionMask?) {
        forPairs(pairs, work: 2 * n * m * (d + dv)) { p in
            let pp = probs + p * n * m, go = dout + p * n * dv
            if let dv_ {
                // dV (M, dv) += P^T (M, N) . dO (N, dv)
                sgemm(true, false, m, dv, n, 1, pp, m, go, dv, 1, dv_ + p * m * dv, dv)
            }
            guard dq != nil || dk != nil else { return }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: n * m) { buf in
                let ds = buf.baseAddress!
                // dP (N, M) = dO (N, dv) . V^T
                sgemm(false, true, n, m, dv, 1, go, dv, v + p * m * dv, dv, 0, ds, m)
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
                if let dq { sgemm(false, false, n, d, m, 1, ds, m, k + p * m * d, d, 1, dq + p * n * d, d) }
                if let dk { sgemm(true, false, m, d, n, 1, ds, m, q + p * n * d, d, 1, dk + p * m * d, d) }
            }
        }
    }

    /// Runs `body` for every pair, split across threads when there is enough work.
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
        AttentionKernels.forward(out.base, probs.base, q.base, k.base, v.base, pairs: pairs, n: n, m: m, d: d, dv: dv,
                                 scale: s, mask: plane)
        let output = makeResult(shape: batch + [n, dv], storage: out, inputs: [q, k, v]) {
            { g in
                AttentionKernels.backward(q.node?.accumulator(), k.node?.accumulator(), v.node?.accumulator(), g.base,
                                          probs.base, q.base, k.base, v.base, pairs: pairs, n: n, m: m, d: d, dv: dv, scale: s,
                                          mask: plane)
            }
        }
        return (output, returnProbabilities ? Tensor(shape: batch + [n, m], storage: Storage(copying: probs.base, count: probs.count)) : nil)
    }
}
