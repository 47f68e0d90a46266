import Billing
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One keep-alive connection to an upstream target.
final class UpstreamConnection {
    let channel: any Channel
    let key: String
    let handler: UpstreamResponseHandler

    init(channel: any Channel, key: String, handler: UpstreamResponseHandler) {
        self.channel = channel
        self.key = key
        self.handler = handler
    }
}

/// Upstream connections, load balancing and circuit breakers of one event loop. Only that loop
/// touches it, so nothing here locks; a request's client and upstream channels share the loop, so
/// no hop between loops happens on the hot path.
final class UpstreamPool {
    let eventLoop: any EventLoop
    let connectTimeout: TimeAmount
    let maxIdlePerTarget: Int
    private var idle: [String: [UpstreamConnection]] = [:]
    private var breakers: [String: CircuitBreaker] = [:]
    private var balancers: [UUID: ([UpstreamTargetConfig], WeightedRoundRobin)] = [:]

    init(eventLoop: any EventLoop, connectTimeout: TimeAmount, maxIdlePerTarget: Int = 128) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.maxIdlePerTarget = maxIdlePerTarget
    }

    /// The next target for the route by weighted round-robin over targets whose circuit admits a
    /// call, excluding `excluding` (the one that just failed, on a retry).
    func pick(_ route: Route, now: UInt64, excluding: String? = nil) -> UpstreamTargetConfig? {
        let targets = route.targets
        guard !targets.isEmpty else { return nil }
        var entry = balancers[route.apiID]
        if entry == nil || entry!.0 != targets { entry = (targets, WeightedRoundRobin(weights: targets.map(\.weight))) }
        var balancer = entry!.1
        let chosen = balancer.next { index in
            let key = targets[index].key
            return key != excluding && (breakers[key]?.isAvailable(now: now) ?? true)
        }
        balancers[route.apiID] = (targets, balancer)
        guard let chosen else { return nil }
        let target = targets[chosen]
        var breaker = breakers[target.key] ?? CircuitBreaker()
        guard breaker.allow(now: now) else { return nil }
        breakers[target.key] = breaker
        return target
    }

    func recordSuccess(_ key: String) {
        var breaker = breakers[key] ?? CircuitBreaker()
        let before = breaker.gaugeValue
        breaker.recordSuccess()
        breakers[key] = breaker
        if before != 0 { GatewayGauges.circuit(target: key, state: 0) }
    }

    func recordFailure(_ key: String, now: UInt64) {
        var breaker = breakers[key] ?? CircuitBreaker()
        let before = breaker.gaugeValue
        breaker.recordFailure(now: now)
        breakers[key] = breaker
        if before != breaker.gaugeValue { GatewayGauges.circuit(target: key, state: breaker.gaugeValue) }
    }

    func circuitStates() -> [(String, Int)] { breakers.map { ($0.key, $0.value.gaugeValue) } }

    /// An idle, open connection to the target, if there is one: the common case, with no future
    /// allocated. (Popped in place: copying the list out of the dictionary and back copied it.)
    func takeIdle(_ target: UpstreamTargetConfig) -> UpstreamConnection? {
        while let connection = idle[target.key]?.popLast() {
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    /// A new connection to the target.
    func connect(_ target: UpstreamTargetConfig) -> EventLoopFuture<UpstreamConnection> {
        let key = target.key
        let timeout = connectTimeout
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // raw bytes both ways: the proxy writes request heads itself and parses responses
                    try channel.pipeline.syncOperations.addHandler(UpstreamResponseHandler())
                }
            }
            .connect(host: target.host, port: target.port)
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: UpstreamResponseHandler.self)
                return UpstreamConnection(channel: channel, key: key, handler: handler)
            }
    }

    /// Returns a connection for reuse after a complete exchange.
    func release(_ connection: UpstreamConnection) {
        connection.handler.delegate = nil
        guard connection.channel.isActive, idle[connection.key, default: []].count < maxIdlePerTarget else {
            connection.channel.close(promise: nil)
            return
        }
        idle[connection.key, default: []].append(connection)
    }
}

/// The per-loop state of the data plane (pool, token cache), created once per event loop.
final class LoopState {
    let pool: UpstreamPool
    let tokenCache: TokenCache
    let metrics = GatewayMetrics()
    let deadlines: ResponseDeadlines
    let idle: IdleConnections
    private var random = BufferedRandom()

    /// A UUIDv7 for a request id or usage event.
    func newID() -> UUID { UUIDv7.make(using: &random) }

    init(pool: UpstreamPool, tokenCache: TokenCache, idleTimeout: TimeAmount) {
        self.pool = pool
        self.tokenCache = tokenCache
        self.deadlines = ResponseDeadlines(eventLoop: pool.eventLoop)
        self.idle = IdleConnections(eventLoop: pool.eventLoop, timeout: idleTimeout)
    }
}

