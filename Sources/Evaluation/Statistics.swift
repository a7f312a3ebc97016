import Foundation

/// What a few seeds say about a result: the mean, the sample standard deviation, the 95% interval
/// of the mean (Student's t), and Welch's t-test between two sets of seeds. The same numbers as
/// scipy.stats (`t.interval(0.95, n - 1, loc=mean, scale=sem)`, `ttest_ind(a, b,
/// equal_var=False)`), checked against fixtures made by tools/make_stats_fixtures.py.
public enum Statistics {
    /// The summary of one result over seeds. `sd`, `low` and `high` are NaN below two values.
    public struct Summary: Equatable {
        public let count: Int
        public let mean: Double
        public let sd: Double
        public let low: Double
        public let high: Double
    }

    /// Welch's unequal-variance t-test (two-sided). NaN where scipy gives NaN (fewer than two
    /// values on a side, or no spread on either side and equal means).
    public struct Welch: Equatable {
        public let t: Double
        public let df: Double
        public let p: Double
    }

    public static func mean(_ x: [Double]) -> Double {
        x.isEmpty ? .nan : x.reduce(0, +) / Double(x.count)
    }

    /// The sample variance (n - 1 in the denominator), NaN below two values.
    public static func variance(_ x: [Double]) -> Double {
        guard x.count > 1 else { return .nan }
        let m = mean(x)
        return x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1)
    }

    public static func summary(_ x: [Double], confidence: Double = 0.95) -> Summary {
        let m = mean(x)
        guard x.count > 1 else { return Summary(count: x.count, mean: m, sd: .nan, low: .nan, high: .nan) }
        let sd = variance(x).squareRoot()
        let half = tQuantile(0.5 + confidence / 2, df: Double(x.count - 1)) * sd / Double(x.count).squareRoot()
        return Summary(count: x.count, mean: m, sd: sd, low: m - half, high: m + half)
    }

    public static func welch(_ a: [Double], _ b: [Double]) -> Welch {
        guard a.count > 1, b.count > 1 else { return Welch(t: .nan, df: .nan, p: .nan) }
        let va = variance(a) / Double(a.count), vb = variance(b) / Double(b.count)
        let difference = mean(a) - mean(b)
        let se2 = va + vb
        guard se2 > 0 else {
            // No spread on either side: scipy gives ±inf and p = 0 for different means, NaN for equal ones.
            return difference == 0 ? Welch(t: .nan, df: .nan, p: .nan)
                : Welch(t: difference > 0 ? .infinity : -.infinity, df: .nan, p: 0)
        }
        let t = difference / se2.squareRoot()
        let df = se2 * se2 / (va * va / Double(a.count - 1) + vb * vb / Double(b.count - 1))
        return Welch(t: t, df: df, p: min(1, 2 * tSurvival(abs(t), df: df)))
    }

    /// P(T > t) for Student's t with `df` degrees of freedom.
    public static func tSurvival(_ t: Double, df: Double) -> Double {
        if t.isNaN || df.isNaN || df <= 0 { return .nan }
        if t.isInfinite { return t > 0 ? 0 : 1 }
        let tail = 0.5 * regularizedBeta(df / (df + t * t), a: df / 2, b: 0.5)
        return t >= 0 ? tail : 1 - tail
    }

    /// P(T <= t).
    public static func tCDF(_ t: Double, df: Double) -> Double { 1 - tSurvival(t, df: df) }

    /// The `q` quantile of Student's t (0 < q < 1), by bisection on the distribution function to
    /// the last bits of a Double.
    public static func tQuantile(_ q: Double, df: Double) -> Double {
        guard q > 0, q < 1, df > 0 else { return .nan }
        if q == 0.5 { return 0 }
        if q < 0.5 { return -tQuantile(1 - q, df: df) }
        // The upper tail: find t >= 0 with P(T > t) = 1 - q.
        let target = 1 - q
        var low = 0.0, high = 1.0
        while tSurvival(high, df: df) > target { low = high; high *= 2; if high > 1e300 { return .infinity } }
        for _ in 0..<200 {
            let middle = (low + high) / 2
            if middle == low || middle == high { break }
            if tSurvival(middle, df: df) > target { low = middle } else { high = middle }
        }
        return (low + high) / 2
    }

    /// The regularised incomplete beta function I_x(a, b), by its continued fraction (modified
    /// Lentz), using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
    public static func regularizedBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logFront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x)
        if x > (a + 1) / (a + b + 2) {
            return 1 - exp(logFront) * betaFraction(1 - x, a: b, b: a) / b
        }
        return exp(logFront) * betaFraction(x, a: a, b: b) / a
    }

    static func betaFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0
        var d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...1000 {
            let m = Double(m)
            // Even step.
            var numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            // Odd step.
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + numerator * d
            if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c
            if abs(c) < tiny { c = tiny }
            d = 1 / d
            let step = d * c
            h *= step
            if abs(step - 1) < 1e-16 { break }
        }
        return h
    }
}
