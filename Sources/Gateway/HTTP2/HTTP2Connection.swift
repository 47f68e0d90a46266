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
        _ = try pipeline.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connectionConfiguration(
                maxHeaderBytes: shared.settings.maxHeaderBytes, extendedConnect: shared.settings.webSocketOverHTTP2),
            streamConfiguration: streamConfiguration(), position: .last
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2StreamHandler(shared: shared, loop: boundLoop.value, client: client))
            }
        }
        try pipeline.addHandler(HTTP2ConnectionGuard(shared: shared, loop: loop), position: .last)
    }
}

/// Sits behind NIOHTTP2's handler on an HTTP/2 connection: counts its open streams (from the
/// handler's stream events) so the idle sweep closes a connection without streams after the idle
/// timeout, and drains it at shutdown with a GOAWAY naming the last stream it will answer.
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let created = event as? NIOHTTP2StreamCreatedEvent {
            openStreams += 1
            if created.streamID > lastStream { lastStream = created.streamID }
            lastActivity = DispatchTime.now().uptimeNanoseconds
        } else if event is StreamClosedEvent {
            openStreams = max(0, openStreams - 1)
            lastActivity = DispatchTime.now().uptimeNanoseconds
            if draining && openStreams == 0 { close() }
        }
        context.fireUserInboundEventTriggered(event)
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
