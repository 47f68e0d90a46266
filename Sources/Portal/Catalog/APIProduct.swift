import Foundation
import Gateway

/// One version of an API in a tenant's catalog. Versions of the same API share a slug.
struct APIProduct: Sendable, Equatable {
    enum Visibility: String, Sendable, Codable, CaseIterable {
        /// Every consumer of the tenant sees it once published.
        case `public`
        /// Only the listed consumer teams see it.
        case restricted
    }

    let id: UUID
    var teamID: UUID
    var slug: String
    var version: String
    var name: String
    var description: String
    var basePath: String
    var state: APIState
    var visibility: Visibility
    var allowedTeamIDs: [UUID]
    var targets: [UpstreamTarget]
    var createdAt: Date
    var policy = APIGatewayPolicy()
    /// PEM certificates the gateway verifies the API's `https://` targets against instead of the
    /// system trust store; nil: the system trust store.
    var upstreamCABundle: String?
    /// The certificate chain shown to TLS targets that ask for a client certificate (its key is
    /// stored sealed and never read back); nil: none.
    var upstreamClientCertificatePEM: String?
    /// How the gateway calls the `http://`/`https://` targets: HTTP/1.1, or HTTP/2 (`h2`).
    var upstreamProtocol = UpstreamProtocol.http1

    /// A gRPC API: its targets are all `grpc://`/`grpcs://` (mixed target lists are refused).
    var isGRPC: Bool { !targets.isEmpty && targets.allSatisfy { $0.url.lowercased().hasPrefix("grpc") } }
}

/// A client certificate and key for upstream mutual TLS, as providers paste them.
enum UpstreamClientCertificate {
    static let maximumCharacters = 65_536

    /// The form and JSON field a problem belongs to: the certificate's, or the key's.
    struct Problem: Error {
        let field: String
        let message: String
    }

    /// Text that holds a private key anywhere in it (pasted into the certificate field, or a
    /// combined file): never shown back.
    static func holdsPrivateKey(_ text: String) -> Bool { text.contains("PRIVATE KEY-----") }

    /// Both normalized (LF line ends, trimmed, one final newline) once they are usable together.
    static func validated(certificatePEM: String, privateKeyPEM: String) -> Result<(certificate: String, key: String), Problem> {
        func normalized(_ text: String) -> String {
            text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n").trimmingCharacters(in: .whitespacesAndNewlines) + "\n"
        }
        let certificate = normalized(certificatePEM)
        let key = normalized(privateKeyPEM)
        guard certificate.count <= maximumCharacters, key.count <= maximumCharacters else {
            return .failure(.init(field: "upstream_client_certificate", message: "Keep the certificate chain and the key under 64 KiB each."))
        }
        if holdsPrivateKey(certificate) {
            return .failure(
                .init(field: "upstream_client_certificate", message: "Remove the private key from the certificate field: paste it into the key field below."))
        }
        if let problem = UpstreamTLS.validate(clientCertificatePEM: certificate, privateKeyPEM: key) {
            return .failure(.init(field: problem.hasPrefix("The private key") ? "upstream_client_key" : "upstream_client_certificate", message: problem))
        }
        return .success((certificate, key))
    }
}

/// An API's own CA bundle for its `https://` targets, as providers paste or upload it.
enum UpstreamCABundle {
    static let maximumCharacters = 65_536

    /// The bundle as stored (line ends made LF, outer whitespace trimmed; empty: none), or the
    /// problem in words.
    static func normalized(_ text: String) -> Result<String?, ValidationProblem> {
        let unified = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard !unified.isEmpty else { return .success(nil) }
        guard unified.count <= maximumCharacters else { return .failure(ValidationProblem(message: "Keep the CA bundle under 64 KiB.")) }
        guard unified.hasPrefix("-----BEGIN CERTIFICATE-----") else {
            return .failure(ValidationProblem(message: "Paste PEM certificates (-----BEGIN CERTIFICATE----- …), not a key or another format."))
        }
        if let problem = UpstreamTLS.validate(caBundlePEM: unified + "\n") {
            return .failure(ValidationProblem(message: "The CA bundle cannot be used: \(problem)."))
        }
        return .success(unified + "\n")
    }

