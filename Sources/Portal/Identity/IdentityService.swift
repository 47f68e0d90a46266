import Foundation
import Logging
import PostgresNIO

/// Account workflows shared by the web pages, the JSON API and the CLI: sign-up, login, password
/// change, invitations and role changes. Each call is one tenant transaction and writes its
/// audit event inside it.
struct IdentityService: Sendable {
    let database: Database
    let users: UserRepository
    let sessions: SessionStore
    let throttle: LoginThrottle
    let invitations: InvitationRepository
    let teams: TeamRepository
    let audit: AuditLog
    let hasher: PasswordHasher

    init(database: Database, sessions: SessionStore, hasher: PasswordHasher = PasswordHasher()) {
        let logger = database.logger
        self.database = database
        self.users = UserRepository(logger: logger)
        self.sessions = sessions
        self.throttle = LoginThrottle(logger: logger)
        self.invitations = InvitationRepository(logger: logger)
        self.teams = TeamRepository(logger: logger)
        self.audit = AuditLog(logger: logger)
        self.hasher = hasher
    }

    enum LoginOutcome: Sendable {
        case success(Session, User)
        case invalidCredentials
        case throttled(retryAfterSeconds: Int)
    }

    /// Checks a password. Failures are committed (they feed the throttle and the audit log); the
    /// message shown for an unknown email and a wrong password is the same.
    func login(tenant: Tenant, email: String, password: String, clientIP: String, userAgent: String?) async throws -> LoginOutcome {
        let email = TextInput.sanitized(Email.normalize(email))
        return try await database.withTenant(tenant.id) { connection in
            if let wait = try await throttle.retryAfter(email: email, clientIP: clientIP, tenantID: tenant.id, on: connection) {
                try await audit.record(
                    tenantID: tenant.id, actorUserID: nil, actor: email, .loginThrottled, clientIP: clientIP, on: connection)
                return .throttled(retryAfterSeconds: wait)
            }
            let user = try await users.find(email: email, on: connection)
            let hash = try await user.asyncMap { try await users.passwordHash(userID: $0.id, on: connection) } ?? nil
            let valid = await hasher.verify(password, against: hash ?? PasswordHasher.decoy) && hash != nil
            guard valid, let user else {
                try await throttle.recordFailure(email: email, clientIP: clientIP, tenantID: tenant.id, on: connection)
                try await audit.record(
                    tenantID: tenant.id, actorUserID: user?.id, actor: email, .loginFailed, clientIP: clientIP, on: connection)
                return .invalidCredentials
            }
            try await throttle.recordSuccess(email: email, tenantID: tenant.id, on: connection)
            let session = try await sessions.create(
                owner: .user(tenantID: tenant.id, userID: user.id), clientIP: clientIP, userAgent: userAgent, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: user.id, actor: user.email, .loginSucceeded, clientIP: clientIP, on: connection)
            return .success(session, user)
        }
    }

    /// Self-service sign-up, allowed only when the tenant's policy is open. New accounts are developers.
    func signup(tenant: Tenant, account: NewAccount, clientIP: String, userAgent: String?) async throws -> (Session, User) {
        guard tenant.signupPolicy == .open else {
            throw AppError(status: .forbidden, title: "Sign-up closed", detail: "This portal is invitation-only. Ask an administrator for an invitation.")
        }
        let hash = try await hasher.hash(account.password)
        return try await database.withTenant(tenant.id) { connection in
            let user = try await users.create(tenantID: tenant.id, account: account, passwordHash: hash, roles: [.developer], on: connection)
            try await audit.record(tenantID: tenant.id, actorUserID: user.id, actor: user.email, .signup, clientIP: clientIP, on: connection)
            let session = try await sessions.create(
                owner: .user(tenantID: tenant.id, userID: user.id), clientIP: clientIP, userAgent: userAgent, on: connection)
            return (session, user)
        }
    }

    /// Creates an account directly (CLI and seed). Not exposed to self-service.
    func createUser(tenant: Tenant, account: NewAccount, roles: Set<TenantRole>, actor: String) async throws -> User {
        let hash = try await hasher.hash(account.password)
        return try await database.withTenant(tenant.id) { connection in
            let user = try await users.create(tenantID: tenant.id, account: account, passwordHash: hash, roles: roles, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: nil, actor: actor, .userCreated, target: user.email,
                details: ["roles": roles.map(\.rawValue).sorted().joined(separator: ",")], on: connection)
            return user
        }
    }

    func changePassword(tenant: Tenant, user: User, session: Session?, current: String, new: String, confirmation: String, clientIP: String) async throws {
        var errors: [String: String] = [:]
        if let problem = PasswordHasher.validate(new) { errors["new_password"] = problem }
        if new != confirmation { errors["new_password_confirmation"] = "The passwords do not match." }
        let stored = try await database.withTenant(tenant.id) { try await users.passwordHash(userID: user.id, on: $0) }
        if await !hasher.verify(current, against: stored ?? PasswordHasher.decoy) {
            errors["current_password"] = "This is not your current password."
        }
        guard errors.isEmpty else { throw AppError.validation(errors) }
        let hash = try await hasher.hash(new)
        try await database.withTenant(tenant.id) { connection in
            try await users.updatePassword(userID: user.id, hash: hash, on: connection)
            if let session { try await sessions.deleteOthers(userID: user.id, keeping: session.token, on: connection) }
            try await audit.record(tenantID: tenant.id, actorUserID: user.id, actor: user.email, .passwordChanged, clientIP: clientIP, on: connection)
        }
    }

