import Foundation
import Gateway
import Logging
import PostgresNIO

/// SQL for the catalog, inside a tenant transaction.
struct APIRepository: Sendable {
    let logger: Logger

    func create(tenantID: UUID, _ new: NewAPI, actor: UUID, on connection: PostgresConnection) async throws -> APIProduct {
        let id: UUID
        do {
            let rows = try await connection.query(
                """
                INSERT INTO apis (tenant_id, team_id, slug, version, name, description, base_path, visibility, upstream_protocol)
                VALUES (\(tenantID), \(new.teamID), \(new.slug), \(new.version), \(new.name), \(new.description), \(new.basePath), \(new.visibility.rawValue),
                    \(new.upstreamProtocol.rawValue))
                RETURNING id
                """, logger: logger)
            guard let created = try await rows.decode(UUID.self).first(where: { _ in true }) else { throw AppError.conflict("API was not created.") }
            id = created
        } catch where error.postgresCode == .uniqueViolation {
            if error.postgresConstraint?.contains("base_path") == true {
                throw AppError.conflict("Another API already uses this base path.", fields: ["base_path": "Already in use."])
            }
            throw AppError.conflict("Version \(new.version) of \(new.slug) already exists.", fields: ["version": "Already exists."])
        }
        for (position, target) in new.targets.enumerated() {
            try await connection.query(
                "INSERT INTO api_upstream_targets (tenant_id, api_id, position, url, weight) VALUES (\(tenantID), \(id), \(position), \(target.url), \(target.weight))",
                logger: logger)
        }
        for team in new.allowedTeamIDs {
            try await connection.query(
                "INSERT INTO api_allowed_teams (tenant_id, api_id, team_id) VALUES (\(tenantID), \(id), \(team)) ON CONFLICT DO NOTHING", logger: logger)
        }
        try await recordState(tenantID: tenantID, apiID: id, from: nil, to: .draft, actor: actor, on: connection)
        guard let api = try await find(id: id, on: connection) else { throw AppError.notFound("API") }
        return api
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> APIProduct? {
        try await load(connection.query("\(unescaped: Self.select) WHERE a.id = \(id)", logger: logger), on: connection).first
    }

    /// Every API of the tenant by slug and version, after the cursor (`slug/version`).
    func list(after cursor: String?, limit: Int, on connection: PostgresConnection) async throws -> [APIProduct] {
        try await load(
            connection.query(
                "\(unescaped: Self.select) WHERE a.slug || '/' || a.version > \(cursor ?? "") ORDER BY a.slug || '/' || a.version LIMIT \(limit)",
                logger: logger), on: connection)
    }

    /// A keyset page by `slug/version`: after a key in key order, or before one nearest first.
    func page(_ position: Keyset, limit: Int, on connection: PostgresConnection) async throws -> [APIProduct] {
        switch position {
        case .after(let cursor): return try await list(after: cursor, limit: limit, on: connection)
        case .before(let cursor):
            return try await load(
                connection.query(
                    "\(unescaped: Self.select) WHERE a.slug || '/' || a.version < \(cursor) ORDER BY a.slug || '/' || a.version DESC LIMIT \(limit)",
                    logger: logger), on: connection)
        }
    }

    func updateState(id: UUID, tenantID: UUID, from: APIState, to: APIState, actor: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query(
            "UPDATE apis SET state = \(to.rawValue), updated_at = now() WHERE id = \(id) AND state = \(from.rawValue) RETURNING id", logger: logger)
        var changed = false
        for try await _ in rows.decode(UUID.self) { changed = true }
        if changed { try await recordState(tenantID: tenantID, apiID: id, from: from, to: to, actor: actor, on: connection) }
        return changed
    }

    private func recordState(tenantID: UUID, apiID: UUID, from: APIState?, to: APIState, actor: UUID, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO api_state_changes (tenant_id, api_id, from_state, to_state, actor_user_id)
            VALUES (\(tenantID), \(apiID), \(from?.rawValue), \(to.rawValue), \(actor))
            """, logger: logger)
    }

    private static let select = """
        SELECT a.id, a.team_id, a.slug, a.version, a.name, a.description, a.base_path, a.state, a.visibility, a.created_at,
               coalesce((SELECT array_agg(t.team_id) FROM api_allowed_teams t WHERE t.api_id = a.id), '{}')
        FROM apis a
        """

    private func load(_ rows: PostgresRowSequence, on connection: PostgresConnection) async throws -> [APIProduct] {
        var apis: [APIProduct] = []
        for try await (id, team, slug, version, name, description, basePath, state, visibility, created, allowed) in rows.decode(
            (UUID, UUID, String, String, String, String, String, String, String, Date, [UUID]).self)
        {
            apis.append(
                APIProduct(
                    id: id, teamID: team, slug: slug, version: version, name: name, description: description, basePath: basePath,
                    state: APIState(rawValue: state) ?? .draft, visibility: APIProduct.Visibility(rawValue: visibility) ?? .restricted,
                    allowedTeamIDs: allowed, targets: [], createdAt: created))
        }
        guard !apis.isEmpty else { return apis }
        let targetRows = try await connection.query(
            "SELECT api_id, url, weight FROM api_upstream_targets WHERE api_id = ANY(\(apis.map(\.id))) ORDER BY api_id, position", logger: logger)
        var targets: [UUID: [UpstreamTarget]] = [:]
        for try await (apiID, url, weight) in targetRows.decode((UUID, String, Int).self) {
            targets[apiID, default: []].append(UpstreamTarget(url: url, weight: weight))
        }
        let policyRows = try await connection.query(
            """
            SELECT id, cors::text, ip_allow, ip_deny, methods, max_request_bytes, sunset_at, upstream_ca_pem, upstream_client_cert_pem, upstream_protocol
            FROM apis WHERE id = ANY(\(apis.map(\.id)))
            """, logger: logger)
        var policies: [UUID: APIGatewayPolicy] = [:]
        var bundles: [UUID: String] = [:]
        var clientCertificates: [UUID: String] = [:]
        var protocols: [UUID: UpstreamProtocol] = [:]
        for try await (apiID, cors, allow, deny, methods, maxBytes, sunset, bundle, clientCertificate, upstreamProtocol) in policyRows.decode(
            (UUID, String?, [String], [String], [String], Int?, Date?, String?, String?, String).self)
        {
            clientCertificates[apiID] = clientCertificate
            protocols[apiID] = UpstreamProtocol(rawValue: upstreamProtocol)
            policies[apiID] = APIGatewayPolicy(
                cors: cors.flatMap(CORSPolicy.init(storedJSON:)), ipAllow: allow, ipDeny: deny,
                methods: methods, maxRequestBytes: maxBytes, sunsetAt: sunset)
            bundles[apiID] = bundle
        }
        return apis.map {
            var api = $0
            api.targets = targets[api.id] ?? []
            api.policy = policies[api.id] ?? APIGatewayPolicy()
            api.upstreamCABundle = bundles[api.id]
            api.upstreamClientCertificatePEM = clientCertificates[api.id]
            api.upstreamProtocol = protocols[api.id] ?? .http1
            return api
        }
    }

    /// Stores the upstream client certificate with its sealed key, or removes both (nil).
    func setClientIdentity(id: UUID, certificatePEM: String?, sealedKey: [UInt8]?, on connection: PostgresConnection) async throws {
        try await connection.query(
            "UPDATE apis SET upstream_client_cert_pem = \(certificatePEM), upstream_client_key_sealed = \(sealedKey.map { Data($0) }), updated_at = now() WHERE id = \(id)",
            logger: logger)
    }

    /// Applies catalog changes (nil fields untouched).
    func update(id: UUID, tenantID: UUID, _ changes: APIChanges, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE apis SET name = coalesce(\(changes.name?.trimmingCharacters(in: .whitespacesAndNewlines)), name),
                description = coalesce(\(changes.description), description), visibility = coalesce(\(changes.visibility?.rawValue), visibility),
                updated_at = now()
            WHERE id = \(id)
            """, logger: logger)
        if let chosen = changes.parsedUpstreamProtocol {
            try await connection.query("UPDATE apis SET upstream_protocol = \(chosen.rawValue), updated_at = now() WHERE id = \(id)", logger: logger)
        }
        if let text = changes.upstreamCABundle, case .success(let bundle) = UpstreamCABundle.normalized(text) {
            try await connection.query("UPDATE apis SET upstream_ca_pem = \(bundle), updated_at = now() WHERE id = \(id)", logger: logger)
        }
        if let targets = changes.targets {
            try await connection.query("DELETE FROM api_upstream_targets WHERE api_id = \(id)", logger: logger)
            for (position, target) in targets.enumerated() {
                try await connection.query(
                    """
                    INSERT INTO api_upstream_targets (tenant_id, api_id, position, url, weight)
                    VALUES (\(tenantID), \(id), \(position), \(target.url), \(target.weight))
                    """, logger: logger)
            }
        }
        if let allowed = changes.allowedTeamIDs {
            try await connection.query("DELETE FROM api_allowed_teams WHERE api_id = \(id)", logger: logger)
            for team in Set(allowed) {
                try await connection.query(
                    "INSERT INTO api_allowed_teams (tenant_id, api_id, team_id) VALUES (\(tenantID), \(id), \(team))", logger: logger)
            }
        }
    }

