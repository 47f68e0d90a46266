import Billing
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The data-plane listener: HTTP/1.1 with keep-alive, built directly on SwiftNIO channel handlers
/// (see docs/ARCHITECTURE.md for why not Hummingbird on this path). Every client connection gets a
/// `ProxyHandler`; the event loop's `UpstreamPool` holds the upstream connections.
public struct GatewayServer: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Largest request head accepted before answering 431.
        public var maxHeaderBytes: Int = 16 * 1024
        /// Body limit for APIs that set none (413 beyond it).
        public var maxRequestBytes: Int = 10 * 1024 * 1024
        /// Time the upstream has to start answering once the request is sent (504 after).
        public var responseTimeout: TimeAmount = .seconds(30)
        /// Time to establish an upstream connection (504 after; 502 when refused).
        public var connectTimeout: TimeAmount = .seconds(5)
        /// A client connection with nothing read for this long is closed (408 mid-request).
        public var idleTimeout: TimeAmount = .seconds(60)
        /// A pooled upstream connection (HTTP/1.1 keep-alive, or an HTTP/2 one without streams)
        /// that waited this long for a call is closed (nginx's upstream `keepalive_timeout`).
        public var upstreamIdleTimeout: TimeAmount = .seconds(60)
        /// A request head must be complete this long after its first byte (408 and close), however
        /// steadily it trickles in: the idle clock restarts on every byte, this one does not.
        public var requestHeadTimeout: TimeAmount = .seconds(10)
        /// A request body must be complete this long after the head (408 and close).
        public var requestBodyTimeout: TimeAmount = .seconds(120)
        /// At graceful shutdown, how long connections with a request under way have to finish it
        /// before they are closed (the meter is flushed only after).
        public var drainTimeout: TimeAmount = .seconds(10)
        /// Event loops of the data plane; nil shares the process-wide group (one per core).
        public var eventLoopThreads: Int?
        /// Where the data plane's request, rejection and upstream-error metrics go; nil: the
        /// process's `MetricsSystem` (tests pass their own to read them).
        public var metricsFactory: (any MetricsFactory)?
        /// A second listener that speaks TLS, beside the plaintext one; nil: none.
        public var tls: TLSListener?
        /// Both listeners expect a PROXY protocol header (v1 or v2) before each connection's first
        /// byte, from a TCP load balancer in front, and take the client's address from it; a
        /// connection without one is closed.
        public var proxyProtocol = false
        /// Clients may speak HTTP/2: prior knowledge on the plaintext listener, ALPN `h2` on TLS.
        public var http2 = true
        /// An open WebSocket tunnel with no byte either way for this long is closed.
        public var webSocketIdleTimeout: TimeAmount = .seconds(300)
        /// A WebSocket tunnel is closed once open this long; nil: no limit.
        public var webSocketMaxDuration: TimeAmount?
        /// HTTP/2 clients may open WebSockets (RFC 8441): `SETTINGS_ENABLE_CONNECT_PROTOCOL=1` is
        /// advertised and extended CONNECT with `:protocol websocket` is tunnelled. Off: such a
        /// stream is refused by NIOHTTP2 (PROTOCOL_ERROR), as before.
        public var webSocketOverHTTP2 = true

        /// Where the TLS listener binds and the certificates it serves (chosen by SNI).
        public struct TLSListener: Sendable {
            public var host: String
            public var port: Int
            public var certificates: CertificateStore
            /// `Strict-Transport-Security` on every TLS response; nil: not sent.
            public var strictTransportSecurity: String? = "max-age=31536000"
            /// How often the certificate directory is checked for new or renewed pairs.
            public var reloadInterval: Duration = .seconds(10)

            public init(host: String, port: Int, certificates: CertificateStore) {
                self.host = host
                self.port = port
                self.certificates = certificates
            }
        }

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    let configuration: Configuration
    let shared: GatewayContext
    let logger: Logger
    let onBound: @Sendable (Int) -> Void
    let onTLSBound: @Sendable (Int) -> Void

    public init(
        configuration: Configuration, store: SnapshotStore, rateLimiter: RateLimiter = RateLimiter(), quotas: QuotaTracker, usage: any UsageSink,
        logger: Logger, metricsText: @escaping @Sendable () -> String, onBound: @escaping @Sendable (Int) -> Void = { _ in },
        onTLSBound: @escaping @Sendable (Int) -> Void = { _ in }, accessLogs: AccessLogs? = nil
    ) {
        self.configuration = configuration
        self.shared = GatewayContext(
            store: store, rateLimiter: rateLimiter, quotas: quotas, usage: usage, loops: LoopStates(configuration),
            settings: configuration, metricsText: metricsText, accessLog: accessLogs?.installationWide == true ? accessLogs : nil)
        self.logger = logger
        self.onBound = onBound
        self.onTLSBound = onTLSBound
    }

    public func run() async throws {
        let ownGroup = configuration.eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: max(1, $0)) }
        let group = ownGroup ?? MultiThreadedEventLoopGroup.singleton
        let plain = try await bind(group: group, host: configuration.host, port: configuration.port, tls: nil)
        let port = plain.localAddress?.port ?? configuration.port
        logger.info("gateway listening", metadata: ["address": "\(configuration.host):\(port)"])
        var listeners = [plain]
        var reloader: Task<Void, Never>?
        do {
            if let tls = configuration.tls {
                let secure = try await bind(group: group, host: tls.host, port: tls.port, tls: try tls.certificates.serverContext(applicationProtocols: configuration.http2 ? ["h2", "http/1.1"] : ["http/1.1"]))
                let tlsPort = secure.localAddress?.port ?? tls.port
                logger.info("gateway listening (TLS)", metadata: ["address": "\(tls.host):\(tlsPort)"])
                listeners.append(secure)
                reloader = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: tls.reloadInterval)
                        tls.certificates.reloadIfChanged()
                    }
                }
                onTLSBound(tlsPort)
            }
        } catch {
            try? await plain.close()
            throw error
        }
        onBound(port)
        // Serve until graceful shutdown is requested, then stop accepting, and drain: the
        // services after this one in the group (the meter) stop only once this returns.
        let bound = listeners
        try await withGracefulShutdownHandler {
            for listener in bound { try await listener.closeFuture.get() }
        } onGracefulShutdown: {
            for listener in bound { listener.close(promise: nil) }
        }
        reloader?.cancel()
        await drain()
        try? await ownGroup?.shutdownGracefully()
    }

    /// A listener; with `tls`, each connection speaks TLS in front of the same proxy handler.
    private func bind(group: any EventLoopGroup, host: String, port: Int, tls: NIOSSLContext?) async throws -> any Channel {
        let shared = self.shared
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let loop = shared.loops.state(for: channel.eventLoop)
                    if shared.settings.proxyProtocol { try channel.pipeline.syncOperations.addHandler(ProxyProtocolDecoder()) }
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    // One handler: ProxyHandler parses request heads and writes response bytes itself
                    // (each HTTP codec handler was a hop and a boxed part per message), and the loop's
                    // idle sweep replaces an IdleStateHandler.
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(shared: shared, loop: loop, secure: tls != nil))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    /// Closes idle connections, lets the others finish their exchange (answered with
    /// `Connection: close`), and closes what is left after `drainTimeout`.
    func drain() async {
        let shared = self.shared
        shared.draining.withLockedValue { $0 = true }
        await shared.loops.forEachLoop { loop in
            loop.idle.forEach { $0.beginDrain() }
            loop.http2Idle.forEach { $0.beginDrain() }
        }
        let deadline = NIODeadline.now() + configuration.drainTimeout
        while shared.openConnections.withLockedValue({ $0 }) > 0 && NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = shared.openConnections.withLockedValue { $0 }
        if left > 0 {
            logger.warning("gateway drain timed out; closing connections", metadata: ["connections": "\(left)"])
            await shared.loops.forEachLoop { loop in
                loop.idle.forEach { $0.forceClose() }
                loop.http2Idle.forEach { $0.forceClose() }
            }
        }
        logger.info("gateway drained")
    }
}
