import Billing
import Foundation
import Logging
import PostgresNIO

/// The application's handle on PostgreSQL: one `PostgresClient` per process plus the rules for
/// entering a tenant's row-level-security scope.
///
/// Every unit of work runs in its own transaction. `withTenant` sets `tollgate.tenant_id` for that
/// transaction only (`set_config(..., true)` is `SET LOCAL`), so a pooled connection never carries
/// one request's tenant into the next.
struct Database: Sendable {
    let client: PostgresClient
    let logger: Logger

    /// Runs `body` in a transaction scoped to one tenant: RLS hides every other tenant's rows.
    func withTenant<Result: Sendable>(
        _ tenantID: UUID,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await transaction { connection in
            try await connection.query(
                "SELECT set_config('tollgate.tenant_id', \(tenantID.uuidString), true)", logger: logger)
            return try await body(connection)
        }
    }

    /// Runs `body` in a transaction with no tenant selected: only platform rows are visible
    /// (tenants, platform admins, platform sessions).
    func withPlatform<Result: Sendable>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await transaction(body)
    }

    /// Runs `body` in a transaction that may read across tenants. Only for platform jobs that are
    /// cross-tenant by design (tenant administration, snapshot loading, billing).
    func withSystemScope<Result: Sendable>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await transaction { connection in
            try await connection.enterSystemScope(logger: logger)
            return try await body(connection)
        }
    }

    /// A transaction that rethrows the closure's own error (PostgresNIO's `withTransaction` wraps
    /// it in `PostgresTransactionError`, which would hide our typed errors from the HTTP edge).
    private func transaction<Result: Sendable>(
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await client.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let result = try await body(connection)
                try await connection.query("COMMIT", logger: logger)
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }
}

extension PostgresError.Code {
    static let uniqueViolation = PostgresError.Code(raw: "23505")
    static let foreignKeyViolation = PostgresError.Code(raw: "23503")
    static let checkViolation = PostgresError.Code(raw: "23514")
    static let insufficientPrivilege = PostgresError.Code(raw: "42501")
}

extension Error {
    /// The SQLSTATE of a server error, if this is one.
    var postgresCode: PostgresError.Code? {
        (self as? PSQLError)?.serverInfo?[.sqlState].map { PostgresError.Code(raw: $0) }
    }
    var postgresConstraint: String? {
        (self as? PSQLError)?.serverInfo?[.constraintName]
    }
}
