import CBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// C (M x N) = alpha * op(A) * op(B) + beta * C, row-major, through OpenBLAS.
///
/// OpenBLAS runs single-threaded (its idle workers spin in sched_yield and take the cores the
/// rest of the engine needs); large products are split across the engine's worker pool instead,
/// by rows of C or, when C has few rows, by columns. Every element of C is computed by one call
/// over the whole K, so results do not depend on the split.
@inline(__always)
public func sgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                  _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                  _ b: UnsafePointer<Float>, _ ldb: Int,
                  _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    if m == 0 || n == 0 { return }
    if ProductRecorder.isRecording { ProductRecorder.record(ProductShape(transA: transA, transB: transB, m: m, n: n, k: k)) }
    if ProductRecorder.isTiming {
        let start = ProductRecorder.clock()
        defer { ProductRecorder.addTime(ProductShape(transA: transA, transB: transB, m: m, n: n, k: k), start: start, inKernel: false) }
        return split(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }
    split(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

/// `sgemm`'s product over the pool: by rows of C or, when C has few rows, by columns.
@inline(__always)
private func split(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                   _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                   _ b: UnsafePointer<Float>, _ ldb: Int,
                   _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    let work = m * n * k
    let chunks = work >= 1 << 21 ? Parallel.threads : 1
    if chunks > 1 && (m >= 32 * chunks || n >= 32 * chunks) {
        if m >= n || n < 32 * chunks {
            Parallel.forChunks(m, grain: Swift.max(1, m / chunks)) { r in
                BLAS.raw(transA, transB, r.count, n, k, alpha, transA ? a + r.lowerBound : a + r.lowerBound * lda, lda,
                          b, ldb, beta, c + r.lowerBound * ldc, ldc)
            }
        } else {
            Parallel.forChunks(n, grain: Swift.max(1, n / chunks)) { r in
                BLAS.raw(transA, transB, m, r.count, k, alpha, a, lda, transB ? b + r.lowerBound * ldb : b + r.lowerBound, ldb,
                          beta, c + r.lowerBound, ldc)
            }
        }
    } else {
        BLAS.raw(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }
}

/// OpenBLAS's cblas_sgemm itself, single-threaded, whatever the size (the roofline's reference).
public func cblasProduct(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                         _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                         _ b: UnsafePointer<Float>, _ ldb: Int,
                         _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
    _ = BLAS.singleThreaded
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// The OpenBLAS core whose kernels compute the products ("SkylakeX", "Haswell", ...), chosen once
/// before the first product: where OpenBLAS did not know the CPU and fell back to Prescott's SSE3
/// kernels, by the CPU's features instead (`cblas_choose_core`; OPENBLAS_CORETYPE overrides).
/// Results are bit-identical for a seed, a thread count and a core.
public var blasCore: String { BLAS.core }

enum BLAS {
    static let core: String = String(cString: cblas_choose_core())

    /// Set once, before the first product (`raw` and `cblasProduct` ask for it before OpenBLAS).
    static let singleThreaded: Bool = {
        _ = core
        openblas_set_num_threads(1)
        return true
    }()

    /// One single-threaded product (kernels that split work themselves call this), recorded.
    @inline(__always)
    static func gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                     _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                     _ b: UnsafePointer<Float>, _ ldb: Int,
                     _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        if ProductRecorder.isRecording { ProductRecorder.record(ProductShape(transA: transA, transB: transB, m: m, n: n, k: k)) }
        if ProductRecorder.isTiming {
            let start = ProductRecorder.clock()
            raw(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            ProductRecorder.addTime(ProductShape(transA: transA, transB: transB, m: m, n: n, k: k), start: start, inKernel: true)
            return
        }
        raw(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    /// Products up to this many multiply-adds are computed here: below it OpenBLAS's fixed cost
    /// per call (argument checks, packing, its dispatch) outweighs the arithmetic (attention over
    /// a few tokens per head: MobileViT's 4x4 to 1x1 maps, windows of a few positions).
    static let smallProduct = 2048

    @inline(__always)
    static func raw(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                    _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                    _ b: UnsafePointer<Float>, _ ldb: Int,
                    _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        if m * n * k <= smallProduct {
            small(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            return
        }
        _ = singleThreaded
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// C = alpha op(A) op(B) + beta C by direct loops (beta 0 overwrites C, as BLAS does).
    static func small(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int,
                      _ alpha: Float, _ a: UnsafePointer<Float>, _ lda: Int,
                      _ b: UnsafePointer<Float>, _ ldb: Int,
                      _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        for i in 0..<m {
            let ci = c + i * ldc
            if beta == 0 { for j in 0..<n { ci[j] = 0 } } else if beta != 1 { for j in 0..<n { ci[j] *= beta } }
            if transB {
                // Rows of B are op(B)'s columns: a dot product per entry.
                for j in 0..<n {
                    let bj = b + j * ldb
                    var acc: Float = 0
                    if transA { for p in 0..<k { acc += a[p * lda + i] * bj[p] } } else { let ai = a + i * lda; for p in 0..<k { acc += ai[p] * bj[p] } }
                    ci[j] += alpha * acc
                }
            } else {
                // Row i of C accumulates rows of B.
                for p in 0..<k {
                    let aip = alpha * (transA ? a[p * lda + i] : a[i * lda + p])
                    let bp = b + p * ldb
                    for j in 0..<n { ci[j] += aip * bp[j] }
                }
            }
        }
    }
}

extension Tensor {
    /// Matrix product over the last two axes, with optional transposes: a (..., M, K) or
    /// (..., K, M) when `transposeA`; b (..., K, N) or (..., N, K) when `transposeB`. Batch axes
    /// must agree, or b may be 2-D and shared by every batch.
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank >= 2, got \(a.shape) and \(b.shape)")
        let m = transposeA ? a.shape[a.rank - 1] : a.shape[a.rank - 2]
        let k = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1]
        let kb = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
        let n = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
        precondition(k == kb, "matmul: inner dimensions differ in \(a.shape) and \(b.shape)")
        let batchShape = Array(a.shape.dropLast(2))
        let sharedB = b.rank == 2
        precondition(sharedB || Array(b.shape.dropLast(2)) == batchShape,
                     "matmul: batch axes differ in \(a.shape) and \(b.shape)")
        let batches = product(batchShape)
        let outShape = batchShape + [m, n]
        let out = Storage(uninitializedCount: batches * m * n)
        let lda = a.shape[a.rank - 1], ldb = b.shape[b.rank - 1]
        let sa = m * k, sb = sharedB ? 0 : k * n, sc = m * n
        if sharedB && !transposeA {
            // One product over all rows: (batches*M, K) x op(B).
            sgemm(false, transposeB, batches * m, n, k, 1, a.base, lda, b.base, ldb, 0, out.base, n)
        } else {
            for i in 0..<batches {
                sgemm(transposeA, transposeB, m, n, k, 1, a.base + i * sa, lda, b.base + i * sb, ldb, 0, out.base + i * sc, n)
            }
        }
        return makeResult(shape: outShape, storage: out, inputs: [a, b]) {
            { g in
                let gp = g.base
                if let na = a.node {
                    // dA = dC op(B)^T, or (op(B) dC^T) when A was transposed.
                    let (ga, beta) = na.gemmAccumulator()
                    if sharedB && !transposeA {
                        sgemm(false, !transposeB, batches * m, k, n, 1, gp, n, b.base, ldb, beta, ga, lda)
                    } else {
                        for i in 0..<batches {
                            if transposeA {
                                sgemm(transposeB, true, k, m, n, 1, b.base + i * sb, ldb, gp + i * sc, n, beta, ga + i * sa, lda)
                            } else {
                                sgemm(false, !transposeB, m, k, n, 1, gp + i * sc, n, b.base + i * sb, ldb, beta, ga + i * sa, lda)
                            }
                        }
                    }
                }
                if let nb = b.node {
                    // dB = op(A)^T dC, or dC^T op(A) when B was transposed; summed over batches if shared.
                    let (gb, beta) = nb.gemmAccumulator()
                    if sharedB && !transposeA {
                        if transposeB {
                            sgemm(true, false, n, k, batches * m, 1, gp, n, a.base, lda, beta, gb, ldb)
                        } else {
                            sgemm(true, false, k, n, batches * m, 1, a.base, lda, gp, n, beta, gb, ldb)
                        }
                    } else {
                        for i in 0..<batches {
                            let bt: Float = sharedB && i > 0 ? 1 : beta
                            if transposeB {
                                sgemm(true, transposeA, n, k, m, 1, gp + i * sc, n, a.base + i * sa, lda, bt, gb + i * sb, ldb)
                            } else {
                                sgemm(!transposeA, false, k, n, m, 1, a.base + i * sa, lda, gp + i * sc, n, bt, gb + i * sb, ldb)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Fully connected layer: x (..., In) times weight (Out, In) transposed, plus bias (Out).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor? = nil) -> Tensor {
        let inF = weight.shape[1], outF = weight.shape[0]
        precondition(weight.rank == 2 && x.shape.last == inF, "linear: input \(x.shape) does not fit weight \(weight.shape)")
        if let bias { precondition(bias.shape == [outF], "linear: bias \(bias.shape) should be [\(outF)]") }
        let rows = x.count / Swift.max(inF, 1)
        let outShape = Array(x.shape.dropLast()) + [outF]
        let out = Storage(uninitializedCount: rows * outF)
        // y (rows, Out) = x (rows, In) . W^T, then + b row by row.
        sgemm(false, true, rows, outF, inF, 1, x.base, inF, weight.base, inF, 0, out.base, outF)
        if let bias {
            let bp = bias.base, yp = out.base
            Parallel.forChunks(rows, grain: Swift.max(1, 16384 / Swift.max(outF, 1))) { r in
                for row in r {
                    let y = yp + row * outF
                    var i = 0
                    while i + 8 <= outF { store(load(y + i) + load(bp + i), y + i); i += 8 }
                    while i < outF { y[i] += bp[i]; i += 1 }
                }
            }
        }
        var inputs = [x, weight]
        if let bias { inputs.append(bias) }
        return makeResult(shape: outShape, storage: out, inputs: inputs) {
            { g in
                linearProductGradients(g.base, x: x, weight: weight, rows: rows, inF: inF, outF: outF)
                if let bias, let nb = bias.node {
                    columnSums(g.base, rows: rows, cols: outF, into: nb.accumulator())
                }
            }
        }
    }
}

/// The products of a linear layer's backward from dy (rows, Out): dx (rows, In) = dy . W and
/// dW (Out, In) = dy^T . x, each written into a fresh gradient or added to an existing one.
func linearProductGradients(_ gp: UnsafePointer<Float>, x: Tensor, weight: Tensor, rows: Int, inF: Int, outF: Int) {
    if let nx = x.node {
        let (gx, beta) = nx.gemmAccumulator()
        sgemm(false, false, rows, inF, outF, 1, gp, outF, weight.base, inF, beta, gx, inF)
    }
    if let nw = weight.node {
        let (gw, beta) = nw.gemmAccumulator()
        sgemm(true, false, outF, inF, rows, 1, gp, outF, x.base, inF, beta, gw, inF)
    }
}

/// dst[c] += sum over rows of src[r, c], with per-chunk partials combined in chunk order.
func columnSums(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
    ColumnSums.run(rows: rows, cols: cols, into: dst) { row, acc in
        let s = src + row * cols
        var i = 0
        while i + 8 <= cols { store(load(acc + i) + load(s + i), acc + i); i += 8 }
        while i < cols { acc[i] += s[i]; i += 1 }
    }
}

/// Column sums over rows in chunks of the pool, each chunk's partial sums in row order and the
/// partials combined in chunk order (so results do not depend on the thread count).
enum ColumnSums {
    /// `body(row, partial)` adds row `row`'s values into its chunk's partial (cols floats, starting
    /// at zero) and may do other work on the row; then dst[c] += the partials, in chunk order.
    static func run(rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>, _ body: (Int, UnsafeMutablePointer<Float>) -> Void) {
        let grain = Swift.max(1, 32768 / Swift.max(cols, 1))
        let chunks = Parallel.chunkCount(rows, grain: grain)
        let partial = Storage(count: chunks * cols)
        let pp = partial.base
        Parallel.forIndexedChunks(rows, grain: grain) { chunk, r in
            let acc = pp + chunk * cols
            for row in r { body(row, acc) }
        }
        for c in 0..<chunks {
            let acc = pp + c * cols
            for i in 0..<cols { dst[i] += acc[i] }
        }
    }
}

/// The shape of one matrix product as `sgemm` received it.
public struct ProductShape: Hashable, Sendable {
    public let transA, transB: Bool
    public let m, n, k: Int
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
}

/// Records every product `sgemm` is asked for while `record` runs (from any thread), for
/// benchmarks that time the same products alone: the roofline of a step.
public enum ProductRecorder {
    nonisolated(unsafe) static var isRecording = false
    nonisolated(unsafe) static var shapes: [ProductShape: Int] = [:]
    static let lock = Lock()

    static func record(_ shape: ProductShape) {
        lock.lock()
        shapes[shape, default: 0] += 1
        lock.unlock()
    }

    /// Runs `body` once and returns each product shape it issued with its number of calls.
    public static func record(_ body: () -> Void) -> [ProductShape: Int] {
        lock.lock(); shapes = [:]; isRecording = true; lock.unlock()
        body()
        lock.lock(); isRecording = false; let result = shapes; shapes = [:]; lock.unlock()
        return result
    }

    // Timing: the wall time of every product while `time` runs, by shape.
    nonisolated(unsafe) static var isTiming = false
    nonisolated(unsafe) static var times: [ProductShape: ProductTime] = [:]

    @inline(__always)
    static func clock() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }

    static func addTime(_ shape: ProductShape, start: UInt64, inKernel: Bool) {
        let ns = clock() &- start
        lock.lock()
        times[shape, default: ProductTime(inKernel: inKernel)].seconds += Double(ns) * 1e-9
        lock.unlock()
    }

    /// Runs `body` and returns the wall time spent in each product shape: for products the engine
    /// splits over the pool itself (`sgemm`), from call to return; for those kernels issue from
    /// inside their own split (attention's per-head products, `inKernel`), summed over threads.
    public static func time(_ body: () -> Void) -> [ProductShape: ProductTime] {
        lock.lock(); times = [:]; isTiming = true; lock.unlock()
        body()
        lock.lock(); isTiming = false; let result = times; times = [:]; lock.unlock()
        return result
    }
}

/// The time `ProductRecorder.time` measured for one product shape.
public struct ProductTime: Sendable {
    public var seconds = 0.0
    public let inKernel: Bool
}
