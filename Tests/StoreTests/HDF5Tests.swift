import Foundation
import Store
import XCTest

final class HDF5Tests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "hdf5-tests-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func testGroupsAttributesAndFixedDatasetsRoundTrip() throws {
        let path = directory + "/a.h5"
        do {
            let file = try HDF5File(path: path, mode: .create)
            try file.root.setAttribute("recipe", "name: test\nseed: 3\n")
            try file.root.setAttribute("seed", 3)
            try file.root.setAttribute("ratio", 0.75)
            let group = try file.root.group("train/features")
            try group.write("x", [Float](arrayLiteral: 1, 2, 3, 4, 5, 6), shape: [2, 3])
            try group.write("labels", [Int64](arrayLiteral: 7, 8))
            try group.write("big", (0..<5000).map { Double($0) }, shape: [1000, 5], compress: true)
            try group.writeStrings("names", ["T-shirt/top", "Ankle boot", ""])
            try group.setAttribute("betas", [0.9, 0.999])
        }
        let file = try HDF5File(path: path, mode: .readOnly)
        XCTAssertEqual(try file.root.attribute("recipe"), .string("name: test\nseed: 3\n"))
        XCTAssertEqual(try file.root.attribute("seed"), .integers([3]))
        XCTAssertEqual(try file.root.attribute("ratio"), .reals([0.75]))
        XCTAssertEqual(file.root.attributeNames, ["ratio", "recipe", "seed"])
        XCTAssertEqual(file.root.childNames, ["train"])
        XCTAssertTrue(file.root.contains("train/features/x"))
        XCTAssertFalse(file.root.contains("train/nothing/x"))
        let group = try file.root.group("train/features")
        XCTAssertEqual(group.childNames, ["big", "labels", "names", "x"])
        let x = try group.dataset("x")
        XCTAssertEqual(x.shape, [2, 3])
        XCTAssertEqual(x.elementType, "float32")
        XCTAssertEqual(try x.read(as: Float.self), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try group.dataset("labels").read(as: Int64.self), [7, 8])
        XCTAssertEqual(try group.dataset("big").read(as: Double.self).last, 4999)
        XCTAssertEqual(try group.dataset("names").readStrings(), ["T-shirt/top", "Ankle boot", ""])
        XCTAssertEqual(try group.attribute("betas"), .reals([0.9, 0.999]))
        if case .dataset(let d) = try group.child("labels") { XCTAssertEqual(d.elementType, "int64") } else { XCTFail("labels is a dataset") }
    }

    func testExtendableDatasetsAppendAcrossReopeningAndShrink() throws {
        let path = directory + "/m.h5"
        do {
            let file = try HDF5File(path: path, mode: .create)
            let steps = try file.root.group("supervised/steps")
            try steps.createExtendable("loss", of: Double.self, chunkRows: 4)
            try steps.createExtendable("image", of: Float.self, rowShape: [2, 2], chunkRows: 2)
            try steps.dataset("loss").append([1.0, 0.5])
            try steps.dataset("image").append([Float](repeating: 1, count: 12))
        }
        do {
            let file = try HDF5File(path: path, mode: .readWrite)
            let loss = try file.root.dataset("supervised/steps/loss")
            try loss.append((0..<9).map { Double($0) })
            XCTAssertEqual(loss.shape, [11])
            try loss.resize(rows: 5)
            try file.flush()
        }
        let file = try HDF5File(path: path, mode: .readOnly)
        XCTAssertEqual(try file.root.dataset("supervised/steps/loss").read(as: Double.self), [1, 0.5, 0, 1, 2])
        XCTAssertEqual(try file.root.dataset("supervised/steps/image").shape, [3, 2, 2])
    }

    func testErrorsNameTheFile() throws {
        XCTAssertThrowsError(try HDF5File(path: directory + "/missing.h5", mode: .readOnly)) {
            XCTAssertTrue("\($0)".contains("missing.h5: no such file"), "\($0)")
        }
        let notHDF5 = directory + "/text.h5"
        try "hello".write(toFile: notHDF5, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HDF5File(path: notHDF5, mode: .readOnly)) { XCTAssertTrue("\($0)".contains("not an HDF5 file")) }
        XCTAssertThrowsError(try HDF5File(path: directory + "/no/such/folder/x.h5", mode: .create)) {
            XCTAssertTrue("\($0)".contains("cannot create"))
        }
        let file = try HDF5File(path: directory + "/b.h5", mode: .create)
        XCTAssertThrowsError(try file.root.dataset("nothing")) { XCTAssertTrue("\($0)".contains("no dataset 'nothing'")) }
        XCTAssertThrowsError(try file.root.write("bad", [Float](arrayLiteral: 1, 2, 3), shape: [2, 2]))
    }

    func testCRC32CKnownVectorAndTensorBoardRecordsVerify() throws {
        XCTAssertEqual(CRC32C.checksum(Data("123456789".utf8)), 0xE306_9283)
        let writer = try TensorBoardWriter(directory: directory)
        writer.scalar("supervised/loss", 0.5, step: 3)
        writer.restart(at: 2)
        try writer.flush()
        let data = try Data(contentsOf: URL(fileURLWithPath: writer.path))
        var offset = 0, records = 0
        func u32(_ at: Int) -> UInt32 { data.subdata(in: at..<(at + 4)).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
        while offset < data.count {
            let lengthBytes = data.subdata(in: offset..<(offset + 8))
            let length = Int(lengthBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
            XCTAssertEqual(u32(offset + 8), CRC32C.masked(lengthBytes))
            let body = data.subdata(in: (offset + 12)..<(offset + 12 + length))
            XCTAssertEqual(u32(offset + 12 + length), CRC32C.masked(body))
            if records == 1 { XCTAssertNotNil(body.range(of: Data("supervised/loss".utf8))) }
            if records == 2 {
                // Event { step: 2 (field 2), session_log (field 7): SessionLog { status: START (1) } },
                // which TensorBoard's reader takes as a restart; field 6 would be the deprecated log_message.
                XCTAssertNotNil(body.range(of: Data([0x10, 0x02])), "step 2")
                XCTAssertEqual(Array(body.suffix(4)), [0x3A, 0x02, 0x08, 0x01], "session_log START")
            }
            offset += 16 + length
            records += 1
        }
        XCTAssertEqual(records, 3)

        // Scalars reach the disk by themselves once flushInterval has passed (a killed run keeps them).
        let liveDirectory = directory + "/live"
        try FileManager.default.createDirectory(atPath: liveDirectory, withIntermediateDirectories: true)
        let live = try TensorBoardWriter(directory: liveDirectory, flushInterval: 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: live.path)).count
        live.scalar("supervised/loss", 0.25, step: 0)
        XCTAssertGreaterThan(try Data(contentsOf: URL(fileURLWithPath: live.path)).count, before)
    }
}
