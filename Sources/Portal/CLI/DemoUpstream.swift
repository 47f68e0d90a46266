import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The demo API's upstream: answers every request with a JSON description of what it received
/// (method, path, query, headers, body), so a caller can see what the gateway forwarded.
enum EchoResponder {
    static let maximumEchoedBody = 64 * 1024

    static func responder() -> CallbackResponder<BasicRequestContext> {
        CallbackResponder { request, _ in
            var request = request
            let body = (try? await request.collectBody(upTo: 1 << 20)) ?? ByteBuffer()
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let text = String(buffer: body)
            let echo: [String: Any] = [
                "method": request.method.rawValue, "path": request.uri.path, "query": request.uri.query ?? "",
                "headers": headers, "body": String(text.prefix(maximumEchoedBody)), "body_bytes": body.readableBytes,
            ]
            let data = (try? JSONSerialization.data(withJSONObject: echo, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
    }
}

struct DemoUpstream: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-upstream",
        abstract: "Serve the demo upstreams: the Echo API's (HTTP, 127.0.0.1:9100) and the Greeter API's gRPC service (h2c, 127.0.0.1:9101), as `make run` starts them.")

    @Option(help: "Listen address.") var host = "127.0.0.1"
    @Option(help: "Listen port of the Echo upstream.") var port = 9100
    @Option(help: "Listen port of the demo gRPC service (0: none).") var grpcPort = 9101

    func run() async throws {
        let logger = Logger(label: "demo-upstream")
        var greeter: (any Channel)?
        if grpcPort != 0 {
            // the Echo upstream is what most callers want: a taken gRPC port only costs the Greeter
            do {
                greeter = try await DemoGreeter.serve(host: host, port: grpcPort)
            } catch {
                logger.warning("the demo gRPC service is not served", metadata: ["port": "\(grpcPort)", "error": "\(error)"])
            }
        }
        let app = Application(
            responder: EchoResponder.responder(), configuration: .init(address: .hostname(host, port: port), serverName: "tollgate-demo-upstream"),
            logger: logger)
        try await app.runService()
        try? await greeter?.close()
    }
}
