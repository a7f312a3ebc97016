import ArgumentParser

@main
struct Workbench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workbench",
        abstract: "Self-supervised pretraining of Vision Transformers on the CPU.",
        subcommands: [Bench.self, Supervised.self]
    )
}