    struct ValidationProblem: Error {
        let message: String
    }
}

/// Where the gateway sends an API's traffic; weights drive weighted round-robin.
struct UpstreamTarget: Sendable, Equatable, Codable {
    var url: String
    var weight: Int
}

/// Validated input for a new API version.
struct NewAPI: Sendable {
    var teamID: UUID
    var slug: String
    var version: String
    var name: String
    var description: String
    var basePath: String
    var visibility: APIProduct.Visibility
    var allowedTeamIDs: [UUID]
    var targets: [UpstreamTarget]
    var upstreamProtocol = UpstreamProtocol.http1

    static let maximumTargets = 16

    static func validated(
        teamID: UUID?, name: String?, slug: String?, version: String?, description: String?, basePath: String?, visibility: String?,
        allowedTeamIDs: [UUID], targets: [UpstreamTarget], upstreamProtocol: String? = nil
    ) throws -> NewAPI {
        var errors: [String: String] = [:]
        let name = (name ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty || name.count > 200 || TextInput.hasControlCharacters(name) { errors["name"] = "Enter a name of 1 to 200 characters." }
        let givenSlug = (slug ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        let slug = givenSlug.isEmpty ? Slug.from(name) : givenSlug
        if !Slug.isValid(slug) { errors["slug"] = Slug.rule }
        let version = (version ?? "").trimmingCharacters(in: .whitespaces)
        if !APIVersion.isValid(version) { errors["version"] = APIVersion.rule }
        let description = description ?? ""
        if description.count > 20_000 || description.unicodeScalars.contains(where: { $0 == "\u{0}" }) {
            errors["description"] = "Keep the description under 20,000 characters."
        }
        let basePath = BasePath.normalize(basePath ?? "")
        if let problem = BasePath.problem(basePath) { errors["base_path"] = problem }
        let visibility = APIProduct.Visibility(rawValue: visibility.flatMap { $0.isEmpty ? nil : $0 } ?? "public")
        if visibility == nil { errors["visibility"] = "Choose public or restricted." }
        if targets.isEmpty || targets.count > maximumTargets {
            errors["targets"] = "Give 1 to \(maximumTargets) upstream targets."
        } else if let problem = UpstreamURL.problem(targets: targets) {
            errors["targets"] = problem
        }
        if teamID == nil { errors["team_id"] = "Choose the provider team that owns this API." }
        var upstream = UpstreamProtocol.http1
        switch UpstreamProtocolChoice.parse(upstreamProtocol, targets: targets) {
        case .success(let chosen): upstream = chosen ?? .http1
        case .failure(let problem): errors["upstream_protocol"] = problem.message
        }
        guard errors.isEmpty, let visibility, let teamID else { throw AppError.validation(errors) }
        return NewAPI(
            teamID: teamID, slug: slug, version: version, name: name, description: description, basePath: basePath, visibility: visibility,
            allowedTeamIDs: visibility == .restricted ? Array(Set(allowedTeamIDs)) : [], targets: targets, upstreamProtocol: upstream)
    }
}

/// An API's upstream protocol as providers give it (`http1` or `h2`), checked against its targets:
/// gRPC targets are HTTP/2 already, so `h2` is refused for them rather than stored and ignored.
enum UpstreamProtocolChoice {
    struct Problem: Error {
        let message: String
    }

    static let rule = "Choose HTTP/1.1 (http1) or HTTP/2 (h2: h2c prior knowledge for http:// targets, ALPN h2 for https://)."

    /// nil for an absent value (a JSON body without the member, a form without the field): the
    /// caller keeps what it has. A value that is there must be one of the two — an empty one too
    /// is refused (the page's select always sends an option, so "" is a tampered or broken form,
    /// and keeping the saved protocol while saying "saved" would hide that).
    static func parse(_ text: String?, targets: [UpstreamTarget]?) -> Result<UpstreamProtocol?, Problem> {
        guard let text else { return .success(nil) }
        // exactly as the API document's enum and the page's options spell them
        guard let chosen = UpstreamProtocol(rawValue: text) else { return .failure(Problem(message: rule)) }
        if let problem = problem(chosen, targets: targets ?? []) { return .failure(problem) }
        return .success(chosen)
    }

    static func problem(_ chosen: UpstreamProtocol, targets: [UpstreamTarget]) -> Problem? {
        guard chosen == .h2, targets.contains(where: { $0.url.lowercased().hasPrefix("grpc") }) else { return nil }
        return Problem(message: "gRPC targets (grpc://, grpcs://) are always called over HTTP/2: keep HTTP/1.1 (http1) here; HTTP/2 (h2) is for http:// and https:// targets.")
    }
}

enum APIVersion {
    static let rule = "Use a short version label such as v1, v2 or 2026-11 (letters, digits, . _ -)."

    static func isValid(_ text: String) -> Bool {
        guard (1...20).contains(text.count), let first = text.first, first.isASCII, first.isLetter || first.isNumber else { return false }
        return text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
    }
}

/// The path prefix that selects an API at the gateway, e.g. `/echo/v1`.
enum BasePath {
    static let reservedPrefixes = ["/t", "/healthz", "/readyz", "/metrics", "/.well-known"]

    static func normalize(_ text: String) -> String {
        var path = text.trimmingCharacters(in: .whitespaces)
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }

    static func problem(_ path: String) -> String? {
        guard path.hasPrefix("/"), path.count >= 2, path.count <= 200 else {
            return "Start with / and name at least one segment, e.g. /echo/v1."
        }
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        let valid = segments.allSatisfy { segment in
            !segment.isEmpty && segment != "." && segment != ".."
                && segment.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "-._~".contains($0)) }
        }
        guard valid else { return "Use lowercase letters, digits and - . _ ~ in non-empty segments." }
        if reservedPrefixes.contains(where: { path == $0 || path.hasPrefix($0 + "/") }) {
            return "This path is reserved by Tollgate."
        }
        return nil
    }
}

