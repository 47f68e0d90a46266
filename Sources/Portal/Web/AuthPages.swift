import Foundation
import Hummingbird

/// Sign-in, sign-out, sign-up and invitation acceptance pages of a tenant portal.
struct AuthPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/", use: home)
        group.get("/login", use: loginForm)
        group.post("/login", use: login)
        group.form("/logout", page: "/", use: logout)
        group.get("/signup", use: signupForm)
        group.post("/signup", use: signup)
        group.get("/invitations/:token", use: invitationForm)
        group.post("/invitations/:token", use: acceptInvitation)
    }

    /// The tenant's landing page: a dashboard for signed-in users, sign-in links otherwise.
    @Sendable func home(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        var values: [String: Any] = ["tenant_slug": tenant.slug, "signup_open": tenant.signupPolicy == .open]
        if let principal = context.principal {
            values["signed_in"] = true
            values["roles"] = principal.user.roles.sorted().map { ["label": $0.label] }
            values["teams_text"] = Plural.count(principal.teamRoles.count, "team")
        }
        let notice = Notices.message(request.uri.queryParameters["notice"].map(String.init))
        return services.views.render("home", values, page: services.chrome(tenant.name, context: context, notice: notice))
    }

    @Sendable func loginForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        if context.principal != nil { return .redirect(to: context.base + "/") }
        let next = request.uri.queryParameters["next"].map(String.init) ?? ""
        return services.views.render("login", ["next": ReturnPath.safe(next, base: context.base) == next ? next : ""], page: services.chrome("Sign in", context: context))
    }

    /// Checks the password; the same message for unknown email and wrong password. A new session
    /// id is issued at login (the anonymous CSRF cookie is dropped).
    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let email = context.form["email"] ?? ""
        let outcome = try await services.identity.login(
            tenant: tenant, email: email, password: context.form["password"] ?? "", clientIP: context.clientIP,
            userAgent: request.headers[.userAgent])
        switch outcome {
        case .success(let session, _):
            var response = Response.redirect(to: safeReturnPath(context.form["next"], base: context.base))
            response.setCookie(services.cookie(name: BrowserSessionMiddleware.sessionCookie, value: session.token, path: cookiePath(context), request: request))
            response.setCookie(services.expiredCookie(name: BrowserSessionMiddleware.anonymousCookie, path: cookiePath(context), request: request))
            return response
        case .invalidCredentials:
            return services.views.render(
                "login", ["email": email, "next": context.form["next"] ?? "", "error": "Email or password is incorrect."], page: services.chrome("Sign in", context: context),
                status: .unauthorized)
        case .throttled(let seconds):
            var response = services.views.render(
                "login", ["email": email, "error": AppError.tooManyRequests(retryAfterSeconds: seconds).detail],
                page: services.chrome("Sign in", context: context), status: .tooManyRequests)
            response.headers[.retryAfter] = String(seconds)
            return response
        }
    }

    @Sendable func logout(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        if let session = context.session, let principal = context.principal {
            try await services.identity.logout(tenant: tenant, session: session, user: principal.user, clientIP: context.clientIP)
        }
        var response = Response.redirect(to: context.base + "/login")
        response.setCookie(services.expiredCookie(name: BrowserSessionMiddleware.sessionCookie, path: cookiePath(context), request: request))
        return response
    }

    @Sendable func signupForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        return services.views.render("signup", ["open": tenant.signupPolicy == .open], page: services.chrome("Sign up", context: context))
    }

    @Sendable func signup(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let form = context.form
        do {
            let account = try NewAccount.validated(
                email: form["email"], displayName: form["display_name"], password: form["password"], confirmation: form["password_confirmation"])
            let (session, _) = try await services.identity.signup(
                tenant: tenant, account: account, clientIP: context.clientIP, userAgent: request.headers[.userAgent])
            var response = Response.redirect(to: context.base + "/?notice=welcome")
            response.setCookie(services.cookie(name: BrowserSessionMiddleware.sessionCookie, value: session.token, path: cookiePath(context), request: request))
            return response
        } catch let error as AppError where error.status != .forbidden {
            var values = error.templateErrors
            values["open"] = true
            values["email"] = form["email"] ?? ""
            values["display_name"] = form["display_name"] ?? ""
            return services.views.render("signup", values, page: services.chrome("Sign up", context: context), status: error.status)
        }
    }

    @Sendable func invitationForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let token = context.parameters.get("token") ?? ""
        guard let invitation = try await services.identity.openInvitation(tenant: tenant, token: token) else {
            throw AppError(status: .notFound, title: "Invitation not valid", detail: "This invitation link has expired, was already used, or is wrong.")
        }
        return services.views.render(
            "invitation", ["email": invitation.email, "token": token], page: services.chrome("Accept invitation", context: context))
    }

    @Sendable func acceptInvitation(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let token = context.parameters.get("token") ?? ""
        let form = context.form
        do {
            let (session, _) = try await services.identity.acceptInvitation(
                tenant: tenant, token: token, displayName: form["display_name"], password: form["password"],
                confirmation: form["password_confirmation"], clientIP: context.clientIP, userAgent: request.headers[.userAgent])
            var response = Response.redirect(to: context.base + "/?notice=welcome")
            response.setCookie(services.cookie(name: BrowserSessionMiddleware.sessionCookie, value: session.token, path: cookiePath(context), request: request))
            return response
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            let invitation = try await services.identity.openInvitation(tenant: tenant, token: token)
            var values = error.templateErrors
            values["email"] = invitation?.email ?? ""
            values["token"] = token
            values["display_name"] = form["display_name"] ?? ""
            return services.views.render("invitation", values, page: services.chrome("Accept invitation", context: context), status: error.status)
        }
    }

    private func cookiePath(_ context: AppRequestContext) -> String {
        BrowserSessionMiddleware.cookiePath(realm: .tenant, context: context)
    }

    private func safeReturnPath(_ next: String?, base: String) -> String {
        ReturnPath.safe(next, base: base)
    }
}

