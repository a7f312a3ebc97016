/// Vectorised transcendental functions for the fused kernels (Swift does not vectorise calls
/// into libm). Accuracy is within a few ulp of Float32 libm over the ranges the kernels use;
/// the tests compare each against libm.
public typealias Vec = SIMD8<Float>

/// The widest lanes the build targets, for element-wise kernels: sixteen where the building
/// machine has AVX-512F (HAS_AVX512), eight elsewhere. The math below is written once over
/// `FloatLanes` and computes each lane alike at either width, so a kernel's results do not depend
/// on which it runs; only reductions keep `Vec`'s eight partial sums, whose order fixes their bits.
#if HAS_AVX512
public typealias WideVec = SIMD16<Float>
#else
public typealias WideVec = SIMD8<Float>
#endif

import CSpin

/// Float lanes the vector math is generic over (eight or sixteen). The requirements are the
/// operations whose generic SIMD forms compile lane by lane (compare-and-select, the integer view of
/// the bits); each width implements them with its own vector instructions, and the generic math,
/// specialised per width, inlines them.
public protocol FloatLanes: SIMD where Scalar == Float {
    /// `b` in the lanes where `x < y`, `a` elsewhere (false for NaN, as `.<`).
    static func select(_ a: Self, _ b: Self, whereLess x: Self, _ y: Self) -> Self
    /// 2^n per lane, for integral n held as `shifted` = n + `magic` (the 1.5 * 2^23 trick).
    static func powerOfTwo(shifted: Self, magic: Self) -> Self
    /// x = mantissa * 2^exponent with the mantissa in [0.5, 1), for positive normal lanes (frexp;
    /// zero gives mantissa 0.5 and exponent -126).
    static func frexp(_ x: Self) -> (mantissa: Self, exponent: Self)
}

extension FloatLanes {
    /// Lane-wise clamp by compare and select (SIMD.clamped calls out of line per vector).
    @_transparent public static func clamp(_ x: Self, _ low: Float, _ high: Float) -> Self {
        let lo = Self(repeating: low), hi = Self(repeating: high)
        let y = select(x, lo, whereLess: x, lo)
        return select(y, hi, whereLess: hi, y)
    }

    /// `x` with zero in the lanes where `test` is below `bound`.
    @_transparent public static func zero(_ x: Self, whereBelow bound: Float, _ test: Self) -> Self {
        select(x, Self(), whereLess: test, Self(repeating: bound))
    }
}

extension SIMD8: FloatLanes where Scalar == Float {
    @_transparent public static func select(_ a: Self, _ b: Self, whereLess x: Self, _ y: Self) -> Self { a.replacing(with: b, where: x .< y) }
    @_transparent public static func powerOfTwo(shifted: Self, magic: Self) -> Self {
        let n = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        return unsafeBitCast((n &+ 127) &<< 23, to: Self.self)
    }
    @_transparent public static func frexp(_ x: Self) -> (mantissa: Self, exponent: Self) {
        let bits = unsafeBitCast(x, to: SIMD8<Int32>.self)
        let mantissa = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: Self.self)
        // The biased exponent field (0...255) as a Float, by the 2^23 trick (no lane-wise convert).
        let field = unsafeBitCast(((bits &>> 23) & 0xFF) | 0x4B00_0000, to: Self.self) - 8_388_608
        return (mantissa, field - 126)
    }
}

extension SIMD16: FloatLanes where Scalar == Float {
    @_transparent public static func select(_ a: Self, _ b: Self, whereLess x: Self, _ y: Self) -> Self { a.replacing(with: b, where: x .< y) }
    @_transparent public static func powerOfTwo(shifted: Self, magic: Self) -> Self {
        let n = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        return unsafeBitCast((n &+ 127) &<< 23, to: Self.self)
    }
    @_transparent public static func frexp(_ x: Self) -> (mantissa: Self, exponent: Self) {
        let bits = unsafeBitCast(x, to: SIMD16<Int32>.self)
        let mantissa = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F00_0000, to: Self.self)
        // The biased exponent field (0...255) as a Float, by the 2^23 trick (no lane-wise convert).
        let field = unsafeBitCast(((bits &>> 23) & 0xFF) | 0x4B00_0000, to: Self.self) - 8_388_608
        return (mantissa, field - 126)
    }
}

/// Square roots of eight lanes in vector instructions, correctly rounded: the same bits as
/// Float.squareRoot() per lane (SIMD8.squareRoot() calls sqrtf once per lane).
@_transparent
public func vsqrt(_ x: Vec) -> Vec { cvec_sqrt8(x) }

