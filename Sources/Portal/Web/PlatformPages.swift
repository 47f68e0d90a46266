import Foundation
import Hummingbird

/// The installation's own pages: landing page and the platform-admin console (tenants).
struct PlatformPages: Sendable {
    let services: PortalServices

    func addRoutes(to router: Router<AppRequestContext>) {
        router.get("/", use: landing)
        let group = router.group("/platform").add(middleware: BrowserSessionMiddleware(realm: .platform, services: services))
        group.get("/login", use: loginForm)
        group.post("/login", use: login)
        group.form("/logout", page: "/platform/", use: logout)
        group.get("/", use: console)
        group.form("/tenants", page: "/platform/", use: createTenant)
        group.get("/tenants/:slug", use: tenantPage)
        group.post("/tenants/:slug", use: updateTenant)
        group.form("/tenants/:slug/admin-invitations", page: "/platform/tenants/:slug", use: inviteAdmin)
        group.form("/tenants/:slug/certificate", page: "/platform/tenants/:slug", use: storeCertificate)
        group.form("/tenants/:slug/certificate/remove", page: "/platform/tenants/:slug", use: removeCertificate)
        group.form("/tokens", page: "/platform/", use: createToken)
    }

    /// One marketplace: its settings (name, sign-up, custom host) and, while it has none, its
    /// first administrator's invitation.
    @Sendable func tenantPage(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard context.platformAdminID != nil else { return .redirect(to: "/platform/login") }
        let notice: String? =
            switch request.uri.queryParameters["done"] {
            case "saved": "Saved."
            case "certificate": "Certificate stored: TLS listeners serve it within seconds."
            case "certificate-removed": "Certificate removed."
            default: nil
            }
        var extra: [String: Any] = [:]
        if let flash = try await services.flashes.take(for: context), let link = flash.secret {
            extra["new_invitation"] = ["email": flash.secretLabel ?? "", "link": link]
        }
        return try await tenantDetail(context, tenant: try await tenant(context), extra: extra, notice: notice)
    }

    @Sendable func updateTenant(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let adminID = context.platformAdminID else { return .redirect(to: "/platform/login") }
        let tenant = try await tenant(context)
        let form = context.form
        do {
            let changes = try TenantChanges.validated(
                name: form["name"], signupPolicy: form["signup_policy"], customHost: .some(form["custom_host"]),
                baseDomain: services.config.baseDomain)
            _ = try await services.tenantAdministration.update(tenant, changes, operatorName: "platform:\(adminID)")
            return .redirect(to: "/platform/tenants/\(tenant.slug)?done=saved")
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            let typed: [String: Any] = [
                "name": form["name"] ?? "", "custom_host": form["custom_host"] ?? "", "open": form["signup_policy"] == "open",
            ]
            return try await tenantDetail(context, tenant: tenant, form: typed, errors: error.fieldErrors, status: error.status)
        }
    }

    @Sendable func inviteAdmin(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let adminID = context.platformAdminID else { return .redirect(to: "/platform/login") }
        let tenant = try await tenant(context)
        let email = context.form["email"] ?? ""
        do {
            let (invitation, token) = try await services.tenantAdministration.inviteFirstAdmin(tenant, email: email, operatorName: "platform:\(adminID)")
            let link = services.publicBase(tenant) + "/invitations/" + token
            // post/redirect/get: the link (stored hashed) waits sealed in the console session's flash
            try await services.flashes.put(Flash(secretLabel: invitation.email, secret: link), for: context)
            return .redirect(to: "/platform/tenants/\(tenant.slug)#new-invitation")
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await tenantDetail(
                context, tenant: tenant, form: ["email": email], errors: error.fieldErrors.isEmpty ? ["email": error.detail] : error.fieldErrors,
                status: error.status)
        }
    }