/// Finds the loop state of an event loop; the lock is taken when a client connection is set up,
/// never per request.
final class LoopStates: Sendable {
    private let states = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<LoopState>]>([:])
    let connectTimeout: TimeAmount
    let idleTimeout: TimeAmount

    init(connectTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
    }

    func state(for eventLoop: any EventLoop) -> LoopState {
        let id = ObjectIdentifier(eventLoop)
        if let existing = states.withLockedValue({ $0[id] }) { return existing.value }
        let state = LoopState(pool: UpstreamPool(eventLoop: eventLoop, connectTimeout: connectTimeout), tokenCache: TokenCache(), idleTimeout: idleTimeout)
        states.withLockedValue { $0[id] = NIOLoopBound(state, eventLoop: eventLoop) }
        return state
    }
}

/// Hands an upstream's response bytes to the exchange that owns the connection.
final class UpstreamResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    weak var delegate: ProxyHandler?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let delegate {
            delegate.upstreamRead(unwrapInboundIn(data))
        } else {
            // Bytes nobody asked for: the connection is out of step; drop it.
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        delegate?.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        delegate?.upstreamWritabilityChanged(context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Random bits from the kernel's CSPRNG, read 4 KiB at a time instead of one system call per
/// value. For ids that must be unique (request and usage-event ids), not for secrets.
struct BufferedRandom: RandomNumberGenerator {
    private var words = [UInt64](repeating: 0, count: 512)
    private var position = 512

    mutating func next() -> UInt64 {
        if position == words.count {
            var system = SystemRandomNumberGenerator()
            words.withUnsafeMutableBytes { bytes in
                // one read of the kernel's CSPRNG fills the buffer; word by word if that fails
                let device = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
                let filled = device >= 0 ? read(device, bytes.baseAddress, bytes.count) : -1
                if device >= 0 { close(device) }
                if filled != bytes.count {
                    for index in 0..<bytes.count / 8 { bytes.storeBytes(of: system.next() as UInt64, toByteOffset: index * 8, as: UInt64.self) }
                }
            }
            position = 0
        }
        defer { position += 1 }
        return words[position]
    }
}

/// The response deadlines of one event loop's exchanges, checked by one sweep every 100 ms while
/// any are armed, instead of a scheduled task per request (scheduling and cancelling one per call
/// cost ~3 % of the gateway's CPU). A deadline fires up to one sweep late.
final class ResponseDeadlines {
    private struct Entry {
        weak var handler: ProxyHandler?
        let exchange: UInt64
        let deadline: UInt64
    }

    static let sweepInterval = TimeAmount.milliseconds(100)
    let eventLoop: any EventLoop
    private var entries: [Entry] = []
    private var sweepScheduled = false

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// `deadline` in `DispatchTime` uptime nanoseconds.
    func arm(_ handler: ProxyHandler, exchange: UInt64, deadline: UInt64) {
        entries.append(Entry(handler: handler, exchange: exchange, deadline: deadline))
        scheduleSweep()
    }

    private func scheduleSweep() {
        guard !sweepScheduled else { return }
        sweepScheduled = true
        eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: Self.sweepInterval) { [self] in
            sweepScheduled = false
            sweep(now: DispatchTime.now().uptimeNanoseconds)
        }
    }

    /// Drops entries whose exchange got its response (or is gone) and fires the expired ones.
    func sweep(now: UInt64) {
        var expired: [(ProxyHandler, UInt64)] = []
        entries.removeAll { entry in
            guard let handler = entry.handler, handler.isAwaitingResponse(exchange: entry.exchange) else { return true }
            if entry.deadline <= now {
                expired.append((handler, entry.exchange))
                return true
            }
            return false
        }
        for (handler, exchange) in expired { handler.responseDeadlinePassed(exchange: exchange) }
        if !entries.isEmpty { scheduleSweep() }
    }
}

/// The client connections of one event loop, checked for idleness by one sweep instead of an
/// `IdleStateHandler` in every pipeline (a handler hop on every read and write: ~2 % of the CPU).
/// The sweep runs every quarter of the timeout (at most every second), so a connection is closed
/// between 1× and 1.25× the timeout after its last activity.
final class IdleConnections {
    private struct Entry {
        weak var handler: ProxyHandler?
    }

    let eventLoop: any EventLoop
    let timeout: UInt64
    let interval: TimeAmount
    private var entries: [Entry] = []
    private var sweepScheduled = false

    init(eventLoop: any EventLoop, timeout: TimeAmount) {
        self.eventLoop = eventLoop
        self.timeout = UInt64(max(1, timeout.nanoseconds))
        self.interval = .nanoseconds(min(1_000_000_000, max(10_000_000, timeout.nanoseconds / 4)))
    }

    func register(_ handler: ProxyHandler) {
        entries.append(Entry(handler: handler))
        scheduleSweep()
    }

    private func scheduleSweep() {
        guard !sweepScheduled else { return }
        sweepScheduled = true
        eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: interval) { [self] in
            sweepScheduled = false
            sweep(now: DispatchTime.now().uptimeNanoseconds)
        }
    }

    func sweep(now: UInt64) {
        let timeout = self.timeout
        // collected first: closing a connection can call back into this loop's state
        let live = entries.compactMap(\.handler)
        entries.removeAll()
        for handler in live where !handler.closeIfIdle(now: now, timeout: timeout) { entries.append(Entry(handler: handler)) }
        if !entries.isEmpty { scheduleSweep() }
    }
}
