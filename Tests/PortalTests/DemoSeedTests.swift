import Foundation
import PostgresNIO
import Testing

@testable import Portal

/// The demo marketplace the quick start promises.
@Suite struct DemoSeedTests {
    @Test func seedsTheEchoAPIPlansAndASubscribedDemoAppAndIsIdempotent() async throws {
        try await TestDatabase.withDatabase { database in
            // setup
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("seed-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let seed = DemoSeed(database: database, dataDirectory: directory)
            // act
            let first = try await seed.run()
            let second = try await seed.run()
            // assert
            #expect(first.credentials["demo-app.client_secret"]?.hasPrefix("tgs_") == true)
            #expect(first.credentials["demo-app.api_key"]?.hasPrefix("tgk_") == true)
            #expect(second.credentials["demo-app.client_secret"] == first.credentials["demo-app.client_secret"])
            let tenant = try await database.withPlatform { try await TenantRepository(logger: database.logger).find(slug: "demo", on: $0) }
            let rows = try await database.withTenant(try #require(tenant).id) { connection -> [String] in
                var result: [String] = []
                let query: PostgresQuery = """
                    SELECT a.name || ' ' || api.slug || ' ' || p.name || ' ' || s.state || ' ' || t.name || ' ' || u.url
                    FROM subscriptions s JOIN apps a ON a.id = s.app_id JOIN apis api ON api.id = s.api_id JOIN plans p ON p.id = s.plan_id
                    JOIN teams t ON t.id = api.team_id JOIN api_upstream_targets u ON u.api_id = api.id
                    ORDER BY api.slug
                    """
                for try await row in try await connection.query(query, logger: database.logger).decode(String.self) { result.append(row) }
                return result
            }
            // Echo over HTTP and the Greeter gRPC service, both on their Free plans
            #expect(rows == ["demo-app echo Free active Acme APIs http://127.0.0.1:9100", "demo-app greeter Free active Acme APIs grpc://127.0.0.1:9101"])
            let plans = try await database.withTenant(try #require(tenant).id) { connection -> [String] in
                var result: [String] = []
                let query: PostgresQuery = """
                    SELECT plans.name || ' ' || rate_per_second || '/s quota ' || monthly_quota || ' fee ' || monthly_fee_minor || ' incl ' || included_requests
                        || ' ' || approval || ' ' || (tiers->0->>'unit_price_micros')
                    FROM plans JOIN apis ON apis.id = plans.api_id WHERE apis.slug = 'echo' ORDER BY plans.name
                    """
                for try await row in try await connection.query(query, logger: database.logger).decode(String.self) { result.append(row) }
                return result
            }
            #expect(plans == ["Free 5/s quota 1000 fee 0 incl 1000 automatic 0", "Pro 50/s quota 100000 fee 4900 incl 50000 manual 200000"])
            // Echo shows the policy chain with two policies, each valid (the seed made them through APIPolicy.make)
            let policies = try await database.withTenant(try #require(tenant).id) { connection -> [String] in
                var result: [String] = []
                for try await row in try await connection.query(
                    "SELECT p.kind || ' ' || p.config::text FROM api_policies p JOIN apis a ON a.id = p.api_id WHERE a.slug = 'echo' ORDER BY p.position",
                    logger: database.logger
                ).decode(String.self) { result.append(row) }
                return result
            }
            #expect(policies.count == 2)
            #expect(policies.first?.hasPrefix("request_transform ") == true)
            #expect(policies.first?.contains("$app_id") == true)
            #expect(policies.last?.hasPrefix("response_transform ") == true)
            // a provider's change of the chain survives the next seed (make run seeds every time)
            try await database.withTenant(try #require(tenant).id) { connection in
                try await connection.query(
                    "DELETE FROM api_policies WHERE api_id IN (SELECT id FROM apis WHERE slug = 'echo')", logger: database.logger)
            }
            _ = try await seed.run()
            let afterEdit = try await database.withTenant(try #require(tenant).id) { connection -> Int in
                var count = 0
                for try await _ in try await connection.query(
                    "SELECT 1 FROM api_policies p JOIN apis a ON a.id = p.api_id WHERE a.slug = 'echo'", logger: database.logger
                ).decode(Int.self) { count += 1 }
                return count
            }
            #expect(afterEdit == 0)
            // an installation seeded before the Greeter existed: its demo-app is subscribed on the next seed
            try await database.withTenant(try #require(tenant).id) { connection in
                try await connection.query(
                    "DELETE FROM subscriptions WHERE api_id IN (SELECT id FROM apis WHERE slug = 'greeter')", logger: database.logger)
            }
            _ = try await seed.run()
            let again = try await database.withTenant(try #require(tenant).id) { connection -> Int in
                var count = 0
                for try await _ in try await connection.query(
                    "SELECT 1 FROM subscriptions s JOIN apis a ON a.id = s.api_id WHERE a.slug = 'greeter' AND s.state = 'active'", logger: database.logger
                ).decode(Int.self) { count += 1 }
                return count
            }
            #expect(again == 1)
        }
    }
}
