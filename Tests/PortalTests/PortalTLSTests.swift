import AsyncHTTPClient
import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOEmbedded
import NIOSSL
import Prometheus
import ServiceLifecycle
import Testing

@testable import Portal

/// The portal's own TLS listener (PORTAL_TLS_ADDRESS): the same router, cookies marked Secure and
/// `Strict-Transport-Security` on its responses, and no way for a plaintext client to claim TLS.
@Suite struct PortalTLSTests {
    static func login(_ responder: some HTTPResponder<AppRequestContext>, forged: Bool = false) async throws -> Response {
        var fields = HTTPFields()
        if forged { fields[.tollgateConnectionTLS] = "1" }
        let request = Request(
            head: HTTPRequest(method: .get, scheme: "http", authority: "127.0.0.1", path: "/t/acme/login", headerFields: fields),
            body: RequestBody(buffer: ByteBuffer()))
        let context = AppRequestContext(source: .init(channel: EmbeddedChannel(), logger: TestDatabase.logger))
        return try await responder.respond(to: request, context: context)
    }

    @Test func cookiesAreSecureAndHSTSIsSentOnlyOverTheTLSListener() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            let router = buildRouter(services: portal.services, metrics: PrometheusCollectorRegistry()).buildResponder()
            // over TLS
            let secure = try await Self.login(ConnectionSecurityResponder(inner: router, overTLS: true))
            #expect(secure.status == .ok)
            #expect(secure.headers[values: .setCookie].allSatisfy { $0.contains("Secure") } && !secure.headers[values: .setCookie].isEmpty)
            #expect(secure.headers[.strictTransportSecurity] == "max-age=31536000")
            // plaintext, even with the internal header forged by the client
            for forged in [false, true] {
                let plain = try await Self.login(ConnectionSecurityResponder(inner: router, overTLS: false), forged: forged)
                #expect(plain.status == .ok)
                #expect(!plain.headers[values: .setCookie].contains { $0.contains("Secure") }, "forged: \(forged)")
                #expect(plain.headers[.strictTransportSecurity] == nil)
            }
        }
    }

    @Test func theTLSListenerServesThePortalWithTheStoresCertificate() async throws {
        try await TestPortal.withAcmeAdmin { portal in
            // setup: a certificate directory from a development CA, the TLS application on a free port
            let ca = try DevelopmentCA.create(commonName: "portal test CA")
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portal-tls-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let pair = try ca.issue(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
            try pair.privateKeyPEM.write(toFile: directory + "/default.key", atomically: true, encoding: .utf8)
            try pair.certificatePEM.write(toFile: directory + "/default.pem", atomically: true, encoding: .utf8)
            let store = try CertificateStore(directory: directory, logger: TestDatabase.logger)
            let bound = AsyncStream<Int>.makeStream()
            let app = try buildTLSApplication(
                services: portal.services, metrics: PrometheusCollectorRegistry(), host: "127.0.0.1", port: 0, logger: TestDatabase.logger,
                tls: store.serverConfiguration(), onServerRunning: { bound.continuation.yield($0) })
            let group = ServiceGroup(services: [app], logger: TestDatabase.logger)
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.certificatePEM.utf8)))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var port = 0
                for await value in bound.stream {
                    port = value
                    break
                }
                // act: a stock HTTP client over TLS, trusting only the test CA
                let response = try await client.execute(HTTPClientRequest(url: "https://localhost:\(port)/t/acme/login"), timeout: .seconds(10))
                let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
                // assert
                #expect(response.status == .ok)
                #expect(response.headers.first(name: "strict-transport-security") == "max-age=31536000")
                #expect(response.headers["set-cookie"].contains { $0.contains("Secure") })
                #expect(body.contains("<form"))
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
            try await client.shutdown()
        }
    }
}
