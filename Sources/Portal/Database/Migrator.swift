import Billing
import Crypto
import Foundation
import Logging
import PostgresNIO

/// Applies `migrations/NNNN_description.sql` in order, each file in one transaction, recording
/// its SHA-256 in `schema_migrations`. Concurrent migrators serialise on an advisory lock.
struct Migrator: Sendable {
    struct Migration: Sendable, Equatable {
        let version: Int
        let name: String
        let sql: String
        var checksum: String { SHA256.hash(data: Data(sql.utf8)).hexString }
    }

    enum MigrationError: Error, CustomStringConvertible {
        case directoryMissing(String)
        case badFileName(String)
        case duplicateVersion(Int)
        case editedAfterApplied(version: Int, name: String)
        case unknownApplied(version: Int)
        case failed(name: String, statement: String, error: String)

        var description: String {
            switch self {
            case .directoryMissing(let path):
                "migrations directory not found at \(path) (set TOLLGATE_MIGRATIONS_DIR)"
            case .badFileName(let name):
                "migration file \(name) must be named NNNN_description.sql"
            case .duplicateVersion(let version):
                "two migration files share version \(version)"
            case .editedAfterApplied(let version, let name):
                "migration \(name) (version \(version)) was changed after it was applied; "
                    + "add a new migration instead of editing an applied one"
            case .unknownApplied(let version):
                "the database has migration \(version) applied, which is not in the migrations directory; "
                    + "this binary is older than the database"
            case .failed(let name, let statement, let error):
                "migration \(name) failed: \(error)\n  in: \(statement.prefix(200))"
            }
        }
    }

    /// Arbitrary constant identifying "tollgate schema migration" among advisory locks.
    static let advisoryLockKey: Int64 = 0x746f_6c6c_6761_7465

    let migrations: [Migration]
    let logger: Logger

    init(directory: String, logger: Logger) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MigrationError.directoryMissing(directory)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
        var migrations: [Migration] = []
        for name in names {
            guard let versionText = name.split(separator: "_").first, versionText.count == 4, let version = Int(versionText) else {
                throw MigrationError.badFileName(name)
            }
            let sql = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            migrations.append(Migration(version: version, name: name, sql: sql))
        }
        try self.init(migrations: migrations, logger: logger)
    }

    init(migrations: [Migration], logger: Logger) throws {
        let versions = migrations.map(\.version)
        if let duplicate = versions.first(where: { v in versions.filter { $0 == v }.count > 1 }) {
            throw MigrationError.duplicateVersion(duplicate)
        }
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// Applies what is missing; returns the names applied (empty when up to date).
    @discardableResult
    func migrate(_ client: PostgresClient) async throws -> [String] {
        try await client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(Self.advisoryLockKey))", logger: logger)
            do {
                let applied = try await apply(on: connection)
                try await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger)
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger)
                throw error
            }
        }
    }

    /// Whether every known migration is applied unchanged (for readiness checks).
    func isUpToDate(_ client: PostgresClient) async throws -> Bool {
        let applied = try await client.withConnection { try await appliedChecksums(on: $0) }
        return migrations.allSatisfy { applied[$0.version] == $0.checksum }
    }

    private func apply(on connection: PostgresConnection) async throws -> [String] {
        try await connection.query(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, logger: logger)
        let applied = try await appliedChecksums(on: connection)
        let known = Set(migrations.map(\.version))
        if let unknown = applied.keys.sorted().first(where: { !known.contains($0) }) {
            throw MigrationError.unknownApplied(version: unknown)
        }
        var done: [String] = []
        for migration in migrations {
            if let checksum = applied[migration.version] {
                guard checksum == migration.checksum else {
                    throw MigrationError.editedAfterApplied(version: migration.version, name: migration.name)
                }
                continue
            }
            try await connection.query("BEGIN", logger: logger)
            do {
                // Data changes in migrations span tenants: they run in system scope, which row-level
                // security would otherwise reduce to no rows at all.
                try await connection.enterSystemScope(logger: logger)
                for statement in SQLScript(migration.sql).statements {
                    do {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    } catch {
                        throw MigrationError.failed(name: migration.name, statement: statement, error: "\(String(reflecting: error))")
                    }
                }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (\(migration.version), \(migration.name), \(migration.checksum))",
                    logger: logger)
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
            logger.info("applied migration", metadata: ["migration": "\(migration.name)"])
            done.append(migration.name)
        }
        return done
    }

    private func appliedChecksums(on connection: PostgresConnection) async throws -> [Int: String] {
        let exists = try await connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL", logger: logger)
        var tableExists = false
        for try await (flag) in exists.decode(Bool.self) { tableExists = flag }
        guard tableExists else { return [:] }
        var result: [Int: String] = [:]
        let rows = try await connection.query("SELECT version, checksum FROM schema_migrations", logger: logger)
        for try await (version, checksum) in rows.decode((Int, String).self) { result[version] = checksum }
        return result
    }
}

extension Sequence where Element == UInt8 {
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}
