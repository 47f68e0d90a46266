import Foundation
import NIOHTTP1
import Testing

@testable import Gateway

/// Calls to a gRPC target are refused, translated or relayed by one decision
/// (`ForwardPlan.gRPCForwarding`) whichever protocol the client speaks: the same answers from an
/// HTTP/1.1 and an HTTP/2 client. A real HTTP/2 upstream on loopback; the kitchen descriptor set.
@Suite struct GRPCForwardingTests {
    static let key = ("X-API-Key", TestWorld.apiKey)

    static func grpcTarget(_ port: Int) -> UpstreamTargetConfig {
        UpstreamTargetConfig(host: "127.0.0.1", port: port, pathPrefix: "", weight: 1, http2: true)
    }

    @Test func aMethodTheDescriptorSetLacksIsNoSuchMethodFromBothClients() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let transcoding = GRPCTranscoding(schema: try TranscodingFixtures.kitchen())
        let snapshot = TestWorld().snapshot(targets: [Self.grpcTarget(upstream.port)], transcoding: transcoding)
        try await GatewayHarness.run(snapshot: snapshot) { gateway in
            // act
            let overHTTP1 = try await gateway.request("POST", "/t/demo/echo/v1/tollgate.test.Kitchen/Nope", headers: [Self.key], body: "{}")
            let overHTTP2 = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/tollgate.test.Kitchen/Nope", headers: [("x-api-key", TestWorld.apiKey)], body: ["{}"])
            // assert
            #expect(overHTTP1.status == 404 && overHTTP1.body.contains("No such method"), "\(overHTTP1.body)")
            #expect(overHTTP2.status == 404 && overHTTP2.body.contains("No such method"), "\(overHTTP2.body)")
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func withoutADescriptorSetHTTP1IsRefusedAndHTTP2Relayed() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        try await GatewayHarness.run(snapshot: TestWorld().snapshot(targets: [Self.grpcTarget(upstream.port)])) { gateway in
            // act
            let overHTTP1 = try await gateway.request("POST", "/t/demo/echo/v1/pkg.Svc/Call", headers: [Self.key], body: "x")
            let overHTTP2 = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/pkg.Svc/Call", headers: [("x-api-key", TestWorld.apiKey)], body: ["x"])
            // assert
            #expect(overHTTP1.status == 505 && overHTTP1.body.contains("HTTP/2 required"), "\(overHTTP1.body)")
            #expect(overHTTP2.status == 200)
            #expect(upstream.seen.map(\.uri) == ["/pkg.Svc/Call"])
        }
    }

    @Test func requestValidationOnAGRPCTargetFailsClosedFromBothClients() async throws {
        // setup
        let upstream = try await TestUpstream.start(http2: true)
        defer { Task { await upstream.stop() } }
        let snapshot = TestWorld().snapshot(targets: [Self.grpcTarget(upstream.port)], requestValidation: .unusable("not for gRPC"))
        try await GatewayHarness.run(snapshot: snapshot) { gateway in
            // act
            let overHTTP1 = try await gateway.request("POST", "/t/demo/echo/v1/pkg.Svc/Call", headers: [Self.key], body: "x")
            let overHTTP2 = try await HTTP2TestClient.request(
                port: gateway.port, method: .POST, path: "/t/demo/echo/v1/pkg.Svc/Call", headers: [("x-api-key", TestWorld.apiKey)], body: ["x"])
            // assert
            #expect(overHTTP1.status == 503 && overHTTP1.body.contains("Validation unavailable"))
            #expect(overHTTP2.status == 503 && overHTTP2.body.contains("Validation unavailable"))
            #expect(upstream.seen.isEmpty)
        }
    }
}