    /// Replaces the gateway policy (already validated).
    func setPolicy(id: UUID, _ policy: APIGatewayPolicy, on connection: PostgresConnection) async throws {
        let cors = policy.cors?.storedJSON
        try await connection.query(
            """
            UPDATE apis SET cors = \(cors)::jsonb, ip_allow = \(policy.ipAllow)::text[], ip_deny = \(policy.ipDeny)::text[],
                methods = \(policy.methods)::text[], max_request_bytes = \(policy.maxRequestBytes), sunset_at = \(policy.sunsetAt), updated_at = now()
            WHERE id = \(id)
            """, logger: logger)
    }

    /// The API's added policies in chain order. A stored row the current rules refuse is left out
    /// (the gateway leaves it out too), so the page shows what is applied.
    func policies(apiID: UUID, on connection: PostgresConnection) async throws -> [APIPolicy] {
        var policies: [APIPolicy] = []
        for try await (kindText, config) in try await connection.query(
            "SELECT kind, config::text FROM api_policies WHERE api_id = \(apiID) ORDER BY position", logger: logger
        ).decode((String, String).self) {
            guard let kind = APIPolicyKind(rawValue: kindText), case .object(let object)? = JSONValue.parse(config),
                case .success(let policy) = APIPolicy.make(kind: kind, config: object)
            else { continue }
            policies.append(policy)
        }
        return policies
    }

    /// Replaces the API's added policies (already validated). The caller holds the API row's lock.
    func setPolicies(tenantID: UUID, apiID: UUID, _ policies: [APIPolicy], on connection: PostgresConnection) async throws {
        try await connection.query("DELETE FROM api_policies WHERE api_id = \(apiID)", logger: logger)
        for (position, policy) in policies.enumerated() {
            try await connection.query(
                """
                INSERT INTO api_policies (tenant_id, api_id, position, kind, phase, config)
                VALUES (\(tenantID), \(apiID), \(position), \(policy.kind.rawValue), \(policy.phase.rawValue), \(policy.configJSON.text)::jsonb)
                """, logger: logger)
        }
    }

    /// Locks the API's row for the rest of the transaction (serializes whole-list replacements).
    func lock(id: UUID, on connection: PostgresConnection) async throws {
        try await connection.query("SELECT id FROM apis WHERE id = \(id) FOR UPDATE", logger: logger)
    }
}
