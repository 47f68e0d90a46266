import Billing
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
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

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    let configuration: Configuration
    let shared: GatewayContext
    let logger: Logger
    let onBound: @Sendable (Int) -> Void

    public init(
        configuration: Configuration, store: SnapshotStore, rateLimiter: RateLimiter = RateLimiter(), quotas: QuotaTracker, usage: any UsageSink,
        logger: Logger, metricsText: @escaping @Sendable () -> String, onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.shared = GatewayContext(
            store: store, rateLimiter: rateLimiter, quotas: quotas, usage: usage, loops: LoopStates(configuration),
            settings: configuration, metricsText: metricsText)
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let shared = self.shared
        let ownGroup = configuration.eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: max(1, $0)) }
        let channel = try await ServerBootstrap(group: ownGroup ?? MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let loop = shared.loops.state(for: channel.eventLoop)
                    // One handler: ProxyHandler parses request heads and writes response bytes itself
                    // (each HTTP codec handler was a hop and a boxed part per message), and the loop's
                    // idle sweep replaces an IdleStateHandler.
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(shared: shared, loop: loop))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        let port = channel.localAddress?.port ?? configuration.port
        logger.info("gateway listening", metadata: ["address": "\(configuration.host):\(port)"])
        onBound(port)
        // Serve until graceful shutdown is requested, then stop accepting, and drain: the
        // services after this one in the group (the meter) stop only once this returns.
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        await drain()
        try? await ownGroup?.shutdownGracefully()
    }

    /// Closes idle connections, lets the others finish their exchange (answered with
    /// `Connection: close`), and closes what is left after `drainTimeout`.
    func drain() async {
        let shared = self.shared
        shared.draining.withLockedValue { $0 = true }
        await shared.loops.forEachLoop { loop in loop.idle.forEach { $0.beginDrain() } }
        let deadline = NIODeadline.now() + configuration.drainTimeout
        while shared.openConnections.withLockedValue({ $0 }) > 0 && NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = shared.openConnections.withLockedValue { $0 }
        if left > 0 {
            logger.warning("gateway drain timed out; closing connections", metadata: ["connections": "\(left)"])
            await shared.loops.forEachLoop { loop in loop.idle.forEach { $0.forceClose() } }
        }
        logger.info("gateway drained")
    }
}
