import Dispatch
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// The event loop's HTTP/2 connections to `grpc://` and `grpcs://` targets and to the targets of
/// APIs whose upstream protocol is `h2`: one per target, multiplexing every call to it as a stream
/// (prior knowledge on cleartext, ALPN `h2` over TLS — a TLS upstream that does not choose `h2` is
/// a failed connection), opened on first use and forgotten when it closes, is refused, or the
/// upstream says GOAWAY; closed when it breaks (a connection error: NIOHTTP2 sent GOAWAY but leaves
/// the closing to its user — left open, every later stream on it hung), and closed once it has had
/// no stream for the idle timeout (a sweep like `UpstreamPool`'s, over the open streams each
/// connection counts; a connection with a stream under way is never closed by it).
final class UpstreamHTTP2Pool {
    private struct Pooled: Sendable {
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer
        let channel: any Channel
        /// Made, counted and read on the pool's loop (the connection's).
        let streams: NIOLoopBound<UpstreamHTTP2Streams>
    }

    let eventLoop: any EventLoop
    private let connectTimeout: TimeAmount
    private let idleTimeout: UInt64
    private let connector: UpstreamConnector
    private var connections: [String: Pooled] = [:]
    private var connecting: [String: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>] = [:]
    /// Visits the pool (held weakly) while it holds a connection (`sweeping`).
    private let sweep: LoopSweep<UpstreamHTTP2Pool, Void>
    private var sweeping = false

    init(eventLoop: any EventLoop, connectTimeout: TimeAmount, idleTimeout: TimeAmount = .seconds(60)) {
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.idleTimeout = UInt64(max(1, idleTimeout.nanoseconds))
        self.sweep = LoopSweep(eventLoop: eventLoop, interval: UpstreamPool.sweepInterval(forIdleTimeout: idleTimeout)) { pool, _, now in
            pool.sweepIdle(now: now)
            pool.sweeping = !pool.connections.isEmpty
            return pool.sweeping
        }
        self.connector = UpstreamConnector(eventLoop: eventLoop, timeout: connectTimeout)
    }

    /// How many connections the pool holds (for tests).
    var connectionCount: Int { connections.count }

    /// Closes the connections without a stream for the idle timeout; the close forgets them.
    func sweepIdle(now: UInt64) {
        for pooled in connections.values where pooled.streams.value.isIdle(now: now, timeout: idleTimeout) {
            pooled.channel.close(promise: nil)
        }
    }

    /// When a connection is added, never per call.
    private func startSweep() {
        guard !sweeping else { return }
        sweeping = true
        sweep.add(self, ())
    }

    /// A new stream to `target` with an `UpstreamStreamHandler` in its pipeline.
    func openStream(to target: UpstreamTargetConfig, tls: UpstreamTLS.Context?) -> EventLoopFuture<(any Channel, UpstreamStreamHandler)> {
        multiplexer(for: target, tls: tls).flatMap { multiplexer in
            multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(UpstreamStreamHandler()) }
            }
        }.flatMapThrowing { stream in
            (stream, try stream.pipeline.syncOperations.handler(type: UpstreamStreamHandler.self))
        }
    }

    /// A new stream to an `h2` target for the exchange core: the stream speaks the HTTP/1.1 bytes
    /// the exchange writes and reads (`UpstreamStreamCodec`), so an exchange drives it as it drives
    /// a pooled HTTP/1.1 connection — except that a stream is never reused.
    func openExchangeStream(to target: UpstreamTargetConfig, tls: UpstreamTLS.Context?) -> EventLoopFuture<UpstreamConnection> {
        multiplexer(for: target, tls: tls).flatMap { multiplexer in
            multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    let pipeline = stream.pipeline.syncOperations
                    try pipeline.addHandler(UpstreamStreamCodec(tls: target.tls))
                    try pipeline.addHandler(UpstreamResponseHandler())
                }
            }
        }.flatMapThrowing { stream in
            let handler = try stream.pipeline.syncOperations.handler(type: UpstreamResponseHandler.self)
            return UpstreamConnection(channel: stream, key: target.key, handler: handler, isStream: true)
        }
    }

    private func multiplexer(for target: UpstreamTargetConfig, tls: UpstreamTLS.Context?) -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
        let key = target.key
        if let known = connections[key] {
            // a stream is about to open: the sweep must not take the connection before it counts
            known.streams.value.handedOut = true
            return eventLoop.makeSucceededFuture(known.multiplexer)
        }
        if let pending = connecting[key] { return pending }
        let timeout = connectTimeout
        // TLS must agree h2 by ALPN: an upstream that ignores it would be spoken HTTP/2 while it expects HTTP/1.1
        let ready = connector.connect(target, tls: tls, requireHTTP2: true)
        let made = ready.flatMapThrowing { channel in
            var configuration = NIOHTTP2Handler.ConnectionConfiguration()
            // Frames of a stream the gateway reset (its client went away) still arrive for a while;
            // NIOHTTP2 ignores them only for the last N reset streams (32 by default), else it ends
            // the whole connection. A client that drops a connection with a hundred calls in flight
            // resets a hundred streams at once, so remember as many as an upstream lets run at once.
            configuration.maximumRecentlyResetStreams = Self.recentlyResetStreams
            let streams = NIOLoopBound(UpstreamHTTP2Streams(now: DispatchTime.now().uptimeNanoseconds), eventLoop: channel.eventLoop)
            let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: configuration, streamConfiguration: .init(),
                streamDelegate: UpstreamHTTP2StreamEvents(streams: streams)
            ) { pushed in
                // servers may not push to the gateway: such a stream is closed at once
                pushed.close()
            }
            // the connection is handed out once the upstream's own preface (SETTINGS) arrived, within
            // the connect timeout: a server that does not speak HTTP/2 is a failed connection, not
            // streams that wait for their response deadline
            let id = ObjectIdentifier(channel)
            let preface = HTTP2PrefaceWaiter(eventLoop: channel.eventLoop) { [self] in
                // the upstream said GOAWAY: calls in flight may finish, new ones get a new connection
                if connections[key].map({ ObjectIdentifier($0.channel) }) == id { connections[key] = nil }
            }
            try channel.pipeline.syncOperations.addHandler(preface)
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                preface.finish(.failure(HTTP2PrefaceWaiter.NoPreface()))
                channel.close(promise: nil)
            }
            preface.promise.futureResult.whenComplete { _ in timer.cancel() }
            // a GOAWAY-ed or broken connection is forgotten; the next call opens a new one
            channel.closeFuture.assumeIsolatedUnsafeUnchecked().whenComplete { [self] _ in
                if connections[key].map({ ObjectIdentifier($0.channel) }) == id { connections[key] = nil }
            }
            return (Pooled(multiplexer: multiplexer, channel: channel, streams: streams), preface)
        }.flatMap { connected in
            connected.1.promise.futureResult.map { @Sendable [pooled = connected.0] in pooled }
        }
        let multiplexer = made.map(\.multiplexer)
        connecting[key] = multiplexer
        made.assumeIsolatedUnsafeUnchecked().whenComplete { [self] result in
            connecting[key] = nil
            guard case .success(let pooled) = result, pooled.channel.isActive else { return }
            // the first caller's stream is about to open
            pooled.streams.value.handedOut = true
            connections[key] = pooled
            startSweep()
        }
        return multiplexer
    }

    /// Reset streams whose late frames are ignored on a connection: at least the concurrent streams
    /// upstreams commonly allow (100 to 1,000).
    static let recentlyResetStreams = 2_048
}

