import Foundation
import Testing

@testable import Portal

@Suite struct PolicyTests {
    static let teamA = UUID()
    static let teamB = UUID()

    static func principal(_ roles: Set<TenantRole>, teams: [UUID: TeamRole] = [:], scopes: Set<TokenScope>? = nil) -> Principal {
        Principal(
            user: User(id: UUID(), tenantID: UUID(), email: "x@example.com", displayName: "X", roles: roles, createdAt: Date()),
            teamRoles: teams, scopes: scopes)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let principal: Principal
        let action: Action
        let allowed: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "admin manages users", principal: principal([.admin]), action: .manageUsers, allowed: true),
        Case(name: "developer cannot manage users", principal: principal([.developer]), action: .manageUsers, allowed: false),
        Case(name: "finance lists users", principal: principal([.finance]), action: .listUsers, allowed: true),
        Case(name: "finance cannot invite", principal: principal([.finance]), action: .inviteUsers, allowed: false),
        Case(name: "provider cannot read audit", principal: principal([.provider]), action: .viewAuditLog, allowed: false),
        Case(name: "admin reads audit", principal: principal([.admin]), action: .viewAuditLog, allowed: true),
        Case(name: "developer creates team", principal: principal([.developer]), action: .createTeam, allowed: true),
        Case(name: "finance-only cannot create team", principal: principal([.finance]), action: .createTeam, allowed: false),
        Case(name: "member views own team", principal: principal([.developer], teams: [teamA: .member]), action: .viewTeam(teamA), allowed: true),
        Case(name: "member cannot view other team", principal: principal([.developer], teams: [teamA: .member]), action: .viewTeam(teamB), allowed: false),
        Case(name: "member cannot manage members", principal: principal([.developer], teams: [teamA: .member]), action: .manageTeamMembers(teamA), allowed: false),
        Case(name: "team admin manages members", principal: principal([.developer], teams: [teamA: .admin]), action: .manageTeamMembers(teamA), allowed: true),
        Case(name: "team owner manages members", principal: principal([.developer], teams: [teamA: .owner]), action: .manageTeamMembers(teamA), allowed: true),
        Case(name: "tenant admin manages any team", principal: principal([.admin]), action: .manageTeamMembers(teamB), allowed: true),
        Case(name: "read token cannot create team", principal: principal([.developer], scopes: [.read]), action: .createTeam, allowed: false),
        Case(name: "write token creates team", principal: principal([.developer], scopes: [.write]), action: .createTeam, allowed: true),
        Case(name: "write token cannot read audit as admin", principal: principal([.admin], scopes: [.read, .write]), action: .viewAuditLog, allowed: false),
        Case(name: "admin token reads audit", principal: principal([.admin], scopes: [.admin]), action: .viewAuditLog, allowed: true),
        Case(name: "admin scope does not make a developer an admin", principal: principal([.developer], scopes: [.admin]), action: .manageUsers, allowed: false),
        Case(name: "token with no scopes can do nothing", principal: principal([.admin], scopes: []), action: .viewOwnProfile, allowed: false),
    ]

    @Test(arguments: cases)
    func decides(_ testCase: Case) {
        #expect(Policy.allows(testCase.principal, testCase.action) == testCase.allowed)
    }

    @Test func authorizeThrowsForbidden() {
        #expect(throws: AppError.self) { try Policy.authorize(Self.principal([.developer]), .manageUsers) }
    }
}
