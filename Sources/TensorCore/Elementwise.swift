#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Unary element-wise ops

extension Tensor {
    /// Applies `forward` to every element; backward multiplies the incoming gradient by
    /// `derivative(x, y)` where y = forward(x).
    @inline(__always)
    func unary(_ forward: @escaping (Float) -> Float,
               derivative: @escaping (_ x: Float, _ y: Float) -> Float) -> Tensor {
        let n = count
        let out = Storage(uninitializedCount: n)
        let xp = base, yp = out.base
        Parallel.forChunks(n) { r in for i in r { yp[i] = forward(xp[i]) } }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                // Read through the captured tensor and storage: they keep the values alive.
                let gx = input.node!.accumulator()
                let gp = g.base, xp = input.base, yp = out.base
                Parallel.forChunks(n) { r in for i in r { gx[i] += gp[i] * derivative(xp[i], yp[i]) } }
            }
        }
    }

    public static prefix func - (x: Tensor) -> Tensor { x.unary({ -$0 }, derivative: { _, _ in -1 }) }
    public func exp() -> Tensor { unary({ libmExp($0) }, derivative: { _, y in y }) }
    public func log() -> Tensor { unary({ libmLog($0) }, derivative: { x, _ in 1 / x }) }
    public func sqrt() -> Tensor { unary({ $0.squareRoot() }, derivative: { _, y in 0.5 / y }) }
    public func rsqrt() -> Tensor { unary({ 1 / $0.squareRoot() }, derivative: { x, y in -0.5 * y / x }) }
    public func abs() -> Tensor { unary({ Swift.abs($0) }, derivative: { x, _ in x > 0 ? 1 : (x < 0 ? -1 : 0) }) }
    public func tanh() -> Tensor { unary({ libmTanh($0) }, derivative: { _, y in 1 - y * y }) }
    public func sigmoid() -> Tensor {
        unary({ 1 / (1 + libmExp(-$0)) }, derivative: { _, y in y * (1 - y) })
    }
    public func relu() -> Tensor { unary({ $0 > 0 ? $0 : 0 }, derivative: { x, _ in x > 0 ? 1 : 0 }) }
    /// SiLU (swish), x sigmoid(x), as torch's nn.SiLU (MBConv, squeeze-excitation).
    /// Eight lanes at a time in double precision (`vexpDouble`), rounded once to Float; the tail
    /// likewise, one lane at a time.
    public func silu() -> Tensor {
        let n = count
        let out = Storage(uninitializedCount: n)
        let xp = base, yp = out.base
        Parallel.forChunks(n, grain: 16384) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let x = SIMD8<Double>(load(xp + i))
                store(Vec(x / (1 + vexpDouble(-x))), yp + i)
                i += 8
            }
            while i < r.upperBound { let x = Double(xp[i]); yp[i] = Float(x / (1 + libmExpDouble(-x))); i += 1 }
        }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                let gx = input.node!.accumulator()
                let gp = g.base, xp = input.base
                Parallel.forChunks(n, grain: 16384) { r in
                    var i = r.lowerBound
                    while i + 8 <= r.upperBound {
                        let x = SIMD8<Double>(load(xp + i))
                        let s = 1 / (1 + vexpDouble(-x))
                        store(load(gx + i) + load(gp + i) * Vec(s * (1 + x * (1 - s))), gx + i)
                        i += 8
                    }
                    while i < r.upperBound {
                        let x = Double(xp[i]), s = 1 / (1 + libmExpDouble(-x))
                        gx[i] += gp[i] * Float(s * (1 + x * (1 - s)))
                        i += 1
                    }
                }
            }
        }
    }
    /// Hardswish, x relu6(x + 3) / 6, as torch's nn.Hardswish (LeViT, MobileNetV3); its gradient
    /// as torch's: 0 below -3, x / 3 + 1/2 up to 3 (inclusive), 1 above.
    public func hardswish() -> Tensor {
        unary({ $0 * Swift.min(Swift.max($0 + 3, 0), 6) / 6 }, derivative: { x, _ in x < -3 ? 0 : (x <= 3 ? x / 3 + 0.5 : 1) })
    }
    public func square() -> Tensor { unary({ $0 * $0 }, derivative: { x, _ in 2 * x }) }
    /// x raised to a constant power.
    public func pow(_ p: Float) -> Tensor {
        unary({ libmPow($0, p) }, derivative: { x, _ in p * libmPow(x, p - 1) })
    }
    /// Clamps to [low, high]; the gradient passes where the input is inside the interval.
    public func clamp(min low: Float = -.infinity, max high: Float = .infinity) -> Tensor {
        unary({ Swift.min(Swift.max($0, low), high) }, derivative: { x, _ in x >= low && x <= high ? 1 : 0 })
    }

    // Scalar operations.
    public static func + (x: Tensor, s: Float) -> Tensor { x.unary({ $0 + s }, derivative: { _, _ in 1 }) }
    public static func + (s: Float, x: Tensor) -> Tensor { x + s }
    public static func - (x: Tensor, s: Float) -> Tensor { x.unary({ $0 - s }, derivative: { _, _ in 1 }) }
    public static func - (s: Float, x: Tensor) -> Tensor { x.unary({ s - $0 }, derivative: { _, _ in -1 }) }
    public static func * (x: Tensor, s: Float) -> Tensor { x.unary({ $0 * s }, derivative: { _, _ in s }) }
    public static func * (s: Float, x: Tensor) -> Tensor { x * s }
    public static func / (x: Tensor, s: Float) -> Tensor { x * (1 / s) }
    public static func / (s: Float, x: Tensor) -> Tensor {
        x.unary({ s / $0 }, derivative: { x, _ in -s / (x * x) })
    }
}

