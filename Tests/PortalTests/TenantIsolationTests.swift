import Foundation
import PostgresNIO
import Testing

@testable import Portal

/// Row-level security: the database itself keeps tenants apart, even when SQL forgets the filter.
@Suite struct TenantIsolationTests {
    @Test func queriesWithoutTenantFilterSeeOnlyTheirTenant() async throws {
        try await TestDatabase.withDatabase { database in
            // setup
            let a = try await Fixtures.tenant(database, slug: "alpha")
            let b = try await Fixtures.tenant(database, slug: "beta")
            _ = try await Fixtures.user(database, tenant: a, email: "a1@example.com", roles: [.admin])
            _ = try await Fixtures.user(database, tenant: a, email: "a2@example.com", roles: [.developer])
            let bUser = try await Fixtures.user(database, tenant: b, email: "b1@example.com", roles: [.admin])
            // act: deliberately unfiltered SQL
            let emailsSeenByA = try await database.withTenant(a.id) { connection -> [String] in
                var emails: [String] = []
                for try await email in try await connection.query("SELECT email FROM users ORDER BY email", logger: database.logger).decode(String.self) {
                    emails.append(email)
                }
                return emails
            }
            // assert
            #expect(emailsSeenByA == ["a1@example.com", "a2@example.com"])
            let byID = try await database.withTenant(a.id) { try await UserRepository(logger: database.logger).find(id: bUser.id, on: $0) }
            #expect(byID == nil)
        }
    }

    @Test func updatesAndDeletesCannotReachAnotherTenant() async throws {
        try await TestDatabase.withDatabase { database in
            let a = try await Fixtures.tenant(database, slug: "alpha")
            let b = try await Fixtures.tenant(database, slug: "beta")
            _ = try await Fixtures.user(database, tenant: b, email: "b1@example.com", roles: [.admin])
            // act
            let touched = try await database.withTenant(a.id) { connection -> Int in
                var count = 0
                let rows = try await connection.query("UPDATE users SET display_name = 'pwned' RETURNING id", logger: database.logger)
                for try await _ in rows.decode(UUID.self) { count += 1 }
                try await connection.query("DELETE FROM users", logger: database.logger)
                return count
            }
            // assert
            #expect(touched == 0)
            let still = try await database.withTenant(b.id) { try await UserRepository(logger: database.logger).find(email: "b1@example.com", on: $0) }
            #expect(still?.displayName == "b1")
        }
    }

    @Test func insertingARowForAnotherTenantIsRefused() async throws {
        try await TestDatabase.withDatabase { database in
            let a = try await Fixtures.tenant(database, slug: "alpha")
            let b = try await Fixtures.tenant(database, slug: "beta")
            await #expect(throws: PSQLError.self) {
                try await database.withTenant(a.id) { connection in
                    try await connection.query(
                        "INSERT INTO teams (tenant_id, slug, name) VALUES (\(b.id), 'sneaky', 'Sneaky')", logger: database.logger)
                }
            }
        }
    }

    @Test func withoutATenantNoTenantRowsAreVisible() async throws {
        try await TestDatabase.withDatabase { database in
            let a = try await Fixtures.tenant(database, slug: "alpha")
            _ = try await Fixtures.user(database, tenant: a, email: "a1@example.com", roles: [.admin])
            let count = try await database.withPlatform { connection -> Int in
                for try await n in try await connection.query("SELECT count(*)::int FROM users", logger: database.logger).decode(Int.self) { return n }
                return -1
            }
            #expect(count == 0)
            let systemCount = try await database.withSystemScope { connection -> Int in
                for try await n in try await connection.query("SELECT count(*)::int FROM users", logger: database.logger).decode(Int.self) { return n }
                return -1
            }
            #expect(systemCount == 1)
        }
    }

    @Test func theTenantSettingDoesNotLeakToTheNextTransaction() async throws {
        try await TestDatabase.withDatabase { database in
            let a = try await Fixtures.tenant(database, slug: "alpha")
            _ = try await database.withTenant(a.id) { _ in true }
            let setting = try await database.withPlatform { connection -> String in
                for try await value in try await connection.query("SELECT coalesce(current_setting('tollgate.tenant_id', true), '')", logger: database.logger)
                    .decode(String.self)
                { return value }
                return "?"
            }
            #expect(setting == "")
        }
    }

    @Test func theApplicationRoleIsSubjectToRowLevelSecurity() async throws {
        try await TestDatabase.withDatabase { database in
            let rows = try await database.client.query(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", logger: database.logger)
            for try await (superuser, bypass) in rows.decode((Bool, Bool).self) {
                #expect(!superuser)
                #expect(!bypass)
            }
            let forced = try await database.client.query(
                """
                SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'schema_migrations'
                  AND c.relname NOT IN ('tenants', 'platform_admins', 'platform_tokens')
                  AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
                """, logger: database.logger)
            for try await unprotected in forced.decode(Int.self) { #expect(unprotected == 0) }
            // every policy but the two with platform rows is the one rule, with the scope evaluated once per query (migration 0012)
            let policies = try await database.client.query(
                """
                SELECT count(*)::int, count(*) FILTER (WHERE qual LIKE '%SELECT tollgate_current_tenant()%' AND with_check LIKE '%SELECT tollgate_system_scope()%')::int
                FROM pg_policies WHERE schemaname = current_schema() AND tablename NOT IN ('sessions', 'login_failures', 'meter_runs')
                """, logger: database.logger)
            for try await (all, initPlan) in policies.decode((Int, Int).self) {
                #expect(all > 20)
                #expect(initPlan == all)
            }
            // meter runs are installation-wide, not tenant data: anyone reads them, only system scope writes
            let meterRuns = try await database.client.query(
                """
                SELECT string_agg(cmd || ':' || coalesce(qual, '-') || ':' || coalesce(with_check, '-'), ' | ' ORDER BY cmd)
                FROM pg_policies WHERE schemaname = current_schema() AND tablename = 'meter_runs'
                """, logger: database.logger)
            for try await text in meterRuns.decode(String.self) {
                #expect(text.contains("SELECT:true"), "\(text)")
                #expect(text.components(separatedBy: "SELECT tollgate_system_scope()").count == 5, "\(text)")
            }
        }
    }
}
