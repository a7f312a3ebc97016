import Dispatch

/// Wall time of one run of `body`, in seconds.
func seconds(_ body: () -> Void) -> Double {
    let t0 = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
}

/// Median wall time of `repeats` runs of `body`, after `warmups` untimed runs.
func medianSeconds(repeats: Int, warmups: Int = 1, _ body: () -> Void) -> Double {
    for _ in 0..<warmups { body() }
    let times = (0..<repeats).map { _ in seconds(body) }.sorted()
    return times[times.count / 2]
}

/// Median wall times of `first` and `second`, run alternately (after a warm-up of each) so that
/// drift in the machine's speed affects both alike.
func interleavedMedianSeconds(repeats: Int, _ first: () -> Void, _ second: () -> Void) -> (Double, Double) {
    first()
    second()
    var a: [Double] = [], b: [Double] = []
    for _ in 0..<repeats {
        a.append(seconds(first))
        b.append(seconds(second))
    }
    return (a.sorted()[a.count / 2], b.sorted()[b.count / 2])
}
