import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import Gateway

/// The gateway's TLS listener with real TLS clients (BoringSSL through swift-nio-ssl): SNI picks
/// the certificate, TLS below 1.2 is refused, renewed and new certificates are served without a
/// restart, and responses carry `Strict-Transport-Security`.
@Suite struct GatewayTLSListenerTests {
    /// A directory with a `default` pair for localhost/127.0.0.1 and one for api.example.test,
    /// both from `ca`.
    static func certificateDirectory(_ ca: DevelopmentCA) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // no IP address in it: NIOSSL's client accepts a certificate for the peer's address whatever
        // name it asked for, which would hide which certificate was served
        try write(ca.issue(dnsNames: ["localhost", "*.localhost"]), to: directory, as: "default")
        try write(ca.issue(dnsNames: ["api.example.test"]), to: directory, as: "api")
        try ca.certificatePEM.write(toFile: "\(directory)/ca.pem", atomically: true, encoding: .utf8)  // no key beside it: not served
        return directory
    }

    static func write(_ pair: (certificatePEM: String, privateKeyPEM: String), to directory: String, as name: String) throws {
        try pair.privateKeyPEM.write(toFile: "\(directory)/\(name).key", atomically: true, encoding: .utf8)
        try pair.certificatePEM.write(toFile: "\(directory)/\(name).pem", atomically: true, encoding: .utf8)
    }

    /// One request over TLS, trusting only `ca` and checking the certificate against `serverName`;
    /// everything the server sent until it closed.
    static func exchange(
        port: Int, serverName: String?, ca: DevelopmentCA, maximumVersion: TLSVersion? = nil, _ request: String
    ) async throws -> String {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.certificatePEM.utf8)))
        configuration.maximumTLSVersion = maximumVersion
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: String.self)
        let recorder = ErrorRecorder()
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
                    try channel.pipeline.syncOperations.addHandler(recorder)
                    try channel.pipeline.syncOperations.addHandler(GatewayListenerTests.ResponseCollector(promise: promise))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
        try await channel.writeAndFlush(ByteBuffer(string: request))
        let text = try await promise.futureResult.get()
        if let error = recorder.first.withLockedValue({ $0 }) { throw error }
        return text
    }

    /// Remembers the first error (a failed handshake) before the collector sees the close.
    final class ErrorRecorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        let first = NIOLockedValueBox<(any Error)?>(nil)
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            first.withLockedValue { $0 = $0 ?? error }
            context.fireErrorCaught(error)
        }
    }

    struct HandshakeRefused: Error {}

    static func withTLSGateway(_ body: @Sendable (DevelopmentCA, String, GatewayHarness, Int) async throws -> Void) async throws {
        let ca = try DevelopmentCA.create(commonName: "listener test CA")
        let directory = try certificateDirectory(ca)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try CertificateStore(directory: directory, logger: Logger(label: "test"))
        try await GatewayProxyTests.withWorld(configure: { configuration in
            var listener = TLSListenerFixture.listener(store)
            listener.reloadInterval = .milliseconds(100)
            configuration.tls = listener
        }) { _, _, gateway in
            try await body(ca, directory, gateway, try #require(gateway.tlsPort))
        }
    }

    @Test func sniPicksTheCertificateAndCallsAreProxiedOverTLS() async throws {
        try await Self.withTLSGateway { ca, _, gateway, port in
            let call = "GET /t/demo/echo/v1/hello HTTP/1.1\r\nHost: localhost\r\nX-API-Key: \(TestWorld.apiKey)\r\nConnection: close\r\n\r\n"
            // the default pair for localhost and its subdomains
            for name in ["localhost", "demo.localhost"] {
                let text = try await Self.exchange(port: port, serverName: name, ca: ca, call)
                let response = try #require(RawResponse.parseAll(text).first, "\(name): \(text)")
                #expect(response.status == 200)
                #expect(response.headers["strict-transport-security"] == "max-age=31536000")
                #expect(response.body.contains("\"x-forwarded-proto\":\"https\""))
            }
            // api.example.test gets its own certificate (the client checks the name against it)
            let own = try await Self.exchange(port: port, serverName: "api.example.test", ca: ca, call)
            #expect(own.hasPrefix("HTTP/1.1 200"))
            // a name no pair serves gets the default certificate, which the client refuses
            await #expect(throws: (any Error).self) {
                let text = try await Self.exchange(port: port, serverName: "unknown.example.test", ca: ca, call)
                if !text.hasPrefix("HTTP/1.1 200") { throw HandshakeRefused() }
            }
            // the plaintext listener is unchanged: no HSTS, X-Forwarded-Proto http
            let plain = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(plain.status == 200 && plain.headers["strict-transport-security"] == nil)
            #expect(plain.body.contains("\"x-forwarded-proto\":\"http\""))
        }
    }

    @Test func tlsBelow1Point2IsRefused() async throws {
        try await Self.withTLSGateway { ca, _, _, port in
            await #expect(throws: (any Error).self) {
                let text = try await Self.exchange(
                    port: port, serverName: "localhost", ca: ca, maximumVersion: .tlsv11, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if !text.hasPrefix("HTTP/1.1 200") { throw HandshakeRefused() }
            }
        }
    }

    @Test func aNewCertificateIsServedWithoutARestartAndOpenConnectionsStay() async throws {
        try await Self.withTLSGateway { ca, directory, _, port in
            // setup: a keep-alive TLS connection open, and a name nobody serves yet
            let health = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            await #expect(throws: (any Error).self) {
                let text = try await Self.exchange(port: port, serverName: "new.example.test", ca: ca, health)
                if !text.hasPrefix("HTTP/1.1 200") { throw HandshakeRefused() }
            }
            // act: a pair for it lands in the directory
            try Self.write(ca.issue(dnsNames: ["new.example.test"]), to: directory, as: "new")
            // assert: within a few reload intervals the name is served, by the same process
            var served = false
            for _ in 0..<50 where !served {
                try await Task.sleep(for: .milliseconds(100))
                served = (try? await Self.exchange(port: port, serverName: "new.example.test", ca: ca, health))?.hasPrefix("HTTP/1.1 200") == true
            }
            #expect(served)
            // the earlier names still work
            #expect(try await Self.exchange(port: port, serverName: "api.example.test", ca: ca, health).hasPrefix("HTTP/1.1 200"))
        }
    }

    @Test func theStoreChoosesByExactNameThenWildcardThenDefault() throws {
        let ca = try DevelopmentCA.create()
        let directory = try Self.certificateDirectory(ca)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try CertificateStore(directory: directory, logger: Logger(label: "test"))
        #expect(store.entries.map(\.file) == ["api", "default"])
        #expect(store.select("API.Example.Test.").file == "api")
        #expect(store.select("demo.localhost").file == "default")
        #expect(store.select("deep.demo.localhost").file == "default")  // fallback, not a wildcard match
        #expect(store.select(nil).file == "default")
        #expect(store.select("unknown.test").file == "default")
        // a key that does not belong to its certificate is not loaded; the rest still are
        let other = try ca.issue(dnsNames: ["mismatch.test"])
        let mine = try ca.issue(dnsNames: ["mismatch.test"])
        try other.certificatePEM.write(toFile: "\(directory)/mismatch.pem", atomically: true, encoding: .utf8)
        try mine.privateKeyPEM.write(toFile: "\(directory)/mismatch.key", atomically: true, encoding: .utf8)
        #expect(store.reloadIfChanged())
        #expect(store.entries.map(\.file) == ["api", "default"])
        // an empty directory is an error at start
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("tls-empty-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(throws: CertificateStore.LoadError.self) { try CertificateStore(directory: empty, logger: Logger(label: "test")) }
    }
}

enum TLSListenerFixture {
    static func listener(_ store: CertificateStore) -> GatewayServer.Configuration.TLSListener {
        GatewayServer.Configuration.TLSListener(host: "127.0.0.1", port: 0, certificates: store)
    }
}
