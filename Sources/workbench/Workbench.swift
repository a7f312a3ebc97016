import ArgumentParser
import Foundation
import TensorCore

@main
struct Workbench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workbench",
        abstract: "Self-supervised pretraining of Vision Transformers on the CPU.",
        subcommands: [Run.self, Sweep.self, Compare.self, Validate.self, List.self, Inspect.self, Extract.self, Export.self, Views.self, Predict.self, Bench.self, BenchData.self, BenchStep.self]
    )

    /// Line-buffered output, so progress shows as it happens in logs and pipes.
    static func main() {
        setvbuf(stdout, nil, _IOLBF, 0)
        StoragePool.keepFreedPages()
        // Choose OpenBLAS's kernels now, while this is the only thread (it touches the environment).
        _ = blasCore
        if case .failure(let problem)? = Parallel.requestedThreads() {
            // The style and status of every other user error (ArgumentParser's "Error:", exit 1).
            FileHandle.standardError.write(Data("Error: \(problem)\n".utf8))
            Foundation.exit(1)
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
