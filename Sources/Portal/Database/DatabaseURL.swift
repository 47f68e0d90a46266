import Foundation
import NIOSSL
import PostgresNIO

/// Parses `postgres://user:password@host:port/database?sslmode=...` into a client configuration.
struct DatabaseURL: Sendable, Equatable {
    var host: String
    var port: Int
    var username: String
    var password: String?
    var database: String
    var requireTLS: Bool

    enum ParseError: Error, CustomStringConvertible {
        case invalid(String)
        var description: String {
            switch self {
            case .invalid(let why): "DATABASE_URL is not a valid postgres:// URL: \(why)"
            }
        }
    }

    init(_ string: String) throws {
        guard let components = URLComponents(string: string) else { throw ParseError.invalid("cannot parse") }
        guard components.scheme == "postgres" || components.scheme == "postgresql" else {
            throw ParseError.invalid("scheme must be postgres://")
        }
        guard let host = components.host, !host.isEmpty else { throw ParseError.invalid("missing host") }
        guard let user = components.user, !user.isEmpty else { throw ParseError.invalid("missing user") }
        self.host = host
        self.port = components.port ?? 5432
        self.username = user.removingPercentEncoding ?? user
        self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        self.database = path.isEmpty ? user : path
        let sslmode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        self.requireTLS = sslmode == "require" || sslmode == "verify-full" || sslmode == "verify-ca"
    }

    /// For a connection outside the pool (the meter's own, which it can abandon at a deadline).
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database,
            tls: requireTLS ? .require(try NIOSSLContext(configuration: .makeClientConfiguration())) : .disable)
        configuration.options.additionalStartupParameters = [("application_name", "tollgate-meter")]
        return configuration
    }

    func clientConfiguration(searchPath: String? = nil, maximumConnections: Int = 20) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database,
            tls: requireTLS ? .require(.makeClientConfiguration()) : .disable)
        configuration.options.maximumConnections = maximumConnections
        configuration.options.additionalStartupParameters = [("application_name", "tollgate")]
        if let searchPath {
            configuration.options.additionalStartupParameters.append(("search_path", searchPath))
        }
        return configuration
    }
}
