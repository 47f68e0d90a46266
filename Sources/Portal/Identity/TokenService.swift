import Foundation
import Logging
import PostgresNIO

/// Personal access token workflows (create shows the secret once; revoke is immediate).
struct TokenService: Sendable {
    let database: Database
    let tokens: PersonalAccessTokenRepository
    let audit: AuditLog

    struct NewToken: Sendable {
        var name: String
        var scopes: Set<TokenScope>
        var expiresInDays: Int?

        static func validated(name: String?, scopes: [String], expiresInDays: Int?) throws -> NewToken {
            var errors: [String: String] = [:]
            let name = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            if name.isEmpty || name.count > 100 || TextInput.hasControlCharacters(name) { errors["name"] = "Enter a name of 1 to 100 characters." }
            let parsed = scopes.map { TokenScope(rawValue: $0) }
            if scopes.isEmpty || parsed.contains(where: { $0 == nil }) {
                errors["scopes"] = "Choose one or more of: read, write, admin."
            }
            if let days = expiresInDays, !(1...PersonalAccessTokenRepository.maximumLifetimeDays).contains(days) {
                errors["expires_in_days"] = "Choose between 1 and \(PersonalAccessTokenRepository.maximumLifetimeDays) days."
            }
            guard errors.isEmpty else { throw AppError.validation(errors) }
            return NewToken(name: name, scopes: Set(parsed.compactMap { $0 }), expiresInDays: expiresInDays)
        }
    }

    func list(tenant: Tenant, actor: Principal) async throws -> [PersonalAccessToken] {
        try Policy.authorize(actor, .viewOwnProfile)
        return try await database.withTenant(tenant.id) { try await tokens.list(userID: actor.user.id, on: $0) }
    }

    func create(tenant: Tenant, actor: Principal, _ new: NewToken, clientIP: String?) async throws -> (PersonalAccessToken, secret: String) {
        try Policy.authorize(actor, .manageOwnTokens)
        if new.scopes.contains(.admin), !actor.has(.admin) {
            throw AppError.validation(["scopes": "Only tenant admins can create admin-scoped tokens."])
        }
        // A token can never carry more than the token (or session) that created it.
        if let held = actor.scopes, !new.scopes.isSubset(of: held) {
            throw AppError.validation(["scopes": "A token cannot grant scopes its creator's token does not have."])
        }
        return try await database.withTenant(tenant.id) { connection in
            let created = try await tokens.create(
                tenantID: tenant.id, userID: actor.user.id, name: new.name, scopes: new.scopes, expiresInDays: new.expiresInDays, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .tokenCreated, target: created.0.prefix, clientIP: clientIP,
                details: ["name": new.name, "scopes": new.scopes.map(\.rawValue).sorted().joined(separator: ",")], on: connection)
            return created
        }
    }

    func revoke(tenant: Tenant, actor: Principal, id: UUID, clientIP: String?) async throws {
        try Policy.authorize(actor, .manageOwnTokens)
        try await database.withTenant(tenant.id) { connection in
            guard try await tokens.revoke(id: id, userID: actor.user.id, on: connection) else { throw AppError.notFound("Token") }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .tokenRevoked, target: id.uuidString, clientIP: clientIP,
                on: connection)
        }
    }
}