    /// The custom host's certificate: the chain and key are checked, the key sealed; neither text
    /// is shown back on an error (the key must not travel again, and the form is re-pasted).
    @Sendable func storeCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let adminID = context.platformAdminID else { return .redirect(to: "/platform/login") }
        let tenant = try await tenant(context)
        do {
            _ = try await services.tenantCertificates.store(
                tenant, chainPEM: context.form["certificate_pem"] ?? "", keyPEM: context.form["private_key_pem"] ?? "", operatorName: "platform:\(adminID)")
            return .redirect(to: "/platform/tenants/\(tenant.slug)?done=certificate#certificate")
        } catch let error as AppError where error.status == .unprocessableContent {
            // the field is marked where the card is, far down the page: the alert at the top says it too
            var errors: [String: String] = [:]
            for (field, message) in error.fieldErrors where field != "custom_host" { errors[field + "_pem"] = message }
            let message = error.fieldErrors.values.sorted().first ?? error.detail
            return try await tenantDetail(
                context, tenant: tenant, errors: errors, extra: ["error": "The certificate was not stored: " + message], status: error.status)
        }
    }

    @Sendable func removeCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let adminID = context.platformAdminID else { return .redirect(to: "/platform/login") }
        let tenant = try await tenant(context)
        _ = try await services.tenantCertificates.remove(tenant, operatorName: "platform:\(adminID)")
        return .redirect(to: "/platform/tenants/\(tenant.slug)?done=certificate-removed#certificate")
    }

    private func tenant(_ context: AppRequestContext) async throws -> Tenant {
        try await services.tenantAdministration.find(slug: context.parameters.get("slug") ?? "")
    }

    private func tenantDetail(
        _ context: AppRequestContext, tenant: Tenant, form: [String: Any]? = nil, errors: [String: String] = [:], extra: [String: Any] = [:],
        notice: String? = nil, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let admins = try await services.tenantAdministration.adminEmails(tenant)
        let certificate = try await services.tenantCertificates.info(tenant)
        var values: [String: Any] = [
            "custom_host": tenant.customHost ?? "",
            "tenant": [
                "slug": tenant.slug, "name": tenant.name, "currency": tenant.currency, "created": DisplayDate.format(tenant.createdAt),
                "portal_url": services.publicBase(tenant) + "/",
            ],
            "form": form ?? ["name": tenant.name, "custom_host": tenant.customHost ?? "", "open": tenant.signupPolicy == .open],
            "errors": errors,
            "admins": admins.map { ["email": $0] },
        ]
        if let certificate {
            values["certificate"] = [
                "names": certificate.names.joined(separator: ", "), "not_after": DisplayDate.format(certificate.notAfter),
                "updated": DisplayDate.format(certificate.updatedAt), "stale": !certificate.servesCurrentHost,
            ]
        }
        for (key, value) in extra { values[key] = value }
        var page = chrome(tenant.name, context)
        page.notice = notice
        return services.views.render("platform_tenant", values, page: page, status: status)
    }

    /// Lists the marketplaces on this installation.
    @Sendable func landing(_ request: Request, context: AppRequestContext) async throws -> Response {
        let pageRequest = try PageRequest(request)
        let tenants = try await tenantPage(pageRequest)
        var page = PageChrome(title: "Tollgate")
        page.platform = true
        return services.views.render(
            "landing", ["tenants": tenants.items.map { ["slug": $0.slug, "name": $0.name] }, "pager": tenants.pager(path: "/", size: pageRequest.size)],
            page: page)
    }

    /// A page of the installation's marketplaces, by slug.
    private func tenantPage(_ request: PageRequest) async throws -> ListPage<Tenant> {
        try await ListPage<Tenant>.load(request, key: \.slug) { position, limit in
            try await services.database.withPlatform { try await services.tenants.page(position, limit: limit, on: $0) }
        }
    }

    @Sendable func loginForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        if context.platformAdminID != nil { return .redirect(to: "/platform/") }
        return services.views.render("platform_login", [:], page: chrome("Platform sign in", context))
    }

    @Sendable func login(_ request: Request, context: AppRequestContext) async throws -> Response {
        let email = TextInput.sanitized(context.form["email"] ?? "")
        let password = context.form["password"] ?? ""
        let throttle = LoginThrottle(logger: services.logger)
        let hasher = services.identity.hasher
        let result: (Session?, Int?) = try await services.database.withPlatform { connection in
            if let wait = try await throttle.retryAfter(email: email, clientIP: context.clientIP, tenantID: nil, on: connection) { return (nil, wait) }
            let admin = try await services.platformAdmins.find(email: email, on: connection)
            guard await hasher.verify(password, against: admin?.passwordHash ?? PasswordHasher.decoy), let admin else {
                try await throttle.recordFailure(email: email, clientIP: context.clientIP, tenantID: nil, on: connection)
                return (nil, nil)
            }
            try await throttle.recordSuccess(email: email, tenantID: nil, on: connection)
            let session = try await services.sessions.create(
                owner: .platformAdmin(admin.id), clientIP: context.clientIP, userAgent: request.headers[.userAgent], on: connection)
            return (session, nil)
        }
        if let wait = result.1 {
            return services.views.render(
                "platform_login", ["email": email, "error": AppError.tooManyRequests(retryAfterSeconds: wait).detail], page: chrome("Platform sign in", context),
                status: .tooManyRequests)
        }
        guard let session = result.0 else {
            return services.views.render(
                "platform_login", ["email": email, "error": "Email or password is incorrect."], page: chrome("Platform sign in", context), status: .unauthorized)
        }
        var response = Response.redirect(to: "/platform/")
        response.setCookie(services.cookie(name: BrowserSessionMiddleware.sessionCookie, value: session.token, path: "/platform", request: request))
        response.setCookie(services.expiredCookie(name: BrowserSessionMiddleware.anonymousCookie, path: "/platform", request: request))
        return response
    }

    @Sendable func logout(_ request: Request, context: AppRequestContext) async throws -> Response {
        if let session = context.session {
            try await services.database.withPlatform { try await services.sessions.delete(token: session.token, on: $0) }
        }
        var response = Response.redirect(to: "/platform/login")
        response.setCookie(services.expiredCookie(name: BrowserSessionMiddleware.sessionCookie, path: "/platform", request: request))
        return response
    }

    @Sendable func console(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard context.platformAdminID != nil else { return .redirect(to: "/platform/login") }
        var extra: [String: Any] = [:]
        if let flash = try await services.flashes.take(for: context), let secret = flash.secret { extra["new_token"] = secret }
        return try await consolePage(context, page: try PageRequest(request), extra: extra)
    }

    @Sendable func createTenant(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard context.platformAdminID != nil else { return .redirect(to: "/platform/login") }
        let form = context.form
        do {
            let new = try NewTenant.validated(
                slug: form["slug"], name: form["name"], currency: form["currency"], signupPolicy: form["signup_policy"], customHost: form["custom_host"],
                baseDomain: services.config.baseDomain)
            _ = try await services.tenantAdministration.create(new)
            return .redirect(to: "/platform/")
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            return try await consolePage(
                context, extra: ["errors": error.fieldErrors, "slug": form["slug"] ?? "", "name": form["name"] ?? ""], status: error.status)
        }
    }

    /// Creates a platform API token (shown once) for `/api/v1/tenants`.
    @Sendable func createToken(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let adminID = context.platformAdminID else { return .redirect(to: "/platform/login") }
        let name = (context.form["name"] ?? "").trimmingCharacters(in: .whitespaces)
        let secret = try await services.database.withPlatform {
            try await services.platformAdmins.createToken(adminID: adminID, name: name.isEmpty ? "api" : String(name.prefix(100)), on: $0)
        }
        // post/redirect/get: the token waits sealed in the console session's one-time flash
        try await services.flashes.put(Flash(secretLabel: "Platform API token", secret: secret), for: context)
        return .redirect(to: "/platform/#new-token")
    }

    private func consolePage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenants = try await tenantPage(request)
        var values: [String: Any] = [
            "tenants": tenants.items.map {
                ["slug": $0.slug, "name": $0.name, "currency": $0.currency, "signup_policy": $0.signupPolicy.rawValue, "custom_host": $0.customHost ?? ""]
            },
            "pager": tenants.pager(path: "/platform/", size: request.size),
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("platform", values, page: chrome("Platform", context), status: status)
    }

    private func chrome(_ title: String, _ context: AppRequestContext) -> PageChrome {
        var page = PageChrome(title: title)
        page.platform = true
        page.csrf = context.csrfBinding.map(services.csrf.token(binding:)) ?? ""
        page.userName = context.platformAdminID != nil ? "Platform admin" : nil
        return page
    }
}
