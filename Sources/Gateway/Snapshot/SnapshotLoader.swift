import Billing
import Crypto
import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Reads the gateway's configuration in one read-only transaction: every tenant's (a full load),
/// or one tenant's part (after a notification named it, see `ConfigChange`).
///
/// The gateway serves all tenants, so it reads across them on purpose: the transaction sets the
/// `system` scope that the row-level-security policies admit (see docs/ARCHITECTURE.md). A tenant's
/// load runs the same queries restricted to `tenant_id`, which every table it reads carries and
/// indexes first, so its cost follows the tenant's size, not the installation's.
public struct SnapshotLoader: Sendable {
    let client: PostgresClient
    let baseDomain: String
    let publicURL: PublicBaseURL
    let logger: Logger
    /// Keeps client limiters across loads (see `ClientLimiterRegistry`).
    public let clientLimiters: ClientLimiterRegistry
    /// Opens an API's sealed upstream client key (the installation's server key, bound to the
    /// API's id); nil: this process cannot, and such APIs' TLS targets answer 502.
    public let clientKeyOpener: ClientKeyOpener?

    public typealias ClientKeyOpener = @Sendable (_ sealed: [UInt8], _ apiID: UUID) -> [UInt8]?

    public init(
        client: PostgresClient, baseDomain: String, publicURL: PublicBaseURL, logger: Logger, clientLimiters: ClientLimiterRegistry = ClientLimiterRegistry(),
        clientKeyOpener: ClientKeyOpener? = nil
    ) {
        self.clientLimiters = clientLimiters
        self.clientKeyOpener = clientKeyOpener
        self.client = client
        self.baseDomain = baseDomain
        self.publicURL = publicURL
        self.logger = logger
    }

    /// Every tenant's configuration.
    public func load(version: Int) async throws -> GatewaySnapshot {
        let tenants = try await inTransaction { try await read($0, tenant: nil) }
        // an API whose configuration changed (or that lost its cache) keeps no entries
        clientLimiters.responseCache.retain(current: Self.cacheFingerprints(tenants))
        return GatewaySnapshot(version: version, loadedAt: Date(), tenants: tenants, baseDomain: baseDomain)
    }

    /// One tenant's configuration; nil when the tenant no longer exists. `previous` is the part
    /// it replaces: the response cache entries of its APIs whose configuration changed (or that
    /// are gone) are dropped, and nobody else's.
    public func loadTenant(_ id: UUID, previous: TenantConfig?) async throws -> TenantConfig? {
        let tenant = try await inTransaction { try await read($0, tenant: id) }.first
        let fingerprints = tenant.map { Self.cacheFingerprints([$0]) } ?? [:]
        let apis = Set((previous?.routes ?? []).map(\.apiID) + (tenant?.routes ?? []).map(\.apiID))
        clientLimiters.responseCache.retain(current: fingerprints, among: apis)
        return tenant
    }

