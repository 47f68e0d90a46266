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
/// `spoolCapBytes` the spool takes no more: further batches are dropped and counted
/// (`tollgate_meter_dropped_total`) while the gateway keeps serving (see docs/ARCHITECTURE.md).
public final class UsageMeter: UsageSink, Service {
    public struct Configuration: Sendable {
        public var gateway: String
        public var spoolPath: String
        public var batchSize = 5_000
        public var flushInterval: Duration = .milliseconds(100)
        public var spoolCapBytes: Int64 = 1 << 30

        public init(gateway: String, spoolPath: String) {
            self.gateway = gateway
            self.spoolPath = spoolPath
        }
    }

    private struct State {
        var buffer: [UsageEvent] = []
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let configuration: Configuration
    private let writeBatch: @Sendable ([UsageEvent]) async throws -> Void
    private let prepare: @Sendable () async throws -> Void
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
        let gateway = configuration.gateway
        self.init(
            configuration: configuration, logger: logger, write: { try await store.write($0, gateway: gateway, client: client) },
            prepare: { try await store.preparePartitions(client: client) })
    }

    /// `write` stores one batch (idempotently); tests pass one that fails to play an outage.
    public init(
        configuration: Configuration, logger: Logger, write: @escaping @Sendable ([UsageEvent]) async throws -> Void,
        prepare: @escaping @Sendable () async throws -> Void = {}
    ) {
        self.configuration = configuration
        self.writeBatch = write
        self.prepare = prepare
        self.logger = logger
        self.spool = UsageSpool(path: configuration.spoolPath)
    }

    public func record(_ event: UsageEvent) {
        let wake = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.buffer.append(event)
            guard state.buffer.count >= configuration.batchSize, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        wake?.resume()
    }

    public func run() async throws {
        try? await prepare()
        await cancelWhenGracefulShutdown {
            var lastPartitionCheck = Date()
            while !Task.isCancelled {
                await self.waitForWork()
                await self.flush()
                if Date().timeIntervalSince(lastPartitionCheck) > 3600 {
                    try? await self.prepare()
                    lastPartitionCheck = Date()
                }
            }
        }
        // Graceful shutdown: everything buffered goes to Postgres or the spool.
        await flush()
    }

    /// Writes what is buffered (after replaying the spool); spools it if Postgres fails.
    public func flush() async {
        let batch = state.withLockedValue { state -> [UsageEvent] in
            defer { state.buffer.removeAll(keepingCapacity: true) }
            return state.buffer
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
            for chunk in stride(from: 0, to: batch.count, by: configuration.batchSize) {
                let part = Array(batch[chunk..<min(batch.count, chunk + configuration.batchSize)])
                try await writeBatch(part)
                written.increment(by: part.count)
            }
        } catch {
            logger.warning("meter cannot write to Postgres; spooling", metadata: ["events": "\(batch.count)", "error": "\(String(reflecting: error))"])
            append(toSpool: batch)
        }
    }

    /// Whether events wait in the spool for Postgres.
    public var isSpooling: Bool { spool.hasContent }

    /// Events buffered in memory right now.
    public var buffered: Int { state.withLockedValue { $0.buffer.count } }

    private func append(toSpool batch: [UsageEvent]) {
        guard !batch.isEmpty else { return }
        if spool.size + Int64(batch.count * 300) > configuration.spoolCapBytes {
            dropped.increment(by: batch.count)
            logger.error("meter spool is full; dropping events", metadata: ["events": "\(batch.count)"])
            return
        }
        do {
            try spool.append(batch)
            spooled.increment(by: batch.count)
        } catch {
            dropped.increment(by: batch.count)
            logger.error("meter cannot write its spool; dropping events", metadata: ["error": "\(error)"])
        }
        reportSpool()
    }

    private func replaySpool() async throws {
        let events = try spool.readAll()
        for chunk in stride(from: 0, to: events.count, by: configuration.batchSize) {
            let part = Array(events[chunk..<min(events.count, chunk + configuration.batchSize)])
            try await writeBatch(part)
            written.increment(by: part.count)
        }
        try spool.clear()
        logger.info("meter replayed its spool", metadata: ["events": "\(events.count)"])
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

/// The append-only spool file: one JSON-encoded event per line, fsync'd after each batch.
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

    func append(_ events: [UsageEvent]) throws {
        var data = Data()
        let encoder = JSONEncoder()
        for event in events {
            data.append(try encoder.encode(SpooledEvent(event)))
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

    func readAll() throws -> [UsageEvent] {
        try lock.withLock {
            guard let data = FileManager.default.contents(atPath: path) else { return [] }
            let decoder = JSONDecoder()
            // A torn last line (crash mid-append) is skipped; everything before it is intact.
            return data.split(separator: 0x0a).compactMap { try? decoder.decode(SpooledEvent.self, from: Data($0)).event }
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