/// The open streams of one pooled HTTP/2 connection and since when it has had none, told by
/// NIOHTTP2's stream delegate (`UpstreamHTTP2StreamEvents`); read by the pool's idle sweep. Only
/// the connection's event loop touches it.
final class UpstreamHTTP2Streams {
    private(set) var open = 0
    /// Uptime nanoseconds since which no stream was open.
    private(set) var idleSince: UInt64
    /// Set when the pool hands the connection out for a new stream, cleared by the sweep: the
    /// stream counts only once its HEADERS are written, and the sweep must not close the
    /// connection in between.
    var handedOut = false

    init(now: UInt64) { idleSince = now }

    func opened() { open += 1 }

    func closed(now: @autoclosure () -> UInt64) {
        open = max(0, open - 1)
        if open == 0 { idleSince = now() }
    }

    /// Whether the connection has had no stream for `timeout` (a hand-out restarts the clock).
    func isIdle(now: UInt64, timeout: UInt64) -> Bool {
        if handedOut {
            handedOut = false
            if open == 0 { idleSince = now }
            return false
        }
        return open == 0 && now >= idleSince && now - idleSince >= timeout
    }
}

/// NIOHTTP2's inline multiplexer reports streams opening and closing to a delegate (not down the
/// pipeline): this one counts them for the connection's `UpstreamHTTP2Streams`. Called on the
/// connection's loop.
struct UpstreamHTTP2StreamEvents: NIOHTTP2StreamDelegate {
    let streams: NIOLoopBound<UpstreamHTTP2Streams>

    func streamCreated(_ id: HTTP2StreamID, channel: any Channel) { streams.value.opened() }

    func streamClosed(_ id: HTTP2StreamID, channel: any Channel) { streams.value.closed(now: DispatchTime.now().uptimeNanoseconds) }
}

/// Completes its promise when the upstream's connection preface (its first SETTINGS frame) has
/// arrived — proof that it speaks HTTP/2 — or fails it when the connection ends or errs first.
/// Stays in the pipeline afterwards, watching the connection's life: a GOAWAY from the upstream
/// retires it (`retire`), and a connection error closes it.
final class HTTP2PrefaceWaiter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTP2Frame

    /// The upstream did not answer as an HTTP/2 server.
    struct NoPreface: Error, CustomStringConvertible {
        var description: String { "the upstream did not answer HTTP/2 (no SETTINGS frame)" }
    }

    let promise: EventLoopPromise<Void>
    private var done = false
    private let retire: () -> Void

    init(eventLoop: any EventLoop, retire: @escaping () -> Void = {}) {
        promise = eventLoop.makePromise()
        self.retire = retire
    }

    func finish(_ result: Result<Void, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings) where !done: finish(.success(()))
        case .goAway: retire()
        default: break
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(NoPreface()))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // before the preface, any error means the upstream is not an HTTP/2 server
        if !done {
            finish(.failure(NoPreface()))
            context.close(promise: nil)
        } else if !(error is NIOHTTP2Errors.StreamError) {
            // a connection error (NIOHTTP2 has sent GOAWAY) or a broken transport: the streams on
            // it end (their calls answer 502) and the next call opens a new connection
            retire()
            context.close(promise: nil)
        }
        context.fireErrorCaught(error)
    }
}

/// The upstream end of one relayed HTTP/2 stream: hands its frames to the call that owns it.
final class UpstreamStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload

    weak var call: HTTP2UpstreamCall?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        call?.upstreamFrame(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        call?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        call?.upstreamClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        call?.upstreamWritabilityChanged(context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
