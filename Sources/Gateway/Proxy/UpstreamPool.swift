import Billing
import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// One keep-alive connection to an upstream target, or one stream of a multiplexed HTTP/2
/// connection to an `h2` target (which carries one exchange and is never reused).
final class UpstreamConnection {
    let channel: any Channel
    let key: String
    let handler: UpstreamResponseHandler
    let isStream: Bool
    /// When it last went back to the idle list (uptime nanoseconds): the idle sweep closes it once
    /// it has waited there for the pool's idle timeout.
    var idleSince: UInt64 = 0

    init(channel: any Channel, key: String, handler: UpstreamResponseHandler, isStream: Bool = false) {
        self.channel = channel
        self.key = key
        self.handler = handler
        self.isStream = isStream
    }
}

/// Upstream connections, load balancing and circuit breakers of one event loop. Only that loop
/// touches it, so nothing here locks; a request's client and upstream channels share the loop, so
/// no hop between loops happens on the hot path.
///
/// Idle connections are closed after `idleTimeout` (nginx's upstream `keepalive_timeout`, Envoy's
/// `idle_timeout`) by a `LoopSweep` that visits the pool while it holds anything (`sweepIdle`),
/// which also forgets the keys that have nothing left — so nothing is armed or cancelled per call:
/// a release stamps the time, the sweep compares.
final class UpstreamPool {
    let eventLoop: any EventLoop
    let connectTimeout: TimeAmount
    /// An idle connection is closed once it has waited this long (nanoseconds) for a call.
    let idleTimeout: UInt64
    let maxIdlePerTarget: Int
    /// Bound on the pool keys with an idle list. A list outlives its key when a snapshot drops the
    /// target or changes the TLS settings it is reached with (a new key): nobody takes from it
    /// again, so past the bound such lists are pruned (see `release`).
    let maxIdleTargets: Int
    private let connector: UpstreamConnector
    /// Lists and balancers are classes held by the dictionaries and changed through a lookup:
    /// changing a value in place through a dictionary subscript runs an accessor coroutine whose
    /// frame was a heap allocation (three per call for the idle list, and the balancer's weights
    /// were copied on every pick).
    private final class IdleList {
        var connections: [UpstreamConnection] = []
    }

    private final class Balancer {
        let targets: [UpstreamTargetConfig]
        var roundRobin: WeightedRoundRobin

        init(targets: [UpstreamTargetConfig]) {
            self.targets = targets
            self.roundRobin = WeightedRoundRobin(weights: targets.map(\.weight))
        }
    }

    private var idle: [String: IdleList] = [:]
    private var breakers: [String: CircuitBreaker] = [:]
    private var balancers: [UUID: Balancer] = [:]
    /// Visits the pool (held weakly) while `sweeping`: from the first list or balancer made until a
    /// visit leaves nothing.
    private let sweep: LoopSweep<UpstreamPool, Void>
    private var sweeping = false

