/// The HTTP log sink's rules as a state machine, with no I/O and no clock of its own: records
/// queue in a bounded buffer, leave in batches (when a batch is full, or when the oldest queued
/// record has waited the flush interval), one batch is in flight at a time, a failed batch is
/// retried with exponential backoff and jitter, and given up after a bound. Every record that
/// leaves without being delivered is reported with its reason, so the driver can count it.
public struct LogBatcher: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Records queued at most (the batch in flight not counted); more are dropped.
        public var capacity: Int
        public var batchSize: Int
        public var flushNanoseconds: UInt64
        /// Sends of one batch at most (the first one included) before it is dropped.
        public var maxAttempts: Int
        public var baseBackoffNanoseconds: UInt64
        public var maxBackoffNanoseconds: UInt64

        public init(
            capacity: Int = 10_000, batchSize: Int = 500, flushNanoseconds: UInt64 = 5_000_000_000, maxAttempts: Int = 5,
            baseBackoffNanoseconds: UInt64 = 1_000_000_000, maxBackoffNanoseconds: UInt64 = 30_000_000_000
        ) {
            self.capacity = max(1, capacity)
            self.batchSize = max(1, batchSize)
            self.flushNanoseconds = flushNanoseconds
            self.maxAttempts = max(1, maxAttempts)
            self.baseBackoffNanoseconds = baseBackoffNanoseconds
            self.maxBackoffNanoseconds = max(baseBackoffNanoseconds, maxBackoffNanoseconds)
        }
    }

    /// Why records were dropped (the `reason` of `tollgate_gateway_log_records_dropped_total`).
    public enum DropReason: String, Sendable, CaseIterable {
        /// The buffer was full when the record came.
        case bufferFull = "buffer_full"
        /// The collector failed (5xx, 408, 429, no connection) on every attempt.
        case retriesExhausted = "retries_exhausted"
        /// The collector refused the batch for good (another 4xx): sending it again would not help.
        case rejected
        /// The gateway stopped before the records could be delivered.
        case shutdown
        /// The access log file could not be opened or written (the file sink's only failure).
        case writeFailed = "write_failed"
    }

    /// A batch and the number of times it was sent.
    public struct Batch: Sendable, Equatable {
        public var records: [String]
        public var attempts: Int
    }

    public enum Append: Sendable, Equatable {
        /// Queued; `wake` when the driver should look now (a batch just became full while idle).
        case queued(wake: Bool)
        case dropped
    }

    public enum Next: Sendable, Equatable {
        /// Send this batch now; report the result with `succeeded` or `failed`.
        case send(Batch)
        /// Nothing to do before this time (uptime nanoseconds).
        case wait(until: UInt64)
        /// Nothing queued, or a batch is being sent.
        case idle
    }

    public enum Failure: Sendable, Equatable {
        /// The batch is sent again once `next` says so, at `at`.
        case retry(at: UInt64)
        case dropped(count: Int, reason: DropReason)
    }

    private enum State: Sendable, Equatable {
        case ready
        case sending(Batch)
        case backingOff(Batch, until: UInt64)
    }

    public let limits: Limits
    private var queue: [String] = []
    private var head = 0
    /// When the oldest queued record came (uptime nanoseconds).
    private var oldestAt: UInt64 = 0
    private var state: State = .ready

    public init(limits: Limits) { self.limits = limits }

    /// Records waiting (not counting a batch in flight or backing off).
    public var queued: Int { queue.count - head }

    /// Records held: queued plus the batch in flight or waiting to be retried.
    public var depth: Int {
        switch state {
        case .ready: queued
        case .sending(let batch), .backingOff(let batch, _): queued + batch.records.count
        }
    }

    public mutating func append(_ record: String, now: UInt64) -> Append {
        guard queued < limits.capacity else { return .dropped }
        if queued == 0 { oldestAt = now }
        queue.append(record)
        return .queued(wake: queued == limits.batchSize && state == .ready)
    }

    public mutating func next(now: UInt64) -> Next {
        switch state {
        case .sending:
            return .idle
        case .backingOff(let batch, let until):
            guard now >= until else { return .wait(until: until) }
            return send(batch)
        case .ready:
            guard queued > 0 else { return .idle }
            let due = oldestAt.addingReportingOverflow(limits.flushNanoseconds)
            guard queued >= limits.batchSize || (!due.overflow && now >= due.partialValue) else { return .wait(until: due.overflow ? .max : due.partialValue) }
            return send(Batch(records: take(limits.batchSize, now: now), attempts: 0))
        }
    }

    private mutating func send(_ batch: Batch) -> Next {
        var batch = batch
        batch.attempts += 1
        state = .sending(batch)
        return .send(batch)
    }

    private mutating func take(_ count: Int, now: UInt64) -> [String] {
        let end = min(queue.count, head + count)
        let taken = Array(queue[head..<end])
        head = end
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.capacity <= 2 * limits.batchSize)
            head = 0
        } else if head >= limits.batchSize * 4 {
            // compact now and then rather than after every batch
            queue.removeFirst(head)
            head = 0
        }
        // what is left waited at most since the taken batch's oldest; start its clock anew
        if queued > 0 { oldestAt = now }
        return taken
    }

    /// The batch in flight arrived; returns how many records it held.
    public mutating func succeeded() -> Int {
        guard case .sending(let batch) = state else { return 0 }
        state = .ready
        return batch.records.count
    }

    /// The batch in flight failed. `retryable`: a 5xx, 408, 429 or a connection failure;
    /// `jitter` in 0..<1 spreads the wait (equal jitter: half fixed, half random).
    public mutating func failed(retryable: Bool, now: UInt64, jitter: Double) -> Failure {
        guard case .sending(let batch) = state else { return .dropped(count: 0, reason: .rejected) }
        guard retryable else {
            state = .ready
            return .dropped(count: batch.records.count, reason: .rejected)
        }
        guard batch.attempts < limits.maxAttempts else {
            state = .ready
            return .dropped(count: batch.records.count, reason: .retriesExhausted)
        }
        let wait = Self.backoff(attempt: batch.attempts, limits: limits, jitter: jitter)
        let at = now.addingReportingOverflow(wait)
        let until = at.overflow ? UInt64.max : at.partialValue
        state = .backingOff(batch, until: until)
        return .retry(at: until)
    }

    /// The wait after the `attempt`-th failed send: base × 2^(attempt−1), at most the maximum,
    /// then scaled into [½, 1) of that by `jitter`.
    public static func backoff(attempt: Int, limits: Limits, jitter: Double) -> UInt64 {
        let shift = min(max(attempt - 1, 0), 40)
        let grown = limits.baseBackoffNanoseconds.multipliedReportingOverflow(by: UInt64(1) << UInt64(shift))
        let capped = grown.overflow ? limits.maxBackoffNanoseconds : min(grown.partialValue, limits.maxBackoffNanoseconds)
        let unit = jitter.isFinite ? min(max(jitter, 0), 0.999_999) : 0
        return capped / 2 + UInt64(Double(capped / 2) * unit)
    }

    /// At shutdown: every record held but not in flight, a batch waiting for its retry first (a
    /// batch in flight stays: its send ends as it ends).
    public mutating func drainAll() -> [String] {
        var all: [String] = []
        if case .backingOff(let batch, _) = state {
            all = batch.records
            state = .ready
        }
        all += queue[head...]
        queue = []
        head = 0
        return all
    }
}
