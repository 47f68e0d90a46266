/// Per-target circuit breaker, which doubles as the passive health check: after
/// `failureThreshold` consecutive failures the target is ejected (open: calls fail fast); after
/// `openNanoseconds` one trial call is let through (half-open); its success closes the circuit,
/// its failure opens it again. Pure value; the caller supplies monotonic time.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: Equatable, Sendable {
        case closed(consecutiveFailures: Int)
        case open(until: UInt64)
        case halfOpen(trialInFlight: Bool)
    }

    public let failureThreshold: Int
    public let openNanoseconds: UInt64
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    public init(failureThreshold: Int = 5, openNanoseconds: UInt64 = 10_000_000_000) {
        self.failureThreshold = max(1, failureThreshold)
        self.openNanoseconds = openNanoseconds
    }

    /// Whether a call may go to this target now (marks the half-open trial as taken).
    public mutating func allow(now: UInt64) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen(trialInFlight: true)
            return true
        case .halfOpen(let busy):
            guard !busy else { return false }
            state = .halfOpen(trialInFlight: true)
            return true
        }
    }

    /// Whether the target would be chosen now, without taking the trial.
    public func isAvailable(now: UInt64) -> Bool {
        switch state {
        case .closed: true
        case .open(let until): now >= until
        case .halfOpen(let busy): !busy
        }
    }

    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    public mutating func recordFailure(now: UInt64) {
        switch state {
        case .closed(let failures):
            state = failures + 1 >= failureThreshold ? .open(until: now + openNanoseconds) : .closed(consecutiveFailures: failures + 1)
        case .halfOpen, .open:
            state = .open(until: now + openNanoseconds)
        }
    }

    /// Whether a pool may drop this breaker (a fresh one takes its place at the next call) without
    /// a caller noticing: closed without failures, or an ejection over for at least `grace`
    /// nanoseconds — the target has been open to a trial call that long and none came. A count of
    /// failures below the threshold or a trial under way is kept.
    public func isForgettable(now: UInt64, after grace: UInt64) -> Bool {
        switch state {
        case .closed(let failures): failures == 0
        case .open(let until): now >= until && now - until >= grace
        case .halfOpen: false
        }
    }

    /// 0 closed, 1 half-open, 2 open (the `tollgate_gateway_circuit_state` gauge).
    public var gaugeValue: Int {
        switch state {
        case .closed: 0
        case .halfOpen: 1
        case .open: 2
        }
    }
}

/// Smooth weighted round-robin (as nginx does it): over a run of Σweights picks, each target is
/// chosen in proportion to its weight, interleaved rather than in blocks. Unavailable targets are
/// skipped. Pure; one per route per event loop.
public struct WeightedRoundRobin: Sendable, Equatable {
    public let weights: [Int]
    private var current: [Int]

    public init(weights: [Int]) {
        self.weights = weights.map { max(1, $0) }
        current = Array(repeating: 0, count: weights.count)
    }

    /// The index of the next target among those `available` returns true for, or nil if none.
    public mutating func next(available: (Int) -> Bool) -> Int? {
        var total = 0
        var best: Int?
        for index in weights.indices where available(index) {
            current[index] += weights[index]
            total += weights[index]
            if best == nil || current[index] > current[best!] { best = index }
        }
        guard let best else { return nil }
        current[best] -= total
        return best
    }
}
