import Foundation
import Logging
import PostgresNIO

/// A registered endpoint (the secret itself is never read back for display).
struct WebhookEndpoint: Sendable, Equatable {
    let id: UUID
    var teamID: UUID?
    var teamName: String?
    var url: String
    var description: String
    var events: [String]
    var secretPrefix: String
    var createdAt: Date
}

/// One event sent (or to be sent) to one endpoint.
struct WebhookDelivery: Sendable, Equatable {
    enum State: String, Sendable { case pending, delivered, failed }
    let id: UUID
    var endpointID: UUID
    var eventID: UUID
    var eventType: String
    var state: State
    var attempts: Int
    var nextAttemptAt: Date
    var lastStatus: Int?
    var lastError: String?
    var deliveredAt: Date?
    var createdAt: Date
}

/// One try of a delivery, as shown in the delivery log.
struct WebhookAttempt: Sendable, Equatable {
    var at: Date
    var status: Int?
    var error: String?
    var durationMilliseconds: Int
}

/// A delivery claimed by the dispatcher, with what it needs to send it.
struct ClaimedDelivery: Sendable {
    let id: UUID
    let tenantID: UUID
    let attempts: Int
    let url: String
    let sealedSecret: Data
    let eventID: UUID
    let eventType: String
    let payload: String
}

/// SQL for webhook endpoints and deliveries. Tenant-scoped methods run in a tenant transaction;
/// `claimDue`/`recordResult` run in the system scope (the dispatcher serves every tenant).
struct WebhookRepository: Sendable {
    let logger: Logger