    func setRoles(tenant: Tenant, actor: Principal, userID: UUID, roles: Set<TenantRole>, clientIP: String?) async throws -> User {
        try Policy.authorize(actor, .manageUsers)
        if actor.user.id == userID, !roles.contains(.admin) {
            throw AppError.conflict("You cannot remove your own admin role; ask another admin.", fields: ["roles": "Keep admin."])
        }
        return try await database.withTenant(tenant.id) { connection in
            guard let before = try await users.find(id: userID, on: connection) else { throw AppError.notFound("User") }
            try await users.setRoles(userID: userID, tenantID: tenant.id, roles: roles, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .rolesChanged, target: before.email, clientIP: clientIP,
                details: [
                    "before": before.roles.map(\.rawValue).sorted().joined(separator: ","),
                    "after": roles.map(\.rawValue).sorted().joined(separator: ","),
                ], on: connection)
            guard let after = try await users.find(id: userID, on: connection) else { throw AppError.notFound("User") }
            return after
        }
    }

    func invite(
        tenant: Tenant, actor: Principal, email rawEmail: String, roles: Set<TenantRole>, teamID: UUID?, teamRole: TeamRole?, clientIP: String?
    ) async throws -> (Invitation, token: String) {
        try Policy.authorize(actor, .inviteUsers)
        let email = Email.normalize(rawEmail)
        guard Email.isValid(email) else { throw AppError.validation(["email": "Enter a valid email address."]) }
        return try await database.withTenant(tenant.id) { connection in
            if try await users.find(email: email, on: connection) != nil {
                throw AppError.conflict("This person already has an account.", fields: ["email": "Already a member."])
            }
            if let teamID, try await teams.find(id: teamID, on: connection) == nil {
                throw AppError.validation(["team_id": "No such team."])
            }
            let result = try await invitations.create(
                tenantID: tenant.id, email: email, roles: roles, teamID: teamID, teamRole: teamID == nil ? nil : (teamRole ?? .member),
                invitedBy: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .invitationCreated, target: email, clientIP: clientIP,
                details: ["roles": roles.map(\.rawValue).sorted().joined(separator: ",")], on: connection)
            return result
        }
    }

    /// An administrator invitation from the platform operator (a new marketplace has no admin who
    /// could invite one). Refused once the tenant has an admin: from then on its admins invite.
    func invitePlatformAdmin(tenant: Tenant, email rawEmail: String, operatorName: String) async throws -> (Invitation, token: String) {
        let email = Email.normalize(rawEmail)
        guard Email.isValid(email) else { throw AppError.validation(["email": "Enter a valid email address."]) }
        return try await database.withTenant(tenant.id) { connection in
            if try await users.find(email: email, on: connection) != nil {
                throw AppError.conflict("This person already has an account.", fields: ["email": "Already a member."])
            }
            let result = try await invitations.create(
                tenantID: tenant.id, email: email, roles: [.admin], teamID: nil, teamRole: nil, invitedBy: nil, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: nil, actor: operatorName, .invitationCreated, target: email, details: ["roles": "admin"], on: connection)
            return result
        }
    }

    func openInvitation(tenant: Tenant, token: String) async throws -> Invitation? {
        try await database.withTenant(tenant.id) { try await invitations.find(token: token, on: $0) }
    }

    /// Creates the invited account, grants its roles and team membership, and signs it in.
    func acceptInvitation(
        tenant: Tenant, token: String, displayName: String?, password: String?, confirmation: String?, clientIP: String, userAgent: String?
    ) async throws -> (Session, User) {
        guard let invitation = try await openInvitation(tenant: tenant, token: token) else { throw AppError.notFound("Invitation") }
        let account = try NewAccount.validated(email: invitation.email, displayName: displayName, password: password, confirmation: confirmation)
        let hash = try await hasher.hash(account.password)
        return try await database.withTenant(tenant.id) { connection in
            guard try await invitations.markAccepted(id: invitation.id, on: connection) else { throw AppError.notFound("Invitation") }
            let roles = invitation.roles.isEmpty ? [.developer] : invitation.roles
            let user = try await users.create(tenantID: tenant.id, account: account, passwordHash: hash, roles: roles, on: connection)
            if let teamID = invitation.teamID {
                try await teams.setMember(tenantID: tenant.id, teamID: teamID, userID: user.id, role: invitation.teamRole ?? .member, on: connection)
            }
            try await audit.record(
                tenantID: tenant.id, actorUserID: user.id, actor: user.email, .invitationAccepted, target: user.email, clientIP: clientIP,
                on: connection)
            let session = try await sessions.create(
                owner: .user(tenantID: tenant.id, userID: user.id), clientIP: clientIP, userAgent: userAgent, on: connection)
            return (session, user)
        }
    }

    func logout(tenant: Tenant, session: Session, user: User, clientIP: String) async throws {
        try await database.withTenant(tenant.id) { connection in
            try await sessions.delete(token: session.token, on: connection)
            try await audit.record(tenantID: tenant.id, actorUserID: user.id, actor: user.email, .logout, clientIP: clientIP, on: connection)
        }
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        switch self {
        case .some(let value): try await transform(value)
        case .none: nil
        }
    }
}
