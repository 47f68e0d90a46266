import Foundation
import Logging
import PostgresNIO

/// A subscription as loaded, with the names people need to read it.
struct Subscription: Sendable, Equatable {
    let id: UUID
    var appID: UUID
    var apiID: UUID
    var planID: UUID
    var state: SubscriptionState
    var createdAt: Date
    var updatedAt: Date
    var appName: String
    var apiName: String
    var apiVersion: String
    var planName: String
    var planVersion: Int
    var apiSlug: String
    var appTeamID: UUID
    var apiTeamID: UUID
    /// A plan change waiting for the provider's approval (the subscription stays on `planID`).
    var requestedPlan: RequestedPlan? = nil

    struct RequestedPlan: Sendable, Equatable {
        var id: UUID
        var name: String
        var version: Int
        var at: Date
    }

    var position: SubscriptionPosition { .of(state, planChangeRequested: requestedPlan != nil) }
    /// Waiting for a provider: a new subscription or a plan change.
    var awaitsProvider: Bool { state == .pending || requestedPlan != nil }
}

/// One recorded transition.
struct SubscriptionEvent: Sendable, Equatable {
    var event: String
    var fromState: SubscriptionState?
    var toState: SubscriptionState
    var fromPlanID: UUID?
    var toPlanID: UUID
    var requestedPlanID: UUID? = nil
    var actorSide: SubscriptionActor
    var actor: String?
    var reason: String?
    var at: Date
}

/// SQL for subscriptions and their history, inside a tenant transaction.
struct SubscriptionRepository: Sendable {
    let logger: Logger

    func create(tenantID: UUID, appID: UUID, apiID: UUID, planID: UUID, state: SubscriptionState, on connection: PostgresConnection) async throws -> UUID {
        do {
            let rows = try await connection.query(
                """
                INSERT INTO subscriptions (tenant_id, app_id, api_id, plan_id, state)
                VALUES (\(tenantID), \(appID), \(apiID), \(planID), \(state.rawValue)) RETURNING id
                """, logger: logger)
            for try await id in rows.decode(UUID.self) { return id }
            throw AppError.conflict("Subscription was not created.")
        } catch where error.postgresCode == .uniqueViolation {
            throw AppError.conflict("This app already has an open subscription to this API. Change its plan instead.")
        }
    }

    /// The subscription, locked for this transaction (transitions are read-decide-write).
    func findForUpdate(id: UUID, on connection: PostgresConnection) async throws -> Subscription? {
        _ = try await connection.query("SELECT id FROM subscriptions WHERE id = \(id) FOR UPDATE", logger: logger)
        return try await find(id: id, on: connection)
    }

    func find(id: UUID, on connection: PostgresConnection) async throws -> Subscription? {
        try await decode(connection.query("\(unescaped: Self.select) WHERE s.id = \(id)", logger: logger)).first
    }

    func list(appIDs: [UUID]?, apiIDs: [UUID]?, on connection: PostgresConnection) async throws -> [Subscription] {
        try await decode(
            connection.query(
                """
                \(unescaped: Self.select)
                WHERE (\(appIDs)::uuid[] IS NULL OR s.app_id = ANY(\(appIDs)::uuid[]))
                   OR (\(apiIDs)::uuid[] IS NOT NULL AND s.api_id = ANY(\(apiIDs)::uuid[]))
                ORDER BY s.created_at DESC, s.id LIMIT 1000
                """, logger: logger))
    }

    /// Subscriptions of one app (to one API when `apiID` is given), newest first; the app page and
    /// the subscribe form's conflict answer read these instead of filtering a whole tenant's list.
    func list(appID: UUID, apiID: UUID? = nil, on connection: PostgresConnection) async throws -> [Subscription] {
        try await decode(
            connection.query(
                """
                \(unescaped: Self.select)
                WHERE s.app_id = \(appID) AND (\(apiID)::uuid IS NULL OR s.api_id = \(apiID)::uuid)
                ORDER BY s.created_at DESC, s.id
                """, logger: logger))
    }

    /// A keyset page in the queue's order (awaiting the provider first, then oldest first); the
    /// cursor is a subscription id: after it, or before it nearest first. A cursor that is not a
    /// subscription of this tenant gives no rows.
    func page(
        appIDs: [UUID]?, apiIDs: [UUID]?, state: SubscriptionState? = nil, awaitingProvider: Bool = false, _ position: Keyset, limit: Int,
        on connection: PostgresConnection
    ) async throws -> [Subscription] {
        let rank = "(CASE WHEN s.state = 'pending' OR s.requested_plan_id IS NOT NULL THEN 0 ELSE 1 END)"
        let cursor: UUID?
        let forward: Bool
        switch position {
        case .after(nil): (cursor, forward) = (nil, true)
        case .after(let key?):
            guard let id = UUID(uuidString: key) else { throw PageRequest.invalidCursor }
            (cursor, forward) = (id, true)
        case .before(let key):
            guard let id = UUID(uuidString: key) else { throw PageRequest.invalidCursor }
            (cursor, forward) = (id, false)
        }
        return try await decode(
            connection.query(
                """
                \(unescaped: Self.select)
                WHERE ((\(appIDs)::uuid[] IS NULL OR s.app_id = ANY(\(appIDs)::uuid[]))
                   OR (\(apiIDs)::uuid[] IS NOT NULL AND s.api_id = ANY(\(apiIDs)::uuid[])))
                  AND (\(state?.rawValue)::text IS NULL OR s.state = \(state?.rawValue)::text)
                  AND (NOT \(awaitingProvider) OR s.state = 'pending' OR s.requested_plan_id IS NOT NULL)
                  AND (\(cursor)::uuid IS NULL OR (\(unescaped: rank), s.created_at, s.id) \(unescaped: forward ? ">" : "<")
                       (SELECT \(unescaped: rank), s.created_at, s.id FROM subscriptions s WHERE s.id = \(cursor)::uuid))
                ORDER BY \(unescaped: rank) \(unescaped: forward ? "" : "DESC"), s.created_at \(unescaped: forward ? "" : "DESC"),
                    s.id \(unescaped: forward ? "" : "DESC")
                LIMIT \(limit)
                """, logger: logger))
    }

