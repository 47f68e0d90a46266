import Foundation

/// A consumer team's application: the identity that calls APIs through the gateway.
struct ConsumerApp: Sendable, Equatable {
    let id: UUID
    var teamID: UUID
    var name: String
    var description: String
    var callbackURL: String?
    /// Public OAuth2 client identifier.
    var clientID: String
    var createdAt: Date
}

/// A client secret or API key as listed: never the secret itself.
struct AppCredential: Sendable, Equatable {
    enum Kind: String, Sendable, Codable { case clientSecret = "client_secret", apiKey = "api_key" }

    let id: UUID
    var kind: Kind
    var name: String
    var prefix: String
    var createdAt: Date
    var expiresAt: Date?
    var revokedAt: Date?

    func isActive(at now: Date = Date()) -> Bool { revokedAt == nil && (expiresAt.map { $0 > now } ?? true) }
}

struct NewApp: Sendable {
    var teamID: UUID
    var name: String
    var description: String
    var callbackURL: String?

    static func validated(teamID: UUID?, name: String?, description: String?, callbackURL: String?) throws -> NewApp {
        var errors: [String: String] = [:]
        let name = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty || name.count > 100 || TextInput.hasControlCharacters(name) { errors["name"] = "Enter a name of 1 to 100 characters." }
        let description = description ?? ""
        if description.count > 2_000 || description.unicodeScalars.contains("\u{0}") { errors["description"] = "Keep the description under 2,000 characters." }
        let callback = callbackURL?.trimmingCharacters(in: .whitespaces).nilIfEmpty
        if let callback, UpstreamURL.problem(UpstreamTarget(url: callback, weight: 1)) != nil {
            errors["callback_url"] = "Use an http:// or https:// URL without query or credentials."
        }
        if teamID == nil { errors["team_id"] = "Choose the team that owns the app." }
        guard errors.isEmpty, let teamID else { throw AppError.validation(errors) }
        return NewApp(teamID: teamID, name: name, description: description, callbackURL: callback)
    }
}

/// Credential rules: prefixes tell the kinds apart; two active client secrets at most, so a
/// rotation overlaps without breaking a running client.
enum CredentialRules {
    static let clientIDPrefix = "tgc_"
    static let clientSecretPrefix = "tgs_"
    static let apiKeyPrefix = "tgk_"
    static let maximumActiveClientSecrets = 2
    static let maximumActiveAPIKeys = 10

    static func generateClientID() -> String { String(SecretToken.generate(prefix: clientIDPrefix).value.prefix(26)) }

    static func validateLifetime(_ days: Int?) throws {
        if let days, !(1...3650).contains(days) { throw AppError.validation(["expires_in_days": "Choose between 1 and 3650 days."]) }
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
