import Foundation
import Gateway
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// Editing an API after creation: catalog settings, the gateway policy, and the change signal.
@Suite struct APISettingsTests {
    @Test func providersEditSettingsAndTargetsButNotSlugOrBasePath() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                // act
                let changed = try await APITests.call(
                    client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider,
                    body: #"{"name":"Echo Pro","targets":[{"url":"http://127.0.0.1:9101","weight":2},{"url":"http://127.0.0.1:9102","weight":1}]}"#)
                // assert
                #expect(changed.status == .ok)
                let api = try APITests.json(changed)
                #expect(api["name"] as? String == "Echo Pro")
                #expect(api["base_path"] as? String == "/echo/v1")
                #expect((api["targets"] as? [[String: Any]])?.compactMap { $0["url"] as? String } == ["http://127.0.0.1:9101", "http://127.0.0.1:9102"])
                #expect(try await APITests.call(client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.provider, body: #"{"targets":[]}"#).status
                    == .unprocessableContent)
                #expect(try await APITests.call(client, .patch, "/t/acme/api/v1/apis/\(id)", token: world.developer, body: #"{"name":"Mine"}"#).status
                    == .forbidden)
            }
        }
    }

    @Test func theGatewayPolicyIsValidatedAndReadBackNormalized() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/gateway-policy"
                // invalid ranges, methods and origins are all named
                let bad = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"ip_allow":["10.0.0.0/40"],"methods":["FETCH"],"cors":{"allowed_origins":["https://x.example/path"]}}"#)
                #expect(bad.status == .unprocessableContent)
                let errors = try APITests.json(bad)["errors"] as? [String: String] ?? [:]
                #expect(Set(errors.keys) == ["ip_allow", "methods", "cors.allowed_origins"])
                // a valid policy is stored and returned
                let good = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: #"{"ip_allow":["203.0.113.0/24"," 10.0.0.1 "],"ip_deny":["203.0.113.66"],"methods":["get","post"],"max_request_bytes":65536,"#
                        + #""sunset_at":"2027-06-30T00:00:00Z","cors":{"allowed_origins":["https://app.example.com"],"allow_credentials":true}}"#)
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                #expect(read["ip_allow"] as? [String] == ["203.0.113.0/24", "10.0.0.1"])
                #expect(read["methods"] as? [String] == ["GET", "POST"])
                #expect(read["max_request_bytes"] as? Int == 65536)
                #expect((read["cors"] as? [String: Any])?["allow_credentials"] as? Bool == true)
                #expect((read["cors"] as? [String: Any])?["allowed_methods"] as? [String] == ["GET", "POST", "PUT", "PATCH", "DELETE"])
                // consumers cannot read it
                #expect(try await APITests.call(client, .get, path, token: world.developer).status == .forbidden)
            }
        }
    }

    @Test func configChangesAreAnnouncedWithTheirTenant() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let payloads = try await portal.database.client.withConnection { connection in
                    try await connection.listen(on: "tollgate_config") { notifications in
                        // act: publishing an API changes a row the gateway depends on
                        _ = try await PlanAPITests.publishedAPI(client, world)
                        var seen: [String] = []
                        for try await notification in notifications {
                            seen.append(notification.payload)
                            if notification.payload.contains("\"apis\"") { break }
                        }
                        return seen
                    }
                }
                let apiChange = try #require(payloads.first { $0.contains("\"apis\"") })
                let json = try JSONSerialization.jsonObject(with: Data(apiChange.utf8)) as? [String: Any] ?? [:]
                #expect(json["table"] as? String == "apis")
                #expect((json["tenant_id"] as? String).flatMap(UUID.init(uuidString:)) != nil)
            }
        }
    }

    @Test func theSettingsFormsSaveAndExplainMistakes() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let saved = try await provider.submit(
                    client, page + "/policy", from: page,
                    fields: [("ip_deny", "198.51.100.0/24\n203.0.113.9"), ("methods", "GET"), ("cors_origins", "https://app.example.com")])
                #expect(saved.status == .seeOther)  // post/redirect/get
                let savedPage = try await provider.get(client, page)
                #expect(savedPage.text.contains("Gateway policy saved."))
                #expect(savedPage.text.contains("198.51.100.0/24"))
                let refused = try await provider.submit(client, page + "/policy", from: page, fields: [("ip_allow", "not-an-ip")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("not an IP address"))
                let settings = try await provider.submit(
                    client, page + "/settings", from: page,
                    fields: [("name", "Echo Renamed"), ("visibility", "public"), ("targets", "http://127.0.0.1:9200 5")])
                #expect(settings.status == .seeOther)
                let settingsPage = try await provider.get(client, page)
                #expect(settingsPage.text.contains("Settings saved."))
                #expect(settingsPage.text.contains("http://127.0.0.1:9200 5"))
            }
        }
    }

    /// An API's own CA bundle for its https:// targets: pasted with the line ends a browser sends,
    /// stored normalized, refused with a reason when it is not certificates, removed with "".
    @Test func gRPCTargetsAreAcceptedAllOrNone() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)"
                let grpc = try await APITests.call(
                    client, .patch, path, token: world.provider,
                    body: #"{"targets":[{"url":"grpc://10.0.0.5:50051","weight":1},{"url":"grpcs://grpc.example.com","weight":2}]}"#)
                #expect(grpc.status == .ok)
                let urls = (try APITests.json(grpc)["targets"] as? [[String: Any]])?.compactMap { $0["url"] as? String }
                #expect(urls == ["grpc://10.0.0.5:50051", "grpcs://grpc.example.com"])
                let mixed = try await APITests.call(
                    client, .patch, path, token: world.provider,
                    body: #"{"targets":[{"url":"grpc://10.0.0.5:50051","weight":1},{"url":"https://api.example.com","weight":1}]}"#)
                #expect(mixed.status == .unprocessableContent)
                #expect((try APITests.json(mixed)["errors"] as? [String: String])?["targets"]?.contains("all gRPC") == true)
                let unknown = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"targets":[{"url":"ftp://x.example.com","weight":1}]}"#)
                #expect(unknown.status == .unprocessableContent)
                // a callback URL is still http(s) only
                #expect(UpstreamURL.problem(UpstreamTarget(url: "grpc://x.example.com", weight: 1)) != nil)
                #expect(UpstreamTargetConfig(url: "grpcs://grpc.example.com/base", weight: 1).map { ($0.http2, $0.tls, $0.port, $0.key) } ?? (false, false, 0, "")
                    == (true, true, 443, "grpcs://grpc.example.com:443"))
            }
        }
    }

    @Test func anUpstreamClientCertificateIsValidatedSealedAndRemoved() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let ca = try DevelopmentCA.create(commonName: "client CA")
                let identity = try ca.issue(dnsNames: ["gateway.example.com"], client: true)
                let other = try ca.issue(dnsNames: ["other.example.com"], client: true)
                let path = "/t/acme/api/v1/apis/\(id)/upstream-client-certificate"
                func body(_ certificate: String, _ key: String) throws -> String {
                    String(decoding: try JSONSerialization.data(withJSONObject: ["certificate_pem": certificate, "private_key_pem": key]), as: UTF8.self)
                }
                // a key that is not the certificate's is refused, saying so
                let mismatched = try await APITests.call(client, .put, path, token: world.provider, body: try body(identity.certificatePEM, other.privateKeyPEM))
                #expect(mismatched.status == .unprocessableContent)
                #expect((try APITests.json(mismatched)["errors"] as? [String: String])?["upstream_client_key"]?.contains("does not belong") == true)
                let garbage = try await APITests.call(client, .put, path, token: world.provider, body: try body("hello", identity.privateKeyPEM))
                #expect(garbage.status == .unprocessableContent)
                // pasted from a browser (CRLF): stored, summarised, the key never returned
                let stored = try await APITests.call(
                    client, .put, path, token: world.provider,
                    body: try body(identity.certificatePEM.replacingOccurrences(of: "\n", with: "\r\n"), identity.privateKeyPEM))
                #expect(stored.status == .ok)
                let summary = try #require(try APITests.json(stored)["upstream_client_certificate"] as? [String: Any])
                #expect((summary["subject"] as? String)?.contains("gateway.example.com") == true)
                #expect(!String(buffer: stored.body).contains("PRIVATE KEY"))
                // sealed at rest: the stored bytes are not the key
                let sealed = try await portal.database.withSystemScope { connection -> Data? in
                    for try await (bytes) in try await connection.query("SELECT upstream_client_key_sealed FROM apis WHERE id = \(UUID(uuidString: id))", logger: portal.database.logger)
                        .decode(Data?.self)
                    {
                        return bytes
                    }
                    return nil
                }
                let sealedBytes = Array(try #require(sealed))
                #expect(!String(decoding: sealedBytes, as: UTF8.self).contains("PRIVATE KEY"))
                let apiID = try #require(UUID(uuidString: id))
                #expect(BoundKeySeal(secret: portal.services.secret, purpose: .upstreamClientKey).open(sealedBytes, owner: apiID) == Array(identity.privateKeyPEM.utf8) + (identity.privateKeyPEM.hasSuffix("\n") ? [] : [10]))
                #expect(BoundKeySeal(secret: portal.services.secret, purpose: .upstreamClientKey).open(sealedBytes, owner: UUID()) == nil)  // bound to its API
                // the form: a mistake is marked and the key is not put back into the page
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let wrong = try await provider.submit(
                    client, page + "/client-certificate", from: page,
                    fields: [("client_certificate_pem", identity.certificatePEM), ("client_private_key_pem", other.privateKeyPEM)])
                #expect(wrong.status == .unprocessableContent)
                #expect(wrong.text.contains("id=\"upstream_client_key-error\""))
                #expect(!wrong.text.contains(other.privateKeyPEM.split(separator: "\n")[1]))
                // a key pasted into the certificate field is refused and not shown back either
                let swapped = try await provider.submit(
                    client, page + "/client-certificate", from: page,
                    fields: [("client_certificate_pem", identity.certificatePEM + identity.privateKeyPEM), ("client_private_key_pem", "")])
                #expect(swapped.status == .unprocessableContent)
                #expect(swapped.text.contains("Remove the private key from the certificate field"))
                #expect(!swapped.text.contains(identity.privateKeyPEM.split(separator: "\n")[1]))
                // a certificate for servers only is not one a client can present
                let serverOnly = try ca.issue(dnsNames: ["server.example.com"])
                let refusedUsage = try await APITests.call(
                    client, .put, path, token: world.provider, body: try body(serverOnly.certificatePEM, serverOnly.privateKeyPEM))
                #expect((try APITests.json(refusedUsage)["errors"] as? [String: String])?["upstream_client_certificate"]?.contains("clientAuth") == true)
                // and a developer is told no before anything is judged
                let developer = try await APITests.call(client, .put, path, token: world.developer, body: try body("garbage", "garbage"))
                #expect(developer.status == .forbidden)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("gateway.example.com"))
                let removed = try await provider.submit(client, page + "/client-certificate/remove", from: page, fields: [])
                #expect(removed.status == .seeOther)
                let gone = try await APITests.call(client, .get, "/t/acme/api/v1/apis/\(id)", token: world.provider)
                #expect(try APITests.json(gone)["upstream_client_certificate"] == nil)
            }
        }
    }

    @Test func anHTTPSTargetsCABundleIsValidatedStoredAndRemoved() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let ca = try DevelopmentCA.create(commonName: "provider CA")
                let pasted = ca.certificatePEM.replacingOccurrences(of: "\n", with: "\r\n")
                let path = "/t/acme/api/v1/apis/\(id)"
                // act + assert: the JSON API
                let body = String(decoding: try JSONSerialization.data(withJSONObject: ["targets": [["url": "https://api.example.com/v1", "weight": 1]], "upstream_ca_pem": pasted]), as: UTF8.self)
                let stored = try await APITests.call(client, .patch, path, token: world.provider, body: body)
                #expect(stored.status == .ok)
                let kept = try APITests.json(stored)["upstream_ca_pem"] as? String
                #expect(kept == ca.certificatePEM.trimmingCharacters(in: .whitespacesAndNewlines) + "\n")  // LF line ends, one final newline
                #expect(kept?.contains("\r") == false)
                let refused = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"upstream_ca_pem":"hello"}"#)
                #expect(refused.status == .unprocessableContent)
                #expect((try APITests.json(refused)["errors"] as? [String: String])?["upstream_ca_pem"]?.contains("PEM certificates") == true)
                let broken = try await APITests.call(
                    client, .patch, path, token: world.provider, body: #"{"upstream_ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}"#)
                #expect(broken.status == .unprocessableContent)
                let removed = try await APITests.call(client, .patch, path, token: world.provider, body: #"{"upstream_ca_pem":""}"#)
                #expect(removed.status == .ok)
                #expect(try APITests.json(removed)["upstream_ca_pem"] == nil)
                // the form: a mistake stays on the page next to the field with what was typed
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let wrong = try await provider.submit(
                    client, page + "/settings", from: page, fields: [("targets", "https://api.example.com 1"), ("upstream_ca_pem", "not a certificate")])
                #expect(wrong.status == .unprocessableContent)
                #expect(wrong.text.contains("id=\"upstream_ca_pem-error\""))
                #expect(wrong.text.contains("not a certificate</textarea>"))
                #expect(!wrong.text.contains("own CA bundle"))  // nothing is saved: the note follows the stored bundle, not the typed text
                let saved = try await provider.submit(
                    client, page + "/settings", from: page, fields: [("targets", "https://api.example.com 1"), ("upstream_ca_pem", pasted)])
                #expect(saved.status == .seeOther)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("verified against the API&#39;s own CA bundle") || shown.text.contains("verified against the API's own CA bundle"))
            }
        }
    }
}
