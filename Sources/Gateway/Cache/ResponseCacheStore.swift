import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// A kept response: the upstream's head as it came (the client writers and a response
/// transformation treat it like a fresh one) and its whole body.
struct CachedResponse: Sendable {
    var apiID: UUID
    /// The API's configuration when it was stored (`ResponseCachePolicy.fingerprint`): an entry of
    /// an older configuration is never served.
    var fingerprint: Int
    var status: Int
    var head: ByteBuffer
    var body: ByteBuffer
    /// Monotonic nanoseconds.
    var storedAt: UInt64
    var expiresAt: UInt64

    /// What the entry is charged against the store's byte bound (key and bookkeeping included).
    func cost(key: String) -> Int { head.readableBytes + body.readableBytes + key.utf8.count + 128 }
}

/// The cache's entries, least recently used first out, within a byte and an entry bound. Pure:
/// the recency list lives in arrays of slot indices, so a full table reuses its slots.
struct CacheTable {
    private struct Slot {
        var key: String
        var value: CachedResponse
        var cost: Int
        var previous: Int
        var next: Int
    }

    let maxBytes: Int
    let maxEntries: Int
    private var slots: [Slot] = []
    private var free: [Int] = []
    private var index: [String: Int] = [:]
    /// Most recently used first; -1 is "none".
    private var head = -1
    private var tail = -1
    private(set) var bytes = 0
    var count: Int { index.count }

    init(maxBytes: Int, maxEntries: Int) {
        self.maxBytes = max(1, maxBytes)
        self.maxEntries = max(1, maxEntries)
    }

    /// The fresh entry under `key` (marked most recently used); an expired one is dropped.
    mutating func get(_ key: String, now: UInt64) -> CachedResponse? {
        guard let slot = index[key] else { return nil }
        guard slots[slot].value.expiresAt > now else {
            remove(slot: slot)
            return nil
        }
        unlink(slot)
        pushFront(slot)
        return slots[slot].value
    }

    /// Stores (or replaces) an entry, evicting the least recently used until it fits; returns how
    /// many were evicted, or nil when the entry alone is over the byte bound.
    @discardableResult
    mutating func put(_ key: String, _ value: CachedResponse) -> Int? {
        let cost = value.cost(key: key)
        guard cost <= maxBytes else { return nil }
        if let existing = index[key] { remove(slot: existing) }
        var evicted = 0
        while (bytes + cost > maxBytes || index.count >= maxEntries), tail != -1 {
            remove(slot: tail)
            evicted += 1
        }
        let entry = Slot(key: key, value: value, cost: cost, previous: -1, next: -1)
        let slot: Int
        if let reused = free.popLast() {
            slots[reused] = entry
            slot = reused
        } else {
            slots.append(entry)
            slot = slots.count - 1
        }
        index[key] = slot
        bytes += cost
        pushFront(slot)
        return evicted
    }

    /// Drops every entry the predicate picks; returns how many.
    @discardableResult
    mutating func removeAll(where pick: (CachedResponse) -> Bool) -> Int {
        let doomed = index.values.filter { pick(slots[$0].value) }
        for slot in doomed { remove(slot: slot) }
        return doomed.count
    }

    /// Keys from most to least recently used (for tests).
    var keysByRecency: [String] {
        var keys: [String] = []
        var slot = head
        while slot != -1 {
            keys.append(slots[slot].key)
            slot = slots[slot].next
        }
        return keys
    }

