import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle

/// The durable meter. The gateway hands it every answered call (`record`, on event loops, a
/// locked append); from there each event takes one path:
///
/// 1. **Spool** — a thread of the meter's own appends what was recorded to the write-ahead spool
///    (`WriteAheadSpool`) and fsyncs, every `durabilityInterval` (50 ms) or sooner under load. An
///    event is durable at most that long, plus one fsync, after its call was answered, whatever
///    Postgres is doing; `kill -9` loses at most that window.
/// 2. **Postgres** — a writer takes the spooled events in order and stores them (idempotent on the
///    event id), each write on a connection of the meter's own with a deadline that closes the
///    connection when it passes (`MeterConnection`). A segment of the spool is deleted only once
///    every event in it is confirmed. While Postgres is away the writer retries with backoff and the
///    spool grows; nothing waits on it.
///
/// Besides, a reporter writes, every second and on its own connection, what the meter was *handed*
/// (`AnsweredTally`) and that the run is alive (`meter_runs`) — a second path, so that the
/// reconciliation can compare the calls answered with the events stored. Each event is numbered
/// per tenant and UTC month (`EventSequences`): a lost event leaves a gap.
///
/// When the spool cannot take events (disk full, `spoolCapBytes`) they stay in memory for
/// Postgres, up to `memoryCapEvents`; beyond, with Postgres away too, they are dropped and counted
/// (`tollgate_meter_dropped_total`) — and show up in the reconciliation as missing numbers.
///
/// Graceful shutdown (after the gateway has drained its connections): spool what is left, write
/// the backlog within `shutdownTimeout`, report the run as ended. What could not be written stays
/// in the spool; the next meter started on the same directory replays it, as it replays the spool
/// of a run that was killed, and records that run as crashed.
public final class UsageMeter: UsageSink, Service {
    public struct Configuration: Sendable {
        public var gateway: String
        /// The spool's directory (one per gateway host; several gateway processes may share it).
        public var spoolDirectory: String
        /// How long a recorded event may wait in memory before it is appended to the spool.
        public var durabilityInterval: Duration = .milliseconds(50)
        /// Recorded events that start a spool append before the interval is up.
        public var batchSize = 5_000
        /// The most events one write (one transaction) takes. A backlog — Postgres slower than the
        /// calls for a while, or a replay — is written in chunks this large: more events share each
        /// rollup delta, so the meter catches up (docs/BENCHMARKS.md). Bounded so one write stays
        /// well inside `writeTimeout`: 25,000 events on distinct rollup rows take ~0.6 s.
        public var maxWriteEvents = 25_000
        /// Writes (transactions, each on its own connection) the meter keeps going at once.
        public var writesInFlight = 2
        /// A segment is closed for appends this long after it was opened, so that confirmed
        /// segments are deleted soon.
        public var segmentAge: TimeInterval = 1
        public var segmentEvents = 100_000
        public var spoolCapBytes: Int64 = 1 << 30
        /// Events kept in memory while they wait for Postgres (spooled ones are read back from disk
        /// beyond it; unspooled ones are dropped beyond it).
        public var memoryCapEvents = 500_000
        /// Every database operation of the meter ends within this, answered or not.
        public var writeTimeout: Duration = .seconds(5)
        public var retryDelay: Duration = .milliseconds(200)
        public var maxRetryDelay: Duration = .seconds(2)
        /// How often the answered tally and the run's heartbeat are written.
        public var reportInterval: Duration = .seconds(1)
        /// How often the meter folds the rollup deltas its writes appended into the rollups.
        public var foldInterval: Duration = .seconds(1)
        /// At shutdown, the time the writer has to store the backlog before it is left in the spool.
        public var shutdownTimeout: Duration = .seconds(10)

        public init(gateway: String, spoolDirectory: String) {
            self.gateway = gateway
            self.spoolDirectory = spoolDirectory
        }
    }

    /// How the meter is doing, for `/readyz` and metrics.
    public struct Status: Sendable, Equatable {
        public enum State: String, Sendable {
            /// Events reach Postgres as they come.
            case writing
            /// Postgres is not confirming; events wait in the spool.
            case spooling
            /// The spool refuses events too (full, or failing): events wait in memory or are dropped.
            case degraded
        }