/// Where a login may send the browser afterwards (`next=`): only a path of this portal.
enum ReturnPath {
    /// `next` when, after the normalisation a browser applies to a `Location` (tabs and newlines
    /// removed, backslashes read as slashes, percent-decoding of the path), it is still an
    /// absolute path under `base` with no scheme, host or `//`; otherwise the portal's home.
    static func safe(_ next: String?, base: String) -> String {
        let home = base + "/"
        guard let next, !next.isEmpty, next.utf8.count <= 2048 else { return home }
        // Any control character, space or backslash anywhere: refuse rather than guess what a browser makes of it.
        guard !next.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" }) else { return home }
        guard next.hasPrefix("/"), !next.hasPrefix("//") else { return home }
        // Percent-decoded (repeatedly, for double encoding) it must still be a plain path.
        var decoded = next
        for _ in 0..<3 {
            guard let once = decoded.removingPercentEncoding else { return home }
            if once == decoded { break }
            decoded = once
        }
        guard !decoded.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0 == "\\" }),
            !decoded.hasPrefix("//"), !decoded.contains("://"), !decoded.contains("/../"), !decoded.hasSuffix("/..")
        else { return home }
        guard let components = URLComponents(string: next), components.scheme == nil, components.host == nil, components.user == nil,
            components.percentEncodedPath.hasPrefix("/")
        else { return home }
        guard base.isEmpty || next == base || next.hasPrefix(home) || next.hasPrefix(base + "?") else { return home }
        return next
    }
}

/// Fixed notices shown after a redirect (`?notice=key`); unknown keys show nothing.
enum Notices {
    static func message(_ key: String?) -> String? {
        switch key {
        case "welcome": "Welcome! Your account is ready."
        case "password-changed": "Your password was changed. Other sessions were signed out."
        case "token-revoked": "The token was revoked."
        case "roles-saved": "Roles saved."
        case "member-saved": "Team membership saved."
        case "member-removed": "Member removed from the team."
        case "signed-out": "You are signed out."
        default: nil
        }
    }
}

/// Redirects anonymous visitors to the sign-in page (HTML routes that need a user).
struct RequireSignIn: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard context.principal != nil else {
            let path = request.uri.path
            // On a tenant host the router saw the rewritten /t/{slug}/… path; the browser did not.
            let visible = context.hostMounted ? String(path.dropFirst(("/t/" + (context.tenant?.slug ?? "")).count)) : path
            let next = visible.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "/-_"))) ?? ""
            return .redirect(to: context.base + "/login?next=" + next)
        }
        return try await next(request, context)
    }
}