    /// Stores a transition's outcome; `requestedPlanID` is the open plan-change request (nil: none).
    func update(id: UUID, state: SubscriptionState, planID: UUID, requestedPlanID: UUID?, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            UPDATE subscriptions SET state = \(state.rawValue), plan_id = \(planID), requested_plan_id = \(requestedPlanID),
                plan_change_requested_at = CASE WHEN \(requestedPlanID)::uuid IS NULL THEN NULL
                    WHEN requested_plan_id IS DISTINCT FROM \(requestedPlanID)::uuid THEN now() ELSE plan_change_requested_at END,
                updated_at = now()
            WHERE id = \(id)
            """, logger: logger)
    }

    func record(
        tenantID: UUID, subscriptionID: UUID, event: String, from: SubscriptionState?, to: SubscriptionState, fromPlan: UUID?, toPlan: UUID,
        requestedPlan: UUID? = nil, actorUserID: UUID?, side: SubscriptionActor, reason: String?, on connection: PostgresConnection
    ) async throws {
        try await connection.query(
            """
            INSERT INTO subscription_events (tenant_id, subscription_id, event, from_state, to_state, from_plan_id, to_plan_id, requested_plan_id,
                actor_user_id, actor_side, reason)
            VALUES (\(tenantID), \(subscriptionID), \(event), \(from?.rawValue), \(to.rawValue), \(fromPlan), \(toPlan), \(requestedPlan),
                \(actorUserID), \(side.rawValue), \(reason))
            """, logger: logger)
    }

    func history(subscriptionID: UUID, on connection: PostgresConnection) async throws -> [SubscriptionEvent] {
        let rows = try await connection.query(
            """
            SELECT e.event, e.from_state, e.to_state, e.from_plan_id, e.to_plan_id, e.requested_plan_id, e.actor_side, u.email, e.reason, e.at
            FROM subscription_events e LEFT JOIN users u ON u.id = e.actor_user_id
            WHERE e.subscription_id = \(subscriptionID) ORDER BY e.id
            """, logger: logger)
        var events: [SubscriptionEvent] = []
        for try await (event, from, to, fromPlan, toPlan, requestedPlan, side, actor, reason, at) in rows.decode(
            (String, String?, String, UUID?, UUID, UUID?, String, String?, String?, Date).self)
        {
            events.append(
                SubscriptionEvent(
                    event: event, fromState: from.flatMap(SubscriptionState.init(rawValue:)), toState: SubscriptionState(rawValue: to) ?? .cancelled,
                    fromPlanID: fromPlan, toPlanID: toPlan, requestedPlanID: requestedPlan, actorSide: SubscriptionActor(rawValue: side) ?? .system, actor: actor, reason: reason, at: at))
        }
        return events
    }

    private static let select = """
        SELECT s.id, s.app_id, s.api_id, s.plan_id, s.state, s.created_at, s.updated_at, a.name, api.name, api.version, p.name, p.version,
            api.slug, a.team_id, api.team_id, rp.id, rp.name, rp.version, s.plan_change_requested_at
        FROM subscriptions s JOIN apps a ON a.id = s.app_id JOIN apis api ON api.id = s.api_id JOIN plans p ON p.id = s.plan_id
            LEFT JOIN plans rp ON rp.id = s.requested_plan_id
        """

    private func decode(_ rows: PostgresRowSequence) async throws -> [Subscription] {
        var result: [Subscription] = []
        for try await (id, app, api, plan, state, created, updated, appName, apiName, apiVersion, planName, planVersion, apiSlug, appTeam, apiTeam,
            requestedID, requestedName, requestedVersion, requestedAt)
            in rows.decode(
                (UUID, UUID, UUID, UUID, String, Date, Date, String, String, String, String, Int, String, UUID, UUID, UUID?, String?, Int?, Date?).self)
        {
            var requestedPlan: Subscription.RequestedPlan?
            if let requestedID, let requestedName, let requestedVersion {
                requestedPlan = .init(id: requestedID, name: requestedName, version: requestedVersion, at: requestedAt ?? updated)
            }
            result.append(
                Subscription(
                    id: id, appID: app, apiID: api, planID: plan, state: SubscriptionState(rawValue: state) ?? .cancelled, createdAt: created,
                    updatedAt: updated, appName: appName, apiName: apiName, apiVersion: apiVersion, planName: planName, planVersion: planVersion,
                    apiSlug: apiSlug, appTeamID: appTeam, apiTeamID: apiTeam, requestedPlan: requestedPlan))
        }
        return result
    }
}