@_transparent
public func vexp<V: FloatLanes>(_ x: V) -> V {
    // Cephes expf: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-5 polynomial, times 2^n.
    // n is rounded with the 1.5 * 2^23 trick (plain SIMD adds: the baseline x86-64 target has no
    // vector rounding instruction, and SIMD.rounded would call floorf once per lane).
    let clamped = vclamp(x, -87.33654, 88.37626)
    let magic = V(repeating: 12_582_912)
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    var r = clamped - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    let r2 = r * r
    var p = V(repeating: 1.987_569_15e-4)
    p = vfma(p, r, V(repeating: 1.398_199_950_7e-3))
    p = vfma(p, r, V(repeating: 8.333_451_907_3e-3))
    p = vfma(p, r, V(repeating: 4.166_579_589_4e-2))
    p = vfma(p, r, V(repeating: 1.666_666_545_9e-1))
    p = vfma(p, r, V(repeating: 5.000_000_120_1e-1))
    let er = p * r2 + r + 1
    return V.zero(er * V.powerOfTwo(shifted: shifted, magic: magic), whereBelow: -87.33654, x)
}

/// Natural log of positive normal lanes (Cephes logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
/// log(m) by Cephes' polynomial in f = m - 1, plus e ln 2 in two parts). Zero and subnormal lanes
/// give about -87.3 instead of -inf or their log; negative lanes, NaN and infinity give values
/// that mean nothing: callers keep such lanes out.
@_transparent
public func vlog<V: FloatLanes>(_ x: V) -> V {
    let (mantissa, exponent) = V.frexp(x)
    let sqrtHalf = V(repeating: 0.707_106_781_186_547_524)
    // Below sqrt(1/2), take 2m - 1 and one less in the exponent, so that |f| < 0.2929.
    let f = V.select(mantissa - 1, mantissa + mantissa - 1, whereLess: mantissa, sqrtHalf)
    let e = V.select(exponent, exponent - 1, whereLess: mantissa, sqrtHalf)
    let z = f * f
    var p = V(repeating: 7.037_683_629_2e-2)
    p = vfma(p, f, V(repeating: -1.151_461_031_0e-1))
    p = vfma(p, f, V(repeating: 1.167_699_874_0e-1))
    p = vfma(p, f, V(repeating: -1.242_014_084_6e-1))
    p = vfma(p, f, V(repeating: 1.424_932_278_7e-1))
    p = vfma(p, f, V(repeating: -1.666_805_766_5e-1))
    p = vfma(p, f, V(repeating: 2.000_071_476_5e-1))
    p = vfma(p, f, V(repeating: -2.499_999_399_3e-1))
    p = vfma(p, f, V(repeating: 3.333_333_117_4e-1))
    var y = p * f * z
    y = vfma(e, V(repeating: -2.121_944_40e-4), y)
    y = vfma(z, V(repeating: -0.5), y)
    return vfma(e, V(repeating: 0.693_359_375), f + y)
}

/// a * b + c, fused where the build targets FMA.
@_transparent
public func vfma<V: FloatLanes>(_ a: V, _ b: V, _ c: V) -> V {
    #if HAS_FMA
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}

/// Lane-wise clamp by compare and select (SIMD.clamped calls out of line per vector).
@_transparent
public func vclamp<V: FloatLanes>(_ x: V, _ low: Float, _ high: Float) -> V { V.clamp(x, low, high) }

/// exp of one Float through the vector path (used for tails so results match the vector lanes).
@_transparent
public func sexp(_ x: Float) -> Float { vexp(Vec(repeating: x))[0] }

/// erf as x P(x^2) / Q(x^2) on [-4, 4] (a rational minimax fit, as in Eigen's fast erf; beyond
/// 4 erf is +-1 in Float32). No exp, one division.
@_transparent
public func verf<V: FloatLanes>(_ x: V) -> V {
    let c = vclamp(x, -4, 4)
    let x2 = c * c
    var p = vfma(x2, V(repeating: -2.726_142_258_013_06e-10), V(repeating: 2.770_681_424_959_02e-08))
    p = vfma(x2, p, V(repeating: -2.101_024_020_825_08e-06))
    p = vfma(x2, p, V(repeating: -5.692_506_394_623_46e-05))
    p = vfma(x2, p, V(repeating: -7.349_906_303_268_55e-04))
    p = vfma(x2, p, V(repeating: -2.954_599_808_540_25e-03))
    p = vfma(x2, p, V(repeating: -1.609_603_332_624_15e-02))
    var q = vfma(x2, V(repeating: -1.456_607_184_649_96e-05), V(repeating: -2.133_740_552_789_05e-04))
    q = vfma(x2, q, V(repeating: -1.682_826_974_382_03e-03))
    q = vfma(x2, q, V(repeating: -7.373_329_167_204_68e-03))
    q = vfma(x2, q, V(repeating: -1.426_473_905_141_89e-02))
    return c * p / q
}

