/// Fixed latency buckets shared by rollups and reports: upper bounds in microseconds, roughly
/// ×1.5 apart from 100 µs to 60 s, so percentiles read from rollups are within one bucket (≤ 50 %)
/// of the truth — good enough for p50/p95/p99 charts, exact counts stay in `usage_events`.
public enum LatencyHistogram {
    public static let bounds: [Int64] = [
        100, 150, 250, 400, 600, 1_000, 1_500, 2_500, 4_000, 6_000, 10_000, 15_000, 25_000, 40_000, 60_000, 100_000, 150_000, 250_000, 400_000,
        600_000, 1_000_000, 1_500_000, 2_500_000, 4_000_000, 6_000_000, 10_000_000, 20_000_000, 60_000_000, Int64.max,
    ]

    public static func bucket(_ microseconds: Int64) -> Int {
        var low = 0
        var high = bounds.count - 1
        while low < high {
            let mid = (low + high) / 2
            if microseconds <= bounds[mid] { high = mid } else { low = mid + 1 }
        }
        return low
    }

    /// The bucket bound below which `quantile` (0…1) of the counted calls fall.
    public static func percentile(_ counts: [Int64], _ quantile: Double) -> Int64? {
        let total = counts.reduce(0, +)
        guard total > 0 else { return nil }
        let target = Int64((Double(total) * quantile).rounded(.up))
        var running: Int64 = 0
        for (index, count) in counts.enumerated() {
            running += count
            if running >= target { return bounds[min(index, bounds.count - 1)] }
        }
        return bounds.last
    }
}
