import Foundation
import NIOCore
import NIOHTTP2

/// A client connection the loop's idle sweep and the shutdown drain visit, whatever it speaks.
protocol ClientConnection: AnyObject {
    /// True once the connection is closed or closing (the sweep then forgets it).
    func closeIfIdle(now: UInt64, timeout: UInt64) -> Bool
    /// Graceful shutdown: finish what is under way, accept nothing new.
    func beginDrain()
    /// The drain timed out: close now.
    func forceClose()
}

/// How the gateway speaks HTTP/2 to clients: the bounds a client cannot exceed.
enum HTTP2Server {
    /// The connection preface (RFC 9113 §3.4) a prior-knowledge client sends first.
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Whether `bytes` are the preface (`.yes`), could still become it (`.undecided`), or not.
    enum PrefaceMatch { case yes, undecided, no }

    static func matchPreface(_ bytes: UnsafeRawBufferPointer) -> PrefaceMatch {
        let count = min(bytes.count, preface.count)
        for index in 0..<count where bytes[index] != preface[index] { return .no }
        return count == preface.count ? .yes : .undecided
    }

    static func connectionConfiguration(maxHeaderBytes: Int, extendedConnect: Bool = false) -> NIOHTTP2Handler.ConnectionConfiguration {
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            // streams one client may have open at once; more are refused with RST_STREAM
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            // the decoded header list, as on HTTP/1.1 (HPACK bombs end here, with a connection error)
            HTTP2Setting(parameter: .maxHeaderListSize, value: maxHeaderBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: 65_535),
            HTTP2Setting(parameter: .maxFrameSize, value: 16_384),
        ]
        // RFC 8441: WebSockets over HTTP/2 streams (NIOHTTP2 then accepts `:protocol`)
        if extendedConnect { configuration.initialSettings.append(HTTP2Setting(parameter: .enableConnectProtocol, value: 1)) }
        // CONTINUATION floods and other protocol abuse close the connection
        configuration.maximumSequentialContinuationFrames = 5
        configuration.maximumConnectionGlitches = 200
        configuration.controlFrameRateLimit.maximumCount = 200
        configuration.controlFrameRateLimit.windowLength = .seconds(10)
        return configuration
    }

    static func streamConfiguration() -> NIOHTTP2Handler.StreamConfiguration {
        var configuration = NIOHTTP2Handler.StreamConfiguration()
        // rapid reset (CVE-2023-44487): more than 200 resets in 10 s closes the connection
        configuration.streamResetFrameRateLimit.maximumCount = 200
        configuration.streamResetFrameRateLimit.windowLength = .seconds(10)
        configuration.streamErrorRateLimit.maximumCount = 200
        configuration.streamErrorRateLimit.windowLength = .seconds(10)
        return configuration
    }

    /// Turns a connection whose first bytes were the preface (or whose TLS handshake chose `h2`)
    /// into an HTTP/2 server connection: NIOHTTP2's handler with a stream per request, and the
    /// guard that keeps the connection's idleness and drain. Called on the channel's loop.
    static func install(on pipeline: ChannelPipeline.SynchronousOperations, shared: GatewayContext, loop: LoopState, client: HTTP2ClientInfo) throws {
        // streams are child channels on the connection's own event loop
        let boundLoop = NIOLoopBound(loop, eventLoop: pipeline.eventLoop)
        // one gate for the connection's streams (its closure was an allocation per stream)
        let boundGate = NIOLoopBound(
            RequestGate(
                rateLimiter: shared.rateLimiter, quotas: shared.quotas, tokenCache: loop.tokenCache, defaultMaxRequestBytes: shared.settings.maxRequestBytes,
                onUnknownKey: { [store = shared.store] in store.requestKeyRefresh() }), eventLoop: pipeline.eventLoop)
        // the answers its streams get in one round of the loop leave in one write (see LoopFlushBatch)
        try pipeline.addHandler(BatchedFlushHandler(batch: loop.flushBatch), position: .last)
        let connectionGuard = HTTP2ConnectionGuard(shared: shared, loop: loop)
        _ = try pipeline.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connectionConfiguration(
                maxHeaderBytes: shared.settings.maxHeaderBytes, extendedConnect: shared.settings.webSocketOverHTTP2),
            streamConfiguration: streamConfiguration(),
            streamDelegate: HTTP2StreamEvents(connectionGuard: NIOLoopBound(connectionGuard, eventLoop: pipeline.eventLoop)), position: .last
        ) { stream in
            // on the loop, the stream's handler is added at once; the loop's cached succeeded future
            // answers (`makeCompletedFuture` made a future per stream)
            do {
                try stream.pipeline.syncOperations.addHandler(HTTP2StreamHandler(shared: shared, loop: boundLoop.value, client: client, gate: boundGate.value))
                return stream.eventLoop.makeSucceededVoidFuture()
            } catch {
                return stream.eventLoop.makeFailedFuture(error)
            }
        }
        try pipeline.addHandler(connectionGuard, position: .last)
    }
}