    private func inTransaction(_ body: @Sendable (PostgresConnection) async throws -> [TenantConfig]) async throws -> [TenantConfig] {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.enterSystemScope(readOnly: true, logger: logger)
            return try await body(connection)
        }
    }

    /// The cache fingerprint of every API with a response cache.
    static func cacheFingerprints(_ tenants: [TenantConfig]) -> [UUID: Int] {
        var fingerprints: [UUID: Int] = [:]
        for tenant in tenants {
            for route in tenant.routes { if let cache = route.responseCache { fingerprints[route.apiID] = cache.fingerprint } }
        }
        return fingerprints
    }

    /// Reads every tenant (`tenant` nil) or one. The filter is a bound parameter that Postgres
    /// folds away when it plans the statement (an unnamed statement is planned with its values).
    private func read(_ connection: PostgresConnection, tenant only: UUID?) async throws -> [TenantConfig] {
        var targets: [UUID: [UpstreamTargetConfig]] = [:]
        for try await (apiID, url, weight) in try await connection.query(
            "SELECT api_id, url, weight FROM api_upstream_targets WHERE (\(only)::uuid IS NULL OR tenant_id = \(only)) ORDER BY api_id, position", logger: logger
        ).decode((UUID, String, Int).self) {
            if let target = UpstreamTargetConfig(url: url, weight: weight) { targets[apiID, default: []].append(target) }
        }

        var storedPolicies: [StoredPolicy] = []
        for try await (tenantID, apiID, position, kind, config) in try await connection.query(
            "SELECT tenant_id, api_id, position, kind, config::text FROM api_policies WHERE (\(only)::uuid IS NULL OR tenant_id = \(only)) ORDER BY api_id, position",
            logger: logger
        ).decode((UUID, UUID, Int, String, String).self) {
            storedPolicies.append(StoredPolicy(tenantID: tenantID, apiID: apiID, position: position, kind: kind, config: config))
        }
        let chains = clientLimiters.compile(storedPolicies, onlyTenant: only)
        for row in chains.skipped {
            // the portal refuses such rows; one stored before a rule changed is left out, not half-applied
            logger.error("an API policy is unusable and was left out", metadata: ["api": "\(row.apiID)", "kind": "\(row.kind)", "position": "\(row.position)"])
        }

        // descriptor sets of gRPC APIs, compiled once per content (kept across loads by their digest)
        var transcodings: [UUID: GRPCTranscoding] = [:]
        for try await (apiID, sha256, content) in try await connection.query(
            "SELECT api_id, sha256, content FROM api_descriptor_sets WHERE (\(only)::uuid IS NULL OR tenant_id = \(only))", logger: logger
        ).decode((UUID, String, ByteBuffer).self) {
            guard targets[apiID]?.allSatisfy(\.http2) == true else { continue }
            if let compiled = clientLimiters.transcodings.compiled(sha256: sha256, content: Array(content.readableBytesView)) {
                transcodings[apiID] = compiled
            } else {
                // the portal refuses such sets; one stored before a rule changed is not translated
                logger.error("an API's descriptor set no longer compiles and is not translated", metadata: ["api": "\(apiID)"])
            }
        }
        // only a full load sees every set in use; a tenant's load leaves the other tenants' alone
        if only == nil { clientLimiters.transcodings.retain(Set(transcodings.values.map(\.sha256))) }

        // sinks of unchanged policies are the ones already shipping: a reload loses no record
        let httpLogs = clientLimiters.accessLogs?.apiSinks(for: chains.httpLogs, tenants: chains.httpLogTenants, onlyTenant: only) ?? [:]
        // documents are read only for APIs with a validation policy, and compiled only when they
        // or the policy changed (see `ClientLimiterRegistry.validation`)
        var validations: [UUID: RequestValidationPolicy] = [:]
        if !chains.validations.isEmpty {
            var documents: [UUID: String] = [:]
            for try await (apiID, document) in try await connection.query(
                "SELECT api_id, document_json::text FROM api_documents WHERE api_id = ANY(\(Array(chains.validations.keys))) AND document_json IS NOT NULL",
                logger: logger
            ).decode((UUID, String).self) {
                documents[apiID] = document
            }
            for (apiID, config) in chains.validations {
                let policy = clientLimiters.validation(api: apiID, config: config, document: documents[apiID])
                if case .unusable(let reason) = policy {
                    // fail closed: the API's calls are refused with 503 until the document or the policy is fixed
                    logger.error("an API's request validation cannot be compiled; its calls are refused", metadata: ["api": "\(apiID)", "reason": "\(reason)"])
                }
                validations[apiID] = policy
            }
        }
        for apiID in chains.unreadableValidations { validations[apiID] = .unusable("the policy's stored configuration is unreadable") }
        // only a full load sees every API's policy; a tenant's load leaves the other tenants' alone
        if only == nil { clientLimiters.retainValidations(Set(chains.validations.keys)) }

        var routes: [UUID: [Route]] = [:]
        let apiRows = try await connection.query(
            """
            SELECT a.id, a.tenant_id, a.slug, a.version, a.base_path, a.state, a.cors::text, a.ip_allow, a.ip_deny, a.methods, a.max_request_bytes,
                a.sunset_at, (SELECT max(c.at) FROM api_state_changes c WHERE c.api_id = a.id AND c.to_state = 'deprecated'), a.upstream_ca_pem,
                a.upstream_client_cert_pem, a.upstream_client_key_sealed, a.upstream_protocol
            FROM apis a WHERE a.state IN ('published', 'deprecated', 'retired') AND (\(only)::uuid IS NULL OR a.tenant_id = \(only))
            """, logger: logger)
        for try await (id, tenant, slug, apiVersion, basePath, state, cors, allow, deny, methods, maxBytes, sunset, deprecatedAt, caBundle, clientCertificate, sealedKey, protocolName)
            in apiRows.decode((UUID, UUID, String, String, String, String, String?, [String], [String], [String], Int?, Date?, Date?, String?, String?, Data?, String).self)
        {
            let policy = cors.flatMap(CORSPolicy.init(storedJSON:))
            // the protocol is decided here, once per snapshot: a call only reads its target's flag
            let upstreamProtocol = UpstreamProtocol(rawValue: protocolName) ?? .http1
            let apiTargets = (targets[id] ?? []).map { $0.speaking(upstreamProtocol) }
            var upstreamTLS: UpstreamTLS.Context?
            var upgradeTLS: UpstreamTLS.Context?
            if apiTargets.contains(where: \.tls) {
                do {
                    // gRPC and h2 targets negotiate h2 by ALPN (an API's targets are all gRPC or none, one protocol)
                    var identity: UpstreamTLS.ClientIdentity?
                    if let clientCertificate, let sealedKey {
                        guard let key = clientKeyOpener?(Array(sealedKey), id) else { throw UpstreamTLS.Failure.invalidBundle("its client key cannot be unsealed here") }
                        identity = UpstreamTLS.ClientIdentity(certificatePEM: clientCertificate, privateKeyPEM: key)
                    }
                    upstreamTLS = try UpstreamTLS.context(caBundlePEM: caBundle, http2: apiTargets.contains(where: \.speaksHTTP2), client: identity)
                    // an h2 API's WebSocket handshakes go to its target over HTTP/1.1 (see ProxyExchange.connect)
                    if apiTargets.contains(where: \.h2) { upgradeTLS = try UpstreamTLS.context(caBundlePEM: caBundle, http2: false, client: identity) }
                } catch {
                    // its https targets answer 502 saying so; the portal refuses such bundles, so
                    // this is a bundle stored before that check or a broken trust store
                    logger.error("an API's upstream TLS settings are unusable", metadata: ["api": "\(id)", "error": "\(error)"])
                }
            }
            var cache: ResponseCachePolicy?
            if let config = chains.caches[id] {
                // everything the loader read about the API: a change to any of it purges its entries
                var hasher = Hasher()
                for part in [slug, apiVersion, basePath, state, cors ?? "", caBundle ?? ""] + allow + deny + methods { hasher.combine(part) }
                hasher.combine(maxBytes)
                hasher.combine(sunset)
                for target in apiTargets { hasher.combine(target) }
                for row in storedPolicies where row.apiID == id {
                    hasher.combine(row.kind)
                    hasher.combine(row.config)
                }
                let fingerprint = hasher.finalize()
                cache = ResponseCachePolicy(config: config, store: clientLimiters.responseCache, fingerprint: fingerprint)
            }
            routes[tenant, default: []].append(
                Route(
                    apiID: id, slug: slug, version: apiVersion, basePath: basePath, state: Route.State(rawValue: state) ?? .retired,
                    targets: apiTargets, cors: policy,
                    ipRules: IPAccessRules(allow: allow.compactMap(IPRange.init), deny: deny.compactMap(IPRange.init)), methods: Set(methods),
                    maxRequestBytes: maxBytes, sunset: sunset, deprecatedAt: deprecatedAt, upstreamTLS: upstreamTLS,
                    preAuth: chains.byAPI[id] ?? [], requestTransform: chains.requestTransforms[id], responseTransform: chains.responseTransforms[id], responseCache: cache,
                    transcoding: transcodings[id], httpLog: httpLogs[id], requestValidation: validations[id],
                    webSocket: chains.webSockets[id], upgradeTLS: upgradeTLS))
        }

        var subscriptions: [UUID: [UUID: SubscriptionGrant]] = [:]
        let subscriptionRows = try await connection.query(
            """
            SELECT s.app_id, s.api_id, s.id, p.id, p.rate_per_second, p.burst, p.monthly_quota, p.per_minute, p.per_hour, p.per_day, p.cache_hits_billable
            FROM subscriptions s JOIN plans p ON p.id = s.plan_id JOIN apps a ON a.id = s.app_id
            WHERE s.state = 'active' AND (\(only)::uuid IS NULL OR s.tenant_id = \(only)) AND tollgate_api_open_to_team(s.api_id, a.team_id)
            """, logger: logger)
        for try await (app, api, id, plan, rate, burst, quota, perMinute, perHour, perDay, cacheHitsBillable) in subscriptionRows.decode(
            (UUID, UUID, UUID, UUID, Int, Int, Int64?, Int64?, Int64?, Int64?, Bool).self)
        {
            subscriptions[app, default: [:]][api] = SubscriptionGrant(
                subscriptionID: id, planID: plan, ratePerSecond: rate, burst: burst, monthlyQuota: quota,
                windows: PlanWindow.list(perMinute: perMinute, perHour: perHour, perDay: perDay), cacheHitsBillable: cacheHitsBillable)
        }

        var apps: [UUID: [UUID: AppGrant]] = [:]
        for try await (id, tenant, team, clientID) in try await connection.query(
            "SELECT id, tenant_id, team_id, client_id FROM apps WHERE (\(only)::uuid IS NULL OR tenant_id = \(only))", logger: logger
        ).decode((UUID, UUID, UUID, String).self) {
            apps[tenant, default: [:]][id] = AppGrant(id: id, teamID: team, clientID: clientID, subscriptions: subscriptions[id] ?? [:])
        }

        var keys: [UUID: [Data: APIKeyGrant]] = [:]
        for try await (tenant, app, hash, expires) in try await connection.query(
            """
            SELECT tenant_id, app_id, secret_hash, expires_at FROM app_credentials
            WHERE kind = 'api_key' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AND (\(only)::uuid IS NULL OR tenant_id = \(only))
            """, logger: logger
        ).decode((UUID, UUID, Data, Date?).self) {
            keys[tenant, default: [:]][hash] = APIKeyGrant(appID: app, expiresAt: expires)
        }

        var signingKeys: [UUID: [String: P256.Signing.PublicKey]] = [:]
        for try await (tenant, kid, point) in try await connection.query(
            "SELECT tenant_id, kid, public_key FROM signing_keys WHERE (retired_at IS NULL OR published_until > now()) AND (\(only)::uuid IS NULL OR tenant_id = \(only))", logger: logger
        ).decode((UUID, String, Data).self) {
            if let key = try? P256.Signing.PublicKey(x963Representation: point) { signingKeys[tenant, default: [:]][kid] = key }
        }

        var revoked: [UUID: Set<String>] = [:]
        for try await (tenant, jti) in try await connection.query(
            "SELECT tenant_id, jti FROM revoked_tokens WHERE expires_at > now() AND (\(only)::uuid IS NULL OR tenant_id = \(only))", logger: logger
        ).decode((UUID, String).self) {
            revoked[tenant, default: []].insert(jti)
        }

        var tenants: [TenantConfig] = []
        for try await (id, slug, host) in try await connection.query("SELECT id, slug, custom_host FROM tenants WHERE (\(only)::uuid IS NULL OR id = \(only))", logger: logger).decode(
            (UUID, String, String?).self)
        {
            tenants.append(
                TenantConfig(
                    id: id, slug: slug, customHost: host, issuer: publicURL.tenantBase(slug: slug, customHost: host), routes: routes[id] ?? [], appsByKeyHash: keys[id] ?? [:], apps: apps[id] ?? [:],
                    signingKeys: signingKeys[id] ?? [:], revokedTokenIDs: revoked[id] ?? []))
        }
        return tenants
    }
}
