import Foundation
import Hummingbird
import Logging

/// Maps a tenant host onto the `/t/{slug}` routes before routing.
///
/// `demo.localhost:8080/teams` and a tenant's custom host are served by the same handlers as
/// `127.0.0.1:8080/t/demo/teams`: the request path is rewritten and the context remembers that
/// links should not carry the prefix. Infrastructure paths (`/healthz`, `/readyz`, `/metrics`)
/// are left alone on every host.
struct TenantHostResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == AppRequestContext {
    let inner: Inner
    let baseDomain: String
    let database: Database
    let tenants: TenantRepository

    func respond(to request: Request, context: AppRequestContext) async throws -> Response {
        let path = request.uri.path
        guard !Self.isInfrastructure(path), !path.hasPrefix("/t/"),
            let host = request.head.authority.map(Self.hostWithoutPort), !host.isEmpty
        else { return try await inner.respond(to: request, context: context) }

        var slug: String?
        let suffix = "." + baseDomain
        if host.hasSuffix(suffix) {
            let candidate = String(host.dropLast(suffix.count))
            if Slug.isValid(candidate) { slug = candidate }
        } else if !Self.isBareAddress(host), host != baseDomain {
            slug = try? await database.withPlatform { try await tenants.find(customHost: host, on: $0) }?.slug
        }
        guard let slug else { return try await inner.respond(to: request, context: context) }

        var head = request.head
        head.path = "/t/\(slug)" + (request.head.path ?? "/")
        var context = context
        context.hostMounted = true
        return try await inner.respond(to: Request(head: head, body: request.body), context: context)
    }

    static func isInfrastructure(_ path: String) -> Bool {
        path == "/healthz" || path == "/readyz" || path == "/metrics"
    }

    static func hostWithoutPort(_ authority: String) -> String {
        if authority.hasPrefix("[") { return authority }  // IPv6 literal
        return String(authority.split(separator: ":").first ?? "").lowercased()
    }

    static func isBareAddress(_ host: String) -> Bool {
        host == "localhost" || host.hasPrefix("[") || host.allSatisfy { $0.isNumber || $0 == "." }
    }
}

/// Resolves `/t/{slug}` to a tenant, or answers 404.
struct TenantMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let database: Database
    let tenants: TenantRepository

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let slug = context.parameters.get("tenant"), Slug.isValid(slug),
            let tenant = try await database.withPlatform({ try await tenants.find(slug: slug, on: $0) })
        else {
            throw AppError(status: .notFound, title: "Unknown marketplace", detail: "There is no marketplace at this address.")
        }
        var context = context
        context.tenant = tenant
        return try await next(request, context)
    }
}
