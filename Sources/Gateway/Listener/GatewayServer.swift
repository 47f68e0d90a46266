import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The data-plane listener: HTTP/1.1 with keep-alive, built directly on SwiftNIO channel handlers
/// (see docs/ARCHITECTURE.md for why not Hummingbird on this path).
///
/// This release answers the infrastructure endpoints (`/healthz`, `/readyz`, `/metrics`) and 404
/// problem+json for everything else; routing, authentication, limits and proxying arrive with the
/// gateway data-plane work and plug into `GatewayRequestHandler`.
public struct GatewayServer: Service {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Largest request head accepted before answering 431.
        public var maxHeaderBytes: Int = 16 * 1024
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    let configuration: Configuration
    let readiness: Readiness
    let metricsText: @Sendable () -> String
    let logger: Logger
    let onBound: @Sendable (Int) -> Void

    public init(
        configuration: Configuration, readiness: Readiness, logger: Logger, metricsText: @escaping @Sendable () -> String,
        onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.readiness = readiness
        self.metricsText = metricsText
        self.logger = logger
        self.onBound = onBound
    }

    public func run() async throws {
        let readiness = self.readiness
        let metricsText = self.metricsText
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        GatewayRequestHandler(readiness: readiness, metricsText: metricsText))
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        let port = channel.localAddress?.port ?? configuration.port
        logger.info("gateway listening", metadata: ["address": "\(configuration.host):\(port)"])
        onBound(port)
        // Serve until graceful shutdown is requested, then stop accepting and close.
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Per-connection handler. Keeps its state in place and answers synchronously on the event loop.
final class GatewayRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let readiness: Readiness
    private let metricsText: @Sendable () -> String
    private var head: HTTPRequestHead?

    init(readiness: Readiness, metricsText: @escaping @Sendable () -> String) {
        self.readiness = readiness
        self.metricsText = metricsText
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    /// Protocol errors (malformed HTTP) were already answered with 400 by NIO's error handler;
    /// the connection cannot be trusted to resynchronise, so it is closed.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let (status, contentType, body): (HTTPResponseStatus, String, String)
        switch path {
        case "/healthz":
            (status, contentType, body) = (.ok, "application/json", "{\"status\":\"ok\"}")
        case "/readyz":
            (status, contentType, body) = (readiness.report.isReady ? .ok : .serviceUnavailable, "application/json", readiness.json)
        case "/metrics":
            (status, contentType, body) = (.ok, "text/plain; version=0.0.4; charset=utf-8", metricsText())
        default:
            (status, contentType, body) = (
                .notFound, "application/problem+json",
                "{\"type\":\"about:blank\",\"title\":\"No route\",\"status\":404,\"detail\":\"No published API matches this path.\"}"
            )
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }
}
