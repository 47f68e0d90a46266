import Foundation
import Testing

@testable import Billing

/// The in-memory sink the gateway uses until the durable meter lands.
@Suite struct InMemoryUsageSinkTests {
    @Test func countsEventsAndBillableOnesAndKeepsTheLatest() {
        let sink = InMemoryUsageSink(keep: 2)
        for status in [200, 503, 201] {
            sink.record(
                UsageEvent(
                    tenantID: UUID(), apiID: nil, appID: nil, subscriptionID: nil, planID: nil, method: "GET", status: status, latencyMicroseconds: 1,
                    bytesIn: 0, bytesOut: 0, rejection: nil, forwarded: true))
        }
        #expect(sink.count == 3)
        #expect(sink.billableCount == 2)
        #expect(sink.recent.map(\.status) == [503, 201])
    }
}

/// How the meter cuts a flush into writes.
@Suite struct MeterChunkTests {
    @Test(arguments: [
        // count, smallest, largest, in flight → chunk sizes
        (0, 2_500, 10_000, 2, [Int]()),
        (300, 2_500, 10_000, 2, [300]),  // too few to share: one write
        (5_000, 2_500, 10_000, 2, [2_500, 2_500]),  // a steady flush keeps two writes busy
        (7_001, 2_500, 10_000, 2, [3_501, 3_500]),
        (25_000, 2_500, 10_000, 2, [8_334, 8_334, 8_332]),  // a backlog: capped at the largest
        (5_000, 2_500, 10_000, 1, [5_000]),
    ])
    func chunksAreBoundedAndShareTheLoad(count: Int, smallest: Int, largest: Int, inFlight: Int, expected: [Int]) {
        let chunks = UsageMeter.chunks(count: count, smallest: smallest, largest: largest, inFlight: inFlight)
        #expect(chunks.map(\.count) == expected)
        // contiguous, covering every event once
        #expect(chunks.first?.lowerBound ?? 0 == 0)
        #expect(chunks.last?.upperBound ?? 0 == count)
        #expect(zip(chunks, chunks.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    }
}
