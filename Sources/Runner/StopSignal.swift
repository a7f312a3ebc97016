import Foundation

/// SIGINT (Ctrl-C) and SIGTERM during a run: the first one asks the run to stop after the step in
/// progress, with a checkpoint at that step, the run marked "interrupted" and the `--resume`
/// command printed; the process then exits with 128 + the signal (130, 143). A second signal
/// stops at once, as the default action would.
public enum StopSignal {
    /// The signal received, or 0. Written only by the handler, read by the training loop.
    nonisolated(unsafe) static var received: Int32 = 0

    /// Installs the handlers (for `workbench run`).
    public static func install() {
        received = 0
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { sig in
                if StopSignal.received != 0 {
                    signal(sig, SIG_DFL)
                    raise(sig)
                    return
                }
                StopSignal.received = sig
                let note: StaticString = "\nworkbench: stopping after this step with a checkpoint (a second Ctrl-C stops at once, without one)\n"
                _ = write(STDERR_FILENO, note.utf8Start, note.utf8CodeUnitCount)
            }
        }
    }

    /// Throws `RunInterrupted` when a signal has arrived.
    static func check(stage: String, step: Int?) throws {
        if received != 0 { throw RunInterrupted(signal: received, stage: stage, step: step) }
    }
}

/// The run stopped on SIGINT or SIGTERM, after saving a checkpoint to resume from.
public struct RunInterrupted: Error, CustomStringConvertible {
    public let signal: Int32
    public let stage: String
    /// The stage's steps done at the checkpoint, or nil when it stopped between stages.
    public let step: Int?
    /// The run folder, filled in by the runner.
    public var directory = ""

    public var signalName: String { signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)" }
    /// 130 for SIGINT, 143 for SIGTERM, as shells report them.
    public var exitStatus: Int32 { 128 + signal }

    public var description: String {
        let place = step.map { "\(stage) at step \($0), with a checkpoint there" } ?? "after \(stage), with its checkpoint"
        return "interrupted by \(signalName): stopped in \(place). Continue with: workbench run --resume \(directory)"
    }
}
