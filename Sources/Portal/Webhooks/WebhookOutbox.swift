import Foundation
import Logging
import PostgresNIO

/// Writes webhook events inside the transaction of the change they describe, so an event exists
/// if and only if the change committed. One delivery row per matching endpoint is created in the
/// same statement; `WebhookDispatcher` sends them afterwards.
struct WebhookOutbox: Sendable {
    let logger: Logger

    /// The JSON body every endpoint receives.
    struct Envelope<Data: Encodable & Sendable>: Encodable, Sendable {
        let id: UUID
        let type: String
        let createdAt: Date
        let tenantId: UUID
        let data: Data
    }

    func enqueue(
        tenantID: UUID, _ type: WebhookEventType, teamIDs: [UUID], data: some Encodable & Sendable, on connection: PostgresConnection
    ) async throws {
        let id = UUID()
        let body = try Self.encoder.encode(Envelope(id: id, type: type.rawValue, createdAt: Date(), tenantId: tenantID, data: data))
        let payload = String(decoding: body, as: UTF8.self)
        try await connection.query(
            """
            WITH event AS (
                INSERT INTO webhook_events (id, tenant_id, type, team_ids, payload)
                VALUES (\(id), \(tenantID), \(type.rawValue), \(teamIDs)::uuid[], \(payload)::jsonb)
                RETURNING id, tenant_id, type, team_ids
            )
            INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id)
            SELECT e.tenant_id, w.id, e.id FROM event e JOIN webhook_endpoints w ON w.tenant_id = e.tenant_id
            WHERE (w.team_id IS NULL OR w.team_id = ANY(e.team_ids)) AND (cardinality(w.events) = 0 OR e.type = ANY(w.events))
            """, logger: logger)
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

/// `data` of subscription events.
struct SubscriptionWebhookData: Encodable, Sendable {
    struct Ref: Encodable, Sendable {
        let id: UUID
        let name: String
        var teamId: UUID?
        var slug: String?
        var version: String?
    }
    struct PlanRef: Encodable, Sendable {
        let id: UUID
        let name: String
        let version: Int
    }
    let subscriptionId: UUID
    let state: String
    let previousState: String?
    let plan: PlanRef
    let previousPlanId: UUID?
    let app: Ref
    let api: Ref
    let actorSide: String
    let reason: String?
    /// The plan a plan-change request asks for (requested, approved, rejected or withdrawn).
    var requestedPlanId: UUID? = nil
}

/// `data` of `app.credentials_rotated`.
struct CredentialWebhookData: Encodable, Sendable {
    let appId: UUID
    let appName: String
    let teamId: UUID
    let change: String
    let credentialId: UUID
    let kind: String
    let prefix: String
    let expiresAt: Date?
}
