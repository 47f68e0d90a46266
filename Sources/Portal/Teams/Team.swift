import Foundation

/// Role of a member inside one team.
enum TeamRole: String, Sendable, Codable, CaseIterable, Comparable {
    case owner, admin, member

    private var rank: Int {
        switch self {
        case .owner: 2
        case .admin: 1
        case .member: 0
        }
    }
    static func < (a: TeamRole, b: TeamRole) -> Bool { a.rank < b.rank }
}

/// A group of users inside a tenant. Teams own apps (consumer side) and APIs (provider side).
struct Team: Sendable, Equatable {
    let id: UUID
    var slug: String
    var name: String
    var createdAt: Date
    var memberCount: Int
}

struct TeamMember: Sendable, Equatable {
    let userID: UUID
    var email: String
    var displayName: String
    var role: TeamRole
    var joinedAt: Date
}

struct NewTeam: Sendable {
    var name: String
    var slug: String

    static func validated(name: String?, slug: String?) throws -> NewTeam {
        var errors: [String: String] = [:]
        let name = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty || name.count > 200 || TextInput.hasControlCharacters(name) { errors["name"] = "Enter a team name of 1 to 200 characters." }
        let given = (slug ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        let slug = given.isEmpty ? Slug.from(name) : given
        if !Slug.isValid(slug) { errors["slug"] = Slug.rule }
        guard errors.isEmpty else { throw AppError.validation(errors) }
        return NewTeam(name: name, slug: slug)
    }
}
