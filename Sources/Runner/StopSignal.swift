import Foundation
import TensorCore

/// SIGINT (Ctrl-C) and SIGTERM during a run: the first one asks the run to stop after the step in
/// progress, with a checkpoint at that step, the run marked "interrupted" and the `--resume`
/// command printed; the process then exits with 128 + the signal (130, 143). A second signal
/// stops at once, as the default action would.
public enum StopSignal {
    /// The signal received, or 0. Written only by the handler, read by the training loop.
    nonisolated(unsafe) static var received: Int32 = 0

    /// Whether the run is spread over processes (set by `install`).
    nonisolated(unsafe) static var multiProcess = false

    /// Installs the handlers (for `workbench run`).
    public static func install() {
        received = 0
        multiProcess = Distributed.isMultiProcess
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { sig in
                if StopSignal.received != 0 {
                    signal(sig, SIG_DFL)
                    raise(sig)
                    return
                }
                StopSignal.received = sig
                let note: StaticString = "\nworkbench: stopping after this step with a checkpoint (a second Ctrl-C stops at once, without one)\n"
                let spread: StaticString = """

                    workbench: stopping after this step with a checkpoint. If a process of the run ended, mpirun stops the \
                    others before that: the run folder's last checkpoint is intact, and `workbench run --resume RUN_FOLDER` \
                    (with mpirun or without) continues from it.

                    """
                let text = StopSignal.multiProcess ? spread : note
                _ = write(STDERR_FILENO, text.utf8Start, text.utf8CodeUnitCount)
            }
        }
    }

    /// Whether the run stops here: a signal has arrived (at any of its processes, which all
    /// decide together, so that none goes on to a collective the others left).
    static func stopRequested() -> Bool {
        guard Distributed.isMultiProcess else { return received != 0 }
        return Distributed.sum([received != 0 ? 1 : 0])[0] > 0
    }

    /// Throws `RunInterrupted` when a signal has arrived (collective when spread over processes).
    static func check(stage: String, step: Int?) throws {
        if stopRequested() { throw interruption(stage: stage, step: step) }
    }

    /// The stop, once `stopRequested()` said so (another process may have had the signal).
    static func interruption(stage: String, step: Int?) -> RunInterrupted {
        RunInterrupted(signal: received != 0 ? received : SIGTERM, stage: stage, step: step)
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
