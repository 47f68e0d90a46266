import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle

/// The durable meter: the gateway records events here without blocking; a background task writes
/// them to Postgres in batches (every `flushInterval`, or sooner when `batchSize` are waiting).
///
/// When Postgres cannot be reached, a batch is appended to the spool file (one JSON event per line,
/// fsync'd per batch) and the spool is replayed in order, before newer events, once Postgres
/// answers again. Storage is idempotent on the event id, so a replay never double-counts.
/// Bounds: after SIGTERM everything buffered is written (or spooled); after `kill -9`, what was
/// buffered since the last flush — at most one `flushInterval` of calls — is lost. At
/// `spoolCapBytes` the spool takes no more events: further batches are dropped and counted
/// (`tollgate_meter_dropped_total`) while the gateway keeps serving (see docs/ARCHITECTURE.md).
///
/// Beside the events the meter keeps an `AnsweredTally`: running totals of the calls it was handed,
/// persisted with every batch (and spooled even at the cap, being tiny). The reconciliation compares
/// them with the stored events, so a lost event shows up as a difference instead of vanishing.
public final class UsageMeter: UsageSink, Service {
    public struct Configuration: Sendable {
        public var gateway: String
        public var spoolPath: String
        /// Buffered events that start a write before the flush interval is up.
        public var batchSize = 5_000
        /// The most events one write (one transaction) takes. A backlog — Postgres slower than the
        /// calls for a while — is written in chunks this large: more events share each rollup
        /// delta, so the meter catches up (with 10,000 busy subscriptions: 51,000 events/s against
        /// 31,000 with chunks of 10,000, docs/BENCHMARKS.md). Bounded so one write stays well
        /// inside `writeTimeout`: a write of 25,000 events on distinct rollup rows takes ~0.6 s.
        public var maxWriteEvents = 25_000
        /// Writes (transactions, each on its own connection) the meter keeps going at once. Two
        /// let Postgres use both cores of the bench machine while the meter prepares the next
        /// write; they touch no common rows (deltas are appended), so they never wait on each other.
        public var writesInFlight = 2
        public var flushInterval: Duration = .milliseconds(100)
        public var spoolCapBytes: Int64 = 1 << 30
        /// A write that takes longer counts as failed and its batch is spooled: Postgres' client
        /// queues queries while it cannot connect instead of failing them, which would otherwise
        /// hold every later batch in memory for the length of an outage. (Should the write still
        /// land, the replay is a no-op: storage is idempotent.) Long enough for the largest write
        /// on a busy machine, short enough that an outage is spooled within seconds.
        public var writeTimeout: Duration = .seconds(5)
        /// How often the meter folds the rollup deltas its writes appended into the rollups
        /// (`UsageStore.fold`). Readers that sum do not wait for it; it bounds how many deltas
        /// pile up. The meter stops waiting for a fold after `foldTimeout` (Postgres' client
        /// queues queries during an outage) and tries again at the next interval.
        public var foldInterval: Duration = .seconds(1)
        public var foldTimeout: Duration = .seconds(30)

        public init(gateway: String, spoolPath: String) {
            self.gateway = gateway
            self.spoolPath = spoolPath
        }
    }

    private struct State {
        var buffer: [UsageEvent] = []
        var written = 0
        var tally = AnsweredTally()
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let configuration: Configuration
    private let writeBatch: @Sendable (UsageBatch) async throws -> Void
    private let prepare: @Sendable () async throws -> Void
    private let fold: @Sendable () async throws -> Void
    private let logger: Logger
    private let state = NIOLockedValueBox(State())
    private let spool: UsageSpool
    private let written = Counter(label: "tollgate_meter_events_written_total")
    private let spooled = Counter(label: "tollgate_meter_events_spooled_total")
    private let dropped = Counter(label: "tollgate_meter_dropped_total")
    private let spoolBytes = Gauge(label: "tollgate_meter_spool_bytes")
    private let spoolAge = Gauge(label: "tollgate_meter_spool_oldest_age_seconds")