        public var state: State
        public var oldestUnwrittenSeconds: Double
        public var spoolBytes: Int64
        public var spoolEvents: Int
        public var backlogEvents: Int
        public var lastWrite: Date?
        public var lastError: String?
        public var dropped: Int
    }

    private struct State {
        var buffer: [UsageEvent] = []
        var sequences = EventSequences()
        var tally = AnsweredTally()
        /// Totals taken from the tally that did not reach Postgres yet.
        var unreported: [AnsweredCount] = []
        var wakeRequested = false
        var backlog: MeterBacklog
        var writerWaiter: CheckedContinuation<Void, Never>?
        var written = 0
        var dropped = 0
        var spoolRefusing = false
        /// The refusal was the spool's cap (not a failing disk): it ends once confirmed segments
        /// are deleted and there is room again, even if no event comes to try.
        var spoolRefusedForCap = false
        var lastWrite: Date?
        var lastError: String?
        var stopping = false
        var stopDeadline = ContinuousClock.now
        var deadRuns: [WriteAheadSpool.DeadRun] = []
        var spoolClosed = false
    }

    /// What the reporter writes each interval.
    public struct Progress: Sendable {
        public var meterID: String
        public var gateway: String
        public var startedAt: Date
        public var answered: [AnsweredCount]
        /// The run ended cleanly (the last report of a graceful shutdown).
        public var ended: Bool
        /// Earlier runs found in the spool directory, all of whose events are stored now:
        /// (meter id, whether they ended cleanly).
        public var earlierRuns: [(meterID: String, clean: Bool)]
    }

    public let meterID: String
    private let configuration: Configuration
    private let writeBatch: @Sendable (UsageBatch) async throws -> Void
    private let reportProgress: @Sendable (Progress) async throws -> Void
    private let prepare: @Sendable () async throws -> Void
    private let fold: @Sendable () async throws -> Void
    private let closeConnections: @Sendable () async -> Void
    private let logger: Logger
    private let state: NIOLockedValueBox<State>
    private let spool: WriteAheadSpool?
    private let spoolWake = DispatchSemaphore(value: 0)
    private let spoolStopped = DispatchSemaphore(value: 0)
    private let spoolLock = NIOLock()
    private let startedAt = Date()
    private let written = Counter(label: "tollgate_meter_events_written_total")
    private let spooled = Counter(label: "tollgate_meter_events_spooled_total")
    private let dropped = Counter(label: "tollgate_meter_dropped_total")
    private let writeFailures = Counter(label: "tollgate_meter_write_failures_total")
    private let spoolBytesGauge = Gauge(label: "tollgate_meter_spool_bytes")
    private let spoolEventsGauge = Gauge(label: "tollgate_meter_spool_events")
    private let oldestGauge = Gauge(label: "tollgate_meter_oldest_unwritten_seconds")
    private let lastWriteGauge = Gauge(label: "tollgate_meter_last_write_timestamp_seconds")

    /// The meter as the gateway runs it: its own connections to `database`.
    public convenience init(configuration: Configuration, database: PostgresConnection.Configuration, logger: Logger) {
        let store = UsageStore(logger: logger)
        let writers = MeterConnections(configuration: database, logger: logger)
        let reporter = MeterConnection(configuration: database, logger: logger)
        let folder = MeterConnection(configuration: database, logger: logger)
        let limit = configuration.writeTimeout
        self.init(
            configuration: configuration, logger: logger,
            write: { batch in _ = try await writers.run(deadline: limit) { try await store.write(batch, on: $0) } },
            report: { progress in try await reporter.run(deadline: limit) { try await store.report(progress, on: $0) } },
            prepare: { try await folder.run(deadline: limit) { try await store.preparePartitions(on: $0) } },
            fold: { _ = try await folder.run(deadline: .seconds(30)) { try await store.fold(on: $0) } },
            close: {
                await writers.closeAll()
                await reporter.close()
                await folder.close()
            })
    }

