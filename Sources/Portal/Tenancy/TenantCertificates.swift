import Foundation
import Gateway
import Logging
import PostgresNIO

/// What is known of a tenant's custom-host certificate once stored: never its key.
struct TenantCertificateInfo: Sendable, Equatable {
    var names: [String]
    var notAfter: Date
    var updatedAt: Date
    /// The custom host it was stored for still is the tenant's (else listeners do not serve it).
    var servesCurrentHost: Bool
}

/// The platform operator stores a TLS certificate for a tenant's custom host (console and platform
/// API). It is checked like a listener checks it (`HostCertificateCheck`), its key sealed to the
/// tenant, the change written to the tenant's audit log; listeners pick it up within seconds
/// (`ManagedCertificateLoader`).
struct TenantCertificates: Sendable {
    let database: Database
    let audit: AuditLog
    let seal: BoundKeySeal

    func info(_ tenant: Tenant) async throws -> TenantCertificateInfo? {
        try await database.withTenant(tenant.id) { connection in
            for try await (names, notAfter, updatedAt) in try await connection.query(
                "SELECT names, not_after, updated_at FROM tenant_certificates WHERE tenant_id = \(tenant.id)", logger: database.logger
            ).decode(([String], Date, Date).self) {
                let host = tenant.customHost?.lowercased()
                return TenantCertificateInfo(
                    names: names, notAfter: notAfter, updatedAt: updatedAt, servesCurrentHost: host.map { names.contains($0) } ?? false)
            }
            return nil
        }
    }

    /// Stores (or replaces) the tenant's certificate. 422 naming the field when the pair is not
    /// one a listener would serve for the tenant's custom host.
    func store(_ tenant: Tenant, chainPEM: String, keyPEM: String, operatorName: String, now: Date = Date()) async throws -> TenantCertificateInfo {
        guard let host = tenant.customHost else {
            throw AppError.validation(["custom_host": "Give the marketplace a custom host first: the certificate is served for it."])
        }
        // browsers send CRLF line ends from text areas; PEM readers take either, the store keeps LF
        let chain = chainPEM.replacingOccurrences(of: "\r\n", with: "\n").trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
        let key = keyPEM.replacingOccurrences(of: "\r\n", with: "\n").trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
        let entry: CertificateStore.Entry
        switch HostCertificateCheck.check(chainPEM: chain, keyPEM: key, host: host, now: now) {
        case .success(let checked): entry = checked
        case .failure(let problem): throw AppError.validation([problem.field.rawValue: problem.message])
        }
        let sealed = try seal.seal(key, owner: tenant.id)
        return try await database.withTenant(tenant.id) { connection in
            try await connection.query(
                """
                INSERT INTO tenant_certificates (tenant_id, chain_pem, key_sealed, names, not_after)
                VALUES (\(tenant.id), \(chain), \(Data(sealed)), \(entry.names), \(entry.notAfter))
                ON CONFLICT (tenant_id) DO UPDATE SET chain_pem = EXCLUDED.chain_pem, key_sealed = EXCLUDED.key_sealed, names = EXCLUDED.names,
                    not_after = EXCLUDED.not_after, updated_at = clock_timestamp()
                """, logger: database.logger)
            try await audit.record(
                tenantID: tenant.id, actorUserID: nil, actor: operatorName, .tenantCertificateStored, target: host,
                details: ["host": host, "not_after": ISO8601DateFormatter().string(from: entry.notAfter)], on: connection)
            return TenantCertificateInfo(names: entry.names, notAfter: entry.notAfter, updatedAt: now, servesCurrentHost: true)
        }
    }

    /// Removes it; true when there was one.
    func remove(_ tenant: Tenant, operatorName: String) async throws -> Bool {
        try await database.withTenant(tenant.id) { connection in
            var removed = false
            for try await _ in try await connection.query(
                "DELETE FROM tenant_certificates WHERE tenant_id = \(tenant.id) RETURNING 1", logger: database.logger
            ).decode(Int.self) { removed = true }
            if removed {
                try await audit.record(
                    tenantID: tenant.id, actorUserID: nil, actor: operatorName, .tenantCertificateRemoved, target: tenant.customHost, on: connection)
            }
            return removed
        }
    }
}
