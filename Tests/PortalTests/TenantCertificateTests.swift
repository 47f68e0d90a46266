import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import Logging
import PostgresNIO
import Testing

@testable import Portal

/// An operator stores a TLS certificate for a tenant's custom host through the platform API and
/// the console; the key is sealed and never shown; listeners load it from the database.
@Suite struct TenantCertificateTests {
    static let host = "shop.example.com"

    static func upload(_ pair: (certificatePEM: String, privateKeyPEM: String)) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: ["certificate_pem": pair.certificatePEM, "private_key_pem": pair.privateKeyPEM]), as: UTF8.self)
    }

    @Test func thePlatformAPIStoresChecksAndRemovesItAndListenersLoadIt() async throws {
        try await TestPortal.with { portal in
            let (_, token) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                // setup
                let ca = try DevelopmentCA.create(commonName: "tenant CA")
                let pair = try ca.issue(dnsNames: [Self.host])
                let created = try await APITests.call(client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"shop","name":"Shop"}"#)
                #expect(created.status == .created)
                let path = "/api/v1/tenants/shop/certificate"
                // act + assert: no custom host yet
                let early = try await APITests.call(client, .put, path, token: token, body: try Self.upload(pair))
                #expect(early.status == .unprocessableContent)
                #expect((try APITests.json(early)["errors"] as? [String: String])?["custom_host"] != nil)
                _ = try await APITests.call(client, .patch, "/api/v1/tenants/shop", token: token, body: #"{"custom_host":"\#(Self.host)"}"#)
                // a key that is not the certificate's names its field
                let other = try ca.issue(dnsNames: [Self.host])
                let mismatched = try await APITests.call(
                    client, .put, path, token: token, body: try Self.upload((pair.certificatePEM, other.privateKeyPEM)))
                #expect(mismatched.status == .unprocessableContent)
                #expect((try APITests.json(mismatched)["errors"] as? [String: String])?["private_key"] == "This key does not belong to the certificate.")
                #expect(try await APITests.call(client, .get, path, token: token).status == .notFound)
                #expect(try await APITests.call(client, .put, path, token: nil, body: try Self.upload(pair)).status == .unauthorized)
                // stored: the answer names the host, never the key
                let stored = try await APITests.call(client, .put, path, token: token, body: try Self.upload(pair))
                #expect(stored.status == .ok)
                let body = String(buffer: stored.body)
                #expect(!body.contains("PRIVATE KEY") && !body.contains("private_key"))
                let shown = try APITests.json(try await APITests.call(client, .get, path, token: token))
                #expect(shown["names"] as? [String] == [Self.host])
                #expect(shown["serves_current_host"] as? Bool == true)
                // sealed at rest, and audited in the tenant's log
                let tenant = try #require(try await portal.database.withPlatform { try await TenantRepository(logger: TestDatabase.logger).find(slug: "shop", on: $0) })
                let (sealed, actions) = try await portal.database.withSystemScope { connection -> (Data, [String]) in
                    var sealed = Data()
                    for try await bytes in try await connection.query(
                        "SELECT key_sealed FROM tenant_certificates WHERE tenant_id = \(tenant.id)", logger: TestDatabase.logger
                    ).decode(Data.self) { sealed = bytes }
                    var actions: [String] = []
                    for try await action in try await connection.query(
                        "SELECT action FROM audit_events WHERE tenant_id = \(tenant.id) AND action LIKE 'tenant.certificate%'", logger: TestDatabase.logger
                    ).decode(String.self) { actions.append(action) }
                    return (sealed, actions)
                }
                #expect(!String(decoding: sealed, as: UTF8.self).contains("PRIVATE KEY"))
                #expect(actions == ["tenant.certificate_stored"])

                // a listener's loader serves it for the host, with the key opened by the server key
                let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString)").path
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                defer { try? FileManager.default.removeItem(atPath: directory) }
                let fallback = try ca.issue(dnsNames: ["localhost"])
                try fallback.certificatePEM.write(toFile: directory + "/default.pem", atomically: true, encoding: .utf8)
                try fallback.privateKeyPEM.write(toFile: directory + "/default.key", atomically: true, encoding: .utf8)
                let store = try CertificateStore(directory: directory, logger: Logger(label: "test"))
                let seal = BoundKeySeal(secret: portal.services.secret, purpose: .hostCertificateKey)
                let loader = ManagedCertificateLoader(
                    client: portal.database.client, store: store, openKey: { seal.open($0, owner: $1) }, logger: Logger(label: "test"))
                let first = try await loader.load()
                #expect(store.entries.contains { $0.names == [Self.host] })
                #expect(try await loader.load(unless: first) == first)  // nothing changed: not read again
                // another server key cannot open it: not served
                let stranger = ManagedCertificateLoader(
                    client: portal.database.client, store: store, openKey: { _, _ in nil }, logger: Logger(label: "test"))
                try await stranger.load()
                #expect(!store.entries.contains { $0.names == [Self.host] })
                // the host moves: the stored certificate no longer serves (and says so)
                _ = try await APITests.call(client, .patch, "/api/v1/tenants/shop", token: token, body: #"{"custom_host":"store.example.com"}"#)
                try await loader.load()
                #expect(!store.entries.contains { $0.names == [Self.host] })
                let moved = try APITests.json(try await APITests.call(client, .get, path, token: token))
                #expect(moved["serves_current_host"] as? Bool == false)
                // removed
                #expect(try await APITests.call(client, .delete, path, token: token).status == .noContent)
                #expect(try await APITests.call(client, .delete, path, token: token).status == .notFound)
            }
        }
    }

    @Test func theConsoleFormStoresItAndMarksABadField() async throws {
        try await TestPortal.with { portal in
            let (password, token) = try await PlatformTests.admin(portal)
            try await portal.application().test(.router) { client in
                _ = try await APITests.call(
                    client, .post, "/api/v1/tenants", token: token, body: #"{"slug":"shop","name":"Shop","custom_host":"\#(Self.host)"}"#)
                var browser = Browser()
                _ = try await browser.submit(client, "/platform/login", from: "/platform/login", fields: [("email", "ops@example.com"), ("password", password)])
                let page = try await browser.get(client, "/platform/tenants/shop")
                #expect(page.text.contains("TLS certificate for the custom host"))
                #expect(page.text.contains("None stored"))
                let ca = try DevelopmentCA.create(commonName: "tenant CA")
                let pair = try ca.issue(dnsNames: [Self.host])
                let wrong = try ca.issue(dnsNames: ["elsewhere.example.com"])
                // a browser sends CRLF from text areas
                let crlf = { (text: String) in text.replacingOccurrences(of: "\n", with: "\r\n") }
                let refused = try await browser.submit(
                    client, "/platform/tenants/shop/certificate", from: "/platform/tenants/shop",
                    fields: [("certificate_pem", crlf(wrong.certificatePEM)), ("private_key_pem", crlf(wrong.privateKeyPEM))])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"certificate_pem-error\""))
                #expect(refused.text.contains("role=\"alert\">The certificate was not stored: The certificate does not name"))
                #expect(!refused.text.contains("PRIVATE KEY-----\r\n") && !refused.text.contains(String(wrong.privateKeyPEM.dropFirst(40).prefix(40))))
                let stored = try await browser.submit(
                    client, "/platform/tenants/shop/certificate", from: "/platform/tenants/shop",
                    fields: [("certificate_pem", crlf(pair.certificatePEM)), ("private_key_pem", crlf(pair.privateKeyPEM))])
                #expect(stored.status == .seeOther)
                let after = try await browser.get(client, "/platform/tenants/shop")
                #expect(after.text.contains("Served for <strong>\(Self.host)</strong>"))
                #expect(!after.text.contains(String(pair.privateKeyPEM.dropFirst(40).prefix(40))))
                // the host is cleared: the stored certificate still shows (not served) with its Remove
                _ = try await APITests.call(client, .patch, "/api/v1/tenants/shop", token: token, body: #"{"custom_host":null}"#)
                let hostless = try await browser.get(client, "/platform/tenants/shop")
                #expect(hostless.text.contains("Not served:"))
                #expect(hostless.text.contains("/platform/tenants/shop/certificate/remove"))
                // storing without a host says why at the top of the page
                let early = try await browser.submit(
                    client, "/platform/tenants/shop/certificate", from: "/platform/tenants/shop",
                    fields: [("certificate_pem", pair.certificatePEM), ("private_key_pem", pair.privateKeyPEM)])
                #expect(early.status == .unprocessableContent)
                #expect(early.text.contains("The certificate was not stored: Give the marketplace a custom host first"))
                let removed = try await browser.submit(client, "/platform/tenants/shop/certificate/remove", from: "/platform/tenants/shop", fields: [])
                #expect(removed.status == .seeOther)
                #expect(!(try await browser.get(client, "/platform/tenants/shop").text.contains("Not served:")))
            }
        }
    }
}
