import Foundation

/// The authenticated actor of a tenant request, however it authenticated (browser session or
/// personal access token). `scopes` is nil for a browser session (full rights of the user).
struct Principal: Sendable, Equatable {
    let user: User
    var teamRoles: [UUID: TeamRole]
    var scopes: Set<TokenScope>?

    func has(_ role: TenantRole) -> Bool { user.roles.contains(role) }
}

/// What a personal access token may do.
enum TokenScope: String, Sendable, Codable, CaseIterable {
    /// Read anything the user can read.
    case read
    /// Create and change what the user can change.
    case write
    /// Tenant administration (users, roles, invitations, audit log), if the user is an admin.
    case admin
}

/// Something a principal may try to do.
enum Action: Sendable, Equatable {
    case viewOwnProfile
    case manageOwnTokens
    case listUsers
    case manageUsers
    case inviteUsers
    case viewAuditLog
    case listTeams
    case createTeam
    case viewTeam(UUID)
    case manageTeamMembers(UUID)
    /// Create APIs for, and change APIs of, a provider team.
    case manageAPIs(team: UUID)
    /// Create apps for, and manage credentials of, a consumer team.
    case manageApps(team: UUID)
    /// Register and inspect webhook endpoints: the tenant's own (`nil`, admins) or a team's.
    case manageWebhooks(team: UUID?)
    /// Tenant-wide finance: all invoices, usage filters, reconciliation, exports.
    case viewFinance
    /// Recompute drafts (finance work that writes).
    case manageBilling
    /// A team's invoices: its admins and owners (and finance).
    case viewInvoices(team: UUID)
    /// Usage analytics: of a team's APIs or apps (its members), or tenant-wide (`nil`: admins, finance).
    case viewUsage(team: UUID?)
}

/// The one authorization policy both HTML and JSON routes consult.
///
/// Pure: decisions depend only on the principal and the action, so the rules are unit-tested as
/// a table (see PolicyTests).
enum Policy {
    static func allows(_ principal: Principal, _ action: Action) -> Bool {
        guard scopeAllows(principal.scopes, action) else { return false }
        switch action {
        case .viewOwnProfile, .manageOwnTokens, .listTeams:
            return true
        case .listUsers:
            return principal.has(.admin) || principal.has(.finance)
        case .manageUsers, .inviteUsers, .viewAuditLog:
            return principal.has(.admin)
        case .createTeam:
            return principal.has(.admin) || principal.has(.provider) || principal.has(.developer)
        case .viewTeam(let team):
            return principal.has(.admin) || principal.has(.finance) || principal.teamRoles[team] != nil
        case .manageTeamMembers(let team):
            return principal.has(.admin) || (principal.teamRoles[team].map { $0 >= .admin } ?? false)
        case .manageAPIs(let team):
            return principal.has(.admin) || (principal.has(.provider) && (principal.teamRoles[team].map { $0 >= .admin } ?? false))
        case .manageApps(let team):
            return principal.has(.admin) || (principal.teamRoles[team].map { $0 >= .admin } ?? false)
        case .manageWebhooks(let team):
            guard let team else { return principal.has(.admin) }
            return principal.has(.admin) || (principal.teamRoles[team].map { $0 >= .admin } ?? false)
        case .viewFinance, .manageBilling:
            return principal.has(.admin) || principal.has(.finance)
        case .viewInvoices(let team):
            return principal.has(.admin) || principal.has(.finance) || (principal.teamRoles[team].map { $0 >= .admin } ?? false)
        case .viewUsage(let team):
            guard let team else { return principal.has(.admin) || principal.has(.finance) }
            return principal.has(.admin) || principal.has(.finance) || principal.teamRoles[team] != nil
        }
    }

    /// The token scope an action needs.
    static func requiredScope(_ action: Action) -> TokenScope {
        switch action {
        case .viewOwnProfile, .listTeams, .viewTeam, .listUsers, .viewFinance, .viewInvoices, .viewUsage: .read
        case .manageBilling: .write
        case .manageOwnTokens, .createTeam, .manageTeamMembers, .manageAPIs, .manageApps: .write
        case .manageUsers, .inviteUsers, .viewAuditLog, .manageWebhooks(team: nil): .admin
        case .manageWebhooks: .write
        }
    }

    private static func scopeAllows(_ scopes: Set<TokenScope>?, _ action: Action) -> Bool {
        guard let scopes else { return true }
        let needed = requiredScope(action)
        // admin implies write implies read
        switch needed {
        case .read: return !scopes.isEmpty
        case .write: return scopes.contains(.write) || scopes.contains(.admin)
        case .admin: return scopes.contains(.admin)
        }
    }

    /// Throws 403 unless allowed.
    static func authorize(_ principal: Principal, _ action: Action) throws {
        guard allows(principal, action) else { throw AppError.forbidden }
    }
}

/// Who sees which catalog entries. Owners (and tenant admins) see every state; everyone else sees
/// APIs that serve traffic and are public or restricted to one of their teams.
enum CatalogVisibility {
    /// Whether apps of `teamID` may use the API: it is public, the team owns it, or the team is
    /// one of its allowed teams. The app's team decides, never the caller's other teams; the same
    /// rule is `tollgate_api_open_to_team` in SQL (gateway snapshot, token scopes).
    static func isOpen(_ api: APIProduct, toTeam teamID: UUID) -> Bool {
        api.visibility == .public || api.teamID == teamID || api.allowedTeamIDs.contains(teamID)
    }

    static func canSee(_ principal: Principal?, _ api: APIProduct) -> Bool {
        if let principal, principal.has(.admin) || principal.teamRoles[api.teamID] != nil { return true }
        guard api.state.servesTraffic else { return false }
        switch api.visibility {
        case .public: return true
        case .restricted: return principal.map { p in api.allowedTeamIDs.contains { p.teamRoles[$0] != nil } } ?? false
        }
    }
}
