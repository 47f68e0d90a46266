import Billing
import Foundation
import Gateway
import Logging
import ServiceLifecycle

extension PortalServices {
    /// Database reachable and every migration applied unchanged. The migration files are read
    /// once, here, not on every check (the monitor runs it every two seconds).
    var checkReadiness: @Sendable () async -> Readiness.Report {
        let database = self.database
        let loaded = Result { try Migrator(directory: config.migrationsDirectory, logger: database.logger) }
        return {
            do {
                let migrator = try loaded.get()
                let current = try await migrator.isUpToDate(database.client)
                return .init(databaseReachable: true, migrationsCurrent: current, detail: current ? "ok" : "migrations pending")
            } catch let error as Migrator.MigrationError {
                return .init(databaseReachable: true, migrationsCurrent: false, detail: error.description)
            } catch {
                return .init(databaseReachable: false, migrationsCurrent: false, detail: "database unreachable: " + DatabaseErrorText.describe(error))
            }
        }
    }
}

/// Re-checks readiness every few seconds so the gateway's synchronous `/readyz` stays current.
struct ReadinessMonitor: Service {
    let readiness: Readiness
    let check: @Sendable () async -> Readiness.Report
    var interval: Duration = .seconds(2)

    func run() async throws {
        let check = self.check
        await cancelWhenGracefulShutdown {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                // Bounded: the shared client queues a query while Postgres is away, and a check
                // stuck there would hold up the process's shutdown.
                do {
                    readiness.update(try await Deadline.run(.seconds(5)) { await check() })
                } catch {
                    readiness.update(.init(databaseReachable: false, migrationsCurrent: false, detail: "database unreachable: " + DatabaseErrorText.describe(error)))
                }
                try? await Task.sleep(for: interval)
            }
        }
    }
}