    private mutating func remove(slot: Int) {
        unlink(slot)
        index[slots[slot].key] = nil
        bytes -= slots[slot].cost
        // drop the buffers now, not when the slot is reused
        slots[slot].key = ""
        slots[slot].value.head = ByteBuffer()
        slots[slot].value.body = ByteBuffer()
        slots[slot].cost = 0
        free.append(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let (previous, next) = (slots[slot].previous, slots[slot].next)
        if previous != -1 { slots[previous].next = next } else if head == slot { head = next }
        if next != -1 { slots[next].previous = previous } else if tail == slot { tail = previous }
        slots[slot].previous = -1
        slots[slot].next = -1
    }

    private mutating func pushFront(_ slot: Int) {
        slots[slot].next = head
        slots[slot].previous = -1
        if head != -1 { slots[head].previous = slot }
        head = slot
        if tail == -1 { tail = slot }
    }
}

/// The gateway's response cache: one per process (every event loop and both client protocols use
/// it), bounded in bytes and entries, behind one lock held only for a table operation. Counts
/// hits, misses, stores and evictions for metrics.
public final class ResponseCacheStore: Sendable {
    private let table: NIOLockedValueBox<CacheTable>
    private let hits: Counter
    private let misses: Counter
    private let stores: Counter
    private let evictions: Counter
    private let purges: Counter

    public static let defaultMaxBytes = 64 << 20
    public static let defaultMaxEntries = 100_000

    public init(maxBytes: Int = ResponseCacheStore.defaultMaxBytes, maxEntries: Int = ResponseCacheStore.defaultMaxEntries, metricsFactory: (any MetricsFactory)? = nil) {
        table = NIOLockedValueBox(CacheTable(maxBytes: maxBytes, maxEntries: maxEntries))
        let factory = metricsFactory ?? MetricsSystem.factory
        hits = Counter(label: "tollgate_gateway_cache_hits_total", factory: factory)
        misses = Counter(label: "tollgate_gateway_cache_misses_total", factory: factory)
        stores = Counter(label: "tollgate_gateway_cache_stores_total", factory: factory)
        evictions = Counter(label: "tollgate_gateway_cache_evictions_total", factory: factory)
        purges = Counter(label: "tollgate_gateway_cache_purged_total", factory: factory)
    }

    /// A fresh entry of the API's current configuration, counted as a hit; else a miss.
    func lookup(_ key: String, fingerprint: Int, now: UInt64) -> CachedResponse? {
        let found = table.withLockedValue { $0.get(key, now: now) }
        guard let found, found.fingerprint == fingerprint else {
            misses.increment()
            return nil
        }
        hits.increment()
        return found
    }

    func store(_ key: String, _ response: CachedResponse) {
        guard let evicted = table.withLockedValue({ $0.put(key, response) }) else { return }
        stores.increment()
        if evicted > 0 { evictions.increment(by: evicted) }
    }

    /// Drops an API's entries (its configuration changed, or a provider asked); returns how many.
    @discardableResult
    public func purge(api: UUID) -> Int {
        let count = table.withLockedValue { $0.removeAll { $0.apiID == api } }
        if count > 0 { purges.increment(by: count) }
        return count
    }

    /// Drops the entries of APIs whose configuration is no longer the current one (or that have
    /// no cache any more), after a snapshot load.
    public func retain(current fingerprints: [UUID: Int]) {
        let count = table.withLockedValue { $0.removeAll { fingerprints[$0.apiID] != $0.fingerprint } }
        if count > 0 { purges.increment(by: count) }
    }

    /// `retain(current:)` for the APIs in `apis` only (one tenant's part was reloaded): the other
    /// tenants' entries are not looked at by this load, so they stay.
    public func retain(current fingerprints: [UUID: Int], among apis: Set<UUID>) {
        guard !apis.isEmpty else { return }
        let count = table.withLockedValue { $0.removeAll { apis.contains($0.apiID) && fingerprints[$0.apiID] != $0.fingerprint } }
        if count > 0 { purges.increment(by: count) }
    }

    public var usage: (entries: Int, bytes: Int) { table.withLockedValue { ($0.count, $0.bytes) } }

    /// Records `tollgate_gateway_cache_entries` and `..._bytes`.
    public func recordGauges(factory: (any MetricsFactory)? = nil) {
        let (entries, bytes) = usage
        Gauge(label: "tollgate_gateway_cache_entries", factory: factory ?? MetricsSystem.factory).record(entries)
        Gauge(label: "tollgate_gateway_cache_bytes", factory: factory ?? MetricsSystem.factory).record(bytes)
    }
}