    init(
        eventLoop: any EventLoop, connectTimeout: TimeAmount, idleTimeout: TimeAmount = .seconds(60), maxIdlePerTarget: Int = 128,
        maxIdleTargets: Int = 1_024
    ) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.idleTimeout = UInt64(max(1, idleTimeout.nanoseconds))
        self.sweep = LoopSweep(eventLoop: eventLoop, interval: Self.sweepInterval(forIdleTimeout: idleTimeout)) { pool, _, now in
            pool.sweepIdle(now: now)
            pool.sweeping = !pool.idle.isEmpty || !pool.breakers.isEmpty || !pool.balancers.isEmpty
            return pool.sweeping
        }
        self.maxIdlePerTarget = maxIdlePerTarget
        self.maxIdleTargets = max(1, maxIdleTargets)
        self.connector = UpstreamConnector(eventLoop: eventLoop, timeout: connectTimeout)
    }

    /// The next target for the route by weighted round-robin over targets whose circuit admits a
    /// call, excluding `excluding` (the one that just failed, on a retry).
    func pick(_ route: Route, now: UInt64, excluding: String? = nil) -> UpstreamTargetConfig? {
        let targets = route.targets
        guard !targets.isEmpty else { return nil }
        let balancer: Balancer
        if let known = balancers[route.apiID], known.targets == targets {
            balancer = known
        } else {
            balancer = Balancer(targets: targets)
            balancers[route.apiID] = balancer
            startSweep()
        }
        let chosen = balancer.roundRobin.next { index in
            let key = targets[index].key
            return key != excluding && (breakers[key]?.isAvailable(now: now) ?? true)
        }
        guard let chosen else { return nil }
        let target = targets[chosen]
        var breaker = breakers[target.key] ?? CircuitBreaker()
        guard breaker.allow(now: now) else { return nil }
        breakers[target.key] = breaker
        return target
    }

    /// Breakers are the target's connections' (keyed like them, TLS identity included): one API's
    /// failed handshakes (its CA bundle does not verify the upstream, its client certificate is
    /// refused) open the circuit for that API's settings only, not for every API on the host.
    /// The gauge is labelled with the network address, never the identity (a digest of secrets).
    func recordSuccess(_ target: UpstreamTargetConfig) {
        // a success on a key without a breaker leaves a fresh one, which is no breaker at all: none
        // is made (one made after the sweep forgot the key and stopped would stay for good)
        guard var breaker = breakers[target.key] else { return }
        let before = breaker.gaugeValue
        breaker.recordSuccess()
        breakers[target.key] = breaker
        if before != 0 { GatewayGauges.circuit(target: target.address, state: 0) }
    }

    func recordFailure(_ target: UpstreamTargetConfig, now: UInt64) {
        let known = breakers[target.key]
        var breaker = known ?? CircuitBreaker()
        let before = breaker.gaugeValue
        breaker.recordFailure(now: now)
        breakers[target.key] = breaker
        // the call may have outlived its key in the pool (forgotten by the sweep meanwhile)
        if known == nil { startSweep() }
        if before != breaker.gaugeValue { GatewayGauges.circuit(target: target.address, state: breaker.gaugeValue) }
    }

    /// An idle, open connection to the target, if there is one: the common case, with no future
    /// allocated.
    func takeIdle(_ target: UpstreamTargetConfig) -> UpstreamConnection? {
        guard let list = idle[target.key] else { return nil }
        while let connection = list.connections.popLast() {
            if connection.channel.isActive { return connection }
        }
        return nil
    }

    /// A new connection to the target; for an `https://` target, handed out once its TLS
    /// handshake is done (`tls`: the route's context; without one the connection fails). It is
    /// pooled under `target.key`, which names the route's TLS identity too.
    func connect(_ target: UpstreamTargetConfig, tls: UpstreamTLS.Context?) -> EventLoopFuture<UpstreamConnection> {
        let key = target.key
        // raw bytes both ways: the proxy writes request heads itself and parses responses
        return connector.connect(target, tls: tls) { try $0.addHandler(UpstreamResponseHandler()) }.flatMapThrowing { channel in
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamResponseHandler.self)
            return UpstreamConnection(channel: channel, key: key, handler: handler)
        }
    }

    /// Returns a connection for reuse after a complete exchange (`now`: uptime nanoseconds, the
    /// start of its idle time).
    func release(_ connection: UpstreamConnection, now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        connection.handler.delegate = nil
        // a finished HTTP/2 stream is closed (a no-op once both sides ended it), never kept
        let list = idle[connection.key]
        guard !connection.isStream, connection.channel.isActive, (list?.connections.count ?? 0) < maxIdlePerTarget else {
            connection.channel.close(promise: nil)
            return
        }
        connection.idleSince = now
        if let list {
            list.connections.append(connection)
            if !sweeping { startSweep() }
            return
        }
        // a key new to the pool while it is at its bound (rare: a new target or TLS identity)
        if idle.count >= maxIdleTargets { pruneIdle() }
        let fresh = IdleList()
        fresh.connections.append(connection)
        idle[connection.key] = fresh
        startSweep()
    }

    /// Drops closed connections and the lists left empty — those of keys no route names any more
    /// among them, once their upstream has closed what they held.
    private func pruneIdle() {
        for (key, list) in idle {
            list.connections.removeAll { !$0.channel.isActive }
            if list.connections.isEmpty { idle[key] = nil }
        }
    }

    /// Closes the connections idle for the timeout and drops the closed ones, then forgets every
    /// key with nothing left: its idle list once empty, its breaker once it holds nothing a call
    /// would notice (closed without failures, or an ejection that ended a whole timeout ago — a
    /// key nobody has called since), and a route's balancer once none of its targets has either.
    /// That is how the lists, breakers and balancers of keys no snapshot names any more (a target
    /// or TLS identity changed, an API deleted) go, whether or not the upstream keeps its sockets
    /// open. A key still in use loses at most an empty list and a balancer's place in the
    /// rotation, made again by its next call.
    func sweepIdle(now: UInt64) {
        for (key, list) in idle {
            list.connections.removeAll { connection in
                guard connection.channel.isActive else { return true }
                guard now >= connection.idleSince, now - connection.idleSince >= idleTimeout else { return false }
                connection.channel.close(promise: nil)
                return true
            }
            if list.connections.isEmpty { idle[key] = nil }
        }
        for (key, breaker) in breakers where idle[key] == nil && breaker.isForgettable(now: now, after: idleTimeout) {
            breakers[key] = nil
        }
        for (apiID, balancer) in balancers where !balancer.targets.contains(where: { idle[$0.key] != nil || breakers[$0.key] != nil }) {
            balancers[apiID] = nil
        }
    }

    /// Where an idle list or a balancer is made (and by a release that finds no sweep under way):
    /// never armed or cancelled per call.
    private func startSweep() {
        guard !sweeping else { return }
        sweeping = true
        sweep.add(self, ())
    }

    /// How often a pool's sweep runs: a quarter of the idle timeout, between 10 ms and 5 s, so a
    /// connection is closed between 1× the timeout and 5 s after it.
    static func sweepInterval(forIdleTimeout timeout: TimeAmount) -> TimeAmount {
        .nanoseconds(min(5_000_000_000, max(10_000_000, timeout.nanoseconds / 4)))
    }

    /// How many pool keys have an idle list (for tests).
    var idleTargetCount: Int { idle.count }
    /// How many idle connections the pool holds (for tests).
    var idleConnectionCount: Int { idle.values.reduce(0) { $0 + $1.connections.count } }
    /// How many breakers and balancers the pool keeps (for tests).
    var breakerCount: Int { breakers.count }
    var balancerCount: Int { balancers.count }
}

