/// Targets for cross-entropy: integer class labels or a probability distribution per row.
public enum ClassTargets {
    case labels([Int])
    case probabilities(Tensor)
}

/// Fused softmax cross-entropy over rows of logits, llm.c style.
public enum CrossEntropyKernels {
    /// Mean over rows of -sum_c q_c log softmax(x)_c, where q is the (smoothed) target. Saves the
    /// log-probabilities (rows, n) in `logp`. `labels` or `soft` (rows, n) gives the target.
    public static func forward(_ logp: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, n: Int,
                               labels: [Int]?, soft: UnsafePointer<Float>?, smoothing: Float) -> Float {
        SoftmaxKernels.logForward(logp, x, rows: rows, n: n)
        var total: Double = 0
        for row in 0..<rows {
            let lp = logp + row * n
            var loss: Float = 0
            if let labels {
                loss = -(1 - smoothing) * lp[labels[row]]
            } else if let soft {
                loss = -(1 - smoothing) * vdot(soft + row * n, lp, n)
            }
            if smoothing != 0 { loss -= smoothing / Float(n) * vsum(lp, n) }
            total += Double(loss)
        }
        return Float(total / Double(Swift.max(rows, 1)))
    }

    /// dx += scale * (softmax(x) - q) with scale = dloss / rows.
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ logp: UnsafePointer<Float>, rows: Int, n: Int,
                                labels: [Int]?, soft: UnsafePointer<Float>?, smoothing: Float, scale: Float) {
        Parallel.forChunks(rows, grain: Swift.max(1, 4096 / Swift.max(n, 1))) { r in
            for row in r {
                let lp = logp + row * n, d = dx + row * n
                let uniform = smoothing / Float(n)
                for i in 0..<n {
                    var q = uniform
                    if let labels { q += labels[row] == i ? 1 - smoothing : 0 }
                    else if let soft { q += (1 - smoothing) * soft[row * n + i] }
                    d[i] += scale * (sexp(lp[i]) - q)
                }
            }
        }
    }
}

extension Tensor {
    /// Cross-entropy of logits (N, C) against integer labels or probability targets (N, C),
    /// averaged over N, with optional label smoothing (as torch.nn.functional.cross_entropy).
    public func crossEntropy(_ targets: ClassTargets, labelSmoothing: Float = 0) -> Tensor {
        precondition(rank == 2, "crossEntropy expects logits (N, C), got \(shape)")
        let rows = shape[0], n = shape[1]
        var labels: [Int]? = nil
        var soft: Tensor? = nil
        switch targets {
        case .labels(let l):
            precondition(l.count == rows, "crossEntropy: \(l.count) labels for \(rows) rows")
            precondition(l.allSatisfy { $0 >= 0 && $0 < n }, "crossEntropy: a label is outside 0..<\(n)")
            labels = l
        case .probabilities(let p):
            precondition(p.shape == shape, "crossEntropy: target shape \(p.shape) must equal logits \(shape)")
            soft = p
        }
        let logp = Storage(uninitializedCount: count)
        let loss = CrossEntropyKernels.forward(logp.base, base, rows: rows, n: n, labels: labels,
                                               soft: soft?.base, smoothing: labelSmoothing)
        let out = Storage(count: 1, repeating: loss)
        let input = self
        var inputs = [self]
        if let soft { inputs.append(soft) }
        return makeResult(shape: [], storage: out, inputs: inputs) {
            { g in
                let scale = g.base[0] / Float(Swift.max(rows, 1))
                if let nx = input.node {
                    CrossEntropyKernels.backward(nx.accumulator(), logp.base, rows: rows, n: n, labels: labels,
                                                 soft: soft?.base, smoothing: labelSmoothing, scale: scale)
                }
                if let soft, let ns = soft.node {
                    let gs = ns.accumulator()
                    for i in 0..<soft.count { gs[i] -= scale * (1 - labelSmoothing) * logp.base[i] }
                }
            }
        }
    }

    /// Mean squared error.
    public func mseLoss(_ target: Tensor) -> Tensor { (self - target).square().mean() }

    /// Mean absolute error.
    public func l1Loss(_ target: Tensor) -> Tensor { (self - target).abs().mean() }

    /// Mean smooth-L1 (Huber with threshold `beta`): 0.5 d^2 / beta below beta, |d| - 0.5 beta above.
    public func smoothL1Loss(_ target: Tensor, beta: Float = 1) -> Tensor {
        (self - target).unary({ d in
            let a = Swift.abs(d)
            return a < beta ? 0.5 * d * d / beta : a - 0.5 * beta
        }, derivative: { d, _ in
            Swift.abs(d) < beta ? d / beta : (d > 0 ? 1 : -1)
        }).mean()
    }

    /// x / Swift.max(||x||, eps) over the last axis (torch.nn.functional.normalize).
    public func l2Normalized(eps: Float = 1e-12) -> Tensor {
        let n = shape.last ?? 1, rows = n == 0 ? 0 : count / n
        let out = Storage(uninitializedCount: count)
        let norms = Storage(uninitializedCount: rows)
        let x = base, y = out.base
        Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
            for row in r {
                let norm = Swift.max(vdot(x + row * n, x + row * n, n).squareRoot(), eps)
                norms.base[row] = norm
                let inv = 1 / norm
                for i in 0..<n { y[row * n + i] = x[row * n + i] * inv }
            }
        }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                Parallel.forChunks(rows, grain: Swift.max(1, 8192 / Swift.max(n, 1))) { r in
                    for row in r {
                        let yr = out.base + row * n, gr = g.base + row * n, d = gx + row * n
                        let norm = norms.base[row]
                        // Below eps the denominator is the constant eps: no projection term.
                        let dot = norm > eps ? vdot(yr, gr, n) : 0
                        for i in 0..<n { d[i] += (gr[i] - yr[i] * dot) / norm }
                    }
                }
            }
        }
    }

    /// Cosine similarity along the last axis.
    public static func cosineSimilarity(_ a: Tensor, _ b: Tensor, eps: Float = 1e-8) -> Tensor {
        (a.l2Normalized(eps: eps) * b.l2Normalized(eps: eps)).sum(axis: -1)
    }

    /// Zeroes each element with probability `p` and scales the rest by 1/(1-p); identity when not
    /// training or p == 0. The mask is drawn from `rng`.
    public func dropout(_ p: Float, training: Bool, rng: RandomStream) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1), got \(p)")
        if !training || p == 0 { return self }
        let mask = Storage(uninitializedCount: count)
        let keep = 1 / (1 - p)
        for i in 0..<count { mask.base[i] = rng.nextFloat() < p ? 0 : keep }
        return self * Tensor(shape: shape, storage: mask)
    }
}