    func create(
        tenantID: UUID, teamID: UUID?, url: String, description: String, events: [String], sealedSecret: Data, secretPrefix: String,
        createdBy: UUID, on connection: PostgresConnection
    ) async throws -> UUID {
        let rows = try await connection.query(
            """
            INSERT INTO webhook_endpoints (tenant_id, team_id, url, description, events, secret_sealed, secret_prefix, created_by)
            VALUES (\(tenantID), \(teamID), \(url), \(description), \(events)::text[], \(sealedSecret), \(secretPrefix), \(createdBy)) RETURNING id
            """, logger: logger)
        for try await id in rows.decode(UUID.self) { return id }
        throw AppError.conflict("Webhook endpoint was not created.")
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> WebhookEndpoint? {
        try await decodeEndpoints(connection.query("\(unescaped: Self.endpointSelect) WHERE w.id = \(id)", logger: logger)).first
    }

    /// A keyset page of the tenant's endpoints (`teamIDs` nil) or of the given teams', by owner
    /// (the tenant's own first, then team name) and address. The cursor is an endpoint id: after
    /// it, or before it nearest first; one that is not an endpoint of this tenant gives no rows.
    func page(teamIDs: [UUID]?, _ position: Keyset, limit: Int, on connection: PostgresConnection) async throws -> [WebhookEndpoint] {
        let key = "lower(coalesce(t.name, '')), w.url, w.id"
        let cursor: UUID?
        let forward: Bool
        switch position {
        case .after(nil): (cursor, forward) = (nil, true)
        case .after(let text?):
            guard let id = UUID(uuidString: text) else { throw PageRequest.invalidCursor }
            (cursor, forward) = (id, true)
        case .before(let text):
            guard let id = UUID(uuidString: text) else { throw PageRequest.invalidCursor }
            (cursor, forward) = (id, false)
        }
        let direction = forward ? "ASC" : "DESC"
        return try await decodeEndpoints(
            connection.query(
                """
                \(unescaped: Self.endpointSelect)
                WHERE (\(teamIDs)::uuid[] IS NULL OR w.team_id = ANY(\(teamIDs)::uuid[]))
                  AND (\(cursor)::uuid IS NULL OR (\(unescaped: key)) \(unescaped: forward ? ">" : "<")
                       (SELECT \(unescaped: key) FROM webhook_endpoints w LEFT JOIN teams t ON t.id = w.team_id WHERE w.id = \(cursor)::uuid))
                ORDER BY lower(coalesce(t.name, '')) \(unescaped: direction), w.url \(unescaped: direction), w.id \(unescaped: direction)
                LIMIT \(limit)
                """, logger: logger))
    }

    func delete(id: UUID, on connection: PostgresConnection) async throws {
        try await connection.query("DELETE FROM webhook_endpoints WHERE id = \(id)", logger: logger)
    }

    func deliveries(endpointID: UUID, limit: Int, on connection: PostgresConnection) async throws -> [WebhookDelivery] {
        try await decodeDeliveries(
            connection.query(
                """
                \(unescaped: Self.deliverySelect) WHERE d.endpoint_id = \(endpointID)
                ORDER BY d.created_at DESC, d.id LIMIT \(limit)
                """, logger: logger))
    }

    /// A keyset page of the delivery log (newest first): after the delivery `cursor` (older ones) or
    /// before it (newer ones, nearest first). A cursor that is not a delivery of this endpoint gives no rows.
    func deliveries(endpointID: UUID, after cursor: UUID, limit: Int, on connection: PostgresConnection) async throws -> [WebhookDelivery] {
        try await decodeDeliveries(
            connection.query(
                """
                \(unescaped: Self.deliverySelect), (SELECT created_at, id FROM webhook_deliveries WHERE id = \(cursor) AND endpoint_id = \(endpointID)) c
                WHERE d.endpoint_id = \(endpointID) AND (d.created_at < c.created_at OR (d.created_at = c.created_at AND d.id > c.id))
                ORDER BY d.created_at DESC, d.id LIMIT \(limit)
                """, logger: logger))
    }

    func deliveries(endpointID: UUID, before cursor: UUID, limit: Int, on connection: PostgresConnection) async throws -> [WebhookDelivery] {
        try await decodeDeliveries(
            connection.query(
                """
                \(unescaped: Self.deliverySelect), (SELECT created_at, id FROM webhook_deliveries WHERE id = \(cursor) AND endpoint_id = \(endpointID)) c
                WHERE d.endpoint_id = \(endpointID) AND (d.created_at > c.created_at OR (d.created_at = c.created_at AND d.id < c.id))
                ORDER BY d.created_at ASC, d.id DESC LIMIT \(limit)
                """, logger: logger))
    }

    func delivery(id: UUID, on connection: PostgresConnection) async throws -> WebhookDelivery? {
        try await decodeDeliveries(connection.query("\(unescaped: Self.deliverySelect) WHERE d.id = \(id)", logger: logger)).first
    }

    func attempts(deliveryID: UUID, on connection: PostgresConnection) async throws -> [WebhookAttempt] {
        let rows = try await connection.query(
            "SELECT attempted_at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = \(deliveryID) ORDER BY id", logger: logger)
        var result: [WebhookAttempt] = []
        for try await (at, status, error, duration) in rows.decode((Date, Int?, String?, Int).self) {
            result.append(WebhookAttempt(at: at, status: status, error: error, durationMilliseconds: duration))
        }
        return result
    }

    /// A fresh delivery of the same event to the same endpoint; the old one stays in the log.
    func redeliver(_ delivery: WebhookDelivery, tenantID: UUID, on connection: PostgresConnection) async throws -> UUID {
        let rows = try await connection.query(
            """
            INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id)
            VALUES (\(tenantID), \(delivery.endpointID), \(delivery.eventID)) RETURNING id
            """, logger: logger)
        for try await id in rows.decode(UUID.self) { return id }
        throw AppError.conflict("Redelivery was not queued.")
    }

    /// Takes up to `limit` due deliveries and leases them for `lease` seconds (so a crashed
    /// dispatcher's deliveries are retried, and two dispatchers never send the same one at once).
    func claimDue(limit: Int, lease: Int, on connection: PostgresConnection) async throws -> [ClaimedDelivery] {
        let rows = try await connection.query(
            """
            WITH due AS (
                SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= now()
                ORDER BY next_attempt_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => \(lease)::int)
                FROM due WHERE d.id = due.id
                RETURNING d.id, d.tenant_id, d.attempts, d.endpoint_id, d.event_id
            )
            SELECT c.id, c.tenant_id, c.attempts, w.url, w.secret_sealed, e.id, e.type, e.payload::text
            FROM claimed c JOIN webhook_endpoints w ON w.id = c.endpoint_id JOIN webhook_events e ON e.id = c.event_id
            """, logger: logger)
        var result: [ClaimedDelivery] = []
        for try await (id, tenant, attempts, url, secret, eventID, type, payload) in rows.decode(
            (UUID, UUID, Int, String, Data, UUID, String, String).self)
        {
            result.append(
                ClaimedDelivery(
                    id: id, tenantID: tenant, attempts: attempts, url: url, sealedSecret: secret, eventID: eventID, eventType: type, payload: payload))
        }
        return result
    }

    /// Stores an attempt and the delivery's next state.
    func recordResult(
        _ delivery: ClaimedDelivery, status: Int?, error: String?, durationMilliseconds: Int, next: WebhookDelivery.State, retryAfterSeconds: Double?,
        on connection: PostgresConnection
    ) async throws {
        try await connection.query(
            """
            INSERT INTO webhook_attempts (tenant_id, delivery_id, status, error, duration_ms)
            VALUES (\(delivery.tenantID), \(delivery.id), \(status), \(error), \(durationMilliseconds))
            """, logger: logger)
        let delayMilliseconds = Int((retryAfterSeconds ?? 0) * 1000)
        try await connection.query(
            """
            UPDATE webhook_deliveries SET state = \(next.rawValue), last_status = \(status), last_error = \(error),
                delivered_at = CASE WHEN \(next.rawValue) = 'delivered' THEN now() END,
                next_attempt_at = now() + make_interval(secs => \(delayMilliseconds)::double precision / 1000)
            WHERE id = \(delivery.id)
            """, logger: logger)
    }

    private static let endpointSelect = """
        SELECT w.id, w.team_id, t.name, w.url, w.description, w.events, w.secret_prefix, w.created_at
        FROM webhook_endpoints w LEFT JOIN teams t ON t.id = w.team_id
        """

    private static let deliverySelect = """
        SELECT d.id, d.endpoint_id, d.event_id, e.type, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at,
            d.created_at
        FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
        """

    private func decodeEndpoints(_ rows: PostgresRowSequence) async throws -> [WebhookEndpoint] {
        var result: [WebhookEndpoint] = []
        for try await (id, team, teamName, url, description, events, prefix, created) in rows.decode(
            (UUID, UUID?, String?, String, String, [String], String, Date).self)
        {
            result.append(
                WebhookEndpoint(
                    id: id, teamID: team, teamName: teamName, url: url, description: description, events: events, secretPrefix: prefix,
                    createdAt: created))
        }
        return result
    }

    private func decodeDeliveries(_ rows: PostgresRowSequence) async throws -> [WebhookDelivery] {
        var result: [WebhookDelivery] = []
        for try await (id, endpoint, event, type, state, attempts, next, status, error, delivered, created) in rows.decode(
            (UUID, UUID, UUID, String, String, Int, Date, Int?, String?, Date?, Date).self)
        {
            result.append(
                WebhookDelivery(
                    id: id, endpointID: endpoint, eventID: event, eventType: type, state: WebhookDelivery.State(rawValue: state) ?? .failed,
                    attempts: attempts, nextAttemptAt: next, lastStatus: status, lastError: error, deliveredAt: delivered, createdAt: created))
        }
        return result
    }
}
