import Foundation
import Logging
import PostgresNIO
import Testing

@testable import Portal

/// A private schema per test on the private cluster that `make test` starts: tests run in
/// parallel without seeing each other's rows, against real PostgreSQL with the real migrations.
enum TestDatabase {
    static let logger: Logger = {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        return logger
    }()

    static var url: String {
        ProcessInfo.processInfo.environment["DATABASE_URL"] ?? "postgres://tollgate:tollgate@127.0.0.1:54329/tollgate_test"
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    static var migrationsDirectory: String { repositoryRoot + "/migrations" }
    static var templatesDirectory: String { repositoryRoot + "/templates" }

    /// Creates database `name` (a name the caller made unique) for a test whose processes need a
    /// database of their own. From `template0`, not the default `template1`: CREATE DATABASE
    /// copies its template and refuses — "source database is being accessed by other users"
    /// (55006), after waiting 5 s — while any other session is connected to it. Nothing of ours
    /// connects to template1, but the cluster does: on the freshly made cluster of a clean-clone
    /// run, autovacuum workers vacuum and analyze template1's catalogs in the first minutes,
    /// exactly while the suite creates its databases. template0 accepts no connections, and the
    /// migrations need nothing that template1 adds.
    static func createDatabase(_ name: String, using admin: PostgresClient) async throws {
        try await admin.query("CREATE DATABASE \(unescaped: name) TEMPLATE template0", logger: logger)
    }

    /// Runs `body` with a migrated, empty schema of its own; drops the schema afterwards.
    static func withDatabase<T: Sendable>(migrate: Bool = true, _ body: @Sendable (Database) async throws -> T) async throws -> T {
        let schema = "test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let parsed = try DatabaseURL(url)
        let admin = PostgresClient(configuration: parsed.clientConfiguration(maximumConnections: 2), backgroundLogger: logger)
        let client = PostgresClient(configuration: parsed.clientConfiguration(searchPath: schema, maximumConnections: 8), backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await admin.run() }
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await admin.query("CREATE SCHEMA \(unescaped: schema)", logger: logger)
            do {
                let database = Database(client: client, logger: logger)
                if migrate {
                    try await Migrator(directory: migrationsDirectory, logger: logger).migrate(client)
                }
                let result = try await body(database)
                try await admin.query("DROP SCHEMA \(unescaped: schema) CASCADE", logger: logger)
                return result
            } catch {
                _ = try? await admin.query("DROP SCHEMA \(unescaped: schema) CASCADE", logger: logger)
                throw error
            }
        }
    }
}

/// Fixtures built through the real services.
enum Fixtures {
    /// Fast Argon2id parameters for tests (the algorithm and format are the production ones).
    static let hasher = PasswordHasher(memoryKiB: 1024, iterations: 1, parallelism: 1)
    static let password = "correct horse battery"

    static func tenant(_ database: Database, slug: String = "acme", policy: Tenant.SignupPolicy = .open) async throws -> Tenant {
        try await database.withPlatform { connection in
            try await TenantRepository(logger: database.logger).create(
                NewTenant(slug: slug, name: slug.capitalized, currency: "EUR", signupPolicy: policy, customHost: nil), on: connection)
        }
    }

    static func user(_ database: Database, tenant: Tenant, email: String, roles: Set<TenantRole>) async throws -> User {
        let identity = IdentityService(
            database: database, sessions: SessionStore(idleTimeout: .seconds(3600), absoluteTimeout: .seconds(7200), logger: database.logger),
            hasher: hasher)
        return try await identity.createUser(
            tenant: tenant, account: NewAccount(email: email, displayName: email.components(separatedBy: "@")[0], password: password), roles: roles,
            actor: "test")
    }
}
