import Foundation
import Gateway
import Logging
import PostgresNIO
import ServiceLifecycle

/// What every subcommand needs: configuration, logging, and a Postgres client that is running.
struct Runtime {
    let config: AppConfig
    let logger: Logger

    static func load() throws -> Runtime {
        let config = try AppConfig.fromEnvironment()
        LoggingSetup.bootstrap(format: config.logFormat, level: config.logLevel)
        var logger = Logger(label: "tollgate")
        logger.logLevel = config.logLevel
        return Runtime(config: config, logger: logger)
    }

    func makeClient() throws -> PostgresClient {
        let url = try DatabaseURL(config.databaseURL)
        return PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: logger)
    }

    /// Runs `body` with a live client (for one-shot admin commands), then shuts the client down.
    func withDatabase<T: Sendable>(_ body: @Sendable (Database) async throws -> T) async throws -> T {
        let client = try makeClient()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(Database(client: client, logger: logger))
        }
    }

    func migrator() throws -> Migrator { try Migrator(directory: config.migrationsDirectory, logger: logger) }

    /// Services for the portal process (templates, secret key, readiness).
    func portalServices(database: Database, readiness: Readiness) async throws -> PortalServices {
        let secret = try SecretKey.load(environmentValue: config.secretKeyValue, dataDirectory: config.dataDirectory)
        let views = try await Views(directory: config.templatesDirectory)
        return PortalServices(config: config, database: database, views: views, secret: secret, readiness: readiness)
    }

    /// Warns loudly when the database role would bypass row-level security.
    func checkRowLevelSecurityApplies(_ database: Database) async {
        do {
            let bypasses = try await database.withPlatform { connection -> Bool in
                let rows = try await connection.query(
                    "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user", logger: logger)
                for try await flag in rows.decode(Bool.self) { return flag }
                return false
            }
            if bypasses {
                logger.warning(
                    "the database role is a superuser or has BYPASSRLS: tenant isolation by row-level security is NOT enforced; connect as an ordinary role (see README)"
                )
            }
        } catch {
            logger.warning("could not check the database role", metadata: ["error": "\(error)"])
        }
    }
}
