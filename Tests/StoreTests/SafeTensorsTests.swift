import CHDF5
import CWorkbenchZlib
import Foundation
import Store
import TensorCore
import XCTest

final class SafeTensorsTests: XCTestCase {
    func testRoundTripKeepsNamesShapesAndBits() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("w.safetensors").path
        let rng = RandomStream(seed: 1, purpose: "test")
        let a = Tensor.randn([3, 4], rng: rng), b = Tensor.randn([5], rng: rng)
        try SafeTensors.write(["blocks.0.attn.qkv.weight": a, "bias": b], metadata: ["format": "pt"], to: path)
        let back = try SafeTensors.read(path: path)
        XCTAssertEqual(back["blocks.0.attn.qkv.weight"]?.shape, [3, 4])
        XCTAssertEqual(back["blocks.0.attn.qkv.weight"]?.scalars, a.scalars)
        XCTAssertEqual(back["bias"]?.scalars, b.scalars)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"))
    }

    func testTruncatedFileIsAClearError() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(getpid()).safetensors").path
        defer { unlink(path) }
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SafeTensors.read(path: path)) { error in
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        XCTAssertThrowsError(try SafeTensors.read(path: path + ".missing")) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
    }

    /// The system-library targets link and their shims resolve HDF5's macro-defined identifiers.
    func testSystemLibrariesLink() {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        XCTAssertEqual(H5get_libversion(&major, &minor, &release), 0)
        XCTAssertGreaterThanOrEqual(major, 1)
        XCTAssertGreaterThan(chdf5_native_float(), 0)
        XCTAssertEqual(H5Tget_size(chdf5_native_double()), 8)
        XCTAssertTrue(String(cString: zlibVersion()).hasPrefix("1."))
    }
}
