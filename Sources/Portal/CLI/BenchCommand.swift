import ArgumentParser
import Billing
import Foundation

/// `tollgate bench-metering …`: the timed parts of bench/metering.sh (hidden from help; the
/// script prepares the data and prints the figures).
struct BenchMeteringCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-metering", abstract: "Timed metering and invoicing runs for bench/metering.sh.", shouldDisplay: false,
        subcommands: [Ingest.self, Meter.self, InvoiceRun.self])

    /// Events through `UsageStore.write` in the meter's batch size, one batch after another as the
    /// meter writes them, spread over `subscriptions` subscriptions and the current hour.
    struct Ingest: AsyncParsableCommand {
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Events to write.") var events = 500_000
        @Option(help: "Distinct subscriptions.") var subscriptions = 10_000
        @Option(help: "Events per batch (the meter's default).") var batch = 5_000

        func run() async throws {
            let runtime = try Runtime.load()
            let slug = tenant
            try await runtime.withDatabase { database in
                guard let tenant = try await database.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                    throw CLIError(description: "There is no tenant \(slug).")
                }
                let store = UsageStore(logger: runtime.logger)
                try await store.preparePartitions(client: database.client)
                let subscriptionIDs = (0..<subscriptions).map { _ in UUID() }
                let planID = UUID()
                let started = ContinuousClock.now
                var written = 0
                while written < events {
                    let count = min(batch, events - written)
                    let now = Date()
                    let batchEvents = (0..<count).map { i in
                        UsageEvent(
                            at: now, tenantID: tenant.id, apiID: nil, appID: nil, subscriptionID: subscriptionIDs[(written + i) % subscriptionIDs.count],
                            planID: planID, method: "GET", status: i % 50 == 0 ? 502 : 200, latencyMicroseconds: Int64(200 + i % 5_000), bytesIn: 0,
                            bytesOut: 512, rejection: nil, forwarded: true)
                    }
                    try await store.write(UsageBatch(meterID: "bench", events: batchEvents), client: database.client)
                    written += count
                }
                let seconds = Bench.seconds(ContinuousClock.now - started)
                // the deltas these writes appended are folded as a meter would (every second), but
                // timed apart: a single write's cost is what this command measures
                let foldStarted = ContinuousClock.now
                let folded = try await store.fold(client: database.client)
                print(
                    String(
                        format: "ingest: %d events in %.2f s = %.0f events/s (batches of %d, %d subscriptions); then %d deltas folded in %.2f s", written, seconds,
                        Double(written) / seconds, batch, subscriptions, folded, Bench.seconds(ContinuousClock.now - foldStarted)))
            }
        }
    }

    /// The real `UsageMeter` under an offered load: calls are recorded at `rate` per second (in
    /// 10 ms ticks, as a gateway would hand them over) for `seconds`, while the meter flushes on its
    /// own schedule. Prints the rate the meter kept up with and the largest backlog it carried.
    struct Meter: AsyncParsableCommand {
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Offered events per second.") var rate = 50_000
        @Option(help: "Seconds of offered load.") var seconds = 10
        @Option(help: "Distinct subscriptions.") var subscriptions = 10_000

        func run() async throws {
            let runtime = try Runtime.load()
            let slug = tenant
            try await runtime.withDatabase { database in
                guard let tenant = try await database.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                    throw CLIError(description: "There is no tenant \(slug).")
                }
                let spool = runtime.config.dataDirectory + "/bench-meter-spool"
                try? FileManager.default.removeItem(atPath: spool)
                let meter = UsageMeter(
                    configuration: .init(gateway: "bench", spoolDirectory: spool), database: try DatabaseURL(runtime.config.databaseURL).connectionConfiguration(),
                    logger: runtime.logger)
                let writer = Task { try await meter.run() }
                let subscriptionIDs = (0..<subscriptions).map { _ in UUID() }
                let planID = UUID()
                let perTick = rate / 100
                let clock = ContinuousClock()
                let started = clock.now
                var recorded = 0
                var largestBacklog = 0
                for tick in 0..<(seconds * 100) {
                    let now = Date()
                    for _ in 0..<perTick {
                        meter.record(
                            UsageEvent(
                                at: now, tenantID: tenant.id, apiID: nil, appID: nil, subscriptionID: subscriptionIDs[recorded % subscriptionIDs.count], planID: planID,
                                method: "GET", status: recorded % 50 == 0 ? 502 : 200, latencyMicroseconds: Int64(200 + recorded % 5_000), bytesIn: 0,
                                bytesOut: 512, rejection: nil, forwarded: true))
                        recorded += 1
                    }
                    largestBacklog = max(largestBacklog, meter.buffered)
                    try await Task.sleep(until: started + .milliseconds(10 * (tick + 1)), clock: clock)
                }
                let offeredFor = clock.now - started
                while meter.eventsWritten < recorded, clock.now - started < offeredFor + .seconds(120) {
                    largestBacklog = max(largestBacklog, meter.buffered)
                    try await Task.sleep(for: .milliseconds(5))
                }
                let elapsed = clock.now - started
                writer.cancel()
                _ = try? await writer.value
                // when the rollups hold every call too (waits for a fold in progress, folds the rest)
                try await UsageStore(logger: runtime.logger).fold(client: database.client)
                let folded = clock.now - started
                let spooled = meter.isSpooling
                try? FileManager.default.removeItem(atPath: spool)
                let secondsOf = Bench.seconds
                print(
                    String(
                        format:
                            "meter: offered %d events/s for %.1f s (%d subscriptions); all %d written after %.2f s = %.0f events/s, and folded into the rollups after %.2f s; largest backlog %d events%@",
                        rate, secondsOf(offeredFor), subscriptions, meter.eventsWritten, secondsOf(elapsed), Double(meter.eventsWritten) / secondsOf(elapsed),
                        secondsOf(folded), largestBacklog, spooled ? "; SPOOLED (a write failed or timed out)" : ""))
            }
        }
    }

    /// Recomputes every draft of a period (the work `billing close` does before numbering).
    struct InvoiceRun: AsyncParsableCommand {
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Billing period, YYYY-MM.") var period: String

        func run() async throws {
            let started = ContinuousClock.now
            let drafts = try await BillingCommand.withTenant(tenant) { book, tenantID, connection in
                try await book.refreshDrafts(tenant: tenantID, period: period, on: connection)
            }
            print(String(format: "invoice run: %d draft invoices for %@ %@ in %.2f s", drafts, tenant, period, Bench.seconds(ContinuousClock.now - started)))
        }
    }
}

enum Bench {
    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
