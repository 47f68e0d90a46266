import Foundation
import Hummingbird

/// Platform endpoints: `/api/v1/tenants`, authenticated by a platform token (`tgx_...`).
struct PlatformAPI: Sendable {
    let services: PortalServices

    func addRoutes(to router: Router<AppRequestContext>) {
        let api = router.group("/api/v1")
        api.get("/openapi.json", use: openAPI)
        api.get("/tenants", use: listTenants)
        api.post("/tenants", use: createTenant)
        api.get("/tenants/:slug", use: showTenant)
        api.patch("/tenants/:slug", use: updateTenant)
        api.post("/tenants/:slug/admin-invitations", use: inviteAdmin)
        api.get("/tenants/:slug/certificate", use: showCertificate)
        api.put("/tenants/:slug/certificate", use: storeCertificate)
        api.delete("/tenants/:slug/certificate", use: removeCertificate)
    }

    /// The certificate served for the marketplace's custom host (404 when none is stored).
    @Sendable func showCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticate(request)
        let tenant = try await tenant(context)
        guard let info = try await services.tenantCertificates.info(tenant) else { throw AppError.notFound("Certificate") }
        return try .json(APIModel.TenantCertificateBody(info, tenant: tenant))
    }

    /// Stores or replaces it: `{"certificate_pem": chain, "private_key_pem": key}`; the key is
    /// sealed and never shown again.
    @Sendable func storeCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        let operatorName = try await authenticate(request)
        let tenant = try await tenant(context)
        let body = try await request.decodeJSON(APIModel.ClientCertificateBody.self, context: context)
        let info = try await services.tenantCertificates.store(tenant, chainPEM: body.certificatePem, keyPEM: body.privateKeyPem, operatorName: operatorName)
        return try .json(APIModel.TenantCertificateBody(info, tenant: tenant))
    }

    @Sendable func removeCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        let operatorName = try await authenticate(request)
        guard try await services.tenantCertificates.remove(try await tenant(context), operatorName: operatorName) else {
            throw AppError.notFound("Certificate")
        }
        return Response(status: .noContent)
    }

    /// The OpenAPI document for the platform endpoints.
    @Sendable func openAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let server = services.config.publicURL.text + "/api/v1"
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.platform(serverURL: server))))
    }

    @Sendable func listTenants(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticate(request)
        let page = try Pagination(request)
        return try .json(
            try await page.load(key: \.slug, APIModel.TenantBody.init) { cursor, limit in
                try await services.database.withPlatform { try await services.tenants.list(after: cursor, limit: limit, on: $0) }
            })
    }

    @Sendable func createTenant(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticate(request)
        let body = try await request.decodeJSON(APIModel.CreateTenant.self, context: context)
        let new = try NewTenant.validated(
            slug: body.slug, name: body.name, currency: body.currency, signupPolicy: body.signupPolicy, customHost: body.customHost,
            baseDomain: services.config.baseDomain)
        let tenant = try await services.tenantAdministration.create(new)
        return try .json(APIModel.TenantBody(tenant), status: .created)
    }

    @Sendable func showTenant(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticate(request)
        return try .json(APIModel.TenantBody(try await tenant(context)))
    }

    /// Name, sign-up policy and custom host (`null` or "" removes it); slug and currency stay.
    @Sendable func updateTenant(_ request: Request, context: AppRequestContext) async throws -> Response {
        let operatorName = try await authenticate(request)
        let current = try await tenant(context)
        let body = try await request.decodeJSON(APIModel.UpdateTenant.self, context: context)
        let changes = try TenantChanges.validated(
            name: body.name, signupPolicy: body.signupPolicy, customHost: body.customHost, baseDomain: services.config.baseDomain)
        let updated = try await services.tenantAdministration.update(current, changes, operatorName: operatorName)
        return try .json(APIModel.TenantBody(updated))
    }

    /// An administrator invitation for a marketplace that has none yet; the link is shown once.
    @Sendable func inviteAdmin(_ request: Request, context: AppRequestContext) async throws -> Response {
        let operatorName = try await authenticate(request)
        let tenant = try await tenant(context)
        let body = try await request.decodeJSON(APIModel.InviteAdmin.self, context: context)
        let (invitation, token) = try await services.tenantAdministration.inviteFirstAdmin(tenant, email: body.email, operatorName: operatorName)
        let link = services.publicBase(tenant) + "/invitations/" + token
        return try .json(APIModel.CreatedInvitationBody(invitation: .init(invitation), acceptUrl: link), status: .created)
    }

    private func tenant(_ context: AppRequestContext) async throws -> Tenant {
        try await services.tenantAdministration.find(slug: context.parameters.get("slug") ?? "")
    }

    /// The operator's name for audit events ("platform:<admin email>").
    @discardableResult
    private func authenticate(_ request: Request) async throws -> String {
        guard let token = request.headers.bearer?.token,
            let admin = try await services.database.withPlatform({ try await services.platformAdmins.authenticate(token: token, on: $0) })
        else { throw AppError.unauthenticated }
        return "platform:\(admin)"
    }
}
