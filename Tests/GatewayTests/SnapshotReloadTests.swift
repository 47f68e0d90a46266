import Crypto
import Foundation
import Testing

@testable import Gateway

/// The pure parts of incremental reloads: reading a notification, coalescing a burst, swapping
/// one tenant's part, and the limiter registry kept per tenant.
@Suite struct SnapshotReloadTests {
    static let tenantA = UUID(uuidString: "0A000000-0000-0000-0000-00000000000A")!
    static let tenantB = UUID(uuidString: "0B000000-0000-0000-0000-00000000000B")!

    @Test(arguments: [
        (#"{"table": "app_credentials", "tenant_id": "0a000000-0000-0000-0000-00000000000a"}"#, ConfigChange.tenant(tenantA)),
        (#"{"table": "tenants", "tenant_id": "0B000000-0000-0000-0000-00000000000B"}"#, .tenant(tenantB)),
        (#"{"table": "api_policies", "tenant_id": "0a000000-0000-0000-0000-00000000000a", "extra": [1, 2]}"#, .tenant(tenantA)),
        (
            #"{"table": "revoked_tokens", "tenant_id": "0a000000-0000-0000-0000-00000000000a", "jti": "j-1", "expires_at": "2030-01-01"}"#,
            .revocation(tenant: tenantA, jti: "j-1")
        ),
        (#"{"table": "revoked_tokens", "tenant_id": "0a000000-0000-0000-0000-00000000000a", "jti": ""}"#, .tenant(tenantA)),
        (#"{"table": "revoked_tokens", "jti": "j-1"}"#, .everything),
        (
            #"{"table":"cache_purge","tenant_id":"0a000000-0000-0000-0000-00000000000a","api_id":"0b000000-0000-0000-0000-00000000000b"}"#,
            .cachePurge(api: tenantB)
        ),
        (#"{"table":"cache_purge","tenant_id":"0a000000-0000-0000-0000-00000000000a"}"#, .tenant(tenantA)),
        (#"{"table": "apis", "tenant_id": null}"#, .everything),
        (#"{"table": "apis", "tenant_id": "not-a-uuid"}"#, .everything),
        (#"{"table": "apis"}"#, .everything),
        (#"{"tenant_id": "0a000000-0000-0000-0000-00000000000a"}"#, .everything),
        (#"["apis"]"#, .everything),
        ("", .everything),
        ("not json", .everything),
        (#"{"table": "apis", "tenant_id": "0a000000-0000-0000-0000-00000000000a", "pad": ""# + String(repeating: "x", count: 9000) + #""}"#, .everything),
    ])
    func readsWhatANotificationNames(payload: String, expected: ConfigChange) {
        #expect(ConfigChange(payload: payload) == expected)
    }

    @Test func aBurstBecomesOneLoadPerTenant() {
        // setup
        var pending = PendingReloads()
        // act
        for _ in 0..<1000 { pending.add(.tenant(Self.tenantA)) }
        pending.add(.tenant(Self.tenantB))
        pending.add(.revocation(tenant: Self.tenantB, jti: "j"))
        pending.add(.cachePurge(api: Self.tenantA))
        // assert
        #expect(pending.takeFull() == false)
        #expect(pending.takeTenants() == [Self.tenantA, Self.tenantB])
        #expect(pending.takeTenants().isEmpty)
        #expect(pending.isEmpty)
    }

    @Test func nothingButInPlaceChangesLeavesNothingToLoad() {
        var pending = PendingReloads()
        pending.add(.revocation(tenant: Self.tenantA, jti: "j"))
        pending.add(.cachePurge(api: Self.tenantA))
        #expect(pending.isEmpty)
    }

    @Test func aFullLoadAskedForDoesNotHoldTenantsBack() {
        var pending = PendingReloads()
        pending.add(.tenant(Self.tenantA))
        pending.add(.everything)
        pending.add(.everything)
        pending.add(.tenant(Self.tenantB))
        #expect(pending.takeTenants() == [Self.tenantA, Self.tenantB])
        #expect(pending.takeFull() == true)
        #expect(pending.takeFull() == false)
        #expect(pending.isEmpty)
    }

    @Test func tooManyTenantsAtOnceBecomeOneFullLoad() {
        var pending = PendingReloads(maximumTenants: 3)
        for _ in 0..<3 { pending.add(.tenant(UUID())) }
        #expect(pending.tenants.count == 3)
        #expect(!pending.full)
        pending.add(.tenant(UUID()))
        #expect(pending.takeTenants().isEmpty)
        #expect(pending.takeFull() == true)
        #expect(PendingReloads(maximumTenants: 0).maximumTenants == 1)
    }

    static func tenant(_ id: UUID, slug: String, host: String? = nil, keys: Int = 1, revoked: Set<String> = []) -> TenantConfig {
        let app = AppGrant(id: UUID(), teamID: UUID(), clientID: "tgc_\(slug)", subscriptions: [:])
        var byHash: [Data: APIKeyGrant] = [:]
        for index in 0..<keys { byHash[Data(SHA256.hash(data: Data("\(slug)-\(index)".utf8)))] = APIKeyGrant(appID: app.id, expiresAt: nil) }
        let route = Route(
            apiID: UUID(), slug: "echo", version: "v1", basePath: "/echo/v1", state: .published, targets: [], cors: nil, ipRules: IPAccessRules(), methods: [],
            maxRequestBytes: nil, sunset: nil)
        return TenantConfig(
            id: id, slug: slug, customHost: host, issuer: "http://127.0.0.1/t/\(slug)", routes: [route], appsByKeyHash: byHash, apps: [app.id: app],
            signingKeys: [:], revokedTokenIDs: revoked)
    }

    @Test func rebuildingOneTenantLeavesTheOtherUntouched() throws {
        // setup
        let a = Self.tenant(Self.tenantA, slug: "acme", host: "api.acme.example")
        let b = Self.tenant(Self.tenantB, slug: "beta", host: "api.beta.example")
        let snapshot = GatewaySnapshot(version: 7, loadedAt: Date(timeIntervalSince1970: 1000), tenants: [a, b], baseDomain: "gw.example")
        let rebuilt = Self.tenant(Self.tenantA, slug: "acme", host: "api.acme.example", keys: 3)
        // act
        let next = snapshot.replacingTenant(Self.tenantA, with: rebuilt)
        // assert
        #expect(next.tenantsBySlug["acme"] === rebuilt)
        #expect(next.tenantsBySlug["beta"] === b)  // the same object: not reloaded, not copied
        #expect(next.tenantsBySlug.count == 2)
        #expect(next.size == GatewaySnapshot.Size(tenants: 2, apis: 2, apps: 2, apiKeys: 4, subscriptions: 0))
        #expect(next.loadedAt == snapshot.loadedAt)
        #expect(next.resolveTenant(host: "api.beta.example", path: "/x")?.0 === b)
        #expect(next.resolveTenant(host: "api.acme.example", path: "/x")?.0 === rebuilt)
        #expect(snapshot.tenantsBySlug["acme"] === a)  // the old snapshot, still in use by requests, is unchanged
    }

    @Test func aTenantsNewSlugAndHostReplaceItsOldOnes() throws {
        let a = Self.tenant(Self.tenantA, slug: "acme", host: "api.acme.example")
        let b = Self.tenant(Self.tenantB, slug: "beta")
        let snapshot = GatewaySnapshot(version: 1, loadedAt: Date(), tenants: [a, b], baseDomain: "gw.example")
        // act: renamed, and moved to another host
        let next = snapshot.replacingTenant(Self.tenantA, with: Self.tenant(Self.tenantA, slug: "acme2", host: "api.acme2.example"))
        // assert
        #expect(next.tenantsBySlug["acme"] == nil)
        #expect(next.resolveTenant(host: "api.acme.example", path: "/echo/v1") == nil)
        #expect(next.resolveTenant(host: "api.acme2.example", path: "/echo/v1")?.0.slug == "acme2")
        #expect(next.resolveTenant(host: "acme2.gw.example", path: "/echo/v1")?.0.slug == "acme2")
        #expect(next.tenant(id: Self.tenantA)?.slug == "acme2")
        #expect(next.tenantsBySlug["beta"] === b)
    }

    @Test func aDeletedTenantLeavesTheSnapshot() {
        let snapshot = GatewaySnapshot(
            version: 1, loadedAt: Date(), tenants: [Self.tenant(Self.tenantA, slug: "acme", host: "api.acme.example"), Self.tenant(Self.tenantB, slug: "beta")],
            baseDomain: "gw.example")
        let next = snapshot.replacingTenant(Self.tenantA, with: nil)
        #expect(next.tenantsBySlug.keys.sorted() == ["beta"])
        #expect(next.tenantsByHost.isEmpty)
        // a tenant the snapshot did not hold yet is added
        let added = next.replacingTenant(Self.tenantA, with: Self.tenant(Self.tenantA, slug: "acme"))
        #expect(added.tenantsBySlug.keys.sorted() == ["acme", "beta"])
    }

    @Test func aFullLoadKeepsWhatChangedWhileItRan() {
        // setup: a full load begins; then tenant A is reloaded and a token of B revoked
        var ledger = ReloadLedger()
        let full = ledger.begin()
        let tenantLoad = ledger.begin()
        let freshA = Self.tenant(Self.tenantA, slug: "acme", keys: 2)
        ledger.tenantInstalled(Self.tenantA, start: tenantLoad)
        ledger.end(tenantLoad)
        ledger.heard(tenant: Self.tenantB, jti: "late")
        let current = GatewaySnapshot(version: 5, loadedAt: Date(), tenants: [freshA, Self.tenant(Self.tenantB, slug: "beta")], baseDomain: "gw.example")
        // what the full load read: A and B as they were when it began, and C
        let staleA = Self.tenant(Self.tenantA, slug: "acme", keys: 1)
        let tenantC = UUID()
        let read = GatewaySnapshot(
            version: 6, loadedAt: Date(),
            tenants: [staleA, Self.tenant(Self.tenantB, slug: "beta"), Self.tenant(tenantC, slug: "gamma")], baseDomain: "gw.example")
        // act
        let kept = ledger.tenantsLoaded(after: full)
        let merged = read.merging(current: current, keep: kept, revocations: ledger.revocations(since: full))
        ledger.end(full)
        // assert
        #expect(kept == [Self.tenantA])
        #expect(merged.tenantsBySlug["acme"] === freshA)
        #expect(merged.tenantsBySlug["beta"]?.revokedTokenIDs == ["late"])
        #expect(merged.tenantsBySlug["gamma"]?.id == tenantC)
        #expect(merged.version == 6)
        // nothing in flight: nothing is remembered
        let next = ledger.begin()
        #expect(ledger.tenantsLoaded(after: 0).isEmpty)
        #expect(ledger.revocations(since: 0).isEmpty)
        ledger.end(next)
    }

    @Test func aTenantLoadBegunBeforeTheFullOneIsNotKept() {
        var ledger = ReloadLedger()
        let tenantLoad = ledger.begin()
        let full = ledger.begin()
        ledger.heard(tenant: Self.tenantA, jti: "during-both")
        ledger.tenantInstalled(Self.tenantA, start: tenantLoad)
        #expect(ledger.tenantsLoaded(after: full).isEmpty)
        // a revocation heard after both began is owed to both
        #expect(ledger.revocations(since: tenantLoad) == [Self.tenantA: ["during-both"]])
        #expect(ledger.revocations(since: full) == [Self.tenantA: ["during-both"]])
        ledger.end(tenantLoad)
        #expect(ledger.revocations(since: full) == [Self.tenantA: ["during-both"]])  // the full load still needs it
    }

    @Test func aTenantDeletedWhileAFullLoadRanStaysDeleted() {
        let read = GatewaySnapshot(
            version: 2, loadedAt: Date(), tenants: [Self.tenant(Self.tenantA, slug: "acme"), Self.tenant(Self.tenantB, slug: "beta")], baseDomain: "gw.example")
        let current = GatewaySnapshot(version: 1, loadedAt: Date(), tenants: [Self.tenant(Self.tenantB, slug: "beta")], baseDomain: "gw.example")
        let merged = read.merging(current: current, keep: [Self.tenantA], revocations: [:])
        #expect(merged.tenantsBySlug.keys.sorted() == ["beta"])
    }

    @Test func aTenantsCompileKeepsTheOtherTenantsLimiters() throws {
        // setup
        let registry = ClientLimiterRegistry()
        let apiA = UUID()
        let apiB = UUID()
        let config = #"{"requests": 2, "per_seconds": 60}"#
        let rowA = StoredPolicy(tenantID: Self.tenantA, apiID: apiA, position: 0, kind: "client_rate_limit", config: config)
        let rowB = StoredPolicy(tenantID: Self.tenantB, apiID: apiB, position: 0, kind: "client_rate_limit", config: config)
        let first = registry.compile([rowA, rowB])
        guard case .clientRateLimit(let limiterB)? = first.byAPI[apiB]?.first, case .clientRateLimit(let limiterA)? = first.byAPI[apiA]?.first else {
            Issue.record("no limiters compiled")
            return
        }
        // act: tenant A reloaded, its policy unchanged; then tenant A's policy removed
        let again = registry.compile([rowA], onlyTenant: Self.tenantA)
        guard case .clientRateLimit(let keptA)? = again.byAPI[apiA]?.first else {
            Issue.record("tenant A's limiter missing")
            return
        }
        #expect(keptA.limiter === limiterA.limiter)
        _ = registry.compile([], onlyTenant: Self.tenantA)
        // assert: B's limiter survives both, and a full compile still finds it
        let full = registry.compile([rowB])
        guard case .clientRateLimit(let keptB)? = full.byAPI[apiB]?.first else {
            Issue.record("tenant B's limiter missing")
            return
        }
        #expect(keptB.limiter === limiterB.limiter)
        #expect(registry.usage.capacity == limiterB.limiter.capacity)
    }
}
