import Foundation
import Gateway

/// What the gateway enforces for an API beyond credentials and plans: CORS, client address rules,
/// accepted methods, a request body limit and the `Sunset` date announced once deprecated.
/// Validated with the same parsers the gateway uses to apply it.
struct APIGatewayPolicy: Sendable, Equatable {
    var cors: CORSPolicy?
    var ipAllow: [String] = []
    var ipDeny: [String] = []
    var methods: [String] = []
    var maxRequestBytes: Int?
    var sunsetAt: Date?

    static let maximumRanges = 200
    static let knownMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    /// Normalizes and checks every field; all problems are reported together.
    func validated() throws -> APIGatewayPolicy {
        var errors: [String: String] = [:]
        var result = self
        func ranges(_ list: [String], _ field: String) -> [String] {
            let cleaned = list.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if cleaned.count > Self.maximumRanges { errors[field] = "List at most \(Self.maximumRanges) ranges." }
            if let bad = cleaned.first(where: { IPRange($0) == nil }) {
                errors[field] = "'\(bad.prefix(60))' is not an IP address or CIDR range (e.g. 203.0.113.0/24, 2001:db8::/32)."
            }
            return cleaned.compactMap { IPRange($0)?.description }
        }
        result.ipAllow = ranges(ipAllow, "ip_allow")
        result.ipDeny = ranges(ipDeny, "ip_deny")
        result.methods = Array(Set(methods.map { $0.trimmingCharacters(in: .whitespaces).uppercased() }.filter { !$0.isEmpty })).sorted()
        if let bad = result.methods.first(where: { !Self.knownMethods.contains($0) }) {
            errors["methods"] = "'\(bad.prefix(20))' is not one of \(Self.knownMethods.joined(separator: ", "))."
        }
        if let size = maxRequestBytes, !(1...(1 << 30)).contains(size) { errors["max_request_bytes"] = "Use 1 byte to 1 GiB." }
        if let cors {
            var normalized = cors
            normalized.allowedMethods = cors.allowedMethods.map { $0.uppercased() }
            for (field, message) in normalized.problems() { errors[field] = message }
            result.cors = normalized
        }
        guard errors.isEmpty else { throw AppError.validation(errors) }
        return result
    }

    /// The rules as the gateway applies them.
    var ipAccessRules: IPAccessRules {
        IPAccessRules(allow: ipAllow.compactMap(IPRange.init), deny: ipDeny.compactMap(IPRange.init))
    }
}

/// Changes to an API version's catalog entry; nil fields stay as they are. Slug, version and base
/// path never change: clients and subscriptions depend on them (publish a new version instead).
struct APIChanges: Sendable {
    var name: String?
    var description: String?
    var visibility: APIProduct.Visibility?
    var allowedTeamIDs: [UUID]?
    var targets: [UpstreamTarget]?
    /// PEM certificates for the `https://` targets; "" removes the bundle (the system trust store then).
    var upstreamCABundle: String?
    /// `http1` or `h2`; nil: unchanged.
    var upstreamProtocol: String?

    /// The protocol to store, once validated (nil: unchanged).
    var parsedUpstreamProtocol: UpstreamProtocol? { upstreamProtocol.flatMap { UpstreamProtocol(rawValue: $0) } }

    func validate() throws {
        var errors: [String: String] = [:]
        if let name {
            let trimmed = name.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty || trimmed.count > 200 || TextInput.hasControlCharacters(trimmed) { errors["name"] = "Enter a name of 1 to 200 characters." }
        }
        if let description, description.count > 20_000 || description.unicodeScalars.contains(where: { $0 == "\u{0}" }) {
            errors["description"] = "Keep the description under 20,000 characters."
        }
        if let targets {
            if targets.isEmpty || targets.count > NewAPI.maximumTargets {
                errors["targets"] = "Give 1 to \(NewAPI.maximumTargets) upstream targets."
            } else if let problem = UpstreamURL.problem(targets: targets) {
                errors["targets"] = problem
            }
        }
        if case .failure(let problem) = UpstreamProtocolChoice.parse(upstreamProtocol, targets: targets) {
            errors["upstream_protocol"] = problem.message
        }
        if let upstreamCABundle, case .failure(let problem) = UpstreamCABundle.normalized(upstreamCABundle) {
            errors["upstream_ca_pem"] = problem.message
        }
        guard errors.isEmpty else { throw AppError.validation(errors) }
    }
}
