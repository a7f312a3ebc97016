/// Vectorised transcendental functions for the fused kernels (Swift does not vectorise calls
/// into libm). Accuracy is within a few ulp of Float32 libm over the ranges the kernels use;
/// the tests compare each against libm.
public typealias Vec = SIMD8<Float>

@inline(__always)
public func vexp(_ x: Vec) -> Vec {
    // Cephes expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-5 polynomial, times 2^n.
    let clamped = x.clamped(lowerBound: Vec(repeating: -87.33654), upperBound: Vec(repeating: 88.37626))
    let n = (clamped * 1.442_695_04 + 0.5).rounded(.down)
    var r = clamped - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    let r2 = r * r
    var p = Vec(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_950_7e-3
    p = p * r + 8.333_451_907_3e-3
    p = p * r + 4.166_579_589_4e-2
    p = p * r + 1.666_666_545_9e-1
    p = p * r + 5.000_000_120_1e-1
    let er = p * r2 + r + 1
    let bits = (SIMD8<Int32>(n) &+ 127) &<< 23
    let scale = unsafeBitCast(bits, to: Vec.self)
    return (er * scale).replacing(with: 0, where: x .< -87.33654)
}

/// exp of one Float through the vector path (used for tails so results match the vector lanes).
@inline(__always)
public func sexp(_ x: Float) -> Float { vexp(Vec(repeating: x))[0] }

/// erf by Abramowitz and Stegun 7.1.26 with the sign restored (absolute error below 1.5e-7).
@inline(__always)
public func verf(_ x: Vec) -> Vec {
    let a = pointwiseMax(x, -x)
    let t = 1 / (1 + 0.327_591_1 * a)
    var p = Vec(repeating: 1.061_405_429)
    p = p * t - 1.453_152_027
    p = p * t + 1.421_413_741
    p = p * t - 0.284_496_736
    p = p * t + 0.254_829_592
    let y = 1 - p * t * vexp(-a * a)
    return y.replacing(with: -y, where: x .< 0)
}

/// tanh through exp, exact to a few 1e-7 in absolute terms.
@inline(__always)
public func vtanh(_ x: Vec) -> Vec {
    let c = x.clamped(lowerBound: Vec(repeating: -9), upperBound: Vec(repeating: 9))
    let e = vexp(2 * c)
    return (e - 1) / (e + 1)
}

/// Sum of the lanes of `p[0..<n]`, vectorised with eight-lane partial sums in a fixed order.
@inline(__always)
public func vsum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = Vec(), acc1 = Vec()
    var i = 0
    while i + 16 <= n {
        acc0 += Vec(UnsafeRawPointer(p + i).loadUnaligned(as: Vec.self))
        acc1 += Vec(UnsafeRawPointer(p + i + 8).loadUnaligned(as: Vec.self))
        i += 16
    }
    var s = (acc0 + acc1).sum()
    while i < n { s += p[i]; i += 1 }
    return s
}

/// Dot product of `a[0..<n]` and `b[0..<n]` with eight-lane partial sums.
@inline(__always)
public func vdot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = Vec(), acc1 = Vec()
    var i = 0
    while i + 16 <= n {
        acc0 += load(a + i) * load(b + i)
        acc1 += load(a + i + 8) * load(b + i + 8)
        i += 16
    }
    var s = (acc0 + acc1).sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// Maximum of `p[0..<n]` (n > 0).
@inline(__always)
public func vmax(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var i = 0
    var m = -Float.infinity
    if n >= 8 {
        var acc = load(p)
        i = 8
        while i + 8 <= n { acc = pointwiseMax(acc, load(p + i)); i += 8 }
        m = acc.max()
    }
    while i < n { m = Swift.max(m, p[i]); i += 1 }
    return m
}

@inline(__always)
public func load(_ p: UnsafePointer<Float>) -> Vec { UnsafeRawPointer(p).loadUnaligned(as: Vec.self) }

@inline(__always)
public func load(_ p: UnsafeMutablePointer<Float>) -> Vec { UnsafeRawPointer(p).loadUnaligned(as: Vec.self) }

@inline(__always)
public func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self) }
