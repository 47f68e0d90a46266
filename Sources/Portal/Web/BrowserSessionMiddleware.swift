import Foundation
import Hummingbird
import Logging
import NIOCore

/// Loads the browser session for HTML routes and enforces CSRF on state-changing requests.
///
/// - The session cookie is `tg_session`, scoped to the tenant's path (or `/platform`), HttpOnly,
///   SameSite=Lax, and Secure when the request came over TLS through a trusted proxy.
/// - Every POST must be a urlencoded form whose `_csrf` field matches the token derived from the
///   session (or, before login, from an anonymous `tg_csrf` cookie). The parsed form is handed to
///   the handler in `context.form`.
struct BrowserSessionMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    enum Realm: Sendable { case tenant, platform }

    static let sessionCookie = "tg_session"
    static let anonymousCookie = "tg_csrf"

    let realm: Realm
    let services: PortalServices

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let cookiePath = Self.cookiePath(realm: realm, context: context)

        if let token = request.cookies[Self.sessionCookie]?.value, !token.isEmpty {
            try await loadSession(token: token, into: &context)
        }
        var newAnonymous: String?
        if context.session == nil {
            if let anonymous = request.cookies[Self.anonymousCookie]?.value, anonymous.count >= 40 {
                context.csrfBinding = anonymous
            } else {
                newAnonymous = SecretToken.generate(prefix: "").value
                context.csrfBinding = newAnonymous
            }
        } else {
            context.csrfBinding = context.session?.token
        }

        if request.method == .post {
            var request = request
            let contentType = request.headers[.contentType] ?? ""
            if let boundary = MultipartForm.boundary(contentType: contentType) {
                // file uploads (OpenAPI documents, descriptor sets): bounded by the largest accepted file plus form overhead
                let body: ByteBuffer
                do {
                    body = try await request.collectBody(upTo: max(APIDocument.maximumBytes, APIDescriptorSet.maximumBytes) + 64 * 1024)
                } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
                    throw request.uri.path.hasSuffix("/descriptor-set") ? APIDescriptorSet.tooLarge : APIDocument.tooLarge
                }
                guard let parts = MultipartForm.parts(Array(body.readableBytesView), boundary: boundary), let pairs = MultipartForm.textFields(parts) else {
                    throw AppError.badRequest("The uploaded form is not well-formed multipart/form-data (or a text field is not UTF-8).")
                }
                var files: [String: [UInt8]] = [:]
                for part in parts where part.isFile { files[part.name] = part.bytes }
                context.form = FormData(pairs: pairs, files: files)
            } else {
                guard contentType.hasPrefix("application/x-www-form-urlencoded") else {
                    throw AppError(
                        status: .unsupportedMediaType, title: "Unsupported form",
                        detail: "Forms must be sent as application/x-www-form-urlencoded or multipart/form-data.")
                }
                let body = try await request.collectBody(upTo: 64 * 1024)
                context.form = FormData(urlencoded: String(buffer: body))
            }
            guard services.csrf.isValid(context.form["_csrf"], binding: context.csrfBinding) else { throw AppError.csrf }
            return try await finish(next(request, context), newAnonymous: newAnonymous, path: cookiePath, request: request)
        }
        return try await finish(next(request, context), newAnonymous: newAnonymous, path: cookiePath, request: request)
    }

    private func finish(_ response: Response, newAnonymous: String?, path: String, request: Request) -> Response {
        guard let newAnonymous else { return response }
        var response = response
        response.setCookie(services.cookie(name: Self.anonymousCookie, value: newAnonymous, path: path, request: request))
        return response
    }

    private func loadSession(token: String, into context: inout Context) async throws {
        switch realm {
        case .tenant:
            guard let tenant = context.tenant else { return }
            let loaded: (Session, User, [UUID: TeamRole])? = try await services.database.withTenant(tenant.id) { connection in
                guard let session = try await services.sessions.find(token: token, on: connection),
                    case .user(let tenantID, let userID) = session.owner, tenantID == tenant.id,
                    let user = try await services.identity.users.find(id: userID, on: connection)
                else { return nil }
                return (session, user, try await services.identity.teams.memberships(userID: user.id, on: connection))
            }
            if let (session, user, teams) = loaded {
                context.session = session
                context.principal = Principal(user: user, teamRoles: teams, scopes: nil)
            }
        case .platform:
            let session = try await services.database.withPlatform { try await services.sessions.find(token: token, on: $0) }
            if let session, case .platformAdmin(let adminID) = session.owner {
                context.session = session
                context.platformAdminID = adminID
            }
        }
    }

    static func cookiePath(realm: Realm, context: Context) -> String {
        switch realm {
        case .platform: "/platform"
        case .tenant: context.base.isEmpty ? "/" : context.base
        }
    }
}
