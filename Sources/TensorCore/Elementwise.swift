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

    public static prefix func - (x: Tensor) -> Tensor { x.elementwise(.negate) }
    public func exp() -> Tensor { elementwise(.exp) }
    public func log() -> Tensor { elementwise(.log) }
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
    public static func + (x: Tensor, s: Float) -> Tensor { x.elementwise(.add(s)) }
    public static func + (s: Float, x: Tensor) -> Tensor { x + s }
    public static func - (x: Tensor, s: Float) -> Tensor { x.elementwise(.subtract(s)) }
    public static func - (s: Float, x: Tensor) -> Tensor { x.elementwise(.subtractFrom(s)) }
    public static func * (x: Tensor, s: Float) -> Tensor { x.elementwise(.multiply(s)) }
    public static func * (s: Float, x: Tensor) -> Tensor { x * s }
    public static func / (x: Tensor, s: Float) -> Tensor { x * (1 / s) }
    public static func / (s: Float, x: Tensor) -> Tensor {
        x.unary({ s / $0 }, derivative: { x, _ in -s / (x * x) })
    }
}

extension Tensor {
    /// The scalar operations, negation, exp and log without a closure call per value: forward
    /// and backward run as loops of their own, the arithmetic ones in `WideVec` lanes. Each value
    /// gets the same operations as `unary` gives it (x + s, then in backward gx + g * 1, and so on;
    /// exp and log through libm one value at a time), so the same bits.
    func elementwise(_ op: ElementwiseKernels.Op) -> Tensor {
        let n = count
        let out = Storage(uninitializedCount: n)
        let xp = base, yp = out.base
        Parallel.forChunks(n) { r in ElementwiseKernels.forward(op, xp + r.lowerBound, yp + r.lowerBound, r.count) }
        let input = self
        return makeResult(shape: shape, storage: out, inputs: [self]) {
            { g in
                // Read through the captured tensor and storage: they keep the values alive.
                let gx = input.node!.accumulator()
                let gp = g.base, xp = input.base, yp = out.base
                Parallel.forChunks(n) { r in
                    let o = r.lowerBound
                    ElementwiseKernels.backward(op, gp + o, xp + o, yp + o, gx + o, r.count)
                }
            }
        }
    }
}

enum ElementwiseKernels {
    enum Op {
        case add(Float), subtract(Float), subtractFrom(Float), multiply(Float), negate, exp, log

        /// dy/dx where it is a constant (the arithmetic ops); nil for exp and log.
        var slope: Float? {
            switch self {
            case .add, .subtract: 1
            case .subtractFrom, .negate: -1
            case .multiply(let s): s
            case .exp, .log: nil
            }
        }
    }

    static func forward(_ op: Op, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let w = WideVec.scalarCount
        var i = 0
        switch op {
        case .add(let s):
            let v = WideVec(repeating: s)
            while i + w <= n { store(loadWide(x + i) + v, y + i); i += w }
            while i < n { y[i] = x[i] + s; i += 1 }
        case .subtract(let s):
            let v = WideVec(repeating: s)
            while i + w <= n { store(loadWide(x + i) - v, y + i); i += w }
            while i < n { y[i] = x[i] - s; i += 1 }
        case .subtractFrom(let s):
            let v = WideVec(repeating: s)
            while i + w <= n { store(v - loadWide(x + i), y + i); i += w }
            while i < n { y[i] = s - x[i]; i += 1 }
        case .multiply(let s):
            let v = WideVec(repeating: s)
            while i + w <= n { store(loadWide(x + i) * v, y + i); i += w }
            while i < n { y[i] = x[i] * s; i += 1 }
        case .negate:
            // Times -1, not SIMD's prefix minus (0 - x), which would turn -0 into +0 where -x does not.
            let minusOne = WideVec(repeating: -1)
            while i + w <= n { store(loadWide(x + i) * minusOne, y + i); i += w }
            while i < n { y[i] = -x[i]; i += 1 }
        case .exp:
            for j in 0..<n { y[j] = libmExp(x[j]) }
        case .log:
            for j in 0..<n { y[j] = libmLog(x[j]) }
        }
    }

    /// gx += g * dy/dx, the product rounded before the sum (as `unary`'s backward).
    static func backward(_ op: Op, _ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                         _ gx: UnsafeMutablePointer<Float>, _ n: Int) {
        let w = WideVec.scalarCount
        var i = 0
        if let slope = op.slope {
            let v = WideVec(repeating: slope)
            while i + w <= n { store(loadWide(gx + i) + loadWide(g + i) * v, gx + i); i += w }
            while i < n { gx[i] += g[i] * slope; i += 1 }
            return
        }
        if case .exp = op {
            while i + w <= n { store(loadWide(gx + i) + loadWide(g + i) * loadWide(y + i), gx + i); i += w }
            while i < n { gx[i] += g[i] * y[i]; i += 1 }
        } else {  // log
            let one = WideVec(repeating: 1)
            while i + w <= n { store(loadWide(gx + i) + loadWide(g + i) * (one / loadWide(x + i)), gx + i); i += w }
            while i < n { gx[i] += g[i] * (1 / x[i]); i += 1 }
        }
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
