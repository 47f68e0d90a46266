import Foundation
@testable import Gateway
import Hummingbird
import HummingbirdTesting
import NIOCore
import PostgresNIO
import Testing

@testable import Portal

/// The response cache from the portal: the JSON chain (one per API), `DELETE /apis/{id}/cache`
/// reaching gateways by notification, the API page's form and purge button, and the loader
/// dropping entries of an API whose configuration changed.
@Suite struct ResponseCachePolicyTests {
    static let cache = #"{"kind":"response_cache","config":{"ttl_seconds":30,"vary":["Accept-Language"]}}"#

    @Test func theGatewaysCacheSizeComesFromTheEnvironmentWithinBounds() throws {
        #expect(try AppConfig.fromEnvironment([:]).gatewayCacheMaxBytes == 64 << 20)
        #expect(try AppConfig.fromEnvironment(["TOLLGATE_CACHE_MAX_MB": "8"]).gatewayCacheMaxBytes == 8 << 20)
        for bad in ["0", "4097", "lots", "-1"] {
            #expect(throws: AppConfig.ConfigError.self) { try AppConfig.fromEnvironment(["TOLLGATE_CACHE_MAX_MB": bad]) }
        }
    }

    @Test func oneCachePerAPIAndItsConfigurationIsChecked() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                // act
                let twice = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.cache),\(Self.cache)]}")
                let badTTL = try await APITests.call(
                    client, .put, path, token: world.provider, body: #"{"policies":[{"kind":"response_cache","config":{"ttl_seconds":100000}}]}"#)
                let good = try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.cache)]}")
                // assert
                #expect(twice.status == .unprocessableContent)
                #expect((try APITests.json(twice)["errors"] as? [String: String])?.keys.sorted() == ["/policies/1/kind"])
                #expect(badTTL.status == .unprocessableContent)
                #expect((try APITests.json(badTTL)["errors"] as? [String: String])?.keys.sorted() == ["/policies/0/config/ttl_seconds"])
                #expect(good.status == .ok)
                let read = try APITests.json(try await APITests.call(client, .get, path, token: world.provider))
                let stored = (read["policies"] as? [[String: Any]])?.first
                #expect(stored?["phase"] as? String == "pre_forward")
                #expect((stored?["config"] as? [String: Any])?["shared"] as? Bool == false)
                #expect((stored?["config"] as? [String: Any])?["max_body_bytes"] as? Int == 256 * 1024)
            }
        }
    }

    @Test func aPurgeReachesGatewaysByNotificationAndIsAudited() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                // consumers may not purge
                #expect(try await APITests.call(client, .delete, "/t/acme/api/v1/apis/\(id)/cache", token: world.developer).status == .forbidden)
                // act
                let payloads = try await portal.database.client.withConnection { connection in
                    try await connection.listen(on: "tollgate_config") { notifications in
                        let purged = try await APITests.call(client, .delete, "/t/acme/api/v1/apis/\(id)/cache", token: world.provider)
                        #expect(purged.status == .accepted)
                        var seen: [String] = []
                        for try await notification in notifications {
                            seen.append(notification.payload)
                            if notification.payload.contains("cache_purge") { break }
                        }
                        return seen
                    }
                }
                // assert: the gateway reads the API from the payload
                let payload = try #require(payloads.last)
                #expect(SnapshotReloader.cachePurge(payload)?.uuidString == id.uppercased())
                #expect(SnapshotReloader.cachePurge(#"{"table":"apis"}"#) == nil)
                let audited = try await portal.database.withSystemScope { connection in
                    var count = 0
                    for try await found in try await connection.query(
                        "SELECT count(*)::int FROM audit_events WHERE action = 'api.updated' AND details->>'fields' = 'cache_purge'", logger: TestDatabase.logger
                    ).decode(Int.self) { count = found }
                    return count
                }
                #expect(audited == 1)
                #expect(try await APITests.call(client, .delete, "/t/acme/api/v1/apis/\(UUID())/cache", token: world.provider).status == .notFound)
            }
        }
    }

    @Test func aChangedConfigurationDropsTheAPIsEntriesAtTheNextLoad() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                let path = "/t/acme/api/v1/apis/\(id)/policies"
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: "{\"policies\":[\(Self.cache)]}").status == .ok)
                let loader = SnapshotLoader(
                    client: portal.database.client, baseDomain: "localhost", publicURL: portal.services.config.publicURL, logger: TestDatabase.logger)
                let first = try await loader.load(version: 1)
                let route = try #require(first.tenantsBySlug["acme"]?.routes.first { $0.apiID.uuidString == id.uppercased() })
                let policy = try #require(route.responseCache)
                #expect(policy.config.ttlSeconds == 30)
                let store = loader.clientLimiters.responseCache
                store.store(
                    "k",
                    CachedResponse(
                        apiID: route.apiID, fingerprint: policy.fingerprint, status: 200, head: ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"), body: ByteBuffer(),
                        storedAt: 0, expiresAt: .max))
                // act + assert: an unchanged reload keeps it, a changed chain drops it
                let again = try await loader.load(version: 2)
                #expect(again.tenantsBySlug["acme"]?.routes.first { $0.apiID == route.apiID }?.responseCache?.fingerprint == policy.fingerprint)
                #expect(store.usage.entries == 1)
                let changed = #"{"policies":[{"kind":"response_cache","config":{"ttl_seconds":45}}]}"#
                #expect(try await APITests.call(client, .put, path, token: world.provider, body: changed).status == .ok)
                _ = try await loader.load(version: 3)
                #expect(store.usage.entries == 0)
            }
        }
    }

    @Test func theAPIPageAddsACacheAndPurgesIt() async throws {
        try await TestPortal.with { portal in
            try await portal.application().test(.router) { client in
                // setup
                let world = try await CatalogAPITests.world(portal)
                let id = try await PlanAPITests.publishedAPI(client, world)
                var provider = Browser()
                _ = try await provider.signIn(client, tenant: "acme", email: "pat@example.com")
                let page = "/t/acme/catalog/apis/\(id)"
                let before = try await provider.get(client, page)
                #expect(before.text.contains("Add a response cache"))
                #expect(!before.text.contains("Purge the cache"))
                // act: a bad time is marked and kept
                let refused = try await provider.submit(
                    client, page + "/policies", from: page, fields: [("op", "add"), ("kind", "response_cache"), ("ttl_seconds", "0"), ("vary", "Accept")])
                #expect(refused.status == .unprocessableContent)
                #expect(refused.text.contains("id=\"newcache-ttl_seconds-error\""))
                #expect(refused.text.contains("value=\"Accept\""))
                let added = try await provider.submit(
                    client, page + "/policies", from: page,
                    fields: [("op", "add"), ("kind", "response_cache"), ("ttl_seconds", "120"), ("vary", "Accept-Language, Accept"), ("shared", "on")])
                #expect(added.status == .seeOther)
                let shown = try await provider.get(client, page)
                #expect(shown.text.contains("GET/HEAD kept up to 120 s, varying on Accept-Language, Accept, shared by every app"))
                #expect(shown.text.contains("Purge the cache"))
                #expect(!shown.text.contains("Add a response cache"))  // one per API
                let purged = try await provider.submit(client, page + "/cache/purge", from: page, fields: [])
                #expect(purged.status == .seeOther)
                #expect(try await provider.get(client, page).text.contains("Cache purge sent to every gateway."))
            }
        }
    }
}
