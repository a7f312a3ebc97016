/// Vectorised transcendental functions for the fused kernels (Swift does not vectorise calls
/// into libm). Accuracy is within a few ulp of Float32 libm over the ranges the kernels use;
/// the tests compare each against libm.
public typealias Vec = SIMD8<Float>

@inline(__always)
public func vexp(_ x: Vec) -> Vec {
    // Cephes expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-5 polynomial, times 2^n.
    // n is rounded with the 1.5 * 2^23 trick (plain SIMD adds: the baseline x86-64 target has no
    // vector rounding instruction, and SIMD.rounded would call floorf once per lane).
    let clamped = vclamp(x, -87.33654, 88.37626)
    let magic = Vec(repeating: 12_582_912)
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    var r = clamped - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    let r2 = r * r
    var p = Vec(repeating: 1.987_569_15e-4)
    p = vfma(p, r, Vec(repeating: 1.398_199_950_7e-3))
    p = vfma(p, r, Vec(repeating: 8.333_451_907_3e-3))
    p = vfma(p, r, Vec(repeating: 4.166_579_589_4e-2))
    p = vfma(p, r, Vec(repeating: 1.666_666_545_9e-1))
    p = vfma(p, r, Vec(repeating: 5.000_000_120_1e-1))
    let er = p * r2 + r + 1
    let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: Vec.self)
    return (er * scale).replacing(with: 0, where: x .< -87.33654)
}

/// a * b + c, fused where the build targets FMA.
@inline(__always)
public func vfma(_ a: Vec, _ b: Vec, _ c: Vec) -> Vec {
    #if HAS_FMA
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}

/// Lane-wise clamp by compare and select (SIMD.clamped calls out of line per vector).
@inline(__always)
public func vclamp(_ x: Vec, _ low: Float, _ high: Float) -> Vec {
    let lo = Vec(repeating: low), hi = Vec(repeating: high)
    let y = x.replacing(with: lo, where: x .< lo)
    return y.replacing(with: hi, where: y .> hi)
}

/// exp of one Float through the vector path (used for tails so results match the vector lanes).
@inline(__always)
public func sexp(_ x: Float) -> Float { vexp(Vec(repeating: x))[0] }

/// erf by Abramowitz and Stegun 7.1.26 with the sign restored (absolute error below 1.5e-7).
@inline(__always)
public func verf(_ x: Vec) -> Vec {
    let a = x.replacing(with: -x, where: x .< 0)
    let t = 1 / (1 + 0.327_591_1 * a)
    var p = Vec(repeating: 1.061_405_429)
    p = vfma(p, t, Vec(repeating: -1.453_152_027))
    p = vfma(p, t, Vec(repeating: 1.421_413_741))
    p = vfma(p, t, Vec(repeating: -0.284_496_736))
    p = vfma(p, t, Vec(repeating: 0.254_829_592))
    let y = 1 - p * t * vexp(-a * a)
    return y.replacing(with: -y, where: x .< 0)
}

/// tanh through exp, exact to a few 1e-7 in absolute terms.
@inline(__always)
public func vtanh(_ x: Vec) -> Vec {
    let c = vclamp(x, -9, 9)
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
        while i + 8 <= n { let v = load(p + i); acc = acc.replacing(with: v, where: v .> acc); i += 8 }
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