/// The per-loop state of the data plane (pool, token cache), created once per event loop.
final class LoopState {
    let pool: UpstreamPool
    let tokenCache: TokenCache
    let metrics: GatewayMetrics
    let deadlines: LoopSweep<ProxyExchange, ResponseDeadline>
    let idle: LoopSweep<ProxyHandler, Void>
    /// HTTP/2 connections, for their idleness and the drain (their streams have no idle clock).
    let http2Idle: LoopSweep<HTTP2ConnectionGuard, Void>
    /// HTTP/2 connections to `grpc://` and `grpcs://` targets.
    let http2Upstreams: UpstreamHTTP2Pool
    /// Connections whose socket flush waits for the end of this round (HTTP/1.1 clients and
    /// upstreams, HTTP/2 clients).
    let flushBatch: LoopFlushBatch
    /// Requests waiting for a reload before they are decided again (an unknown signing key).
    let waitingDecisions: LoopSweep<ProxyHandler, Void>
    private var random = BufferedRandom()
    private var exchangeSerial: UInt64 = 0

    /// Numbers exchanges for the deadline sweep (an entry outlives a finished exchange's reuse).
    func nextExchangeSerial() -> UInt64 {
        exchangeSerial &+= 1
        return exchangeSerial
    }

    /// A UUIDv7 for a request id or usage event.
    func newID() -> UUID { UUIDv7.make(using: &random) }

    init(pool: UpstreamPool, tokenCache: TokenCache, idleTimeout: TimeAmount, metricsFactory: (any MetricsFactory)? = nil) {
        self.pool = pool
        self.tokenCache = tokenCache
        self.metrics = GatewayMetrics(factory: metricsFactory)
        self.deadlines = .responseDeadlines(eventLoop: pool.eventLoop)
        self.idle = .idleConnections(eventLoop: pool.eventLoop, timeout: idleTimeout)
        self.http2Idle = .idleConnections(eventLoop: pool.eventLoop, timeout: idleTimeout)
        self.flushBatch = LoopFlushBatch(eventLoop: pool.eventLoop)
        self.http2Upstreams = UpstreamHTTP2Pool(eventLoop: pool.eventLoop, connectTimeout: pool.connectTimeout, idleTimeout: .nanoseconds(Int64(pool.idleTimeout)))
        self.waitingDecisions = LoopSweep(eventLoop: pool.eventLoop, interval: .milliseconds(20)) { handler, _, now in handler.decideIfReloaded(now: now) }
    }
}

/// Finds the loop state of an event loop; the lock is taken when a client connection is set up,
/// never per request.
final class LoopStates: Sendable {
    private let states = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<LoopState>]>([:])
    let connectTimeout: TimeAmount
    let idleTimeout: TimeAmount
    let upstreamIdleTimeout: TimeAmount
    let metricsFactory: (any MetricsFactory)?

    init(_ configuration: GatewayServer.Configuration) {
        self.connectTimeout = configuration.connectTimeout
        self.idleTimeout = configuration.idleTimeout
        self.upstreamIdleTimeout = configuration.upstreamIdleTimeout
        self.metricsFactory = configuration.metricsFactory
    }

    /// Runs `body` on every loop with that loop's state (the drain at shutdown).
    func forEachLoop(_ body: @escaping @Sendable (LoopState) -> Void) async {
        let all = states.withLockedValue { Array($0.values) }
        for bound in all {
            try? await bound.eventLoop.submit { body(bound.value) }.get()
        }
    }

    func state(for eventLoop: any EventLoop) -> LoopState {
        let id = ObjectIdentifier(eventLoop)
        if let existing = states.withLockedValue({ $0[id] }) { return existing.value }
        let state = LoopState(
            pool: UpstreamPool(eventLoop: eventLoop, connectTimeout: connectTimeout, idleTimeout: upstreamIdleTimeout), tokenCache: TokenCache(), idleTimeout: idleTimeout, metricsFactory: metricsFactory)
        states.withLockedValue { $0[id] = NIOLoopBound(state, eventLoop: eventLoop) }
        return state
    }
}

