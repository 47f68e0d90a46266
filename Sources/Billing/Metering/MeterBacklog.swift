import Foundation

/// What the meter has made durable and Postgres has not confirmed yet, in order. Pure value; the
/// meter guards it with its lock and does the I/O its answers call for.
///
/// Events arrive in chunks (one per spool append). A chunk names the spool segment holding it, or
/// none when the spool refused it (full disk, cap): such a chunk lives only in memory, bounded by
/// `memoryCap`. Above that bound spooled chunks give up their in-memory copy and are read back from
/// their segment when their turn comes. A segment may be deleted once it is sealed and every chunk
/// in it is confirmed.
struct MeterBacklog {
    struct Chunk: Equatable {
        var meterID: String
        var segment: WriteAheadSpool.Segment?
        /// Index of the chunk's first event within its segment.
        var first: Int
        var count: Int
        /// nil: on disk only.
        var events: [UsageEvent]?
        /// When its oldest event was recorded.
        var oldest: Date
    }

    let memoryCap: Int
    private(set) var chunks: [Chunk] = []
    private var head = 0
    /// Chunks at the head handed out by `takeForWrite` and not yet confirmed or failed.
    private(set) var inFlight = 0
    private var unconfirmed: [WriteAheadSpool.Segment: Int] = [:]
    private var sealed: Set<WriteAheadSpool.Segment> = []
    private(set) var eventsInMemory = 0
    private(set) var events = 0
    private(set) var spooledEvents = 0

    init(memoryCap: Int) { self.memoryCap = max(0, memoryCap) }

    var isEmpty: Bool { head == chunks.count }
    var oldest: Date? { isEmpty ? nil : chunks[head].oldest }

    /// Adds a chunk; false when it exists only in memory and memory is full (the caller drops it
    /// and counts the loss).
    mutating func add(_ chunk: Chunk) -> Bool {
        var chunk = chunk
        if let held = chunk.events, eventsInMemory + held.count > memoryCap {
            guard chunk.segment != nil else { return false }
            chunk.events = nil
        }
        eventsInMemory += chunk.events?.count ?? 0
        events += chunk.count
        if let segment = chunk.segment {
            unconfirmed[segment, default: 0] += 1
            spooledEvents += chunk.count
        }
        chunks.append(chunk)
        return true
    }

    /// The chunks of the next write: from the head, until they hold `maxEvents` (at least one).
    mutating func takeForWrite(maxEvents: Int) -> [Chunk] {
        guard inFlight == 0, !isEmpty else { return [] }
        var taken: [Chunk] = []
        var total = 0
        var index = head
        while index < chunks.count, taken.isEmpty || total + chunks[index].count <= maxEvents {
            taken.append(chunks[index])
            total += chunks[index].count
            index += 1
        }
        inFlight = taken.count
        return taken
    }

    /// The write of the in-flight chunks landed; returns the segments that may now be deleted.
    mutating func confirmInFlight() -> [WriteAheadSpool.Segment] {
        var deletable: [WriteAheadSpool.Segment] = []
        for chunk in chunks[head..<head + inFlight] {
            eventsInMemory -= chunk.events?.count ?? 0
            events -= chunk.count
            guard let segment = chunk.segment else { continue }
            spooledEvents -= chunk.count
            let left = (unconfirmed[segment] ?? 1) - 1
            unconfirmed[segment] = left == 0 ? nil : left
            if left == 0, sealed.contains(segment) {
                sealed.remove(segment)
                deletable.append(segment)
            }
        }
        head += inFlight
        inFlight = 0
        if head > 1024 && head * 2 > chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        return deletable
    }

    /// The write failed; the chunks stay at the head for the next try.
    mutating func failInFlight() { inFlight = 0 }

    /// A segment was closed for appends; true when it may be deleted at once (nothing in it waits).
    mutating func seal(_ segment: WriteAheadSpool.Segment) -> Bool {
        guard unconfirmed[segment] != nil else { return true }
        sealed.insert(segment)
        return false
    }

    /// Whether chunks of `run` still wait (a dead run is reported once they are all written).
    func holds(run: String) -> Bool { chunks[head...].contains { $0.segment?.run == run } }
}

/// Numbers a meter's events per tenant and UTC month: 1, 2, 3, … with no gaps, so that the
/// reconciliation of a tenant's month can tell a lost event from the numbers alone. Pure.
struct EventSequences {
    private struct Key: Hashable {
        let tenant: UUID
        let month: Int64
    }

    private var next: [Key: Int64] = [:]
    private var month: (start: Int64, end: Int64) = (0, 0)

    /// Assigned numbers per tenant and month (`UsageStore.none` stands for no subscription).
    mutating func number(tenant: UUID, at date: Date) -> Int64 {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let start: Int64
        if seconds >= month.start && seconds < month.end {
            start = month.start
        } else {
            let utc = UTCMonth(containing: date)
            let bounds = (Int64(utc.startSeconds), Int64(utc.next.startSeconds))
            // the month of most calls is cached; a late call of last month does not move it
            if seconds >= month.end { month = bounds }
            start = bounds.0
        }
        // one hash lookup: this runs for every call, on the event loop, under the meter's lock
        return Self.increment(&next[Key(tenant: tenant, month: start), default: 0])
    }

    private static func increment(_ value: inout Int64) -> Int64 {
        value += 1
        return value
    }

    /// Forgets months that ended before `date` (no calls for them arrive any more).
    mutating func forget(before date: Date) {
        let limit = Int64(date.timeIntervalSince1970)
        next = next.filter { $0.key.month + 32 * 86_400 > limit }
    }
}
