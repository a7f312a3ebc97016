import Foundation
import Store
import TestSupport
import XCTest

/// Data parallelism over Open MPI (`mpirun -np 2 workbench run`): the same losses and results as
/// one process with the same global batch, bit-identical repeats, and a run that loses a process
/// resumed by one process. scripts/setup.sh installs Open MPI; without mpirun these tests fail.
///
/// Tolerance: each process sums the gradient of its half of the batch and the halves are added
/// (in one process the 64 rows' terms are summed in one pass), and the step's loss is the mean of
/// the two halves' means; float32 rounds these sums differently, by about 1e-7 of a value per
/// step, which the following steps carry. 2e-5 relative over 16 steps bounds that and is far
/// below what a wrong shard, centre or gradient scale would give (those differ at the first step
/// by 1e-2 or more).
final class MPITests: XCTestCase {
    var root: String!
    static let mpirun = "/usr/bin/mpirun"

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "mpi-tests-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        guard FileManager.default.isExecutableFile(atPath: Self.mpirun) else { throw MissingMPI() }
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    /// A failure, not a skip: CI installs Open MPI with scripts/setup.sh.
    struct MissingMPI: Error, CustomStringConvertible {
        var description: String { "\(MPITests.mpirun) is missing: install Open MPI (bash scripts/setup.sh, or apt-get install openmpi-bin libopenmpi-dev)" }
    }

    /// mpirun with N processes of one thread each.
    func launcher(_ n: Int) -> [String] {
        [Self.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "\(n)", "-x", "WORKBENCH_THREADS=1"]
    }

    func workbench(_ arguments: [String], processes: Int, killWhen: ((String) -> Bool)? = nil) throws -> WorkbenchProcess.Outcome {
        try WorkbenchProcess.run(arguments, in: root, killWhen: killWhen, environment: ["WORKBENCH_THREADS": "1"],
                                 launcher: processes > 1 ? launcher(processes) : [])
    }

