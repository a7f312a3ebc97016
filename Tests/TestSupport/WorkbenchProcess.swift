import Foundation

/// Runs the `workbench` executable that `swift test` builds beside the test bundle, as a user
/// would: arguments, a working folder, and the exit status, stdout and stderr that come back.
public enum WorkbenchProcess {
    /// A failure (never a skip): these tests need the binary built beside them.
    public struct MissingExecutable: Error, CustomStringConvertible {
        public let path: String
        public var description: String { "\(path) is missing; build it with `swift build -c release --product workbench`" }
    }

    public struct Outcome {
        public let status: Int32
        public let signaled: Bool
        public let output: String
        public let error: String
    }

    /// The workbench executable built beside this test bundle.
    public static var executable: URL {
        get throws {
            let url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("workbench")
            guard FileManager.default.isExecutableFile(atPath: url.path) else { throw MissingExecutable(path: url.path) }
            return url
        }
    }

    /// Runs the workbench in `directory`; `killWhen` is checked on every output line and, once
    /// true, the process gets `signal` (SIGKILL unless told) at once; `environment` adds variables.
    /// `launcher` (mpirun and its options) starts the workbench instead of running it directly.
    public static func run(_ arguments: [String], in directory: String, killWhen: ((String) -> Bool)? = nil, signal: Int32 = SIGKILL,
                           environment: [String: String] = [:], launcher: [String] = []) throws -> Outcome {
        let process = Process()
        if let program = launcher.first {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = Array(launcher.dropFirst()) + [try executable.path] + arguments
        } else {
            process.executableURL = try executable
            process.arguments = arguments
        }
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        var text = ""
        var pending = Data()
        let handle = out.fileHandleForReading
        reading: while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let newline = pending.firstIndex(of: 10) {
                let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                pending.removeSubrange(pending.startIndex...newline)
                text += line + "\n"
                if let killWhen, killWhen(line) {
                    kill(process.processIdentifier, signal)
                    if signal == SIGKILL { break reading }
                }
            }
        }
        text += String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Outcome(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal, output: text, error: errors)
    }
}
