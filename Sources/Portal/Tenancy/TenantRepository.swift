import Foundation
import Logging
import Gateway
import PostgresNIO

/// SQL for the platform-level `tenants` table.
struct TenantRepository: Sendable {
    let logger: Logger

    private static let columns = "id, slug, name, currency, signup_policy, custom_host, created_at"

    func find(slug: String, on connection: PostgresConnection) async throws -> Tenant? {
        try await one(connection.query("SELECT \(unescaped: Self.columns) FROM tenants WHERE slug = \(slug)", logger: logger))
    }

    func find(customHost: String, on connection: PostgresConnection) async throws -> Tenant? {
        try await one(connection.query("SELECT \(unescaped: Self.columns) FROM tenants WHERE lower(custom_host) = \(HostName.canonical(customHost))", logger: logger))
    }

    func list(after cursor: String?, limit: Int, on connection: PostgresConnection) async throws -> [Tenant] {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.columns) FROM tenants WHERE slug > \(cursor ?? "") ORDER BY slug LIMIT \(limit)",
            logger: logger)
        return try await decode(rows)
    }

    /// A keyset page by slug: after a slug in slug order, or before one nearest first.
    func page(_ position: Keyset, limit: Int, on connection: PostgresConnection) async throws -> [Tenant] {
        switch position {
        case .after(let cursor): return try await list(after: cursor, limit: limit, on: connection)
        case .before(let cursor):
            return try await decode(
                connection.query(
                    "SELECT \(unescaped: Self.columns) FROM tenants WHERE slug < \(cursor) ORDER BY slug DESC LIMIT \(limit)", logger: logger))
        }
    }

    func create(_ new: NewTenant, on connection: PostgresConnection) async throws -> Tenant {
        do {
            let rows = try await connection.query(
                """
                INSERT INTO tenants (slug, name, currency, signup_policy, custom_host)
                VALUES (\(new.slug), \(new.name), \(new.currency), \(new.signupPolicy.rawValue), \(new.customHost))
                RETURNING \(unescaped: Self.columns)
                """, logger: logger)
            guard let tenant = try await decode(rows).first else { throw AppError.conflict("Tenant was not created.") }
            return tenant
        } catch where error.postgresCode == .uniqueViolation {
            if error.postgresConstraint?.contains("custom_host") == true {
                throw AppError.conflict("Another tenant already uses that host.", fields: ["custom_host": "Another marketplace already uses this host."])
            }
            throw AppError.conflict("A tenant with slug \(new.slug) already exists.", fields: ["slug": "Already taken."])
        }
    }

    /// Applies the operator's changes; a nil field stays as it is (`customHost: .some(nil)` removes it).
    func update(id: UUID, _ changes: TenantChanges, on connection: PostgresConnection) async throws -> Tenant? {
        do {
            let host = changes.customHost
            let rows = try await connection.query(
                """
                UPDATE tenants SET name = coalesce(\(changes.name), name), signup_policy = coalesce(\(changes.signupPolicy?.rawValue), signup_policy),
                    custom_host = CASE WHEN \(host != nil) THEN \(host ?? nil) ELSE custom_host END
                WHERE id = \(id) RETURNING \(unescaped: Self.columns)
                """, logger: logger)
            return try await decode(rows).first
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("Another tenant already uses that host.", fields: ["custom_host": "Another marketplace already uses this host."])
        }
    }

    private func one(_ rows: PostgresRowSequence) async throws -> Tenant? { try await decode(rows).first }

    private func decode(_ rows: PostgresRowSequence) async throws -> [Tenant] {
        var tenants: [Tenant] = []
        for try await (id, slug, name, currency, policy, host, created) in rows.decode(
            (UUID, String, String, String, String, String?, Date).self)
        {
            tenants.append(
                Tenant(
                    id: id, slug: slug, name: name, currency: currency,
                    signupPolicy: Tenant.SignupPolicy(rawValue: policy) ?? .inviteOnly, customHost: host, createdAt: created))
        }
        return tenants
    }
}