    func writeRecipe(_ name: String, _ stages: String, patch: Int = 7) throws -> String {
        let path = "\(root!)/\(name).yaml"
        try """
            name: \(name)
            seed: 3
            data:
              train_subset: 512
              test_subset: 300
            encoder:
              patch_size: \(patch)
              dim: 32
              depth: 2
              heads: 2
              dim_head: 16
              mlp_dim: 64
            checkpoint:
              every_steps: 4
            stages:
            \(stages)
              - knn:
                  hidden_layer: pooled
              - extract:
                  hidden_layer: pooled
                  splits: [test]
                  batch_size: 64
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func runFolder(_ runs: String, _ name: String) throws -> String {
        let base = "\(root!)/\(runs)/\(name)"
        let stamps = try FileManager.default.contentsOfDirectory(atPath: base)
        XCTAssertEqual(stamps.count, 1, "one run folder in \(base)")
        return "\(base)/\(stamps[0])"
    }

    /// Per-step losses of `stage` and the kNN accuracy.
    func figures(_ folder: String, stage: String) throws -> (losses: [Double], knn: Double) {
        let metrics = try HDF5File(path: folder + "/metrics.h5", mode: .readOnly)
        let losses = try metrics.root.dataset("\(stage)/steps/loss").read(as: Double.self)
        guard case .reals(let knn) = try metrics.root.group("knn").attribute("test_top1") else { throw NSError(domain: "knn", code: 1) }
        return (losses, knn[0])
    }

    func assertClose(_ a: [Double], _ b: [Double], relative: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, "\(what): step counts", file: file, line: line)
        let worst = zip(a, b).map { abs($0 - $1) / max(abs($0), 1e-12) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, relative, "\(what): losses differ by \(worst) relative\n\(a)\n\(b)", file: file, line: line)
    }

    func checkTwoProcessesMatchOne(_ name: String, stage: String, patch: Int = 7, _ stages: String) throws {
        let recipe = try writeRecipe(name, stages, patch: patch)
        let one = try workbench(["run", recipe, "--runs-dir", "one"], processes: 1)
        XCTAssertEqual(one.status, 0, one.output + one.error)
        let two = try workbench(["run", recipe, "--runs-dir", "two"], processes: 2)
        XCTAssertEqual(two.status, 0, two.output + two.error)
        let again = try workbench(["run", recipe, "--runs-dir", "again"], processes: 2)
        XCTAssertEqual(again.status, 0, again.output + again.error)
        let (a, b, c) = (try figures(runFolder("one", name), stage: stage), try figures(runFolder("two", name), stage: stage),
                         try figures(runFolder("again", name), stage: stage))
        XCTAssertEqual(a.losses.count, 16)
        assertClose(a.losses, b.losses, relative: 2e-5, "\(name): 2 processes against 1")
        XCTAssertEqual(a.knn, b.knn, accuracy: 0.004, "\(name): kNN in 2 processes against 1 (one test image of 300 may flip)")
        XCTAssertEqual(b.losses.map(\.bitPattern), c.losses.map(\.bitPattern), "\(name): two 2-process runs are bit-identical")
        XCTAssertEqual(b.knn, c.knn)
        // The extract stage, shared out in chunks of 64 images per process (300 test images: the
        // last chunk is uneven), writes the same embeddings as one process: within 5e-3 of the
        // largest feature, because the weights after 16 steps differ by the rounding above (BYOL:
        // 1.1e-3 measured); a row out of place would differ by the features' own size.
        let (ea, eb) = (try HDF5File(path: try runFolder("one", name) + "/embeddings.h5", mode: .readOnly),
                        try HDF5File(path: try runFolder("two", name) + "/embeddings.h5", mode: .readOnly))
        let (fa, fb) = (try ea.root.dataset("test/features").read(as: Double.self), try eb.root.dataset("test/features").read(as: Double.self))
        XCTAssertEqual(fa.count, fb.count)
        let scale = fa.map { abs($0) }.max() ?? 1
        XCTAssertLessThanOrEqual(zip(fa, fb).map { abs($0 - $1) }.max() ?? 0, 5e-3 * scale, "\(name): embeddings in 2 processes against 1")
        XCTAssertEqual(try ea.root.dataset("test/labels").read(as: Int64.self), try eb.root.dataset("test/labels").read(as: Int64.self))
        XCTAssertEqual(try ea.root.dataset("test/indices").read(as: Int64.self), try eb.root.dataset("test/indices").read(as: Int64.self))
        // Rank 0 alone wrote a run folder, and printed the log; the other process printed nothing.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: "\(root!)/two/\(name)").count, 1)
        XCTAssertEqual(two.output.components(separatedBy: "done: ").count, 2, two.output)
        // (Open MPI itself may warn on stderr about a machine's network; the workbench says nothing there.)
        XCTAssertFalse(two.error.contains("Error") || two.error.contains("[process"), two.error)
        // The exchange's time is a column of the steps table.
        let metrics = try HDF5File(path: try runFolder("two", name) + "/metrics.h5", mode: .readOnly)
        XCTAssertEqual(try metrics.root.dataset("\(stage)/steps/allreduce_seconds").read(as: Double.self).count, 16)
    }

    func testTwoProcessSupervisedRunMatchesOneProcess() throws {
        try checkTwoProcessesMatchOne("sup", stage: "supervised", """
              - supervised:
                  epochs: 2
                  batch_size: 64
                  lr: 1.0e-3
                  random_resized_crop: [0.5, 1.0]
            """)
    }

    /// DINO's views, centre and teacher across processes; BYOL's head has BatchNorm (synchronised);
    /// MAE's masks are drawn for the global batch.
    func testTwoProcessDINOBYOLAndMAERunsMatchOneProcess() throws {
        try checkTwoProcessesMatchOne("dino", stage: "pretrain", patch: 4, """
              - pretrain:
                  objective:
                    kind: dino
                    out_dim: 128
                    hidden_dim: 64
                    bottleneck_dim: 32
                    augment:
                      local_crops: 2
                      local_size: 12
                  epochs: 2
                  batch_size: 64
            """)
        try checkTwoProcessesMatchOne("byol", stage: "pretrain", """
              - pretrain:
                  objective:
                    kind: byol
                    projection_size: 32
                    projection_hidden_size: 64
                  epochs: 2
                  batch_size: 64
            """)
        try checkTwoProcessesMatchOne("mae", stage: "pretrain", patch: 4, """
              - pretrain:
                  objective:
                    kind: mae
                    decoder_dim: 32
                    decoder_depth: 1
                  epochs: 2
                  batch_size: 64
            """)
    }

    /// Gradient buckets of 5000 floats (the model has about 20000 parameters): most of them start
    /// during backward, as soon as their parameters' gradients are complete, and the run still
    /// matches one process.
    func testBucketsStartDuringBackwardAndTheRunStillMatches() throws {
        let recipe = try writeRecipe("buckets", """
              - supervised:
                  epochs: 2
                  batch_size: 64
                  lr: 1.0e-3
            """)
        let one = try workbench(["run", recipe, "--runs-dir", "one"], processes: 1)
        XCTAssertEqual(one.status, 0, one.output + one.error)
        let two = try WorkbenchProcess.run(["run", recipe, "--runs-dir", "two"], in: root, environment: ["WORKBENCH_BUCKET_FLOATS": "5000"],
                                           launcher: launcher(2) + ["-x", "WORKBENCH_BUCKET_FLOATS=5000"])
        XCTAssertEqual(two.status, 0, two.output + two.error)
        let (a, b) = (try figures(runFolder("one", "buckets"), stage: "supervised"), try figures(runFolder("two", "buckets"), stage: "supervised"))
        assertClose(a.losses, b.losses, relative: 2e-5, "many buckets: 2 processes against 1")
        let metrics = try HDF5File(path: try runFolder("two", "buckets") + "/metrics.h5", mode: .readOnly)
        let overlapped = try metrics.root.dataset("supervised/steps/allreduce_overlapped").read(as: Double.self)
        XCTAssertTrue(overlapped.allSatisfy { $0 > 0.5 }, "most buckets start during backward: \(overlapped)")
    }

    /// One process killed mid-epoch takes the run down with a non-zero exit; the run folder's last
    /// checkpoint is intact, and one process resumes it to the end.
    func testAKilledProcessEndsTheRunAndOneProcessResumesIt() throws {
        let stages = """
              - supervised:
                  epochs: 2
                  batch_size: 64
                  lr: 1.0e-3
            """
        let recipe = try writeRecipe("killed", stages)
        let whole = try workbench(["run", recipe, "--runs-dir", "whole"], processes: 2)
        XCTAssertEqual(whole.status, 0, whole.output + whole.error)
        var killedPid: Int32?
        let killed = try workbench(["run", recipe, "--runs-dir", "killed"], processes: 2, killWhen: { line in
            if killedPid == nil && line.contains("supervised: checkpoint at step 8 ") {
                killedPid = Self.processOfRank(1)
                if let pid = killedPid { kill(pid, SIGKILL) }
            }
            return false
        })
        XCTAssertNotNil(killedPid, "found rank 1's process:\n\(killed.output)")
        XCTAssertNotEqual(killed.status, 0, "a run that lost a process fails:\n\(killed.output)\n\(killed.error)")
        let folder = try runFolder("killed", "killed")
        let resumed = try workbench(["run", "--resume", folder], processes: 1)
        XCTAssertEqual(resumed.status, 0, resumed.output + resumed.error)
        XCTAssertTrue(resumed.output.contains("supervised: resumed at epoch"), resumed.output)
        let (a, b) = (try figures(runFolder("whole", "killed"), stage: "supervised"), try figures(folder, stage: "supervised"))
        assertClose(a.losses, b.losses, relative: 2e-5, "resumed by one process against two processes throughout")
        XCTAssertEqual(a.knn, b.knn, accuracy: 0.004)
    }

    /// The workbench process that mpirun started as `rank` (its environment says so).
    static func processOfRank(_ rank: Int) -> Int32? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let pid = Int32(entry),
                  let command = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8), command.contains("workbench"),
                  !command.hasPrefix("/usr/bin/mpirun"), !command.hasPrefix("mpirun"),
                  let environment = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
            let variables = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }
}
