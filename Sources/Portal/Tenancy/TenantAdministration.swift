import Foundation
import Logging
import PostgresNIO

/// What the platform operator does to a marketplace (console and platform API): edit it, change or
/// remove its custom host, and give a new marketplace its first administrator. Each change is
/// written to the tenant's own audit log, so its admins see what the operator did.
struct TenantAdministration: Sendable {
    let database: Database
    let tenants: TenantRepository
    let identity: IdentityService
    let audit: AuditLog
    let keys: SigningKeyStore

    /// The marketplace with this slug; a malformed or unknown slug is the same 404.
    func find(slug: String) async throws -> Tenant {
        guard Slug.isValid(slug), let tenant = try await database.withPlatform({ try await tenants.find(slug: slug, on: $0) }) else {
            throw AppError.notFound("Marketplace")
        }
        return tenant
    }

    /// A new marketplace, with its token signing key from the start.
    func create(_ new: NewTenant) async throws -> Tenant {
        let tenant = try await database.withPlatform { try await tenants.create(new, on: $0) }
        try await database.withTenant(tenant.id) { try await keys.ensureKey(tenantID: tenant.id, on: $0) }
        return tenant
    }

    func update(_ tenant: Tenant, _ changes: TenantChanges, operatorName: String) async throws -> Tenant {
        try await database.withTenant(tenant.id) { connection in
            guard let updated = try await tenants.update(id: tenant.id, changes, on: connection) else { throw AppError.notFound("Marketplace") }
            var details: [String: String] = [:]
            if updated.name != tenant.name { details["name"] = updated.name }
            if updated.signupPolicy != tenant.signupPolicy { details["signup_policy"] = updated.signupPolicy.rawValue }
            if updated.customHost != tenant.customHost { details["custom_host"] = updated.customHost ?? "(removed)" }
            if !details.isEmpty {
                try await audit.record(
                    tenantID: tenant.id, actorUserID: nil, actor: operatorName, .tenantUpdated, target: tenant.slug, details: details, on: connection)
            }
            return updated
        }
    }

    /// Email addresses of the marketplace's administrators.
    func adminEmails(_ tenant: Tenant) async throws -> [String] {
        try await database.withTenant(tenant.id) { connection in
            var emails: [String] = []
            for try await email in try await connection.query(
                "SELECT u.email FROM users u JOIN user_roles r ON r.user_id = u.id WHERE r.role = 'admin' ORDER BY u.email LIMIT 50",
                logger: database.logger
            ).decode(String.self) {
                emails.append(email)
            }
            return emails
        }
    }

    /// Refused once the marketplace has an administrator: from then on its admins invite people.
    func inviteFirstAdmin(_ tenant: Tenant, email: String, operatorName: String) async throws -> (Invitation, token: String) {
        guard try await adminEmails(tenant).isEmpty else {
            throw AppError.conflict("This marketplace already has an administrator; they invite further people from its portal.")
        }
        return try await identity.invitePlatformAdmin(tenant: tenant, email: email, operatorName: operatorName)
    }
}
