import Foundation
import HummingbirdTesting
import PostgresNIO
import Testing

@testable import Portal

/// `tollgate billing refresh|close|reissue|void` as an operator runs them: the real binary
/// (`TOLLGATE_BIN`, set by scripts/test.sh) on a database of its own, and the audit log then holds
/// every step with the CLI's actor and the reason given.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["TOLLGATE_BIN"] != nil, "needs TOLLGATE_BIN (make test sets it)"))
struct BillingCLITests {
    /// A migrated database of its own on the test cluster (a process cannot be pointed at a test's
    /// schema: `DATABASE_URL` carries no search path); dropped afterwards. `body` gets its URL.
    static func withOwnDatabase<T: Sendable>(_ body: @Sendable (Database, String) async throws -> T) async throws -> T {
        let name = "tollgate_cli_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        var parsed = try DatabaseURL(TestDatabase.url)
        let admin = PostgresClient(configuration: parsed.clientConfiguration(maximumConnections: 1), backgroundLogger: TestDatabase.logger)
        parsed.database = String(name)
        let client = PostgresClient(configuration: parsed.clientConfiguration(maximumConnections: 4), backgroundLogger: TestDatabase.logger)
        var components = try #require(URLComponents(string: TestDatabase.url))
        components.path = "/" + name
        let url = try #require(components.string)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await admin.run() }
            defer { group.cancelAll() }
            try await TestDatabase.createDatabase(String(name), using: admin)
            let result: Result<T, any Error>
            do {
                result = .success(
                    try await withThrowingTaskGroup(of: Void.self) { inner in
                        inner.addTask { await client.run() }
                        defer { inner.cancelAll() }
                        try await Migrator(directory: TestDatabase.migrationsDirectory, logger: TestDatabase.logger).migrate(client)
                        return try await body(Database(client: client, logger: TestDatabase.logger), url)
                    })
            } catch {
                result = .failure(error)
            }
            _ = try? await admin.query("DROP DATABASE IF EXISTS \(unescaped: String(name)) WITH (FORCE)", logger: TestDatabase.logger)
            return try result.get()
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func closeReissueAndVoidFromTheCLIAreAuditedWithTheOperatorAndTheReason() async throws {
        let binary = try #require(ProcessInfo.processInfo.environment["TOLLGATE_BIN"])
        try await Self.withOwnDatabase { database, url in
            let portal = try await TestPortal.make(database)
            try await portal.application().test(.router) { client in
                // setup: a Pro subscription with October's calls; the operator is "finance-bot"
                let f = try await BillingCorrectionTests.finance(portal, client)
                var environment = ProcessInfo.processInfo.environment
                environment["DATABASE_URL"] = url
                environment["USER"] = "finance-bot"
                environment["LOG_LEVEL"] = "error"
                environment["TOLLGATE_MIGRATIONS_DIR"] = TestDatabase.migrationsDirectory
                environment["TOLLGATE_TEMPLATES_DIR"] = TestDatabase.templatesDirectory
                environment["TOLLGATE_DATA_DIR"] = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString)").path
                func billing(_ arguments: String...) throws -> (status: Int32, output: String) {
                    try ReconciliationEndToEndTests.run(binary, ["billing"] + arguments, environment: environment)
                }

                // act
                let refreshed = try billing("refresh", "--tenant", "acme", "--period", "2026-10")
                let closed = try billing("close", "--tenant", "acme", "--period", "2026-10")
                let blank = try billing("void", "--tenant", "acme", "--invoice", "ACME-000001", "--reason", "  ")
                let reissued = try billing("reissue", "--tenant", "acme", "--invoice", "ACME-000001", "--reason", "wrong rate")
                let voided = try billing("void", "--tenant", "acme", "--invoice", "ACME-000002", "--reason", "duplicate charge")

                // assert: each command succeeded (the blank reason refused), and each left its audit event
                #expect(refreshed.status == 0, "\(refreshed.output)")
                #expect(closed.status == 0 && closed.output.contains("issued ACME-000001"), "\(closed.output)")
                #expect(blank.status != 0)
                #expect(reissued.status == 0 && reissued.output.contains("issued ACME-000002"), "\(reissued.output)")
                #expect(voided.status == 0, "\(voided.output)")
                let events = try await BillingCorrectionTests.audit(portal, f.tenant.id)
                #expect(events.map(\.action) == ["invoice.drafts_refreshed", "invoice.period_closed", "invoice.reissued", "invoice.voided"])
                #expect(events.allSatisfy { $0.actor == "cli:finance-bot" }, "\(events.map(\.actor))")
                #expect(events.map(\.target) == ["2026-10", "2026-10", "ACME-000001", "ACME-000002"])
                let reissue = try #require(events.first { $0.action == "invoice.reissued" })
                #expect(reissue.details.contains("wrong rate") && reissue.details.contains("ACME-000002"))
                #expect(events.last?.details.contains("duplicate charge") == true)
                // the voided invoice keeps who voided it and why
                let invoice = try await portal.database.withTenant(f.tenant.id) { connection -> (String, String)? in
                    for try await row in try await connection.query(
                        "SELECT coalesce(voided_by, ''), coalesce(void_reason, '') FROM invoices WHERE number = 'ACME-000002'", logger: TestDatabase.logger
                    ).decode((String, String).self) { return row }
                    return nil
                }
                #expect(invoice?.0 == "cli:finance-bot" && invoice?.1 == "duplicate charge")
            }
        }
    }
}
