import Evaluation
import Foundation
import Runner
import Store
import TestSupport
import XCTest

/// `workbench sweep` and `workbench compare`: the statistics against scipy, the plan and its bad
/// inputs, and a tiny sweep killed with SIGKILL and resumed ending as the uninterrupted one.
final class SweepTests: XCTestCase {
    var root: String!

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "sweep-tests-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    // MARK: statistics

    struct Fixture: Decodable {
        struct Summary: Decodable { let n: Int; let mean: Double; let sd: Double?; let low: Double?; let high: Double? }
        struct Case: Decodable { let a: [Double]; let b: [Double]; let summary_a: Summary; let summary_b: Summary; let t: Double; let df: Double; let p: Double }
        struct Tail: Decodable { let df: Double; let t: Double; let sf: Double }
        struct Quantile: Decodable { let df: Double; let q: Double; let t: Double }
        let cases: [Case]
        let distribution: [Tail]
        let quantiles: [Quantile]
    }

    func close(_ a: Double, _ b: Double, _ what: String, relative: Double = 1e-9, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssert(abs(a - b) <= relative * max(1, abs(b)) || (a.isNaN && b.isNaN), "\(what): \(a) against scipy's \(b)", file: file, line: line)
    }

    func testStatisticsMatchScipy() throws {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "statistics", withExtension: "json", subdirectory: "Fixtures"))
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        for (i, c) in fixture.cases.enumerated() {
            for (x, expected) in [(c.a, c.summary_a), (c.b, c.summary_b)] {
                let s = Statistics.summary(x)
                XCTAssertEqual(s.count, expected.n)
                close(s.mean, expected.mean, "case \(i) mean")
                close(s.sd, expected.sd ?? .nan, "case \(i) sd")
                close(s.low, expected.low ?? .nan, "case \(i) interval low")
                close(s.high, expected.high ?? .nan, "case \(i) interval high")
            }
            let w = Statistics.welch(c.a, c.b)
            close(w.t, c.t, "case \(i) Welch t")
            close(w.df, c.df, "case \(i) Welch df")
            close(w.p, c.p, "case \(i) p", relative: 1e-8)
        }
        for d in fixture.distribution {
            // Relative to the tail itself where it is small: p-values far out must still be right.
            let sf = Statistics.tSurvival(d.t, df: d.df)
            XCTAssert(abs(sf - d.sf) <= 1e-9 * max(d.sf, 1e-300) + 1e-15, "t.sf(\(d.t), \(d.df)) = \(sf), scipy \(d.sf)")
        }
        for q in fixture.quantiles {
            close(Statistics.tQuantile(q.q, df: q.df), q.t, "t.ppf(\(q.q), \(q.df))", relative: 1e-9)
        }
        // What scipy gives where there is no spread or too few values.
        XCTAssertEqual(Statistics.welch([1, 1], [2, 2]).p, 0)
        XCTAssertEqual(Statistics.welch([1, 1], [2, 2]).t, -.infinity)
        XCTAssert(Statistics.welch([1, 1], [1, 1]).t.isNaN)
        XCTAssert(Statistics.welch([1], [1, 2]).p.isNaN)
        XCTAssert(Statistics.summary([0.5]).sd.isNaN)
    }

    // MARK: the plan

    func testSeedsAndGridParse() throws {
        XCTAssertEqual(try SweepSpec.seeds("0-4", origin: "--seeds"), [0, 1, 2, 3, 4])
        XCTAssertEqual(try SweepSpec.seeds("0-2,7", origin: "--seeds"), [0, 1, 2, 7])
        XCTAssertEqual(try SweepSpec.seeds("3", origin: "--seeds"), [3])
        for bad in ["0-", "4-0", "a", "1,1", "", "0-2,1", "-1", "1.5"] {
            XCTAssertThrowsError(try SweepSpec.seeds(bad, origin: "--seeds"), bad) { error in
                XCTAssert("\(error)".contains("--seeds: the seeds '\(bad)' do not parse"), "\(error)")
            }
        }
        let axis = try SweepSpec.axis("stages.0.byol.augment.global_scale=[0.2, 1.0],[0.4,1.0], 'a,b'")
        XCTAssertEqual(axis.key, "stages.0.byol.augment.global_scale")
        XCTAssertEqual(axis.values, ["[0.2, 1.0]", "[0.4,1.0]", "'a,b'"])
        for bad in ["lr=", "lr=1,,2", "=1,2", "lr"] {
            XCTAssertThrowsError(try SweepSpec.axis(bad), bad)
        }
        XCTAssertThrowsError(try SweepSpec().overridden(seeds: nil, grid: [try SweepSpec.axis("a.b=1,2"), try SweepSpec.axis("a.b=3")])) { error in
            XCTAssert("\(error)".contains("a.b is given twice with --grid"), "\(error)")
        }
        // The first key varies slowest; then the seeds.
        let spec = SweepSpec(seeds: [0, 1], grid: [try SweepSpec.axis("x.lr=1,2"), try SweepSpec.axis("y.dim=8,16")])
        let plan = try SweepPlan(recipeFile: "r.yaml", baseOverrides: [], spec: spec, defaultSeed: 0)
        XCTAssertEqual(plan.runs.count, 8)
        XCTAssertEqual(plan.runs[3].overrides, ["x.lr=1", "y.dim=16", "seed=1"])
        XCTAssertEqual(plan.runs[3].folder, "3-lr=1-dim=16-seed=1")
        XCTAssertEqual(plan.onKeyPairs.map { [$0.key, $0.a, $0.b] }, [[1, 0, 1], [0, 0, 2], [0, 1, 3], [1, 2, 3]])
    }

    func writeRecipe(sweep: String = "") throws -> String {
        let path = root + "/tiny.yaml"
        try """
            name: tiny
            seed: 0
            data:
              train_subset: 256
              test_subset: 100
            encoder:
              dim: 16
              depth: 1
              heads: 2
              dim_head: 8
              mlp_dim: 32
            checkpoint:
              every_steps: 2
            stages:
              - supervised:
                  epochs: 1
                  batch_size: 32
                  lr: 1.0e-3
              - knn: {}
            \(sweep)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testBadSweepInputIsRefusedBeforeAnythingRuns() throws {
        let recipe = try writeRecipe()
        let cases: [([String], String)] = [
            (["--seeds", "0-1", "--grid", "stages.0.supervised.lrr=1.0e-3,2.0e-3"],
             "--grid stages.0.supervised.lrr=1.0e-3,2.0e-3 (run 0-lrr=1.0e-3-seed=0): stages.0.supervised.lrr: unknown key 'lrr'; did you mean 'lr'?"),
            (["--grid", "stages.0.supervised.lr="], "needs one or more values"),
            (["--seeds", "0-x"], "--seeds: the seeds '0-x' do not parse"),
            (["--grid", "stages.0.supervised.lr=1.0e-3", "--grid", "stages.0.supervised.lr=2.0e-3"], "is given twice with --grid"),
            (["--grid", "seed=1,2"], "the seed is not a grid key; give the seeds with --seeds"),
            (["--grid", "stages.0.supervised.epochs=1,-2"], "stages.0.supervised.epochs: must be positive, got -2"),
        ]
        for (arguments, expected) in cases {
            let outcome = try WorkbenchProcess.run(["sweep", recipe, "--runs-dir", root + "/runs"] + arguments, in: root)
            XCTAssertEqual(outcome.status, 1, "\(arguments)")
            XCTAssert(outcome.error.contains(expected), "\(arguments): \(outcome.error)")
            XCTAssertFalse(outcome.error.contains("Fatal") || outcome.error.contains("Stack"), outcome.error)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/runs"), "nothing may run, nor a folder be made, for a bad sweep")
        // The recipe's own sweep section: an empty list and an unknown key, with the line.
        for (section, expected) in [("sweep:\n  grid:\n    stages.0.supervised.lr: []", "tiny.yaml:22:29: sweep.grid.stages.0.supervised.lr: the list of values is empty"),
                                    ("sweep:\n  seed: 0-2", "tiny.yaml:21:3: sweep.seed: unknown key 'seed'; did you mean 'seeds'?")] {
            let path = try writeRecipe(sweep: section)
            for command in ["sweep", "validate"] {
                let outcome = try WorkbenchProcess.run([command, path, "--runs-dir", root + "/runs"], in: root)
                XCTAssertEqual(outcome.status, 1)
                XCTAssert(outcome.error.contains(expected), "\(command): \(outcome.error)")
            }
        }
    }

    /// The statuses, results, summary and comparisons of a sweep.h5 (everything but wall times
    /// and the command line).
    func contents(_ sweep: String) throws -> [String: [String]] {
        let file = try HDF5File(path: sweep + "/sweep.h5", mode: .readOnly)
        var out: [String: [String]] = [:]
        func walk(_ group: HDF5Group, _ path: String) throws {
            for name in group.childNames {
                switch try group.child(name) {
                case .group(let g): try walk(g, path + "/" + name)
                case .dataset(let d):
                    let key = path + "/" + name
                    if key == "/runs/seconds" { continue }
                    out[key] = d.elementType == "string" ? try d.readStrings() : try d.read(as: Double.self).map { "\($0)" }
                }
            }
        }
        try walk(file.root, "")
        out["@status"] = ["\(try file.root.attribute("status"))"]
        return out
    }

    func testSweepKilledAndResumedEndsAsTheUninterruptedSweep() throws {
        // Two values of the epochs (1 and 5) times seeds 0 and 1, three at a time: when the first
        // short run finishes, the first long one is in the middle of its training.
        let recipe = try writeRecipe(sweep: "sweep:\n  seeds: 0-1\n  grid:\n    stages.0.supervised.epochs: [1, 5]")
        let arguments = ["sweep", recipe, "--parallel", "3", "--runs-dir"]
        let whole = try WorkbenchProcess.run(arguments + [root + "/a"], in: root)
        XCTAssertEqual(whole.status, 0, whole.error)
        XCTAssert(whole.output.contains("stages.0.supervised.epochs: 1 vs 5"), whole.output)
        let killed = try WorkbenchProcess.run(arguments + [root + "/b"], in: root, killWhen: { $0.hasPrefix("sweep: finished 0-") })
        XCTAssert(killed.signaled)
        let sweepA = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: root + "/a/tiny").first.map { root + "/a/tiny/" + $0 })
        let sweepB = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: root + "/b/tiny").first.map { root + "/b/tiny/" + $0 })
        XCTAssertNotEqual(try contents(sweepB)["/runs/status"], try contents(sweepA)["/runs/status"], "the kill came too late to test anything")
        let resumed = try WorkbenchProcess.run(["sweep", "--resume", sweepB], in: root)
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssert(resumed.output.contains("already finished"), resumed.output)
        let (a, b) = (try contents(sweepA), try contents(sweepB))
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
        for key in a.keys.sorted() { XCTAssertEqual(a[key], b[key], key) }
        XCTAssertEqual(a["/runs/status"], ["complete", "complete", "complete", "complete"])
        XCTAssertEqual(a["/summary/results/knn.test_top1/n"], ["2.0", "2.0"])

        // compare: the sweep's points, and the same runs as plain folders, give the same table.
        let compared = try WorkbenchProcess.run(["compare", sweepA], in: root)
        XCTAssertEqual(compared.status, 0, compared.error)
        XCTAssert(compared.output.contains("#1 vs #2"), compared.output)
        XCTAssertNotNil(compared.output.range(of: #"#2 tiny/sweep-[0-9-]+: epochs=5 +2 "#, options: .regularExpression), compared.output)
        let csv = root + "/torch.csv"
        try "group,seed,knn.test_top1\npytorch,0,80.5\npytorch,1,81.5\n".write(toFile: csv, atomically: true, encoding: .utf8)
        let withCSV = try WorkbenchProcess.run(["compare", sweepA + "/0-epochs=1-seed=0", sweepA + "/1-epochs=1-seed=1", csv], in: root)
        XCTAssertEqual(withCSV.status, 0, withCSV.error)
        XCTAssertNotNil(withCSV.output.range(of: #"#1 pytorch +2 +81\.00 +0\.71"#, options: .regularExpression), withCSV.output)
        let table = try Comparison.table([sweepA + "/0-epochs=1-seed=0", sweepA + "/1-epochs=1-seed=1", csv])
        XCTAssertEqual(table.groups.map(\.label), ["pytorch", "tiny"])
        XCTAssertEqual(table.values(0, "knn.test_top1"), [0.805, 0.815])
        XCTAssertEqual(table.values(1, "knn.test_top1").count, 2)
        try "group,knn.test_top1\nx,eighty\n".write(toFile: csv, atomically: true, encoding: .utf8)
        let bad = try WorkbenchProcess.run(["compare", csv], in: root)
        XCTAssertEqual(bad.status, 1)
        XCTAssert(bad.error.contains("row 2, column knn.test_top1: 'eighty' is not a number"), bad.error)
    }
}
