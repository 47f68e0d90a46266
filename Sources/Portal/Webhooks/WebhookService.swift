import Crypto
import Foundation
import Logging
import PostgresNIO

/// Webhook endpoint workflows. Tenant admins manage the tenant's endpoints (every event); team
/// admins and owners manage their team's (events about the team's apps and APIs). The signing
/// secret is returned once, at creation.
struct WebhookService: Sendable {
    let database: Database
    let webhooks: WebhookRepository
    let teams: TeamRepository
    let audit: AuditLog
    let secret: SecretKey
    let targets: WebhookTargetPolicy

    static let secretPrefix = "whsec_"

    struct NewEndpoint: Sendable {
        var teamID: UUID?
        var url: String
        var description: String
        var events: [String]
    }

    func create(tenant: Tenant, actor: Principal, _ new: NewEndpoint, clientIP: String?) async throws -> (WebhookEndpoint, secret: String) {
        try Policy.authorize(actor, .manageWebhooks(team: new.teamID))
        let target = try targets.validate(new.url)
        let description = new.description.trimmingCharacters(in: .whitespacesAndNewlines)
        guard description.count <= 500, !TextInput.hasControlCharacters(description.replacingOccurrences(of: "\n", with: " ")) else {
            throw AppError.validation(["description": "Use at most 500 characters."])
        }
        let events = try WebhookEventType.parseList(new.events).map(\.rawValue)
        let token = SecretToken.generate(prefix: Self.secretPrefix)
        let sealed = try AES.GCM.seal(Array(token.value.utf8), using: secret.key).combined ?? Data()
        let endpoint = try await database.withTenant(tenant.id) { connection in
            if let team = new.teamID, try await teams.find(id: team, on: connection) == nil { throw AppError.validation(["team_id": "No such team."]) }
            let id = try await webhooks.create(
                tenantID: tenant.id, teamID: new.teamID, url: target.url, description: description, events: events, sealedSecret: sealed,
                secretPrefix: token.displayPrefix, createdBy: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .webhookCreated, target: target.url, clientIP: clientIP,
                details: ["events": events.isEmpty ? "all" : events.joined(separator: " ")], on: connection)
            guard let endpoint = try await webhooks.find(id: id, on: connection) else { throw AppError.notFound("Webhook endpoint") }
            return endpoint
        }
        return (endpoint, token.value)
    }

    /// A keyset page of the endpoints the actor manages (tenant admins: all of the tenant's), by
    /// owner then address; the cursor is an endpoint id.
    func page(tenant: Tenant, actor: Principal, _ position: Keyset, limit: Int) async throws -> [WebhookEndpoint] {
        try Policy.authorize(actor, .listTeams)
        let teamIDs: [UUID]? = actor.has(.admin) ? nil : actor.teamRoles.filter { $0.value >= .admin }.map(\.key)
        return try await database.withTenant(tenant.id) { try await webhooks.page(teamIDs: teamIDs, position, limit: limit, on: $0) }
    }

    /// An endpoint with its most recent deliveries.
    func show(tenant: Tenant, actor: Principal, id: UUID, limit: Int = 50) async throws -> (WebhookEndpoint, [WebhookDelivery]) {
        try await database.withTenant(tenant.id) { connection in
            let endpoint = try await managed(id, actor: actor, on: connection)
            return (endpoint, try await webhooks.deliveries(endpointID: endpoint.id, limit: limit, on: connection))
        }
    }

    /// An endpoint with one keyset page of its delivery log (newest first; the cursor is a delivery id).
    func deliveries(tenant: Tenant, actor: Principal, id: UUID, _ position: Keyset, limit: Int) async throws -> (WebhookEndpoint, [WebhookDelivery]) {
        try await database.withTenant(tenant.id) { connection in
            let endpoint = try await managed(id, actor: actor, on: connection)
            func cursor(_ key: String) throws -> UUID {
                guard let id = UUID(uuidString: key) else { throw AppError.badRequest("The page cursor is not valid; follow the page links.", fields: ["cursor": "invalid"]) }
                return id
            }
            let deliveries: [WebhookDelivery] =
                switch position {
                case .after(nil): try await webhooks.deliveries(endpointID: endpoint.id, limit: limit, on: connection)
                case .after(let key?): try await webhooks.deliveries(endpointID: endpoint.id, after: try cursor(key), limit: limit, on: connection)
                case .before(let key): try await webhooks.deliveries(endpointID: endpoint.id, before: try cursor(key), limit: limit, on: connection)
                }
            return (endpoint, deliveries)
        }
    }

    /// One delivery with every attempt made.
    func delivery(tenant: Tenant, actor: Principal, endpointID: UUID, deliveryID: UUID) async throws -> (WebhookDelivery, [WebhookAttempt]) {
        try await database.withTenant(tenant.id) { connection in
            let endpoint = try await managed(endpointID, actor: actor, on: connection)
            guard let delivery = try await webhooks.delivery(id: deliveryID, on: connection), delivery.endpointID == endpoint.id else {
                throw AppError.notFound("Delivery")
            }
            return (delivery, try await webhooks.attempts(deliveryID: delivery.id, on: connection))
        }
    }

    func delete(tenant: Tenant, actor: Principal, id: UUID, clientIP: String?) async throws {
        try await database.withTenant(tenant.id) { connection in
            let endpoint = try await managed(id, actor: actor, on: connection)
            try await webhooks.delete(id: endpoint.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .webhookDeleted, target: endpoint.url, clientIP: clientIP,
                on: connection)
        }
    }

    /// Queues the delivery's event again for the same endpoint.
    func redeliver(tenant: Tenant, actor: Principal, endpointID: UUID, deliveryID: UUID, clientIP: String?) async throws -> WebhookDelivery {
        try await database.withTenant(tenant.id) { connection in
            let endpoint = try await managed(endpointID, actor: actor, on: connection)
            guard let delivery = try await webhooks.delivery(id: deliveryID, on: connection), delivery.endpointID == endpoint.id else {
                throw AppError.notFound("Delivery")
            }
            let id = try await webhooks.redeliver(delivery, tenantID: tenant.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .webhookRedelivered, target: endpoint.url, clientIP: clientIP,
                details: ["event": delivery.eventType, "event_id": delivery.eventID.uuidString], on: connection)
            guard let queued = try await webhooks.delivery(id: id, on: connection) else { throw AppError.notFound("Delivery") }
            return queued
        }
    }

    private func managed(_ id: UUID, actor: Principal, on connection: PostgresConnection) async throws -> WebhookEndpoint {
        guard let endpoint = try await webhooks.find(id: id, on: connection) else { throw AppError.notFound("Webhook endpoint") }
        guard Policy.allows(actor, .manageWebhooks(team: endpoint.teamID)) else {
            if let team = endpoint.teamID, actor.teamRoles[team] != nil { throw AppError.forbidden }
            throw AppError.notFound("Webhook endpoint")
        }
        return endpoint
    }
}
