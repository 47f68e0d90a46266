import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// An HTTP/2 client for gateway tests: NIO's own HTTP/2 stack (prior knowledge on the plaintext
/// listener), one request per stream through NIO's HTTP/1-style stream codec.
enum HTTP2TestClient {
    struct Response: Sendable {
        var status: Int = 0
        var headers: [(String, String)] = []
        var body = ""
        var trailers: [(String, String)] = []
        /// Informational answers before the final one (their status codes).
        var interim: [Int] = []
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name }?.1 }
        func trailer(_ name: String) -> String? { trailers.first { $0.0.lowercased() == name }?.1 }
    }

    /// One request on a new connection; `body` in `parts` DATA frames, then `trailers` if any.
    static func request(
        port: Int, method: HTTPMethod = .GET, path: String, headers: [(String, String)] = [], body: [String] = [], trailers: [(String, String)] = []
    ) async throws -> Response {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        defer { channel.close(promise: nil) }
        let promise = channel.eventLoop.makePromise(of: Response.self)
        let stream = try await channel.eventLoop.flatSubmit {
            do {
                let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                    mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                ) { $0.eventLoop.makeSucceededVoidFuture() }
                return multiplexer.createStreamChannel { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                        try stream.pipeline.syncOperations.addHandler(Collector(promise: promise))
                    }
                }
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }.get()
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: "127.0.0.1:\(port)")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        stream.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in body { stream.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: part))), promise: nil) }
        let trailerFields = trailers.isEmpty ? nil : HTTPHeaders(trailers)
        stream.writeAndFlush(HTTPClientRequestPart.end(trailerFields), promise: nil)
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(20)) { promise.fail(ChannelError.ioOnClosedChannel) }
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }

    /// GET requests on one connection, all streams open at once; the responses in the order of `paths`.
    static func concurrentRequests(port: Int, paths: [String], headers: [(String, String)] = []) async throws -> [Response] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
        defer { channel.close(promise: nil) }
        let promises = paths.map { _ in channel.eventLoop.makePromise(of: Response.self) }
        let multiplexer = try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.configureHTTP2Pipeline(mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()) {
                $0.eventLoop.makeSucceededVoidFuture()
            }
        }.get()
        var streams: [any Channel] = []
        for promise in promises {
            streams.append(
                try await multiplexer.createStreamChannel { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
                        try stream.pipeline.syncOperations.addHandler(Collector(promise: promise))
                    }
                }.get())
        }
        for (stream, path) in zip(streams, paths) {
            var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
            head.headers.add(name: "host", value: "127.0.0.1:\(port)")
            for (name, value) in headers { head.headers.add(name: name, value: value) }
            stream.write(HTTPClientRequestPart.head(head), promise: nil)
            stream.write(HTTPClientRequestPart.end(nil), promise: nil)
        }
        // every stream's request is sent from one task of the connection's loop
        let opened = streams
        try await channel.eventLoop.submit { for stream in opened { stream.flush() } }.get()
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(20)) { for promise in promises { promise.fail(ChannelError.ioOnClosedChannel) } }
        defer { timeout.cancel() }
        var responses: [Response] = []
        for promise in promises { responses.append(try await promise.futureResult.get()) }
        return responses
    }

    private final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<Response>
        var response = Response()

        init(promise: EventLoopPromise<Response>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                if head.status.code < 200 {
                    response.interim.append(Int(head.status.code))
                } else {
                    response.status = Int(head.status.code)
                    response.headers = head.headers.map { ($0.name, $0.value) }
                }
            case .body(let buffer):
                response.body += String(buffer: buffer)
            case .end(let trailers):
                response.trailers = trailers.map { $0.map { ($0.name, $0.value) } } ?? []
                promise.succeed(response)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ChannelError.ioOnClosedChannel)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
