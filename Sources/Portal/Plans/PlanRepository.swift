import Foundation
import Logging
import PostgresNIO

/// SQL for plan versions, inside a tenant transaction.
struct PlanRepository: Sendable {
    let logger: Logger

    /// A new plan family (version 1), or the next version of `family` superseding the current one.
    func insert(tenantID: UUID, apiID: UUID, family: UUID?, terms: PlanTerms, actor: UUID, on connection: PostgresConnection) async throws -> Plan {
        let familyID = family ?? UUID()
        var version = 1
        if let family {
            let rows = try await connection.query(
                "UPDATE plans SET superseded_at = now() WHERE family_id = \(family) AND superseded_at IS NULL RETURNING version", logger: logger)
            var previous: Int?
            for try await v in rows.decode(Int.self) { previous = v }
            guard let previous else { throw AppError.conflict("This plan was changed meanwhile; reload and try again.") }
            version = previous + 1
        }
        let tiers = String(decoding: try APIJSON.encoder.encode(terms.tiers), as: UTF8.self)
        do {
            let rows = try await connection.query(
                """
                INSERT INTO plans (tenant_id, api_id, family_id, version, name, rate_per_second, burst, monthly_quota, monthly_fee_minor,
                                   included_requests, tier_mode, tiers, approval, visibility, created_by, per_minute, per_hour, per_day, cache_hits_billable)
                VALUES (\(tenantID), \(apiID), \(familyID), \(version), \(terms.name), \(terms.ratePerSecond), \(terms.burst), \(terms.monthlyQuota),
                        \(terms.monthlyFeeMinor), \(terms.includedRequests), \(terms.tierMode.rawValue), \(tiers)::jsonb, \(terms.approval.rawValue),
                        \(terms.visibility.rawValue), \(actor), \(terms.perMinute), \(terms.perHour), \(terms.perDay), \(terms.billsCacheHits))
                RETURNING id
                """, logger: logger)
            for try await id in rows.decode(UUID.self) {
                guard let plan = try await find(id: id, on: connection) else { break }
                return plan
            }
            throw AppError.conflict("Plan was not saved.")
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("This API already has a plan named \(terms.name).", fields: ["name": "Already used."])
        }
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> Plan? {
        try await decode(connection.query("\(unescaped: Self.select) WHERE id = \(id)", logger: logger)).first
    }

    /// Current versions of an API's plans, cheapest first.
    func current(apiID: UUID, on connection: PostgresConnection) async throws -> [Plan] {
        try await decode(
            connection.query(
                "\(unescaped: Self.select) WHERE api_id = \(apiID) AND superseded_at IS NULL ORDER BY monthly_fee_minor, name", logger: logger))
    }

    func versions(familyID: UUID, on connection: PostgresConnection) async throws -> [Plan] {
        try await decode(connection.query("\(unescaped: Self.select) WHERE family_id = \(familyID) ORDER BY version", logger: logger))
    }

    private static let select = """
        SELECT id, api_id, family_id, version, name, rate_per_second, burst, monthly_quota, monthly_fee_minor, included_requests,
               tier_mode, tiers::text, approval, visibility, created_at, superseded_at, per_minute, per_hour, per_day, cache_hits_billable
        FROM plans
        """

    private func decode(_ rows: PostgresRowSequence) async throws -> [Plan] {
        var plans: [Plan] = []
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        for try await (
            id, api, family, version, name, rate, burst, quota, fee, included, mode, tiersJSON, approval, visibility, created, superseded, perMinute, perHour,
            perDay, cacheHitsBillable
        )
            in rows.decode(
                (UUID, UUID, UUID, Int, String, Int, Int, Int64?, Int64, Int64, String, String, String, String, Date, Date?, Int64?, Int64?, Int64?, Bool).self)
        {
            let terms = PlanTerms(
                name: name, ratePerSecond: rate, burst: burst, monthlyQuota: quota, monthlyFeeMinor: fee, includedRequests: included,
                tierMode: PlanTerms.TierMode(rawValue: mode) ?? .flat,
                tiers: (try? decoder.decode([PlanTerms.Tier].self, from: Data(tiersJSON.utf8))) ?? [],
                approval: PlanTerms.Approval(rawValue: approval) ?? .manual, visibility: PlanTerms.Visibility(rawValue: visibility) ?? .hidden,
                perMinute: perMinute, perHour: perHour, perDay: perDay, cacheHitsBillable: cacheHitsBillable)
            plans.append(Plan(id: id, apiID: api, familyID: family, version: version, terms: terms, createdAt: created, supersededAt: superseded))
        }
        return plans
    }
}