    /// `write` stores one batch of events (idempotently) and `report` one progress report; tests
    /// pass ones that fail to play an outage.
    public init(
        configuration: Configuration, logger: Logger, write: @escaping @Sendable (UsageBatch) async throws -> Void,
        report: @escaping @Sendable (Progress) async throws -> Void = { _ in }, prepare: @escaping @Sendable () async throws -> Void = {},
        fold: @escaping @Sendable () async throws -> Void = {}, close: @escaping @Sendable () async -> Void = {}
    ) {
        self.closeConnections = close
        self.configuration = configuration
        self.writeBatch = write
        self.reportProgress = report
        self.prepare = prepare
        self.fold = fold
        self.logger = logger
        let meterID = configuration.gateway + "/" + UUID().uuidString.prefix(8).lowercased()
        self.meterID = meterID
        self.state = NIOLockedValueBox(State(backlog: MeterBacklog(memoryCap: configuration.memoryCapEvents)))
        do {
            spool = try WriteAheadSpool(directory: configuration.spoolDirectory, meterID: meterID, capBytes: configuration.spoolCapBytes)
        } catch {
            // Served anyway: events then wait in memory for Postgres (status "degraded").
            logger.error("meter cannot open its spool", metadata: ["directory": "\(configuration.spoolDirectory)", "error": "\(error)"])
            spool = nil
        }
    }

    // MARK: Recording (event loops)

    public func record(_ event: UsageEvent) {
        var event = event
        let (wake, late) = state.withLockedValue { state -> (Bool, Bool) in
            event.sequence = state.sequences.number(tenant: event.tenantID, at: event.at)
            state.tally.count(event)
            state.buffer.append(event)
            guard state.buffer.count >= configuration.batchSize, !state.wakeRequested else { return (false, state.spoolClosed) }
            state.wakeRequested = true
            return (true, state.spoolClosed)
        }
        if late {
            // After the spool thread stopped (a call answered during the last moments of a
            // shutdown): made durable here, on the caller's thread. Rare by construction.
            spoolBuffered()
        } else if wake {
            spoolWake.signal()
        }
    }

    // MARK: Running

    public func run() async throws {
        adoptEarlierRuns()
        startSpoolThread()
        let writer = Task { await self.writeLoop() }
        let reporter = Task { await self.reportLoop() }
        let folder = Task { await self.foldLoop() }
        let preparer = Task { await self.preparePeriodically() }
        try? await gracefulShutdown()
        // Not in this (possibly cancelled) task: the drain must not be cut short by its cancellation.
        await Task { await self.drain(writer: writer, reporter: reporter) }.value
        folder.cancel()
        preparer.cancel()
        _ = await folder.value
        _ = await preparer.value
        await closeConnections()
    }

    private func drain(writer: Task<Void, Never>, reporter: Task<Void, Never>) async {
        stopSpoolThread()
        spoolBuffered()
        state.withLockedValue { state in
            state.stopping = true
            state.stopDeadline = ContinuousClock.now + configuration.shutdownTimeout
        }
        wakeWriter()
        await writer.value
        await reporter.value
        spoolBuffered()
        if let spool, let last = spool.seal(), state.withLockedValue({ $0.backlog.seal(last) }) { spool.delete(last) }
        let status = self.status
        logger.info(
            "meter stopped",
            metadata: [
                "written": "\(eventsWritten)", "left_in_spool": "\(status.spoolEvents)", "dropped": "\(status.dropped)",
            ])
    }

    // MARK: The spool thread

    private func startSpoolThread() {
        let thread = Thread { [self] in
            while true {
                let interval = configuration.durabilityInterval.components
                _ = spoolWake.wait(timeout: .now() + .nanoseconds(Int(interval.seconds) * 1_000_000_000 + Int(interval.attoseconds / 1_000_000_000)))
                let stop = state.withLockedValue { state -> Bool in
                    state.wakeRequested = false
                    return state.spoolClosed
                }
                spoolBuffered()
                if stop { break }
            }
            spoolStopped.signal()
        }
        thread.name = "tollgate-meter-spool"
        thread.start()
    }

    private func stopSpoolThread() {
        state.withLockedValue { $0.spoolClosed = true }
        spoolWake.signal()
        spoolStopped.wait()
    }

