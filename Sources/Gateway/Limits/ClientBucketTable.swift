/// The client's key in a `ClientBucketTable`: the address bytes, or a header value's bytes.
public struct ClientKey: Hashable, Sendable {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
}

/// Token buckets per client, at most `capacity` of them: when full, the least recently used client
/// is forgotten to make room. Pure value (time comes in as monotonic nanoseconds), no locks: the
/// caller serializes access. Forgetting a client only ever helps it (its bucket comes back full),
/// so the cap bounds memory at the price of precision for clients nobody has seen for a while.
///
/// The recency list lives in arrays (slot indices), so a call allocates nothing once the table
/// has grown to its working size.
public struct ClientBucketTable: Sendable {
    public let capacity: Int
    public let rate: Double
    public let burst: Int

    private struct Slot: Sendable {
        var key: ClientKey
        var bucket: TokenBucket
        var newer: Int
        var older: Int
    }

    private var slots: [Slot] = []
    private var index: [ClientKey: Int] = [:]
    /// Most recently used slot, and least recently used; -1 when empty.
    private var newest = -1
    private var oldest = -1
    public private(set) var evictions = 0

    public init(capacity: Int, rate: Double, burst: Int) {
        self.capacity = max(1, capacity)
        self.rate = rate
        self.burst = burst
    }

    public var count: Int { slots.count }

    public struct Outcome: Equatable, Sendable {
        public var decision: TokenBucket.Decision
        /// Seconds until the client's bucket is full again (the `t` of `RateLimit`).
        public var resetSeconds: Int
        /// Whether another client was forgotten to make room.
        public var evicted: Bool
    }

    /// Takes a token from the client's bucket (a new client starts with a full one).
    public mutating func take(_ key: ClientKey, now: UInt64) -> Outcome {
        var evicted = false
        let slot: Int
        if let known = index[key] {
            slot = known
            touch(slot)
        } else if slots.count < capacity {
            slot = slots.count
            slots.append(Slot(key: key, bucket: TokenBucket(rate: rate, burst: burst, now: now), newer: -1, older: -1))
            index[key] = slot
            pushNewest(slot)
        } else {
            // reuse the least recently used slot
            slot = oldest
            unlink(slot)
            index[slots[slot].key] = nil
            slots[slot].key = key
            slots[slot].bucket = TokenBucket(rate: rate, burst: burst, now: now)
            index[key] = slot
            pushNewest(slot)
            evictions += 1
            evicted = true
        }
        let decision = slots[slot].bucket.take(now: now)
        return Outcome(decision: decision, resetSeconds: slots[slot].bucket.secondsUntilFull(), evicted: evicted)
    }

    /// Whether the table remembers this client (tests; the gateway never asks).
    public func remembers(_ key: ClientKey) -> Bool { index[key] != nil }

    private mutating func touch(_ slot: Int) {
        guard slot != newest else { return }
        unlink(slot)
        pushNewest(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let newer = slots[slot].newer
        let older = slots[slot].older
        if newer >= 0 { slots[newer].older = older } else { newest = older }
        if older >= 0 { slots[older].newer = newer } else { oldest = newer }
        slots[slot].newer = -1
        slots[slot].older = -1
    }

    private mutating func pushNewest(_ slot: Int) {
        slots[slot].older = newest
        slots[slot].newer = -1
        if newest >= 0 { slots[newest].newer = slot }
        newest = slot
        if oldest < 0 { oldest = slot }
    }
}
