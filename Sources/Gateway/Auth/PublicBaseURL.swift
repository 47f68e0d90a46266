import Foundation

/// The portal's public address, fixed by configuration (`TOLLGATE_PUBLIC_URL`), from which every
/// tenant's token issuer and every absolute link is made — never from a request's `Host`, which
/// anyone can set (a forged Host must not reach cached metadata, `iss` or an invitation link).
///
/// A tenant's issuer is `{public URL}/t/{slug}`, or `{scheme}://{custom host}[:{port}]` when the
/// tenant has a custom host; the gateway accepts exactly that string as `iss`.
public struct PublicBaseURL: Sendable, Equatable, CustomStringConvertible {
    /// `scheme://host[:port]`, lowercased, no path and no trailing slash.
    public let text: String
    public let scheme: String
    /// `:port` when the URL names one, else empty.
    public let portSuffix: String

    public enum Problem: Error, Equatable, CustomStringConvertible {
        case invalid(String)
        public var description: String {
            switch self { case .invalid(let why): why }
        }
    }

    public init(_ value: String) throws(Problem) {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        guard let url = URLComponents(string: trimmed), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme) else {
            throw .invalid("expected http:// or https:// followed by a host, e.g. https://portal.example.com")
        }
        guard let host = url.host?.lowercased(), !host.isEmpty else { throw .invalid("the URL names no host") }
        guard url.user == nil, url.password == nil else { throw .invalid("the URL must not carry a user or password") }
        guard url.query == nil, url.fragment == nil, url.path.isEmpty || url.path == "/" else {
            throw .invalid("the URL must not have a path, query or fragment (tenants live under /t/{slug})")
        }
        guard host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .invalid("the host must be plain ASCII") }
        self.scheme = scheme
        self.portSuffix = url.port.map { ":\($0)" } ?? ""
        let hostText = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        self.text = scheme + "://" + hostText + portSuffix
    }

    /// The default for a portal listening on `host:port` (a wildcard address is shown as loopback).
    public static func listening(host: String, port: Int) -> PublicBaseURL {
        let shown = host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : host
        // A host:port the process itself listens on always parses.
        return (try? PublicBaseURL("http://\(shown):\(port)")) ?? (try! PublicBaseURL("http://127.0.0.1:\(port)"))
    }

    /// The issuer (and base of absolute links) of a tenant.
    public func tenantBase(slug: String, customHost: String?) -> String {
        if let customHost, !customHost.isEmpty { return scheme + "://" + customHost.lowercased() + portSuffix }
        return text + "/t/" + slug
    }

    public var description: String { text }
}
