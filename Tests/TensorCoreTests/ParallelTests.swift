import Foundation
import TensorCore
import XCTest

/// The worker pool behind Parallel: every item of every job runs exactly once, in the chunk the
/// partition gives it, however jobs follow each other (back to back, as a training step issues
/// them, and with pauses long enough for the workers to stop spinning and sleep), and nested jobs
/// run serially. And WORKBENCH_THREADS is parsed or refused with the variable's name.
final class ParallelTests: XCTestCase {
    /// Runs `jobs` jobs of `count` items and checks that each item was visited once, by the chunk
    /// `Parallel.chunkRange` assigns it.
    func checkJobs(_ jobs: Int, count: Int, grain: Int, pause: useconds_t = 0) {
        let visits = UnsafeMutablePointer<Int32>.allocate(capacity: count)
        let owner = UnsafeMutablePointer<Int32>.allocate(capacity: count)
        defer { visits.deallocate(); owner.deallocate() }
        let chunks = Parallel.chunkCount(count, grain: grain)
        for job in 0..<jobs {
            visits.initialize(repeating: 0, count: count)
            Parallel.forIndexedChunks(count, grain: grain) { c, range in
                for i in range { visits[i] += 1; owner[i] = Int32(c) }
            }
            for c in 0..<chunks {
                for i in Parallel.chunkRange(c, of: chunks, count: count) where visits[i] != 1 || owner[i] != Int32(c) {
                    XCTFail("job \(job): item \(i) visited \(visits[i]) times, by chunk \(owner[i]) instead of \(c)")
                    return
                }
            }
            if pause > 0 { usleep(pause) }
        }
    }

    func testBackToBackJobsVisitEveryItemOnce() {
        checkJobs(20000, count: 64, grain: 1)
        checkJobs(2000, count: 10007, grain: 16)
    }

    func testJobsAfterTheWorkersSleptVisitEveryItemOnce() {
        // 1 ms pauses: past the workers' 0.05 ms spin, so each job wakes them from the condition variable.
        checkJobs(200, count: 1000, grain: 1, pause: 1000)
    }

    func testNestedJobsRunSerially() {
        let count = 97
        var totals = [Int](repeating: 0, count: count)
        totals.withUnsafeMutableBufferPointer { t in
            let base = t.baseAddress!
            Parallel.forChunks(count, grain: 1) { outer in
                for i in outer {
                    var s = 0
                    // The inner job starts while the outer one runs, so it runs on this thread.
                    withUnsafeMutablePointer(to: &s) { sp in
                        Parallel.forChunks(1000, grain: 1) { inner in sp.pointee += inner.count }
                    }
                    base[i] = s
                }
            }
        }
        XCTAssertEqual(totals, [Int](repeating: 1000, count: count))
    }

    func testThreadSettingIsParsedOrRefused() {
        let name = Parallel.threadsVariable
        defer { unsetenv(name) }
        unsetenv(name)
        XCTAssertNil(Parallel.requestedThreads())
        setenv(name, "3", 1)
        guard case .success(3)? = Parallel.requestedThreads() else { return XCTFail("3 should be 3 threads") }
        for bad in ["0", "-2", "two", "", "1.5", "5000"] {
            setenv(name, bad, 1)
            guard case .failure(let problem)? = Parallel.requestedThreads() else { XCTFail("\"\(bad)\" accepted"); continue }
            XCTAssertTrue(problem.description.contains(name) && problem.description.contains("\"\(bad)\""), problem.description)
        }
    }

    /// Where OpenBLAS does not know the CPU it falls back to Prescott's SSE3 kernels (Debian's
    /// 0.3.21 on Intel's Emerald Rapids, model 207: a quarter of the speed); the engine then picks
    /// a core by the CPU's features. On a CPU with AVX2 and FMA, and with no core named by
    /// OPENBLAS_CORETYPE, the products must not run on Prescott's kernels.
    func testProductsDoNotRunOnPrescottKernelsWhereTheCPUHasAVX2() throws {
        var c: Float = 0
        let a: [Float] = [1, 2], b: [Float] = [3, 4]
        sgemm(false, false, 1, 1, 2, 1, a, 2, b, 1, 0, &c, 1)
        XCTAssertEqual(c, 11)
        let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("flags") }.map { Set($0.split(separator: " ").map(String.init)) } ?? []
        XCTAssertFalse(blasCore.isEmpty)
        if flags.contains("avx2") && flags.contains("fma") && ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil && blasCore != "unknown" {
            XCTAssertNotEqual(blasCore.lowercased(), "prescott", "OpenBLAS runs Prescott's kernels on a CPU with AVX2 and FMA")
        }
    }
}
