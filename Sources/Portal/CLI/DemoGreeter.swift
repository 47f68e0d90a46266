import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// The demo gRPC service behind the seeded "Greeter" API: `demo.Greeter/SayHello` over cleartext
/// HTTP/2, the request `HelloRequest { string name = 1; }` and the reply `HelloReply { string
/// message = 1; }` — small enough to encode by hand, so any stock gRPC client with those two
/// messages can call it through the gateway.
enum DemoGreeter {
    /// Listens on `host:port` until the returned channel is closed.
    static func serve(host: String, port: Int) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(CallHandler()) }
                    }
                }
            }
            .bind(host: host, port: port).get()
    }

    /// The `HelloReply` message for a `HelloRequest`'s bytes; nil when they are not one.
    static func reply(to request: [UInt8]) -> [UInt8]? {
        guard let name = ProtoText.firstString(field: 1, in: request) else { return nil }
        return ProtoText.message(field: 1, string: "Hello, \(name.isEmpty ? "world" : name)!")
    }

    private final class CallHandler: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame.FramePayload
        typealias OutboundOut = HTTP2Frame.FramePayload

        private var path = ""
        private var body: [UInt8] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .headers(let headers):
                if let path = headers.headers.first(name: ":path") { self.path = path }
                if headers.endStream { answer(context: context) }
            case .data(let data):
                if case .byteBuffer(var buffer) = data.data, body.count + buffer.readableBytes <= 64 * 1024 {
                    body += buffer.readBytes(length: buffer.readableBytes) ?? []
                }
                if data.endStream { answer(context: context) }
            default:
                break
            }
        }

        private func answer(context: ChannelHandlerContext) {
            var head = HPACKHeaders([(":status", "200"), ("content-type", "application/grpc")])
            var trailers = HPACKHeaders()
            // one length-prefixed message: flag 0 (not compressed), 4-byte big-endian length
            if path == "/demo.Greeter/SayHello", body.count >= 5, body[0] == 0,
                let reply = DemoGreeter.reply(to: Array(body[5...]))
            {
                var frame = context.channel.allocator.buffer(capacity: reply.count + 5)
                frame.writeInteger(UInt8(0))
                frame.writeInteger(UInt32(reply.count))
                frame.writeBytes(reply)
                context.write(wrapOutboundOut(.headers(.init(headers: head))), promise: nil)
                context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(frame)))), promise: nil)
                trailers.add(name: "grpc-status", value: "0")
                context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
                return
            }
            // trailers-only: an unknown method, or a request that is not a HelloRequest
            let unknown = path != "/demo.Greeter/SayHello"
            head.add(name: "grpc-status", value: unknown ? "12" : "3")
            head.add(name: "grpc-message", value: unknown ? "unknown method" : "expected one HelloRequest")
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: head, endStream: true))), promise: nil)
        }
    }
}

/// The little of the protobuf wire format the demo needs: length-delimited string fields.
enum ProtoText {
    /// The first string (wire type 2) with field number `field`; other fields are skipped.
    static func firstString(field: Int, in bytes: [UInt8]) -> String? {
        var index = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while index < bytes.count, shift < 64 {
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        var found: String?
        while index < bytes.count {
            guard let key = varint() else { return nil }
            switch key & 7 {
            case 0: guard varint() != nil else { return nil }
            case 1: index += 8
            case 5: index += 4
            case 2:
                guard let length = varint(), length <= UInt64(bytes.count - index) else { return nil }
                let end = index + Int(length)
                if key >> 3 == UInt64(field) && found == nil {
                    guard let text = String(validating: bytes[index..<end], as: UTF8.self) else { return nil }
                    found = text
                }
                index = end
            default: return nil
            }
            if index > bytes.count { return nil }
        }
        return found ?? ""  // proto3: an absent string is the empty one
    }

    static func message(field: Int, string: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(field << 3 | 2)]
        var length = UInt64(string.utf8.count)
        repeat {
            let byte = UInt8(length & 0x7f)
            length >>= 7
            out.append(length == 0 ? byte : byte | 0x80)
        } while length != 0
        return out + Array(string.utf8)
    }
}