/// Hands an upstream's response bytes to the exchange that owns the connection.
final class UpstreamResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    weak var delegate: ProxyExchange?

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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // an HTTP/2 upstream's trailers, announced just before the bytes that end the body
        if let trailers = event as? UpstreamTrailers {
            delegate?.upstreamTrailers(trailers.fields)
            return
        }
        context.fireUserInboundEventTriggered(event)
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

/// A list of client connections of one event loop that one self-rescheduling task visits every
/// `interval` while the list is not empty — how the loop keeps response deadlines and idle
/// timeouts without a task or a handler per connection (one scheduled and cancelled per request
/// cost ~3 % of the gateway's CPU; an `IdleStateHandler` in every pipeline ~2 %). Entries hold
/// their connection weakly; a closed connection drops out at the next visit. The upstream pools use
/// one each for their idle connections, with the pool itself as the only member.
final class LoopSweep<Member: AnyObject, Payload> {
    private struct Entry {
        weak var handler: Member?
        let payload: Payload
    }

    let eventLoop: any EventLoop
    let interval: TimeAmount
    /// Decides about one live entry at a visit (uptime nanoseconds): true keeps it for the next.
    private let visit: (Member, Payload, UInt64) -> Bool
    private var entries: [Entry] = []
    private var scheduled = false

    init(eventLoop: any EventLoop, interval: TimeAmount, visit: @escaping (Member, Payload, UInt64) -> Bool) {
        self.eventLoop = eventLoop
        self.interval = interval
        self.visit = visit
    }

    func add(_ handler: Member, _ payload: Payload) {
        entries.append(Entry(handler: handler, payload: payload))
        schedule()
    }

    private func schedule() {
        guard !scheduled else { return }
        scheduled = true
        eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: interval) { [self] in
            scheduled = false
            sweep(now: DispatchTime.now().uptimeNanoseconds)
        }
    }

    /// Every live connection in the list (on the loop).
    func forEach(_ body: (Member) -> Void) {
        for entry in entries {
            if let handler = entry.handler { body(handler) }
        }
    }

    func sweep(now: UInt64) {
        // taken out first: a visit can add entries (a connection that times out moves on to its next request)
        let visiting = entries
        entries = []
        for entry in visiting {
            guard let handler = entry.handler else { continue }
            if visit(handler, entry.payload, now) { entries.append(entry) }
        }
        if !entries.isEmpty { schedule() }
    }
}

extension LoopSweep where Member == ProxyExchange, Payload == ResponseDeadline {
    /// Response deadlines, checked every 100 ms: one fires up to 100 ms late. An entry is dropped
    /// once its exchange has its response (or is gone).
    static func responseDeadlines(eventLoop: any EventLoop) -> LoopSweep {
        LoopSweep(eventLoop: eventLoop, interval: .milliseconds(100)) { exchange, armed, now in
            guard exchange.isAwaitingResponse(serial: armed.exchange) else { return false }
            guard armed.deadline <= now else { return true }
            exchange.responseDeadlinePassed()
            return false
        }
    }
}

extension LoopSweep where Member: ClientConnection, Payload == Void {
    /// Idle client connections, checked every quarter of the timeout (at most every second), so a
    /// connection is closed between 1× and 1.25× the timeout after its last activity.
    static func idleConnections(eventLoop: any EventLoop, timeout: TimeAmount) -> LoopSweep {
        let nanoseconds = UInt64(max(1, timeout.nanoseconds))
        return LoopSweep(eventLoop: eventLoop, interval: .nanoseconds(min(1_000_000_000, max(10_000_000, timeout.nanoseconds / 4)))) { handler, _, now in
            !handler.closeIfIdle(now: now, timeout: nanoseconds)
        }
    }
}

/// When an exchange's response must have started (`DispatchTime` uptime nanoseconds).
struct ResponseDeadline {
    let exchange: UInt64
    let deadline: UInt64
}
