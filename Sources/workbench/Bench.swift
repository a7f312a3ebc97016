import ArgumentParser
import TensorCore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure the tensor engine's kernels against raw sgemm.")
    func run() throws {}
}
