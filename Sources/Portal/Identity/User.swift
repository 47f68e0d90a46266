import Foundation

/// A tenant-level role. A user may hold several.
enum TenantRole: String, Sendable, Codable, CaseIterable, Comparable {
    case admin, provider, developer, finance

    static func < (a: TenantRole, b: TenantRole) -> Bool { a.rawValue < b.rawValue }

    var label: String {
        switch self {
        case .admin: "Tenant admin"
        case .provider: "API provider"
        case .developer: "Developer"
        case .finance: "Finance"
        }
    }
}

/// A person's account inside one tenant (the same email in another tenant is another account).
struct User: Sendable, Equatable {
    let id: UUID
    let tenantID: UUID
    var email: String
    var displayName: String
    var roles: Set<TenantRole>
    var createdAt: Date
}

enum Email {
    /// Lower-cased and trimmed so that uniqueness per tenant is case-insensitive.
    static func normalize(_ text: String) -> String { text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() }

    static func isValid(_ text: String) -> Bool {
        guard text.count <= 254, !text.contains(where: { $0.isWhitespace }), !TextInput.hasControlCharacters(text) else { return false }
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 64 else { return false }
        let domain = parts[1]
        return domain.contains(".") && !domain.hasPrefix(".") && !domain.hasSuffix(".") && !domain.contains("..")
    }
}

/// Validated input for a new account (sign-up, invitation acceptance, CLI).
struct NewAccount: Sendable {
    var email: String
    var displayName: String
    var password: String

    static func validated(email: String?, displayName: String?, password: String?, confirmation: String? = nil) throws -> NewAccount {
        var errors: [String: String] = [:]
        let email = Email.normalize(email ?? "")
        if !Email.isValid(email) { errors["email"] = "Enter a valid email address." }
        let name = (displayName ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty || name.count > 100 || TextInput.hasControlCharacters(name) { errors["display_name"] = "Enter your name (1 to 100 characters)." }
        let password = password ?? ""
        if let problem = PasswordHasher.validate(password) { errors["password"] = problem }
        if let confirmation, confirmation != password { errors["password_confirmation"] = "The passwords do not match." }
        guard errors.isEmpty else { throw AppError.validation(errors) }
        return NewAccount(email: email, displayName: name, password: password)
    }
}

enum TextInput {
    /// Control characters (NUL above all) are refused in names: PostgreSQL cannot store NUL in
    /// text, and the rest only ever arrive by accident or attack.
    static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    /// The text without control characters, for values we must record even when malformed
    /// (a failed login's email in the audit log).
    static func sanitized(_ text: String, maxLength: Int = 254) -> String {
        String(String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.properties.generalCategory != .control })).prefix(maxLength))
    }
}
