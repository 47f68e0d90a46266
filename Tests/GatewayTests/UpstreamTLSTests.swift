import Billing
import Foundation
import NIOCore
import NIOSSL
import Testing

@testable import Gateway

/// `https://` upstreams: a real TLS upstream on loopback with a certificate from a CA made in the
/// test (`DevelopmentCA`), verified against the API's CA bundle, the host name checked.
@Suite struct UpstreamTLSTests {
    /// A CA, and an upstream serving a certificate it issued for `localhost` and 127.0.0.1.
    static func withTLSUpstream(
        dnsNames: [String] = ["localhost"], ipAddresses: [String] = ["127.0.0.1"], _ body: @Sendable (DevelopmentCA, TestUpstream) async throws -> Void
    ) async throws {
        let ca = try DevelopmentCA.create(commonName: "test CA")
        let leaf = try ca.issue(dnsNames: dnsNames, ipAddresses: ipAddresses)
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(leaf.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(leaf.privateKeyPEM.utf8), format: .pem)))
        server.minimumTLSVersion = .tlsv12
        let upstream = try await TestUpstream.start(tls: try NIOSSLContext(configuration: server))
        do {
            try await body(ca, upstream)
        } catch {
            await upstream.stop()
            throw error
        }
        await upstream.stop()
    }

    static func snapshot(_ world: TestWorld, url: String, caBundle: String?) throws -> GatewaySnapshot {
        world.snapshot(targets: [try #require(UpstreamTargetConfig(url: url, weight: 1))], upstreamTLS: try UpstreamTLS.context(caBundlePEM: caBundle))
    }

    @Test func httpsTargetsParseWithTheirDefaultPort() throws {
        let target = try #require(UpstreamTargetConfig(url: "HTTPS://api.example.com/v2/", weight: 0))
        #expect(target.tls && target.port == 443 && target.host == "api.example.com" && target.pathPrefix == "/v2" && target.weight == 1)
        #expect(target.key == "https://api.example.com:443" && target.hostHeader == "api.example.com")
        let plain = try #require(UpstreamTargetConfig(url: "http://api.example.com", weight: 2))
        #expect(!plain.tls && plain.port == 80 && plain.key == "api.example.com:80" && plain.hostHeader == "api.example.com")
        #expect(UpstreamTargetConfig(url: "https://api.example.com:8443", weight: 1)?.hostHeader == "api.example.com:8443")
        #expect(UpstreamTargetConfig(url: "ftp://api.example.com", weight: 1) == nil)
    }

    @Test func aCertificateFromTheAPIsCAIsVerifiedAndTheCallProxied() async throws {
        try await Self.withTLSUpstream { ca, upstream in
            let world = TestWorld()
            // by name (SNI and the DNS name checked) and by address (the IP address checked)
            for url in ["https://localhost:\(upstream.port)/base", "https://127.0.0.1:\(upstream.port)/base"] {
                let snapshot = try Self.snapshot(world, url: url, caBundle: ca.certificatePEM)
                try await GatewayHarness.run(snapshot: snapshot) { gateway in
                    let response = try await gateway.request("GET", "/t/demo/echo/v1/hello?x=1", headers: [("X-API-Key", TestWorld.apiKey)])
                    #expect(response.status == 200, "\(url): \(response.body)")
                    #expect(response.body.contains("\"uri\":\"/base/hello?x=1\""))
                    // keep-alive over TLS: a second call reuses the connection
                    #expect(try await gateway.request("GET", "/t/demo/echo/v1/again", headers: [("X-API-Key", TestWorld.apiKey)]).status == 200)
                    #expect(gateway.usage.recent.allSatisfy { $0.isBillable })
                }
            }
            #expect(upstream.seen.count == 4)
            #expect(upstream.seen.first?.header("host") == "localhost:\(upstream.port)")
        }
    }

    @Test func anUpstreamThatAsksForAClientCertificateGetsTheAPIsAndRefusesCallsWithout() async throws {
        let ca = try DevelopmentCA.create(commonName: "mutual CA")
        let leaf = try ca.issue(dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"])
        let clientIdentity = try ca.issue(dnsNames: ["gateway.example.com"], client: true)
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(leaf.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(leaf.privateKeyPEM.utf8), format: .pem)))
        server.minimumTLSVersion = .tlsv12
        // the upstream requires a client certificate from its CA
        server.certificateVerification = .noHostnameVerification
        server.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.certificatePEM.utf8)))
        let upstream = try await TestUpstream.start(tls: try NIOSSLContext(configuration: server))
        let world = TestWorld()
        let target = try #require(UpstreamTargetConfig(url: "https://localhost:\(upstream.port)", weight: 1))
        let withIdentity = try UpstreamTLS.context(
            caBundlePEM: ca.certificatePEM,
            client: UpstreamTLS.ClientIdentity(certificatePEM: clientIdentity.certificatePEM, privateKeyPEM: Array(clientIdentity.privateKeyPEM.utf8)))
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [target], upstreamTLS: withIdentity)) { gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 200, "\(response.body)")
        }
        try await GatewayHarness.run(snapshot: world.snapshot(targets: [target], upstreamTLS: try UpstreamTLS.context(caBundlePEM: ca.certificatePEM))) {
            gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 502)
            #expect(gateway.usage.recent.last?.isBillable == false)
        }
        #expect(upstream.seen.count == 1)
        // the portal's check: a key that is not the certificate's, an expired certificate
        let other = try ca.issue(dnsNames: ["x"], client: true)
        #expect(UpstreamTLS.validate(clientCertificatePEM: clientIdentity.certificatePEM, privateKeyPEM: clientIdentity.privateKeyPEM) == nil)
        #expect(UpstreamTLS.validate(clientCertificatePEM: clientIdentity.certificatePEM, privateKeyPEM: other.privateKeyPEM)?.contains("does not belong") == true)
        let expired = try ca.issue(dnsNames: ["x"], days: 1, now: Date().addingTimeInterval(-3 * 86_400), client: true)
        #expect(UpstreamTLS.validate(clientCertificatePEM: expired.certificatePEM, privateKeyPEM: expired.privateKeyPEM)?.contains("expired") == true)
        await upstream.stop()
    }

    @Test func anUntrustedCertificateIsA502SayingSoAndNotBillable() async throws {
        try await Self.withTLSUpstream { _, upstream in
            let world = TestWorld()
            // the system trust store does not know the test CA; another CA's bundle does not either
            let other = try DevelopmentCA.create(commonName: "someone else")
            for bundle in [nil, other.certificatePEM] {
                let snapshot = try Self.snapshot(world, url: "https://localhost:\(upstream.port)", caBundle: bundle)
                try await GatewayHarness.run(snapshot: snapshot) { gateway in
                    let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
                    #expect(response.status == 502)
                    #expect(response.body.contains("certificate could not be verified"), "\(response.body)")
                    #expect(gateway.usage.recent.last?.isBillable == false)
                    #expect(gateway.usage.recent.last?.status == 502)
                }
            }
            #expect(upstream.seen.isEmpty)  // nothing was sent to an upstream not trusted
        }
    }

    @Test func aCertificateForAnotherNameIsRefused() async throws {
        // a certificate for other.test only: neither localhost nor 127.0.0.1 may accept it
        try await Self.withTLSUpstream(dnsNames: ["other.test"], ipAddresses: []) { ca, upstream in
            let world = TestWorld()
            for url in ["https://localhost:\(upstream.port)", "https://127.0.0.1:\(upstream.port)"] {
                let snapshot = try Self.snapshot(world, url: url, caBundle: ca.certificatePEM)
                try await GatewayHarness.run(snapshot: snapshot) { gateway in
                    let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
                    #expect(response.status == 502, "\(url)")
                    #expect(response.body.contains("TLS") || response.body.contains("certificate"), "\(response.body)")
                }
            }
            #expect(upstream.seen.isEmpty)
        }
    }

    @Test func aPlainHTTPUpstreamBehindAnHTTPSTargetIsA502() async throws {
        // an http upstream named as https: the handshake meets plain HTTP
        try await GatewayProxyTests.withWorld({ world, upstream in
            (try? Self.snapshot(world, url: "https://127.0.0.1:\(upstream.port)", caBundle: nil)) ?? world.snapshot(targets: [])
        }) { _, _, gateway in
            let response = try await gateway.request("GET", "/t/demo/echo/v1/hello", headers: [("X-API-Key", TestWorld.apiKey)])
            #expect(response.status == 502)
            #expect(response.body.contains("TLS"), "\(response.body)")
        }
    }

    @Test func caBundlesThatAreNotCertificatesAreRefused() throws {
        #expect(UpstreamTLS.validate(caBundlePEM: "not a certificate") != nil)
        #expect(UpstreamTLS.validate(caBundlePEM: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") != nil)
        let ca = try DevelopmentCA.create()
        #expect(UpstreamTLS.validate(caBundlePEM: ca.certificatePEM) == nil)
        #expect(UpstreamTLS.validate(caBundlePEM: ca.certificatePEM + "\r\n" + ca.certificatePEM) == nil)  // a bundle of two
    }
}