/// tanh as x P(x^2) / Q(x^2) on [-7.9053, 7.9053] (a rational minimax fit, as in Eigen's fast
/// tanh; beyond that range tanh is +-1 in Float32). No exp, one division.
@_transparent
public func vtanh<V: FloatLanes>(_ x: V) -> V {
    let c = vclamp(x, -7.905_311_107_635_498, 7.905_311_107_635_498)
    let x2 = c * c
    var p = vfma(x2, V(repeating: -2.760_768_477_423_55e-16), V(repeating: 2.000_187_904_824_77e-13))
    p = vfma(x2, p, V(repeating: -8.604_671_522_137_35e-11))
    p = vfma(x2, p, V(repeating: 5.122_297_090_371_14e-08))
    p = vfma(x2, p, V(repeating: 1.485_722_357_179_79e-05))
    p = vfma(x2, p, V(repeating: 6.372_619_288_754_36e-04))
    p = vfma(x2, p, V(repeating: 4.893_524_558_917_86e-03))
    var q = vfma(x2, V(repeating: 1.198_258_394_667_02e-06), V(repeating: 1.185_347_056_866_54e-04))
    q = vfma(x2, q, V(repeating: 2.268_434_632_439_00e-03))
    q = vfma(x2, q, V(repeating: 4.893_525_185_543_85e-03))
    return c * p / q
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
    if n >= 16 {
        var acc0 = load(p), acc1 = load(p + 8)
        i = 16
        while i + 16 <= n {
            let v0 = load(p + i), v1 = load(p + i + 8)
            acc0 = acc0.replacing(with: v0, where: v0 .> acc0)
            acc1 = acc1.replacing(with: v1, where: v1 .> acc1)
            i += 16
        }
        m = acc0.replacing(with: acc1, where: acc1 .> acc0).max()
    }
    while i < n { m = Swift.max(m, p[i]); i += 1 }
    return m
}

@inline(__always)
public func load(_ p: UnsafePointer<Float>) -> Vec { UnsafeRawPointer(p).loadUnaligned(as: Vec.self) }

@inline(__always)
public func load(_ p: UnsafeMutablePointer<Float>) -> Vec { UnsafeRawPointer(p).loadUnaligned(as: Vec.self) }

/// `WideVec`'s lanes at `p`.
@inline(__always)
public func loadWide(_ p: UnsafePointer<Float>) -> WideVec { UnsafeRawPointer(p).loadUnaligned(as: WideVec.self) }

@inline(__always)
public func loadWide(_ p: UnsafeMutablePointer<Float>) -> WideVec { UnsafeRawPointer(p).loadUnaligned(as: WideVec.self) }

@inline(__always)
public func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self) }

/// Any width's lanes to `p` (inlinable, so that a caller in another module stores its own width
/// without a generic value-witness copy).
@inlinable @inline(__always)
public func store<V: FloatLanes>(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

/// exp in double precision, eight lanes (|x| clamped to about 708): 2^n exp(r) with |r| <= ln2/2
/// and exp(r) by its Taylor series to degree 10 (relative error about 1e-13), so that a Float
/// result rounded from it is as good as libm's expf, or better. For kernels whose gradients are
/// compared at 1e-4 against float64 references through ill-conditioned layers (SiLU before a
/// BatchNorm over a few values), where vexp's ulp or two shows.
@inline(__always)
public func vexpDouble(_ x: SIMD8<Double>) -> SIMD8<Double> {
    let lo = SIMD8<Double>(repeating: -708), hi = SIMD8<Double>(repeating: 709)
    let clamped = x.replacing(with: lo, where: x .< lo).replacing(with: hi, where: x .> hi)
    let magic = SIMD8<Double>(repeating: 6_755_399_441_055_744)   // 1.5 * 2^52
    let shifted = clamped * 1.442_695_040_888_963_4 + magic
    let n = shifted - magic
    let r = (clamped - n * 0.693_147_180_369_123_8) - n * 1.908_214_929_270_587_7e-10
    var p = SIMD8<Double>(repeating: 1.0 / 3_628_800)
    for c in [1.0 / 362_880, 1.0 / 40_320, 1.0 / 5040, 1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0] {
        p = p * r + c
    }
    let ni = unsafeBitCast(shifted, to: SIMD8<Int64>.self) &- unsafeBitCast(magic, to: SIMD8<Int64>.self)
    return p * unsafeBitCast((ni &+ 1023) &<< 52, to: SIMD8<Double>.self)
}
