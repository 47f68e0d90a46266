import Billing
import Foundation
import Gateway

/// A marketplace on this installation. Platform-level: not itself subject to tenant RLS.
struct Tenant: Sendable, Codable, Equatable {
    enum SignupPolicy: String, Sendable, Codable, CaseIterable {
        case open
        case inviteOnly = "invite_only"
    }

    let id: UUID
    var slug: String
    var name: String
    var currency: String
    var signupPolicy: SignupPolicy
    var customHost: String?
    var createdAt: Date
}

/// Validation shared by the CLI, the platform page and the platform API.
struct NewTenant: Sendable {
    var slug: String
    var name: String
    var currency: String
    var signupPolicy: Tenant.SignupPolicy
    var customHost: String?

    static func validated(
        slug: String?, name: String?, currency: String?, signupPolicy: String?, customHost: String?, baseDomain: String
    ) throws -> NewTenant {
        var errors: [String: String] = [:]
        let slug = (slug ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        if !Slug.isValid(slug) { errors["slug"] = Slug.rule }
        let name = TenantFields.name(name ?? "", errors: &errors)
        let currency = (currency.flatMap { $0.isEmpty ? nil : $0 } ?? "USD").uppercased()
        if !ISO4217.isKnown(currency) { errors["currency"] = "Use an ISO 4217 currency code such as USD or EUR." }
        let policy = TenantFields.signupPolicy(signupPolicy.flatMap { $0.isEmpty ? nil : $0 } ?? "open", errors: &errors)
        let customHost = TenantFields.customHost(customHost, baseDomain: baseDomain, errors: &errors)
        guard errors.isEmpty, let name, let policy else { throw AppError.validation(errors) }
        return NewTenant(slug: slug, name: name, currency: currency, signupPolicy: policy, customHost: customHost)
    }
}

enum Slug {
    static let rule = "Use 1 to 40 lowercase letters, digits and hyphens, starting and ending with a letter or digit."

    static func isValid(_ text: String) -> Bool {
        guard (1...40).contains(text.count), let first = text.first, let last = text.last else { return false }
        let allowed = text.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
        return allowed && first != "-" && last != "-"
    }

    /// A slug derived from a display name ("Demo Devs" → "demo-devs").
    static func from(_ name: String) -> String {
        var out = ""
        for ch in name.lowercased() {
            if ch.isASCII && (ch.isLetter || ch.isNumber) { out.append(ch) } else if !out.hasSuffix("-") { out.append("-") }
        }
        let trimmed = out.trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        return String(trimmed.prefix(40)).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
    }
}

/// What an operator may change on a marketplace (slug and currency stay: links and invoices depend
/// on them). nil leaves a field as it is; `customHost: .some(nil)` removes the custom host.
struct TenantChanges: Sendable {
    var name: String?
    var signupPolicy: Tenant.SignupPolicy?
    var customHost: String??

    static func validated(name: String?, signupPolicy: String?, customHost: String??, baseDomain: String) throws -> TenantChanges {
        var errors: [String: String] = [:]
        var changes = TenantChanges()
        if let name { changes.name = TenantFields.name(name, errors: &errors) }
        if let signupPolicy { changes.signupPolicy = TenantFields.signupPolicy(signupPolicy, errors: &errors) }
        if let customHost {
            let host = TenantFields.customHost(customHost, baseDomain: baseDomain, errors: &errors)
            if errors["custom_host"] == nil { changes.customHost = .some(host) }
        }
        guard errors.isEmpty else { throw AppError.validation(errors) }
        return changes
    }
}

/// The rules of a marketplace's editable fields, one place for creating and for editing it. Each
/// check answers the clean value, or nil and a message under the field's name in `errors`.
enum TenantFields {
    static func name(_ text: String, errors: inout [String: String]) -> String? {
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 200, !TextInput.hasControlCharacters(name) else {
            errors["name"] = "Enter a name of 1 to 200 characters."
            return nil
        }
        return name
    }

    static func signupPolicy(_ text: String, errors: inout [String: String]) -> Tenant.SignupPolicy? {
        guard let policy = Tenant.SignupPolicy(rawValue: text) else {
            errors["signup_policy"] = "Choose open or invite_only."
            return nil
        }
        return policy
    }

    /// The canonical custom host; nil when none is given (blank removes it) or it is refused.
    static func customHost(_ text: String?, baseDomain: String, errors: inout [String: String]) -> String? {
        guard let text = text?.trimmingCharacters(in: .whitespaces).nilIfEmpty else { return nil }
        switch CustomHostRule.check(text, baseDomain: baseDomain) {
        case .success(let host): return host
        case .failure(let refusal):
            errors["custom_host"] = refusal.description
            return nil
        }
    }
}

