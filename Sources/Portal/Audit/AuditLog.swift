import Foundation
import Logging
import PostgresNIO

/// One security-relevant event, as shown to tenant admins.
struct AuditEvent: Sendable, Equatable {
    /// Random, per event: reveals nothing about other tenants' activity (the row's sequence is internal).
    let id: UUID
    var at: Date
    var actor: String
    var action: String
    var target: String?
    var clientIP: String?
    var details: String
}

/// Appends to and reads the tenant's audit log. Written in the same transaction as the change it
/// records, so the log never claims something that rolled back (failed logins are committed on
/// their own for the same reason).
struct AuditLog: Sendable {
    let logger: Logger

    enum Kind: String, Sendable {
        case loginSucceeded = "login.succeeded"
        case loginFailed = "login.failed"
        case loginThrottled = "login.throttled"
        case logout = "logout"
        case signup = "user.signed_up"
        case passwordChanged = "user.password_changed"
        case rolesChanged = "user.roles_changed"
        case userCreated = "user.created"
        case invitationCreated = "invitation.created"
        case invitationAccepted = "invitation.accepted"
        case tokenCreated = "token.created"
        case tokenRevoked = "token.revoked"
        case teamCreated = "team.created"
        case teamMemberChanged = "team.member_changed"
        case teamMemberRemoved = "team.member_removed"
        case apiCreated = "api.created"
        case apiStateChanged = "api.state_changed"
        case apiUpdated = "api.updated"
        case apiDocumentUploaded = "api.document_uploaded"
        case apiDescriptorSetUploaded = "api.descriptor_set_uploaded"
        case planCreated = "plan.created"
        case planRevised = "plan.revised"
        case appCreated = "app.created"
        case appSecretRotated = "app.credentials_rotated"
        case apiKeyCreated = "app.api_key_created"
        case credentialRevoked = "app.credential_revoked"
        case subscriptionChanged = "subscription.changed"
        case webhookCreated = "webhook.created"
        case webhookDeleted = "webhook.deleted"
        case webhookRedelivered = "webhook.redelivered"
        case invoiceDraftsRefreshed = "invoice.drafts_refreshed"
        case invoicePeriodClosed = "invoice.period_closed"
        case invoiceVoided = "invoice.voided"
        case invoiceReissued = "invoice.reissued"
        case tenantUpdated = "tenant.updated"
        case tenantCertificateStored = "tenant.certificate_stored"
        case tenantCertificateRemoved = "tenant.certificate_removed"
    }

    func record(
        tenantID: UUID, actorUserID: UUID?, actor: String, _ kind: Kind, target: String? = nil, clientIP: String? = nil,
        details: [String: String] = [:], on connection: PostgresConnection
    ) async throws {
        let json = String(decoding: try JSONEncoder().encode(details), as: UTF8.self)
        try await connection.query(
            """
            INSERT INTO audit_events (tenant_id, actor_user_id, actor, action, target, client_ip, details)
            VALUES (\(tenantID), \(actorUserID), \(actor), \(kind.rawValue), \(target), \(clientIP), \(json)::jsonb)
            """, logger: logger)
    }

    /// Whether `id` is an event this tenant can see (a page cursor its audit log made).
    func contains(_ id: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT 1 FROM audit_events WHERE public_id = \(id)", logger: logger)
        for try await _ in rows { return true }
        return false
    }

    /// Newest first, older than the event with id `cursor` (an id this tenant cannot see: from the newest).
    func list(before cursor: UUID?, limit: Int, on connection: PostgresConnection) async throws -> [AuditEvent] {
        let rows = try await connection.query(
            """
            SELECT public_id, at, actor, action, target, client_ip, details::text FROM audit_events
            WHERE id < coalesce((SELECT c.id FROM audit_events c WHERE c.public_id = \(cursor)), 9223372036854775807)
            ORDER BY id DESC LIMIT \(limit)
            """, logger: logger)
        var events: [AuditEvent] = []
        for try await (id, at, actor, action, target, ip, details) in rows.decode((UUID, Date, String, String, String?, String?, String).self) {
            events.append(AuditEvent(id: id, at: at, actor: actor, action: action, target: target, clientIP: ip, details: details))
        }
        return events
    }
}
