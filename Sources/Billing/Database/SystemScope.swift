import Logging
import PostgresNIO

extension PostgresConnection {
    /// Lets the current transaction read (and, unless `readOnly`, write) across tenants: row-level
    /// security admits every tenant's rows while `tollgate.scope` is `system`. The setting is local
    /// to the transaction, so it ends with it and never leaks to the connection's next user. Only
    /// for jobs that are cross-tenant by design: snapshot and certificate loading, metering, quota
    /// leases, exports, migrations, platform administration. A read-only job says so first, so a
    /// mistake in it cannot write anywhere.
    public func enterSystemScope(readOnly: Bool = false, logger: Logger) async throws {
        if readOnly { try await query("SET TRANSACTION READ ONLY", logger: logger) }
        try await query("SELECT set_config('tollgate.scope', 'system', true)", logger: logger)
    }
}