    /// Appends what was recorded to the spool (fsync'd) and hands it to the writer.
    private func spoolBuffered() {
        spoolLock.withLock {
            let events = state.withLockedValue { state -> [UsageEvent] in
                defer { state.buffer.removeAll(keepingCapacity: true) }
                return state.buffer
            }
            if !events.isEmpty {
                var chunk = MeterBacklog.Chunk(meterID: meterID, segment: nil, first: 0, count: events.count, events: events, oldest: events[0].at)
                var refusal: (any Error)?
                if let spool {
                    do {
                        let place = try spool.append(events)
                        chunk.segment = place.segment
                        chunk.first = place.first
                        spooled.increment(by: events.count)
                    } catch {
                        refusal = error
                    }
                }
                let (kept, wasRefusing) = state.withLockedValue { state -> (Bool, Bool) in
                    let was = state.spoolRefusing
                    state.spoolRefusing = chunk.segment == nil
                    if case .full = refusal as? WriteAheadSpool.SpoolError { state.spoolRefusedForCap = true } else { state.spoolRefusedForCap = false }
                    let kept = state.backlog.add(chunk)
                    if !kept { state.dropped += events.count }
                    return (kept, was)
                }
                if let refusal, !wasRefusing {
                    logger.error("meter spool refuses events; they wait in memory for Postgres", metadata: ["error": "\(refusal)"])
                }
                if !kept {
                    dropped.increment(by: events.count)
                    logger.error("meter cannot keep events: the spool refuses them and memory is full", metadata: ["events": "\(events.count)"])
                }
                wakeWriter()
            }
            if let spool, let sealed = spool.sealIfDue(maxEvents: configuration.segmentEvents, maxAge: configuration.segmentAge),
                state.withLockedValue({ $0.backlog.seal(sealed) })
            {
                spool.delete(sealed)
            }
        }
        reportGauges()
    }

    /// Spool segments of runs that are gone (killed, or stopped while Postgres was away) go first.
    private func adoptEarlierRuns() {
        guard let spool else { return }
        for dead in spool.deadRuns() {
            var total = 0
            for segment in dead.segments {
                spool.adopt(segment)
                guard let contents = try? spool.read(segment) else { continue }
                if contents.torn { logger.warning("meter spool segment ends in a torn record (a crash mid-append); the intact records are replayed") }
                guard !contents.events.isEmpty else {
                    spool.delete(segment)
                    continue
                }
                let chunk = MeterBacklog.Chunk(
                    meterID: contents.meterID, segment: segment, first: 0, count: contents.events.count, events: contents.events, oldest: contents.events[0].at)
                state.withLockedValue { state in
                    _ = state.backlog.add(chunk)
                    _ = state.backlog.seal(segment)
                }
                total += contents.events.count
            }
            state.withLockedValue { state in
                state.deadRuns.append(dead)
                state.unreported = AnsweredCount.latest(state.unreported + dead.tally)
            }
            logger.info(
                "meter adopts the spool of an earlier run", metadata: ["run": "\(dead.meterID)", "events": "\(total)", "ended": "\(dead.endedCleanly ? "clean" : "crashed")"])
        }
    }

    // MARK: The writer

