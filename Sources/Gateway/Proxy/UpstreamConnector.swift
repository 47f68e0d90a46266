import NIOCore
import NIOPosix
import NIOSSL

/// Opens the connections of both upstream pools (`UpstreamPool`'s HTTP/1.1 keep-alive ones and
/// `UpstreamHTTP2Pool`'s multiplexed ones): TCP with `TCP_NODELAY` within the connect timeout,
/// and for a TLS target the route's context with SNI, the connection handed out only once its
/// handshake is done (`TLSHandshakeWaiter`, within the same timeout) — so a failed handshake is a
/// failed connect (502, counted by the circuit breaker), never a reset in the middle of an
/// exchange. A TLS target without a usable context fails at once, before any socket is opened.
struct UpstreamConnector {
    let eventLoop: any EventLoop
    let timeout: TimeAmount

    /// A connected (and, for a TLS target, handshaken) channel. `requireHTTP2`: the handshake must
    /// have agreed `h2` by ALPN (`UpstreamTLS.Failure.noHTTP2` otherwise: an upstream that ignores
    /// ALPN would be spoken HTTP/2 while it expects HTTP/1.1). `initialize` adds the caller's
    /// handlers behind TLS when the channel is set up.
    func connect(
        _ target: UpstreamTargetConfig, tls: UpstreamTLS.Context?, requireHTTP2: Bool = false,
        initialize: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void = { _ in }
    ) -> EventLoopFuture<any Channel> {
        if target.tls && tls == nil {
            return eventLoop.makeFailedFuture(UpstreamTLS.Failure.invalidBundle("no TLS settings could be made for this API"))
        }
        let timeout = self.timeout
        let waiter = target.tls ? TLSHandshakeWaiter(eventLoop: eventLoop) : nil
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let waiter, let tls {
                        try pipeline.addHandler(NIOSSLClientHandler(context: tls.ssl, serverHostname: UpstreamTLS.serverName(target.host)))
                        try pipeline.addHandler(waiter)
                    }
                    try initialize(pipeline)
                }
            }
            .connect(host: target.host, port: target.port)
        guard let waiter else { return connected }
        connected.whenFailure { waiter.finish(.failure($0)) }
        return connected.flatMap { channel in
            // the handshake has the connect timeout too
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                waiter.finish(.failure(ChannelError.connectTimeout(timeout)))
                channel.close(promise: nil)
            }
            return waiter.promise.futureResult.flatMapThrowing {
                if requireHTTP2, waiter.negotiatedProtocol != "h2" { throw UpstreamTLS.Failure.noHTTP2(negotiated: waiter.negotiatedProtocol) }
                return channel
            }.flatMapErrorThrowing { error in
                channel.close(promise: nil)
                throw error
            }.always { _ in timer.cancel() }
        }
    }
}