    public convenience init(configuration: Configuration, client: PostgresClient, logger: Logger) {
        let store = UsageStore(logger: logger)
        self.init(
            configuration: configuration, logger: logger, write: { try await store.write($0, client: client) },
            prepare: { try await store.preparePartitions(client: client) }, fold: { try await store.fold(client: client) })
    }

    /// `write` stores one batch (idempotently); tests pass one that fails to play an outage.
    public init(
        configuration: Configuration, logger: Logger, write: @escaping @Sendable (UsageBatch) async throws -> Void,
        prepare: @escaping @Sendable () async throws -> Void = {}, fold: @escaping @Sendable () async throws -> Void = {}
    ) {
        self.configuration = configuration
        self.writeBatch = write
        self.prepare = prepare
        self.fold = fold
        self.logger = logger
        self.spool = UsageSpool(path: configuration.spoolPath)
        self.meterID = configuration.gateway + "/" + UUID().uuidString.prefix(8).lowercased()
    }

    /// This process run's meter: the `gateway` of its events and the key of its tally.
    public let meterID: String

    public func record(_ event: UsageEvent) {
        let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.buffer.append(event)
            state.tally.count(event)
            guard state.buffer.count >= configuration.batchSize, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        wake?.resume()
    }

    public func run() async throws {
        try? await prepare()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                // on its own connection, beside the writes: folding never holds up a batch
                group.addTask { await self.foldPeriodically() }
                var lastPartitionCheck = Date()
                while !Task.isCancelled {
                    await self.waitForWork()
                    await self.flush()
                    if Date().timeIntervalSince(lastPartitionCheck) > 3600 {
                        try? await self.prepare()
                        lastPartitionCheck = Date()
                    }
                }
                group.cancelAll()
            }
        }
        // Graceful shutdown: everything buffered goes to Postgres or the spool, and what this
        // meter wrote is folded (should that fail, the next fold anywhere picks it up).
        await flush()
        try? await withTimeout(configuration.writeTimeout) { try await self.fold() }
    }

    private func foldPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.foldInterval)
            guard !Task.isCancelled else { return }
            do {
                try await withTimeout(configuration.foldTimeout) { try await self.fold() }
            } catch {
                logger.debug("meter cannot fold rollup deltas now", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }

    /// Writes what is buffered (after replaying the spool); spools it if Postgres fails.
    public func flush() async {
        let batch = state.withLockedValue { state -> UsageBatch in
            defer { state.buffer.removeAll(keepingCapacity: true) }
            return UsageBatch(meterID: meterID, events: state.buffer, answered: state.tally.takeChanged(meterID: meterID))
        }
        if spool.hasContent {
            do {
                try await replaySpool()
            } catch {
                append(toSpool: batch)
                return
            }
        }
        guard !batch.isEmpty else { return }
        do {
            try await write(batch)
            state.withLockedValue { $0.tally.forget(before: Date().addingTimeInterval(-7200)) }
        } catch {
            logger.warning("meter cannot write to Postgres; spooling", metadata: ["events": "\(batch.events.count)", "error": "\(String(reflecting: error))"])
            append(toSpool: batch)
        }
    }

    /// Writes in chunks (`UsageMeter.chunks`), up to `writesInFlight` at once; the tally goes
    /// with the first. Should any fail, the caller spools the whole batch: replaying the chunks
    /// that did land stores nothing twice.
    private func write(_ batch: UsageBatch) async throws {
        let ranges = Self.chunks(
            count: batch.events.count, smallest: configuration.batchSize / 2, largest: max(configuration.batchSize, configuration.maxWriteEvents),
            inFlight: configuration.writesInFlight)
        // Parts are cut as they are started, not all at once: a spool replay can hold millions of events.
        let lazyParts = (ranges.isEmpty ? [0..<0] : ranges).lazy.enumerated().map { index, range in
            UsageBatch(meterID: batch.meterID, events: Array(batch.events[range]), answered: index == 0 ? batch.answered : [])
        }
        try await withThrowingTaskGroup(of: Int.self) { group in
            var pending = lazyParts.makeIterator()
            for _ in 0..<max(1, configuration.writesInFlight) {
                guard let part = pending.next() else { break }
                group.addTask { try await self.write(part: part) }
            }
            while let count = try await group.next() {
                written.increment(by: count)
                state.withLockedValue { $0.written += count }
                if let part = pending.next() { group.addTask { try await self.write(part: part) } }
            }
        }
    }

    private func write(part: UsageBatch) async throws -> Int {
        try await withTimeout(configuration.writeTimeout) { try await self.writeBatch(part) }
        return part.events.count
    }

    /// How a flush of `count` events is cut into writes: none larger than `largest`, and, when
    /// each can still take at least `smallest`, at least `inFlight` of them, so that a steady
    /// load keeps that many writes (and Postgres backends) busy at once. Pure.
    static func chunks(count: Int, smallest: Int, largest: Int, inFlight: Int) -> [Range<Int>] {
        guard count > 0 else { return [] }
        let needed = (count + largest - 1) / max(1, largest)
        let parallel = min(max(1, inFlight), max(1, count / max(1, smallest)))
        let pieces = max(needed, parallel)
        let size = (count + pieces - 1) / pieces
        return stride(from: 0, to: count, by: size).map { $0..<min(count, $0 + size) }
    }

    struct WriteTimedOut: Error {}

    private func withTimeout(_ limit: Duration, _ body: @escaping @Sendable () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await body()
                return true
            }
            group.addTask {
                try await Task.sleep(for: limit)
                return false
            }
            defer { group.cancelAll() }
            guard try await group.next() == true else { throw WriteTimedOut() }
        }
    }

    /// Whether events wait in the spool for Postgres.
    public var isSpooling: Bool { spool.hasContent }

    /// Events this meter has written to Postgres (spool replays included).
    public var eventsWritten: Int { state.withLockedValue { $0.written } }

    /// Events buffered in memory right now.
    public var buffered: Int { state.withLockedValue { $0.buffer.count } }

    private func append(toSpool batch: UsageBatch) {
        guard !batch.isEmpty else { return }
        var batch = batch
        if spool.size + Int64(batch.events.count * 300) > configuration.spoolCapBytes {
            dropped.increment(by: batch.events.count)
            logger.error("meter spool is full; dropping events", metadata: ["events": "\(batch.events.count)"])
            batch.events = []
        }
        do {
            try spool.append(batch)
            spooled.increment(by: batch.events.count)
        } catch {
            dropped.increment(by: batch.events.count)
            logger.error("meter cannot write its spool; dropping events", metadata: ["error": "\(error)"])
        }
        reportSpool()
    }

    private func replaySpool() async throws {
        let spooled = try spool.readAll()
        // Tallies are running totals: the latest of each key is all that counts.
        try await write(UsageBatch(meterID: meterID, events: spooled.events, answered: AnsweredCount.latest(spooled.answered)))
        try spool.clear()
        logger.info("meter replayed its spool", metadata: ["events": "\(spooled.events.count)"])
        reportSpool()
    }

    private func reportSpool() {
        spoolBytes.record(spool.size)
        spoolAge.record(spool.oldest.map { Date().timeIntervalSince($0) } ?? 0)
    }

    private func waitForWork() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(for: self.configuration.flushInterval) }
            group.addTask {
                await withCheckedContinuation { continuation in
                    let ready = self.state.withLockedValue { state -> Bool in
                        if state.buffer.count >= self.configuration.batchSize { return true }
                        state.waiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
            await group.next()
            group.cancelAll()
            // release a waiter the timer beat
            let waiter = self.state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
            await group.waitForAll()
        }
    }
}

