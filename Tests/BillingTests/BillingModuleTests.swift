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