    private func writeLoop() async {
        var delay = configuration.retryDelay
        while true {
            let (work, stop) = state.withLockedValue { state -> ([MeterBacklog.Chunk], Bool) in
                let overdue = state.stopping && ContinuousClock.now >= state.stopDeadline
                return (overdue ? [] : state.backlog.takeForWrite(maxEvents: configuration.maxWriteEvents), state.stopping)
            }
            if work.isEmpty {
                if stop { return }
                await waitForBacklog()
                continue
            }
            do {
                for batch in try load(work) { try await write(batch) }
                let deletable = state.withLockedValue { state -> [WriteAheadSpool.Segment] in
                    state.lastWrite = Date()
                    state.lastError = nil
                    return state.backlog.confirmInFlight()
                }
                for segment in deletable { spool?.delete(segment) }
                if let spool, spool.bytes < spool.capBytes {
                    state.withLockedValue { state in
                        if state.spoolRefusing && state.spoolRefusedForCap { (state.spoolRefusing, state.spoolRefusedForCap) = (false, false) }
                    }
                }
                delay = configuration.retryDelay
                reportGauges()
            } catch {
                writeFailures.increment()
                let text = DatabaseErrorText.describe(error)
                let firstFailure = state.withLockedValue { state -> Bool in
                    state.backlog.failInFlight()
                    defer { state.lastError = text }
                    return state.lastError == nil
                }
                if firstFailure { logger.warning("meter cannot write to Postgres; events wait in the spool", metadata: ["error": "\(text)"]) }
                reportGauges()
                // at shutdown one failure is enough: the spool keeps the rest for the next run
                if stop { return }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, configuration.maxRetryDelay)
            }
        }
    }

    /// The chunks' events as batches per meter run, read back from the spool where not in memory.
    private func load(_ chunks: [MeterBacklog.Chunk]) throws -> [UsageBatch] {
        var batches: [UsageBatch] = []
        var segmentCache: (WriteAheadSpool.Segment, [UsageEvent])?
        for chunk in chunks {
            var events = chunk.events ?? []
            if chunk.events == nil, let segment = chunk.segment, let spool {
                if segmentCache?.0 != segment { segmentCache = (segment, try spool.read(segment).events) }
                let all = segmentCache?.1 ?? []
                let range = min(chunk.first, all.count)..<min(chunk.first + chunk.count, all.count)
                events = Array(all[range])
                if range.count < chunk.count {
                    logger.error("meter spool segment lost events (torn or removed)", metadata: ["missing": "\(chunk.count - range.count)"])
                }
            }
            if let last = batches.last, last.meterID == chunk.meterID {
                batches[batches.count - 1].events += events
            } else {
                batches.append(UsageBatch(meterID: chunk.meterID, events: events))
            }
        }
        return batches
    }

    /// Writes in chunks (`UsageMeter.chunks`), up to `writesInFlight` at once. Should any fail, the
    /// whole batch is tried again later: the chunks that did land are skipped then (idempotent).
    private func write(_ batch: UsageBatch) async throws {
        let ranges = Self.chunks(
            count: batch.events.count, smallest: configuration.batchSize / 2, largest: max(configuration.batchSize, configuration.maxWriteEvents),
            inFlight: configuration.writesInFlight)
        let lazyParts = ranges.lazy.map { UsageBatch(meterID: batch.meterID, events: Array(batch.events[$0])) }
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
        let write = writeBatch
        try await Deadline.run(configuration.writeTimeout) { try await write(part) }
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

    private func waitForBacklog() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLockedValue { state -> Bool in
                if !state.backlog.isEmpty || state.stopping { return true }
                state.writerWaiter = continuation
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func wakeWriter() {
        state.withLockedValue { state in
            defer { state.writerWaiter = nil }
            return state.writerWaiter
        }?.resume()
    }

    // MARK: The reporter

    private func reportLoop() async {
        while true {
            let stopping = await sleepUnlessStopping(configuration.reportInterval)
            if stopping {
                // after the writer: the last report can say whether everything was stored
                let clean = state.withLockedValue { $0.backlog.isEmpty }
                let reported = await report(ended: true)
                if !reported { spool?.keepTally(state.withLockedValue { $0.unreported }) }
                spool?.markEnded(reported: reported && clean)
                return
            }
            _ = await report(ended: false)
        }
    }

    /// Writes the tally totals that changed and the run's heartbeat; true when Postgres took them.
    private func report(ended: Bool) async -> Bool {
        let (answered, earlier) = state.withLockedValue { state -> ([AnsweredCount], [WriteAheadSpool.DeadRun]) in
            let taken = state.tally.takeChanged(meterID: meterID)
            state.unreported = AnsweredCount.latest(state.unreported + taken)
            let done = state.deadRuns.filter { !state.backlog.holds(run: $0.run) }
            return (state.unreported, done)
        }
        let progress = Progress(
            meterID: meterID, gateway: configuration.gateway, startedAt: startedAt, answered: answered, ended: ended,
            earlierRuns: earlier.map { ($0.meterID, $0.endedCleanly) })
        do {
            let report = reportProgress
            try await Deadline.run(configuration.writeTimeout) { try await report(progress) }
            state.withLockedValue { state in
                state.unreported = []
                state.deadRuns.removeAll { dead in earlier.contains { $0.run == dead.run } }
                state.tally.forget(before: Date().addingTimeInterval(-7200))
                state.sequences.forget(before: Date().addingTimeInterval(-86_400))
            }
            for dead in earlier { spool?.forget(dead) }
            return true
        } catch {
            logger.debug("meter cannot report its progress now", metadata: ["error": "\(DatabaseErrorText.describe(error))"])
            return false
        }
    }

    /// Sleeps for `duration` or until the drain begins; true when it began.
    private func sleepUnlessStopping(_ duration: Duration) async -> Bool {
        let step = Duration.milliseconds(50)
        var slept = Duration.zero
        while slept < duration {
            if state.withLockedValue({ $0.stopping }) {
                // the writer goes first; wait until it is done or gave up
                while state.withLockedValue({ !$0.backlog.isEmpty && $0.stopping && ContinuousClock.now < $0.stopDeadline && $0.lastError == nil }) {
                    try? await Task.sleep(for: step)
                }
                return true
            }
            try? await Task.sleep(for: step)
            slept += step
        }
        return state.withLockedValue { $0.stopping }
    }

    // MARK: Background upkeep

    private func foldLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.foldInterval)
            guard !Task.isCancelled else { return }
            do {
                try await fold()
            } catch {
                logger.debug("meter cannot fold rollup deltas now", metadata: ["error": "\(DatabaseErrorText.describe(error))"])
            }
        }
    }

    private func preparePeriodically() async {
        while !Task.isCancelled {
            do {
                try await prepare()
                try? await Task.sleep(for: .seconds(3600))
            } catch {
                try? await Task.sleep(for: .seconds(10))
            }
        }
    }

    // MARK: Status

    public var status: Status {
        let bytes = spool?.bytes ?? 0
        return state.withLockedValue { state in
            let oldest = min(state.backlog.oldest ?? .distantFuture, state.buffer.first?.at ?? .distantFuture)
            let unwritten = state.backlog.events
            return Status(
                state: state.spoolRefusing ? .degraded : (unwritten > 0 && state.lastError != nil ? .spooling : .writing),
                oldestUnwrittenSeconds: oldest == .distantFuture ? 0 : max(0, Date().timeIntervalSince(oldest)), spoolBytes: bytes,
                spoolEvents: state.backlog.spooledEvents, backlogEvents: unwritten + state.buffer.count, lastWrite: state.lastWrite,
                lastError: state.lastError, dropped: state.dropped)
        }
    }

    /// The meter's part of `/readyz`: state, oldest unwritten event, spool size, last write, cause.
    public var readinessJSON: String? {
        let status = self.status
        let lastWrite = status.lastWrite.map { "\"" + ISO8601DateFormatter().string(from: $0) + "\"" } ?? "null"
        let error = status.lastError.map { text -> String in
            let escaped = text.prefix(300).replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: " ")
            return "\"" + escaped + "\""
        } ?? "null"
        return String(
            format: "{\"state\":\"%@\",\"oldest_unwritten_seconds\":%.3f,\"spool_bytes\":%lld,\"spool_events\":%ld,\"backlog_events\":%ld,\"dropped\":%ld,\"last_write\":%@,\"last_error\":%@}",
            status.state.rawValue, status.oldestUnwrittenSeconds, status.spoolBytes, status.spoolEvents, status.backlogEvents, status.dropped, lastWrite, error)
    }

    /// Whether events wait in the spool for Postgres.
    public var isSpooling: Bool { status.spoolEvents > 0 }

    /// Events this meter has written to Postgres (spool replays included).
    public var eventsWritten: Int { state.withLockedValue { $0.written } }

    /// Events recorded and not yet written.
    public var buffered: Int { status.backlogEvents }

    private func reportGauges() {
        let status = self.status
        spoolBytesGauge.record(status.spoolBytes)
        spoolEventsGauge.record(status.spoolEvents)
        oldestGauge.record(status.oldestUnwrittenSeconds)
        if let last = status.lastWrite { lastWriteGauge.record(last.timeIntervalSince1970) }
    }
}
