#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded xoshiro256** generator. Each purpose (initialisation, dropout, masking, data order)
/// draws from its own stream, derived from the run seed and the purpose's name, so adding draws
/// to one purpose never shifts another.
public final class RandomStream {
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    /// A stream for `purpose` under `seed`: the same pair always yields the same sequence.
    public init(seed: UInt64, purpose: String = "default") {
        var mix = seed ^ RandomStream.fnv1a(purpose)
        state = (RandomStream.splitmix(&mix), RandomStream.splitmix(&mix),
                 RandomStream.splitmix(&mix), RandomStream.splitmix(&mix))
    }

    /// Restores a stream from `stateWords` (as saved with `stateWords`), for exact resume.
    public init(stateWords: [UInt64]) {
        precondition(stateWords.count == 4, "a xoshiro256** state has four words")
        state = (stateWords[0], stateWords[1], stateWords[2], stateWords[3])
    }

    public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

    /// Puts this stream back at a saved state (the layers that hold it keep drawing from it).
    public func restore(_ words: [UInt64]) {
        precondition(words.count == 4, "a xoshiro256** state has four words")
        state = (words[0], words[1], words[2], words[3])
    }

    @inline(__always)
    public func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always)
    public func nextFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Uniform integer in 0..<bound (Lemire's multiply-shift; bias below 2^-32 for small bounds).
    @inline(__always)
    public func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        return Int((UInt64(UInt32(truncatingIfNeeded: next() >> 32)) &* UInt64(bound)) >> 32)
    }

    /// Standard normal (Box-Muller in Double, one value per call).
    public func nextNormal() -> Float {
        let u1 = Swift.max(nextDouble(), Double.leastNonzeroMagnitude)
        let u2 = nextDouble()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// A permutation of 0..<n (Fisher-Yates).
    public func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) {
                p.swapAt(i, nextInt(below: i + 1))
            }
        }
        return p
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    private static func splitmix(_ x: inout UInt64) -> UInt64 {
        x &+= 0x9E37_79B9_7F4A_7C15
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    private static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }
}