/// The append-only spool file: one JSON object per line — an event, or a tally total (which has an
/// `answered` field) — fsync'd after each batch.
final class UsageSpool: Sendable {
    let path: String
    private let lock = NIOLock()

    init(path: String) { self.path = path }

    var size: Int64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.int64Value ?? 0
    }

    var hasContent: Bool { size > 0 }

    /// When the oldest spooled batch was written (the file's creation time approximates it).
    var oldest: Date? {
        guard hasContent else { return nil }
        return (try? FileManager.default.attributesOfItem(atPath: path))?[.creationDate] as? Date
            ?? (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    func append(_ batch: UsageBatch) throws {
        var data = Data()
        let encoder = JSONEncoder()
        for event in batch.events {
            data.append(try encoder.encode(SpooledEvent(event)))
            data.append(0x0a)
        }
        for count in batch.answered {
            data.append(try encoder.encode(SpooledAnswered(count)))
            data.append(0x0a)
        }
        try lock.withLock {
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            guard fd >= 0 else { throw SpoolError.cannotOpen(errno) }
            defer { close(fd) }
            try data.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress!.advanced(by: offset), raw.count - offset)
                    guard n > 0 else { throw SpoolError.cannotWrite(errno) }
                    offset += n
                }
            }
            guard fsync(fd) == 0 else { throw SpoolError.cannotWrite(errno) }
        }
    }

    /// Everything spooled, in order. Tallies keep the meter id of the process run that counted
    /// them, so a restarted gateway replays them as what they were.
    func readAll() throws -> (events: [UsageEvent], answered: [AnsweredCount]) {
        try lock.withLock {
            guard let data = FileManager.default.contents(atPath: path) else { return ([], []) }
            let decoder = JSONDecoder()
            var events: [UsageEvent] = []
            var answered: [AnsweredCount] = []
            // A torn last line (crash mid-append) is skipped; everything before it is intact.
            for line in data.split(separator: 0x0a) {
                if let count = try? decoder.decode(SpooledAnswered.self, from: Data(line)) {
                    answered.append(count.count)
                } else if let event = try? decoder.decode(SpooledEvent.self, from: Data(line)) {
                    events.append(event.event)
                }
            }
            return (events, answered)
        }
    }

    func clear() throws {
        try lock.withLock {
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
        }
    }

    enum SpoolError: Error { case cannotOpen(Int32), cannotWrite(Int32) }
}

