import Foundation
import Logging
import PostgresNIO

/// App and credential workflows. Team members see their team's apps; team admins and owners (and
/// tenant admins) create apps and manage credentials. Every secret is returned exactly once.
struct AppService: Sendable {
    let database: Database
    let apps: AppRepository
    let teams: TeamRepository
    let audit: AuditLog
    let outbox: WebhookOutbox

    struct Created: Sendable {
        let credential: AppCredential
        let secret: String
    }

    func list(tenant: Tenant, actor: Principal) async throws -> [ConsumerApp] {
        try Policy.authorize(actor, .listTeams)
        let teamIDs: [UUID]? = actor.has(.admin) ? nil : Array(actor.teamRoles.keys)
        return try await database.withTenant(tenant.id) { try await apps.list(teamIDs: teamIDs, on: $0) }
    }

    func show(tenant: Tenant, actor: Principal, id: UUID) async throws -> (ConsumerApp, [AppCredential]) {
        try await database.withTenant(tenant.id) { connection in
            guard let app = try await apps.find(id: id, on: connection), Policy.allows(actor, .viewTeam(app.teamID)) else { throw AppError.notFound("App") }
            return (app, try await apps.credentials(appID: id, on: connection))
        }
    }

    /// Creates the app with its first client secret.
    func create(tenant: Tenant, actor: Principal, _ new: NewApp, clientIP: String?) async throws -> (ConsumerApp, Created) {
        try Policy.authorize(actor, .manageApps(team: new.teamID))
        return try await database.withTenant(tenant.id) { connection in
            guard try await teams.find(id: new.teamID, on: connection) != nil else { throw AppError.validation(["team_id": "No such team."]) }
            let app = try await apps.create(tenantID: tenant.id, new, on: connection)
            let secret = SecretToken.generate(prefix: CredentialRules.clientSecretPrefix)
            let credential = try await apps.addCredential(
                tenantID: tenant.id, appID: app.id, kind: .clientSecret, name: "initial", secret: secret, expiresInDays: nil, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .appCreated, target: app.name, clientIP: clientIP,
                details: ["client_id": app.clientID], on: connection)
            return (app, Created(credential: credential, secret: secret.value))
        }
    }

    /// Adds a client secret or API key; refuses beyond the active limits.
    func addCredential(
        tenant: Tenant, actor: Principal, appID: UUID, kind: AppCredential.Kind, name: String?, expiresInDays: Int?, clientIP: String?
    ) async throws -> Created {
        try CredentialRules.validateLifetime(expiresInDays)
        let name = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if name.count > 100 || TextInput.hasControlCharacters(name) { throw AppError.validation(["name": "Use at most 100 characters."]) }
        return try await database.withTenant(tenant.id) { connection in
            let app = try await managedApp(appID, actor: actor, on: connection)
            try await apps.lock(appID: app.id, on: connection)
            let active = try await apps.credentials(appID: app.id, on: connection).filter { $0.kind == kind && $0.isActive() }
            switch kind {
            case .clientSecret where active.count >= CredentialRules.maximumActiveClientSecrets:
                throw AppError.conflict("An app has at most two active client secrets. Revoke the old one once clients use the new one.")
            case .apiKey where active.count >= CredentialRules.maximumActiveAPIKeys:
                throw AppError.conflict("An app has at most \(CredentialRules.maximumActiveAPIKeys) active API keys.")
            default:
                break
            }
            let secret = SecretToken.generate(prefix: kind == .clientSecret ? CredentialRules.clientSecretPrefix : CredentialRules.apiKeyPrefix)
            let credential = try await apps.addCredential(
                tenantID: tenant.id, appID: app.id, kind: kind, name: name, secret: secret, expiresInDays: expiresInDays, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, kind == .clientSecret ? .appSecretRotated : .apiKeyCreated,
                target: app.name, clientIP: clientIP, details: ["prefix": credential.prefix], on: connection)
            try await announceRotation(tenantID: tenant.id, app: app, credential: credential, change: "added", on: connection)
            return Created(credential: credential, secret: secret.value)
        }
    }

    func revokeCredential(tenant: Tenant, actor: Principal, appID: UUID, credentialID: UUID, clientIP: String?) async throws {
        try await database.withTenant(tenant.id) { connection in
            let app = try await managedApp(appID, actor: actor, on: connection)
            guard let credential = try await apps.revokeCredential(id: credentialID, appID: app.id, on: connection) else {
                throw AppError.notFound("Credential")
            }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .credentialRevoked, target: app.name, clientIP: clientIP,
                details: ["prefix": credential.prefix, "kind": credential.kind.rawValue], on: connection)
            try await announceRotation(tenantID: tenant.id, app: app, credential: credential, change: "revoked", on: connection)
        }
    }

    /// Adding or revoking a secret or key is a rotation step the app's team may automate on.
    private func announceRotation(
        tenantID: UUID, app: ConsumerApp, credential: AppCredential, change: String, on connection: PostgresConnection
    ) async throws {
        let data = CredentialWebhookData(
            appId: app.id, appName: app.name, teamId: app.teamID, change: change, credentialId: credential.id, kind: credential.kind.rawValue,
            prefix: credential.prefix, expiresAt: credential.expiresAt)
        try await outbox.enqueue(tenantID: tenantID, .appCredentialsRotated, teamIDs: [app.teamID], data: data, on: connection)
    }

    private func managedApp(_ id: UUID, actor: Principal, on connection: PostgresConnection) async throws -> ConsumerApp {
        guard let app = try await apps.find(id: id, on: connection), Policy.allows(actor, .viewTeam(app.teamID)) else { throw AppError.notFound("App") }
        try Policy.authorize(actor, .manageApps(team: app.teamID))
        return app
    }
}
