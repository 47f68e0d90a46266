import Foundation
import Logging
import NIOSSL
import Testing

@testable import Gateway

/// Certificates an operator stores for a tenant's custom host: what a listener accepts to serve,
/// and that a stored one is served for its host on the next handshake.
@Suite struct ManagedCertificateTests {
    static let host = "shop.example.com"

    static func refusal(_ chain: String, _ key: String, host: String = host, now: Date = Date()) -> HostCertificateCheck.Problem? {
        if case .failure(let problem) = HostCertificateCheck.check(chainPEM: chain, keyPEM: key, host: host, now: now) { return problem }
        return nil
    }

    @Test func aPairIsServedOnlyForItsHostAndOnlyWhenAServerCouldUseIt() throws {
        let ca = try DevelopmentCA.create(commonName: "host CA")
        let pair = try ca.issue(dnsNames: [Self.host, "other.example.com"])
        // accepted, and served for the tenant's host only (not the other name it carries)
        let entry = try HostCertificateCheck.check(chainPEM: pair.certificatePEM, keyPEM: pair.privateKeyPEM, host: "Shop.Example.com.").get()
        #expect(entry.names == [Self.host])
        // a wildcard one label up serves it; two labels up does not
        let wildcard = try ca.issue(dnsNames: ["*.example.com"])
        #expect(Self.refusal(wildcard.certificatePEM, wildcard.privateKeyPEM) == nil)
        #expect(Self.refusal(wildcard.certificatePEM, wildcard.privateKeyPEM, host: "a.shop.example.com")?.field == .certificate)
        // each refusal names its field
        let other = try ca.issue(dnsNames: [Self.host])
        #expect(Self.refusal(pair.certificatePEM, other.privateKeyPEM) == .init(field: .privateKey, message: "This key does not belong to the certificate."))
        #expect(Self.refusal(pair.certificatePEM, pair.privateKeyPEM, host: "elsewhere.example.com")?.message.contains("does not name elsewhere.example.com") == true)
        #expect(Self.refusal(pair.certificatePEM, pair.privateKeyPEM, now: Date().addingTimeInterval(900 * 86_400))?.message.contains("expired") == true)
        #expect(Self.refusal(pair.certificatePEM, pair.privateKeyPEM, now: Date().addingTimeInterval(-86_400))?.message.contains("not valid yet") == true)
        #expect(Self.refusal(pair.privateKeyPEM + pair.certificatePEM, pair.privateKeyPEM)?.field == .certificate)  // a key in the chain field
        #expect(Self.refusal("hello", pair.privateKeyPEM)?.field == .certificate)
        #expect(Self.refusal(pair.certificatePEM, "hello")?.field == .privateKey)
        #expect(Self.refusal(pair.certificatePEM, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")?.message.contains("encrypted") == true)
        #expect(Self.refusal(String(repeating: "a", count: 70_000), pair.privateKeyPEM)?.message.contains("64 KiB") == true)
        // a client certificate (extended key usage clientAuth only) is not a server's
        let client = try ca.issue(dnsNames: [Self.host], client: true)
        #expect(Self.refusal(client.certificatePEM, client.privateKeyPEM)?.message.contains("serverAuth") == true)
        // the CA's own certificate is not a host's
        #expect(Self.refusal(ca.certificatePEM, ca.privateKeyPEM)?.field == .certificate)
    }

    @Test func aStoredCertificateIsServedForItsHostOnTheNextHandshake() async throws {
        let ca = try DevelopmentCA.create(commonName: "listener test CA")
        let directory = try GatewayTLSListenerTests.certificateDirectory(ca)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try CertificateStore(directory: directory, logger: Logger(label: "test"))
        try await GatewayProxyTests.withWorld(configure: { configuration in
            configuration.tls = TLSListenerFixture.listener(store)
        }) { _, _, gateway in
            let port = try #require(gateway.tlsPort)
            let call = "GET /healthz HTTP/1.1\r\nHost: \(Self.host)\r\nConnection: close\r\n\r\n"
            // before: the default certificate does not name the host, the client refuses it
            await #expect(throws: (any Error).self) {
                let text = try await GatewayTLSListenerTests.exchange(port: port, serverName: Self.host, ca: ca, call)
                if !text.hasPrefix("HTTP/1.1 200") { throw GatewayTLSListenerTests.HandshakeRefused() }
            }
            // act: the operator's certificate arrives (as the loader hands it over)
            let pair = try ca.issue(dnsNames: [Self.host])
            store.setManaged([try HostCertificateCheck.check(chainPEM: pair.certificatePEM, keyPEM: pair.privateKeyPEM, host: Self.host).get()])
            // assert: served for the host; the directory's pairs still serve theirs
            let served = try await GatewayTLSListenerTests.exchange(port: port, serverName: Self.host, ca: ca, call)
            #expect(served.hasPrefix("HTTP/1.1 200"))
            let other = try await GatewayTLSListenerTests.exchange(port: port, serverName: "api.example.test", ca: ca, call)
            #expect(other.hasPrefix("HTTP/1.1 200"))
            // and taken out again
            store.setManaged([])
            await #expect(throws: (any Error).self) {
                let text = try await GatewayTLSListenerTests.exchange(port: port, serverName: Self.host, ca: ca, call)
                if !text.hasPrefix("HTTP/1.1 200") { throw GatewayTLSListenerTests.HandshakeRefused() }
            }
        }
    }
}
