import Foundation
import Dispatch

/// Writes TensorBoard event files (`events.out.tfevents.*`) with scalar summaries, readable by
/// TensorBoard and by `tensorboard.backend.event_processing` without TensorFlow. The format is
/// TFRecord framing (length, masked CRC-32C of the length, an `Event` protocol buffer, masked
/// CRC-32C of the data) around hand-encoded `Event`/`Summary` messages.
public final class TensorBoardWriter {
    public let path: String
    /// Seconds between the writes that `scalar` makes by itself, so that TensorBoard follows a
    /// run live and a killed run leaves its events on disk up to the last write.
    public var flushInterval: Double
    private var pending = Data()
    private let handle: FileHandle
    private var lastFlush = DispatchTime.now().uptimeNanoseconds

    /// Creates a new event file in `directory`.
    public init(directory: String, clock: Date = Date(), flushInterval: Double = 2) throws {
        self.flushInterval = flushInterval
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
        path = "\(directory)/events.out.tfevents.\(Int(clock.timeIntervalSince1970)).\(host).\(getpid())"
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw HDF5Error(path: path, message: "cannot create the TensorBoard event file (is the folder writable?)")
        }
        self.handle = handle
        var event = Proto()
        event.double(1, clock.timeIntervalSince1970)
        event.bytes(3, Data("brain.Event:2".utf8))
        record(event.data)
        try flush()
    }

    deinit { try? handle.close() }

    /// A scalar under `tag` at `step`.
    public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        var summaryValue = Proto()
        summaryValue.bytes(1, Data(tag.utf8))
        summaryValue.float(2, Float(value))
        var summary = Proto()
        summary.bytes(1, summaryValue.data)
        var event = Proto()
        event.double(1, wallTime)
        event.varint(2, UInt64(bitPattern: Int64(step)))
        event.bytes(5, summary.data)
        record(event.data)
        if Double(DispatchTime.now().uptimeNanoseconds - lastFlush) / 1e9 >= flushInterval { try? flush() }
    }

    /// A session restart at `step`: TensorBoard then drops the events after `step` that an
    /// interrupted run had written, so a resumed run's curves join without duplicates.
    public func restart(at step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        var log = Proto()
        log.varint(1, 1)  // SessionLog.START
        var event = Proto()
        event.double(1, wallTime)
        event.varint(2, UInt64(bitPattern: Int64(step)))
        event.bytes(7, log.data)  // Event.session_log (field 6 is the deprecated log_message)
        record(event.data)
    }

    public func flush() throws {
        guard !pending.isEmpty else { return }
        try handle.write(contentsOf: pending)
        pending.removeAll(keepingCapacity: true)
        lastFlush = DispatchTime.now().uptimeNanoseconds
    }

    private func record(_ data: Data) {
        var length = UInt64(data.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { Data($0) }
        pending.append(lengthBytes)
        appendUInt32(CRC32C.masked(lengthBytes))
        pending.append(data)
        appendUInt32(CRC32C.masked(data))
    }

    private func appendUInt32(_ value: UInt32) {
        var v = value.littleEndian
        withUnsafeBytes(of: &v) { pending.append(contentsOf: $0) }
    }
}

/// Protocol-buffer wire encoding for the few field kinds an Event needs.
struct Proto {
    var data = Data()

    mutating func key(_ field: Int, _ wire: Int) { appendVarint(UInt64(field << 3 | wire)) }
    mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 { data.append(UInt8(v & 0x7f) | 0x80); v >>= 7 }
        data.append(UInt8(v))
    }
    mutating func varint(_ field: Int, _ value: UInt64) { key(field, 0); appendVarint(value) }
    mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        var bits = value.bitPattern.littleEndian
        withUnsafeBytes(of: &bits) { data.append(contentsOf: $0) }
    }
    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        var bits = value.bitPattern.littleEndian
        withUnsafeBytes(of: &bits) { data.append(contentsOf: $0) }
    }
    mutating func bytes(_ field: Int, _ value: Data) { key(field, 2); appendVarint(UInt64(value.count)); data.append(value) }
}

/// CRC-32C (Castagnoli), as TFRecord frames use, and its masked form.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0x82F6_3B78 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    public static func masked(_ data: Data) -> UInt32 {
        let crc = checksum(data)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}