/// The spool's line format.
struct SpooledEvent: Codable {
    var id: UUID
    var at: Double
    var tenant: UUID
    var api: UUID?
    var app: UUID?
    var subscription: UUID?
    var plan: UUID?
    var method: String
    var status: Int
    var latency: Int64
    var bytesIn: Int64
    var bytesOut: Int64
    var rejection: String?
    var forwarded: Bool

    init(_ e: UsageEvent) {
        id = e.id
        at = e.at.timeIntervalSince1970
        tenant = e.tenantID
        api = e.apiID
        app = e.appID
        subscription = e.subscriptionID
        plan = e.planID
        method = e.method
        status = e.status
        latency = e.latencyMicroseconds
        bytesIn = e.bytesIn
        bytesOut = e.bytesOut
        rejection = e.rejection?.rawValue
        forwarded = e.forwarded
    }

    var event: UsageEvent {
        UsageEvent(
            id: id, at: Date(timeIntervalSince1970: at), tenantID: tenant, apiID: api, appID: app, subscriptionID: subscription, planID: plan, method: method,
            status: status, latencyMicroseconds: latency, bytesIn: bytesIn, bytesOut: bytesOut, rejection: rejection.flatMap(UsageEvent.Rejection.init),
            forwarded: forwarded)
    }
}

/// The spool's line format for a tally total.
struct SpooledAnswered: Codable {
    var meter: String
    var tenant: UUID
    var subscription: UUID?
    var hour: Double
    var answered: Int64
    var billable: Int64

    init(_ count: AnsweredCount) {
        meter = count.meterID
        tenant = count.tenantID
        subscription = count.subscriptionID
        hour = count.hour.timeIntervalSince1970
        answered = count.answered
        billable = count.billable
    }

    var count: AnsweredCount {
        AnsweredCount(
            meterID: meter, tenantID: tenant, subscriptionID: subscription, hour: Date(timeIntervalSince1970: hour), answered: answered, billable: billable)
    }
}