/// NIOHTTP2's inline stream multiplexer tells a stream's opening and closing to a delegate, not as
/// events down the connection's pipeline (where `NIOHTTP2StreamCreatedEvent` never arrives): this
/// one hands them to the connection's guard. Called on the connection's loop.
struct HTTP2StreamEvents: NIOHTTP2StreamDelegate {
    let connectionGuard: NIOLoopBound<HTTP2ConnectionGuard>

    func streamCreated(_ id: HTTP2StreamID, channel: any Channel) { connectionGuard.value.streamOpened(id) }

    func streamClosed(_ id: HTTP2StreamID, channel: any Channel) { connectionGuard.value.streamClosed() }
}

/// Sits behind NIOHTTP2's handler on an HTTP/2 connection: counts its open streams (told by
/// `HTTP2StreamEvents`) so the idle sweep closes a connection without streams after the idle
/// timeout — never one with streams under way — and drains it at shutdown with a GOAWAY naming the
/// last stream it will answer, closing it once those are answered.
final class HTTP2ConnectionGuard: ChannelInboundHandler, ClientConnection {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let shared: GatewayContext
    private let loop: LoopState
    private var context: ChannelHandlerContext?
    private var openStreams = 0
    private var lastStream = HTTP2StreamID.rootStream
    private var lastActivity: UInt64 = 0
    private var draining = false
    private var closing = false

    init(shared: GatewayContext, loop: LoopState) {
        self.shared = shared
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastActivity = DispatchTime.now().uptimeNanoseconds
        shared.openConnections.withLockedValue { $0 += 1 }
        loop.http2Idle.add(self, ())
        if shared.draining.withLockedValue({ $0 }) { beginDrain() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        shared.openConnections.withLockedValue { $0 -= 1 }
    }

    func streamOpened(_ id: HTTP2StreamID) {
        openStreams += 1
        if id > lastStream { lastStream = id }
        lastActivity = DispatchTime.now().uptimeNanoseconds
    }

    func streamClosed() {
        openStreams = max(0, openStreams - 1)
        lastActivity = DispatchTime.now().uptimeNanoseconds
        if draining && openStreams == 0 { closeOnceWritten() }
    }

    /// The drain's last stream closed. NIOHTTP2 reports the close while it is still writing the
    /// stream's last frame, so the connection closes once that is out: on the next task, a PING
    /// is queued behind it, and its write completing means every byte before it left (a client
    /// that stops reading is closed by the drain's timeout, `forceClose`).
    private func closeOnceWritten() {
        guard let context else { return }
        context.eventLoop.assumeIsolatedUnsafeUnchecked().execute { [self] in
            guard !closing, let context = self.context else { return }
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(), ack: false))), promise: written)
            written.futureResult.assumeIsolatedUnsafeUnchecked().whenComplete { [self] _ in close() }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // a connection-level protocol error (NIOHTTP2 has sent GOAWAY): the connection ends
        close()
    }

    private func close() {
        guard !closing, let context else { return }
        closing = true
        context.close(promise: nil)
    }

    func closeIfIdle(now: UInt64, timeout: UInt64) -> Bool {
        if closing || context == nil { return true }
        guard openStreams == 0, now &- lastActivity >= timeout else { return false }
        close()
        return true
    }

    func beginDrain() {
        guard !closing, !draining, let context else { return }
        draining = true
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStream, errorCode: .noError, opaqueData: nil))
        context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
        if openStreams == 0 { close() }
    }

    func forceClose() { close() }
}