enum UpstreamURL {
    /// - Parameter grpc: `grpc://` and `grpcs://` (HTTP/2 upstreams for gRPC APIs) are accepted too.
    static func problem(_ target: UpstreamTarget, grpc: Bool = false) -> String? {
        guard (1...100).contains(target.weight) else { return "Target weights are 1 to 100." }
        let schemes = grpc ? ["http", "https", "grpc", "grpcs"] : ["http", "https"]
        guard target.url.count <= 500, let components = URLComponents(string: target.url),
            let scheme = components.scheme?.lowercased(), schemes.contains(scheme), let host = components.host, !host.isEmpty,
            components.query == nil, components.fragment == nil, components.user == nil
        else {
            return grpc
                ? "Targets are http://, https://, grpc:// or grpcs:// URLs without query, fragment or credentials."
                : "Targets are http:// or https:// URLs without query, fragment or credentials."
        }
        return nil
    }

    /// An API's targets, checked together: each as above, and all gRPC (HTTP/2) or none, since a
    /// call is relayed as frames to one kind and as HTTP/1.1 to the other.
    static func problem(targets: [UpstreamTarget]) -> String? {
        if let problem = targets.lazy.compactMap({ problem($0, grpc: true) }).first { return problem }
        let grpc = targets.map { $0.url.lowercased().hasPrefix("grpc") }
        if grpc.contains(true) && grpc.contains(false) { return "Targets are all gRPC (grpc://, grpcs://) or all HTTP (http://, https://)." }
        return nil
    }
}
