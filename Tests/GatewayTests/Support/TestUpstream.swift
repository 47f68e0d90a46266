import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

import struct Gateway.DevelopmentCA

/// A real HTTP upstream on 127.0.0.1 for gateway tests. It answers with a JSON echo of what it
/// received; a few paths misbehave on purpose: `/slow` answers after 3 s, `/close` drops the
/// connection without answering, `/status/NNN` answers with that status, `/big` sends 1 MiB,
/// `/chunked` sends its body in chunks, `/trailers` in chunks followed by trailers (`x-checksum`,
/// `x-note`). `Expect: 100-continue` gets an interim 100 first; HEAD requests and 204/304 answers
/// carry no body. With `http2`, it speaks HTTP/2 (prior knowledge, or ALPN `h2` over TLS) through
/// NIO's HTTP/2 stack, each stream converted to the same HTTP/1-style parts.
final class TestUpstream: Sendable {
    struct Seen: Sendable {
        let method: String
        let uri: String
        let headers: [(String, String)]
        let bodyBytes: Int
        /// The body as received (its first 64 KiB).
        var body: String = ""
        /// The request's trailers (chunked trailer section, or HTTP/2 trailing HEADERS).
        var trailers: [(String, String)] = []
        /// Which of the upstream's connections carried it (1 for the first accepted).
        var connection = 0
        /// The certificate (DER) the gateway presented on that connection's TLS handshake; nil
        /// when it presented none (or over plaintext).
        var clientCertificate: [UInt8]? = nil
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    private let channel: any Channel
    private let state = NIOLockedValueBox<(seen: [Seen], connections: Int, open: Int)>(([], 0, 0))
    var port: Int { channel.localAddress?.port ?? 0 }
    var seen: [Seen] { state.withLockedValue { $0.seen } }
    /// Connections accepted so far.
    var connections: Int { state.withLockedValue { $0.connections } }
    /// Connections open now (closed by either side: gone).
    var openConnections: Int { state.withLockedValue { $0.open } }

    private init(channel: any Channel) { self.channel = channel }

    /// With `tls`, the upstream speaks HTTPS (that server context's certificate).
    static func start(tls: NIOSSLContext? = nil, http2: Bool = false) async throws -> TestUpstream {
        let box = NIOLockedValueBox<TestUpstream?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let number = box.withLockedValue { $0 }?.state.withLockedValue { state in
                    state.connections += 1
                    state.open += 1
                    return state.connections
                } ?? 0
                channel.closeFuture.whenComplete { _ in box.withLockedValue { $0 }?.state.withLockedValue { $0.open -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    // each request is recorded with its connection and the client certificate that
                    // connection's handshake presented (read on the connection's loop, where its
                    // requests and streams run)
                    let record: @Sendable (Seen) -> Void = { seen in
                        var seen = seen
                        seen.connection = number
                        seen.clientCertificate = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).peerCertificate?.toDERBytes()
                        box.withLockedValue { $0 }?.state.withLockedValue { $0.seen.append(seen) }
                    }
                    if http2 {
                        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                        ) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                try stream.pipeline.syncOperations.addHandler(Handler(record: record))
                            }
                        }
                        return
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(record: record))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = TestUpstream(channel: channel)
        box.withLockedValue { $0 = upstream }
        return upstream
    }

    func stop() async { try? await channel.close() }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let record: @Sendable (Seen) -> Void
        var head: HTTPRequestHead?
        var bytes = 0
        var received = ByteBuffer()

        init(record: @escaping @Sendable (Seen) -> Void) { self.record = record }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                bytes = 0
                received.clear()
                if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                    context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
                }
            case .body(var buffer):
                bytes += buffer.readableBytes
                if received.readableBytes < 64 * 1024 { received.writeBuffer(&buffer) }
            case .end(let trailers):
                guard let head else { return }
                record(Seen(method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, bodyBytes: bytes,
                        body: String(buffer: received), trailers: trailers.map { $0.map { ($0.name, $0.value) } } ?? []))
                respond(head, context: context)
            }
        }

        private func respond(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
            if head.uri.hasPrefix("/close") {
                context.close(promise: nil)
                return
            }
            var status = HTTPResponseStatus.ok
            if head.uri.hasPrefix("/status/"), let code = Int(head.uri.dropFirst(8).prefix(3)) { status = HTTPResponseStatus(statusCode: code) }
            let body: ByteBuffer
            if head.uri.hasPrefix("/big") {
                body = ByteBuffer(repeating: UInt8(ascii: "x"), count: 1 << 20)
            } else {
                let headers = head.headers.map { "\"\($0.name.lowercased())\":\"\($0.value.replacingOccurrences(of: "\"", with: "'"))\"" }.joined(separator: ",")
                body = ByteBuffer(string: "{\"method\":\"\(head.method.rawValue)\",\"uri\":\"\(head.uri)\",\"body_bytes\":\(bytes),\"headers\":{\(headers)}}")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            if head.uri.hasPrefix("/early-hints") {
                // an interim 103 first, then the usual answer
                var hints = HTTPHeaders()
                hints.add(name: "Link", value: "</style.css>; rel=preload; as=style")
                let early = HTTPResponseHead(version: .http1_1, status: .custom(code: 103, reasonPhrase: "Early Hints"), headers: hints)
                context.writeAndFlush(wrapOutboundOut(.head(early)), promise: nil)
            }
            if head.uri.hasPrefix("/trailers") {
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                for part in ["first,", "second"] { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: part)))), promise: nil) }
                context.writeAndFlush(wrapOutboundOut(.end(["x-checksum": "abc123", "x-note": "done"])), promise: nil)
                return
            }
            if head.uri.hasPrefix("/chunked") {
                // no length: NIO's encoder frames the body in chunks, one per write
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                for part in ["first,", "second,", "third"] { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: part)))), promise: nil) }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            if head.method == .HEAD || status == .noContent || status == .notModified {
                if status != .noContent { headers.add(name: "Content-Length", value: String(body.readableBytes)) }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            headers.add(name: "Content-Length", value: String(body.readableBytes))
            headers.add(name: "Keep-Alive", value: "timeout=5")
            headers.add(name: "X-Upstream", value: "test")
            // a test asks for response headers: `X-Respond-With: Name=value|Other=value`
            if let spec = head.headers.first(name: "x-respond-with") {
                for item in spec.split(separator: "|") {
                    guard let equals = item.firstIndex(of: "=") else { continue }
                    headers.add(name: String(item[..<equals]), value: String(item[item.index(after: equals)...]))
                }
            }
            let write = {
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            }
            if head.uri.hasPrefix("/slow") {
                context.eventLoop.assumeIsolatedUnsafeUnchecked().scheduleTask(in: .seconds(3)) { write() }
            } else {
                write()
            }
        }
    }
}

extension TestUpstream {
    /// A TLS upstream's context: a certificate for localhost/127.0.0.1 from `ca`, offering `alpn`;
    /// with `optionalClientCertificates`, client certificates from `ca` are asked for but not required.
    static func serverContext(_ ca: DevelopmentCA, alpn: [String], optionalClientCertificates: Bool = false) throws -> NIOSSLContext {
        let leaf = try ca.issue(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(leaf.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(leaf.privateKeyPEM.utf8), format: .pem)))
        server.minimumTLSVersion = .tlsv12
        server.applicationProtocols = alpn
        if optionalClientCertificates {
            server.certificateVerification = .optionalVerification
            server.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.certificatePEM.utf8)))
        }
        return try NIOSSLContext(configuration: server)
    }
}