@inline(__always) func libmExp(_ x: Float) -> Float { expf(x) }
@inline(__always) func libmExpDouble(_ x: Double) -> Double { exp(x) }
@inline(__always) func libmLog(_ x: Float) -> Float { logf(x) }
@inline(__always) func libmTanh(_ x: Float) -> Float { tanhf(x) }
@inline(__always) func libmPow(_ x: Float, _ p: Float) -> Float { powf(x, p) }

// MARK: - Binary element-wise ops with broadcasting

public enum BinaryOp { case add, sub, mul, div }

extension Tensor {
    public static func + (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .add) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .sub) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .mul) }
    public static func / (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .div) }

    static func binary(_ a: Tensor, _ b: Tensor, _ op: BinaryOp) -> Tensor {
        guard let outShape = Broadcast.shape(a.shape, b.shape) else {
            preconditionFailure("cannot broadcast shapes \(a.shape) and \(b.shape)")
        }
        let n = product(outShape)
        let out = Storage(uninitializedCount: n)
        let ap = a.base, bp = b.base, op_ = out.base
        if a.shape == outShape && b.shape == outShape {
            Parallel.forChunks(n) { r in
                switch op {
                case .add: for i in r { op_[i] = ap[i] + bp[i] }
                case .sub: for i in r { op_[i] = ap[i] - bp[i] }
                case .mul: for i in r { op_[i] = ap[i] * bp[i] }
                case .div: for i in r { op_[i] = ap[i] / bp[i] }
                }
            }
        } else {
            let sa = Broadcast.strides(of: a.shape, in: outShape)
            let sb = Broadcast.strides(of: b.shape, in: outShape)
            let inner = outShape.last ?? 1
            let ia = sa.last ?? 0, ib = sb.last ?? 0
            Broadcast.forEachRow(outShape, [sa, sb]) { row, off in
                let x = ap + off[0], y = bp + off[1], z = op_ + row * inner
                switch op {
                case .add: for i in 0..<inner { z[i] = x[i * ia] + y[i * ib] }
                case .sub: for i in 0..<inner { z[i] = x[i * ia] - y[i * ib] }
                case .mul: for i in 0..<inner { z[i] = x[i * ia] * y[i * ib] }
                case .div: for i in 0..<inner { z[i] = x[i * ia] / y[i * ib] }
                }
            }
        }
        return makeResult(shape: outShape, storage: out, inputs: [a, b]) {
            { g in
                let grad = Tensor(shape: outShape, storage: g)
                if let na = a.node {
                    let local: Tensor
                    switch op {
                    case .add, .sub: local = grad
                    case .mul: local = Autograd.noGrad { grad * b.detached() }
                    case .div: local = Autograd.noGrad { grad / b.detached() }
                    }
                    if (op == .add || op == .sub) && a.shape == outShape {
                        // A residual's gradient passes to its first input as it is, with no copy.
                        handInto(na, g)
                    } else {
                        addInto(na, local.sumToShape(a.shape))
                    }
                }
                if let nb = b.node {
                    let local: Tensor
                    switch op {
                    case .add: local = grad
                    case .sub: local = Autograd.noGrad { -grad }
                    case .mul: local = Autograd.noGrad { grad * a.detached() }
                    case .div:
                        let y = Tensor(shape: outShape, storage: out)
                        local = Autograd.noGrad { -(grad * y) / b.detached() }
                    }
                    addInto(nb, local.sumToShape(b.shape))
                }
            }
        }
    }
}

/// Gives `g`, the gradient of the output whose tape entry is running, to `node`: as its gradient
/// where it has none yet (the same buffer, no copy: the tape drops the output's gradient as soon as
/// the entry has run, so the node becomes its only owner), else added into it. Only for the
/// entry's own output gradient, and for one input of the entry at most; the entry's other inputs
/// read `g` before anything writes to it.
@inline(__always)
func handInto(_ node: GradNode, _ g: Storage) {
    if node.grad == nil, g.count > 0 {
        node.grad = g
        return
    }
    addInto(node, g)
}

/// Adds `g` into `node`'s gradient.
@inline(__always)
func addInto(_ node: GradNode, _ g: Storage) {
    precondition(g.count == node.count, "gradient size mismatch")
    if node.grad == nil, g.count > 0 {
        node.grad = Storage(copying: g.base, count: g.count)
        return
    }
    let dst = node.accumulator(), src = g.base
    Parallel.forChunks(node.count) { r in for i in r { dst[i] += src[i] } }
}
