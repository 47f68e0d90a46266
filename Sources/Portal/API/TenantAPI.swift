import Foundation
import Gateway
import Hummingbird
import HummingbirdAuth

/// Authenticates `/t/{slug}/api/v1` requests by personal access token (`Authorization: Bearer tgp_...`).
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let services: PortalServices

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let tenant = try context.requireTenant()
        guard let bearer = request.headers.bearer?.token else { throw AppError.unauthenticated }
        let principal: Principal? = try await services.database.withTenant(tenant.id) { connection in
            guard let (userID, scopes) = try await services.tokenService.tokens.authenticate(secret: bearer, on: connection),
                let user = try await services.identity.users.find(id: userID, on: connection)
            else { return nil }
            return Principal(user: user, teamRoles: try await services.identity.teams.memberships(userID: userID, on: connection), scopes: scopes)
        }
        guard let principal else {
            var error = AppError.unauthenticated
            error.detail = "The bearer token is unknown, expired or revoked."
            error.headers = [.wwwAuthenticate: "Bearer realm=\"tollgate\", error=\"invalid_token\""]
            throw error
        }
        var context = context
        context.principal = principal
        return try await next(request, context)
    }
}

/// The tenant JSON API: the same workflows and policy as the HTML pages.
struct TenantAPI: Sendable {
    let services: PortalServices

    func addRoutes(to api: RouterGroup<AppRequestContext>) {
        api.get("/openapi.json", use: openAPI)
        let authed = api.group().add(middleware: BearerTokenMiddleware(services: services))
        authed.get("/me", use: me)
        authed.get("/users", use: listUsers)
        authed.put("/users/:user/roles", use: setRoles)
        authed.get("/teams", use: listTeams)
        authed.post("/teams", use: createTeam)
        authed.get("/teams/:team", use: showTeam)
        authed.get("/teams/:team/members", use: listMembers)
        authed.post("/teams/:team/members", use: addMember)
        authed.put("/teams/:team/members/:user", use: setMember)
        authed.delete("/teams/:team/members/:user", use: removeMember)
        authed.get("/tokens", use: listTokens)
        authed.post("/tokens", use: createToken)
        authed.delete("/tokens/:id", use: revokeToken)
        authed.get("/invitations", use: listInvitations)
        authed.post("/invitations", use: createInvitation)
        authed.get("/audit-events", use: listAuditEvents)
        authed.get("/apis", use: listAPIs)
        authed.post("/apis", use: createAPI)
        authed.get("/apis/:api", use: showAPI)
        authed.patch("/apis/:api", use: updateAPI)
        authed.post("/apis/:api/transitions", use: transitionAPI)
        authed.put("/apis/:api/upstream-client-certificate", use: setUpstreamClientCertificate)
        authed.delete("/apis/:api/upstream-client-certificate", use: removeUpstreamClientCertificate)
        authed.get("/apis/:api/openapi", use: downloadDocument)
        authed.put("/apis/:api/openapi", use: uploadDocument)
        authed.delete("/apis/:api/openapi", use: deleteDocument)
        authed.get("/apis/:api/descriptor-set", use: showDescriptorSet)
        authed.put("/apis/:api/descriptor-set", use: uploadDescriptorSet)
        authed.delete("/apis/:api/descriptor-set", use: deleteDescriptorSet)
        authed.get("/apis/:api/gateway-policy", use: showGatewayPolicy)
        authed.put("/apis/:api/gateway-policy", use: setGatewayPolicy)
        authed.get("/apis/:api/policies", use: showPolicies)
        authed.put("/apis/:api/policies", use: setPolicies)
        authed.delete("/apis/:api/cache", use: purgeCache)
        authed.get("/apis/:api/plans", use: listPlans)
        authed.post("/apis/:api/plans", use: createPlan)
        authed.get("/plans/:plan", use: showPlan)
        authed.post("/plans/:plan/versions", use: revisePlan)
        authed.get("/apps", use: listApps)
        authed.post("/apps", use: createApp)
        authed.get("/apps/:app", use: showApp)
        authed.post("/apps/:app/client-secrets", use: addClientSecret)
        authed.post("/apps/:app/api-keys", use: addAPIKey)
        authed.delete("/apps/:app/credentials/:credential", use: revokeCredential)
        authed.post("/apps/:app/subscriptions", use: subscribe)
        authed.get("/subscriptions", use: listSubscriptions)
        authed.get("/subscriptions/:subscription", use: showSubscription)
        authed.post("/subscriptions/:subscription/actions", use: actOnSubscription)
        FinanceAPI(services: services).addRoutes(to: authed)
        authed.get("/webhooks", use: listWebhooks)
        authed.post("/webhooks", use: createWebhook)
        authed.get("/webhooks/:webhook", use: showWebhook)
        authed.delete("/webhooks/:webhook", use: deleteWebhook)
        authed.get("/webhooks/:webhook/deliveries", use: listDeliveries)
        authed.get("/webhooks/:webhook/deliveries/:delivery", use: showDelivery)
        authed.post("/webhooks/:webhook/deliveries/:delivery/redeliver", use: redeliver)
    }

    /// Changes name, description, visibility, allowed teams or targets (absent fields stay).
    /// Sets the client certificate and key shown to the API's TLS targets (upstream mutual TLS).
    @Sendable func setUpstreamClientCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let body = try await request.decodeJSON(APIModel.ClientCertificateBody.self, context: context)
        let api = try await services.catalog.setClientCertificate(
            tenant: try context.requireTenant(), actor: principal, id: id, certificatePEM: body.certificatePem, privateKeyPEM: body.privateKeyPem,
            clientIP: context.clientIP)
        return try .json(APIModel.APIBody(api))
    }

    @Sendable func removeUpstreamClientCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let api = try await services.catalog.removeClientCertificate(tenant: try context.requireTenant(), actor: principal, id: id, clientIP: context.clientIP)
        return try .json(APIModel.APIBody(api))
    }

    @Sendable func updateAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let body = try await request.decodeJSON(APIModel.UpdateAPI.self, context: context)
        var visibility: APIProduct.Visibility?
        if let text = body.visibility {
            guard let parsed = APIProduct.Visibility(rawValue: text) else { throw AppError.validation(["visibility": "Choose public or restricted."]) }
            visibility = parsed
        }
        let api = try await services.catalog.update(
            tenant: try context.requireTenant(), actor: principal, id: id,
            APIChanges(
                name: body.name, description: body.description, visibility: visibility, allowedTeamIDs: body.allowedTeamIds, targets: body.targets,
                upstreamCABundle: body.upstreamCaPem, upstreamProtocol: body.upstreamProtocolChange),
            clientIP: context.clientIP)
        return try .json(APIModel.APIBody(api))
    }

    /// Uploads the API version's OpenAPI document (JSON or YAML body, up to 2 MiB), validated before it is stored.
    @Sendable func uploadDocument(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let type = (request.headers[.contentType] ?? "").lowercased()
        guard APIDocumentDownload.acceptedUploadTypes.contains(where: { type.hasPrefix($0) }) else {
            throw AppError(
                status: .unsupportedMediaType, title: "Unsupported media type",
                detail: "Send the document as application/json or application/yaml.")
        }
        var request = request
        let body = try await request.collectBody(upTo: APIDocument.maximumBytes)
        let stored = try await services.catalog.uploadDocument(
            tenant: try context.requireTenant(), actor: principal, id: id, bytes: Array(body.readableBytesView), clientIP: context.clientIP)
        return try .json(APIModel.DocumentBody(stored))
    }

    /// Uploads a gRPC API version's protobuf descriptor set (`application/octet-stream`, up to 4 MiB),
    /// compiled as the gateway will before it is stored; answers with the operations JSON clients can call.
    @Sendable func uploadDescriptorSet(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let type = (request.headers[.contentType] ?? "").lowercased()
        guard APIModel.DescriptorSetBody.acceptedUploadTypes.contains(where: { type.hasPrefix($0) }) else {
            throw AppError(
                status: .unsupportedMediaType, title: "Unsupported media type",
                detail: "Send the descriptor set (protoc --include_imports --descriptor_set_out, or buf build) as application/octet-stream.")
        }
        var request = request
        let body: ByteBuffer
        do { body = try await request.collectBody(upTo: APIDescriptorSet.maximumBytes) } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw APIDescriptorSet.tooLarge
        }
        let (api, stored) = try await services.catalog.uploadDescriptorSet(
            tenant: try context.requireTenant(), actor: principal, id: id, bytes: Array(body.readableBytesView), clientIP: context.clientIP)
        return try .json(APIModel.DescriptorSetBody(stored, basePath: api.basePath))
    }

    /// The descriptor set's summary: services, and each method with the HTTP routes that call it.
    @Sendable func showDescriptorSet(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (api, stored) = try await services.catalog.descriptorSet(
            tenant: try context.requireTenant(), viewer: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"))
        guard let stored else { throw AppError.notFound("Descriptor set") }
        return try .json(APIModel.DescriptorSetBody(stored, basePath: api.basePath))
    }

    @Sendable func deleteDescriptorSet(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await services.catalog.deleteDescriptorSet(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"),
            clientIP: context.clientIP)
        return Response(status: .noContent)
    }

    /// The API version's OpenAPI document exactly as uploaded.
    @Sendable func downloadDocument(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (api, document) = try await services.catalog.document(
            tenant: try context.requireTenant(), viewer: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"))
        guard let document else { throw AppError.notFound("OpenAPI document") }
        return APIDocumentDownload.response(api: api, document: document)
    }

    @Sendable func deleteDocument(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await services.catalog.deleteDocument(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"))
        return Response(status: .noContent)
    }

    /// The API's gateway policy (its provider team only).
    @Sendable func showGatewayPolicy(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let api = try await services.catalog.show(tenant: try context.requireTenant(), viewer: principal, id: try uuidParameter("api", context, what: "API"))
        try Policy.authorize(principal, .manageAPIs(team: api.teamID))
        return try .json(APIModel.GatewayPolicyBody(api.policy))
    }

    /// Replaces the API's gateway policy: CORS, IP allow/deny ranges, methods, body limit, sunset date.
    @Sendable func setGatewayPolicy(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let body = try await request.decodeJSON(APIModel.GatewayPolicyBody.self, context: context)
        let api = try await services.catalog.setPolicy(tenant: try context.requireTenant(), actor: principal, id: id, body.policy, clientIP: context.clientIP)
        return try .json(APIModel.GatewayPolicyBody(api.policy))
    }

    /// The API's policy chain (its provider team only): the added policies, and every step in call order.
    @Sendable func showPolicies(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (api, policies) = try await services.catalog.policies(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"))
        return try .json(APIModel.PolicyChainBody(api: api, policies: policies))
    }

    /// Replaces the API's added policies as a whole: validated together (422 naming each problem by
    /// JSON pointer), stored atomically, audited, pushed to gateways.
    @Sendable func setPolicies(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        guard (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/json") else {
            throw AppError(status: .unsupportedMediaType, title: "Unsupported media type", detail: "Send the body as application/json.")
        }
        var request = request
        let body = try await request.collectBody(upTo: APIPolicyChain.maximumBodyBytes)
        let policies: [APIPolicy]
        switch APIPolicyChain.parse(Array(body.readableBytesView)) {
        case .success(let parsed): policies = parsed
        case .failure(let problems) where problems.list.first?.pointer == "" && problems.list.count == 1:
            throw AppError.badRequest(problems.list[0].message)
        case .failure(let problems): throw APIPolicyChain.invalid(problems.list)
        }
        let (api, stored) = try await services.catalog.setPolicies(
            tenant: try context.requireTenant(), actor: principal, id: id, policies, clientIP: context.clientIP)
        return try .json(APIModel.PolicyChainBody(api: api, policies: stored))
    }

    /// Empties the API's response cache on every gateway (provider only, audited). 202: the
    /// gateways drop the entries when the notification reaches them, within moments.
    @Sendable func purgeCache(_ request: Request, context: AppRequestContext) async throws -> Response {
        let id = try uuidParameter("api", context, what: "API")
        let api = try await services.catalog.purgeCache(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, clientIP: context.clientIP)
        return try .json(["api_id": api.id.uuidString.lowercased(), "purge": "sent to every gateway"], status: .accepted)
    }

    /// Webhook endpoints you manage (tenant admins: all of the tenant's).
    @Sendable func listWebhooks(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let endpoints = try await ListPage<WebhookEndpoint>.load(page.page, key: \.id.uuidString) {
            try await services.webhookService.page(tenant: tenant, actor: principal, $0, limit: $1)
        }
        return try .json(APIModel.Page(items: endpoints.items.map(APIModel.WebhookEndpointBody.init), nextCursor: endpoints.next))
    }

    /// Registers an endpoint for the tenant (no `team_id`, admins) or a team; the signing secret is shown once.
    @Sendable func createWebhook(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await request.decodeJSON(APIModel.CreateWebhook.self, context: context)
        let (endpoint, secret) = try await services.webhookService.create(
            tenant: try context.requireTenant(), actor: principal,
            .init(teamID: body.teamId, url: body.url, description: body.description ?? "", events: body.events ?? []), clientIP: context.clientIP)
        return try .json(APIModel.CreatedWebhookBody(endpoint: .init(endpoint), secret: secret), status: .created)
    }

    @Sendable func showWebhook(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (endpoint, _) = try await services.webhookService.show(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("webhook", context, what: "Webhook endpoint"),
            limit: 0)
        return try .json(APIModel.WebhookEndpointBody(endpoint))
    }

    @Sendable func deleteWebhook(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await services.webhookService.delete(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("webhook", context, what: "Webhook endpoint"),
            clientIP: context.clientIP)
        return Response(status: .noContent)
    }

    /// The delivery log, newest first, in pages.
    @Sendable func listDeliveries(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let id = try uuidParameter("webhook", context, what: "Webhook endpoint")
        let deliveries = try await ListPage<WebhookDelivery>.load(page.page, key: \.id.uuidString) {
            try await services.webhookService.deliveries(tenant: tenant, actor: principal, id: id, $0, limit: $1).1
        }
        return try .json(APIModel.Page(items: deliveries.items.map(APIModel.WebhookDeliveryBody.init), nextCursor: deliveries.next))
    }

    @Sendable func showDelivery(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (delivery, attempts) = try await services.webhookService.delivery(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(),
            endpointID: try uuidParameter("webhook", context, what: "Webhook endpoint"), deliveryID: try uuidParameter("delivery", context, what: "Delivery"))
        return try .json(APIModel.WebhookDeliveryDetailBody(delivery: .init(delivery), attempts: attempts.map(APIModel.WebhookAttemptBody.init)))
    }

    /// Sends the delivery's event to the endpoint again (a new delivery; the old one stays in the log).
    @Sendable func redeliver(_ request: Request, context: AppRequestContext) async throws -> Response {
        let delivery = try await services.webhookService.redeliver(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(),
            endpointID: try uuidParameter("webhook", context, what: "Webhook endpoint"), deliveryID: try uuidParameter("delivery", context, what: "Delivery"),
            clientIP: context.clientIP)
        return try .json(APIModel.WebhookDeliveryBody(delivery), status: .accepted)
    }

    /// Subscribes an app to a plan: active at once for automatic plans, pending for manual ones.
    @Sendable func subscribe(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let appID = try uuidParameter("app", context, what: "App")
        let body = try await request.decodeJSON(APIModel.CreateSubscription.self, context: context)
        let subscription = try await services.subscriptionService.request(
            tenant: try context.requireTenant(), actor: principal, appID: appID, planID: body.planId, clientIP: context.clientIP)
        return try .json(APIModel.SubscriptionBody(subscription), status: .created)
    }

    /// Subscriptions of your apps and to the APIs you manage. The provider's approval queue is
    /// `awaiting=provider`: new requests (`state=pending`) and plan changes waiting for approval.
    @Sendable func listSubscriptions(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        var awaiting = false
        if let text = request.uri.queryParameters["awaiting"].map(String.init) {
            guard text == "provider" else { throw AppError.badRequest("awaiting must be 'provider'.") }
            awaiting = true
        }
        var state: SubscriptionState?
        if let text = request.uri.queryParameters["state"].map(String.init) {
            guard let wanted = SubscriptionState(rawValue: text) else {
                throw AppError.badRequest("state must be one of \(SubscriptionState.allCases.map(\.rawValue).joined(separator: ", ")).")
            }
            state = wanted
        }
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let items = try await ListPage<Subscription>.load(page.page, key: \.id.uuidString) {
            try await services.subscriptionService.page(tenant: tenant, actor: principal, state: state, awaitingProvider: awaiting, $0, limit: $1)
        }
        return try .json(APIModel.Page(items: items.items.map(APIModel.SubscriptionBody.init), nextCursor: items.next))
    }

    @Sendable func showSubscription(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (subscription, history, _) = try await services.subscriptionService.show(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("subscription", context, what: "Subscription"))
        return try .json(APIModel.SubscriptionDetailBody(subscription: .init(subscription), history: history.map(APIModel.SubscriptionEventBody.init)))
    }

    /// approve, reject (reason), suspend (reason), resume — providers; cancel, withdraw_plan_change — developers;
    /// change_plan — either (a developer's change to a manual plan waits for approval).
    @Sendable func actOnSubscription(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("subscription", context, what: "Subscription")
        let body = try await request.decodeJSON(APIModel.SubscriptionAction.self, context: context)
        guard let action = SubscriptionService.Action(rawValue: body.action) else {
            throw AppError.validation(["action": "Choose one of: " + SubscriptionService.Action.allCases.map(\.rawValue).joined(separator: ", ") + "."])
        }
        let subscription = try await services.subscriptionService.perform(
            tenant: try context.requireTenant(), actor: principal, subscriptionID: id, action: action, reason: body.reason, newPlanID: body.planId,
            clientIP: context.clientIP)
        return try .json(APIModel.SubscriptionBody(subscription))
    }

    /// Apps of the caller's teams (tenant admins: all).
    @Sendable func listApps(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let apps = try await services.appService.list(tenant: try context.requireTenant(), actor: try context.requirePrincipal())
        return try .json(page.page(apps, key: AppPages.sortKey, APIModel.AppBody.init))
    }

    /// Registers an app; the response carries its client id and first client secret (shown once).
    @Sendable func createApp(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await request.decodeJSON(APIModel.CreateApp.self, context: context)
        let new = try NewApp.validated(teamID: body.teamId, name: body.name, description: body.description, callbackURL: body.callbackUrl)
        let (app, created) = try await services.appService.create(tenant: try context.requireTenant(), actor: principal, new, clientIP: context.clientIP)
        return try .json(APIModel.CreatedAppBody(app: .init(app), credential: .init(created.credential), secret: created.secret), status: .created)
    }

    @Sendable func showApp(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (app, credentials) = try await services.appService.show(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try uuidParameter("app", context, what: "App"))
        return try .json(APIModel.AppDetailBody(app: .init(app), credentials: credentials.map(APIModel.CredentialBody.init)))
    }

    /// A second client secret for rotation (at most two active).
    @Sendable func addClientSecret(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await addCredential(request, context: context, kind: .clientSecret)
    }

    /// A new API key (shown once).
    @Sendable func addAPIKey(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await addCredential(request, context: context, kind: .apiKey)
    }

    @Sendable func revokeCredential(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await services.appService.revokeCredential(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), appID: try uuidParameter("app", context, what: "App"),
            credentialID: try uuidParameter("credential", context, what: "Credential"), clientIP: context.clientIP)
        return Response(status: .noContent)
    }

    private func addCredential(_ request: Request, context: AppRequestContext, kind: AppCredential.Kind) async throws -> Response {
        let principal = try context.requirePrincipal()
        let appID = try uuidParameter("app", context, what: "App")
        let body = try await request.decodeJSON(APIModel.CreateCredential.self, context: context)
        let created = try await services.appService.addCredential(
            tenant: try context.requireTenant(), actor: principal, appID: appID, kind: kind, name: body.name, expiresInDays: body.expiresInDays,
            clientIP: context.clientIP)
        return try .json(APIModel.CreatedCredentialBody(credential: .init(created.credential), secret: created.secret), status: .created)
    }

    /// Current plans of an API (hidden ones only for its provider team).
    @Sendable func listPlans(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let page = try Pagination(request)
        let plans = try await services.planService.list(tenant: tenant, viewer: try context.requirePrincipal(), apiID: try uuidParameter("api", context, what: "API"))
        return try .json(page.page(plans, key: { SortKey.join($0.terms.name.lowercased(), $0.id.uuidString) }) { APIModel.PlanBody($0, currency: tenant.currency) })
    }

    /// Adds a plan to an API (provider team admins).
    @Sendable func createPlan(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let apiID = try uuidParameter("api", context, what: "API")
        let terms = try await request.decodeJSON(PlanTerms.self, context: context)
        let plan = try await services.planService.create(tenant: tenant, actor: principal, apiID: apiID, terms: terms, clientIP: context.clientIP)
        return try .json(APIModel.PlanBody(plan, currency: tenant.currency), status: .created)
    }

    @Sendable func showPlan(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let (plan, _) = try await services.planService.show(tenant: tenant, viewer: try context.requirePrincipal(), planID: try uuidParameter("plan", context, what: "Plan"))
        return try .json(APIModel.PlanBody(plan, currency: tenant.currency))
    }

    /// New terms for a plan: returns the new version; the old one stays for existing subscriptions.
    @Sendable func revisePlan(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let planID = try uuidParameter("plan", context, what: "Plan")
        let terms = try await request.decodeJSON(PlanTerms.self, context: context)
        let plan = try await services.planService.revise(tenant: tenant, actor: principal, planID: planID, terms: terms, clientIP: context.clientIP)
        return try .json(APIModel.PlanBody(plan, currency: tenant.currency), status: .created)
    }

    /// The catalog entries the caller can see (providers also see their own drafts).
    @Sendable func listAPIs(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        return try .json(
            try await page.load(key: { $0.slug + "/" + $0.version }, APIModel.APIBody.init) {
                try await services.catalog.list(tenant: tenant, viewer: principal, after: $0, limit: $1)
            })
    }

    /// Creates a draft API version owned by a provider team.
    @Sendable func createAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await request.decodeJSON(APIModel.CreateAPI.self, context: context)
        let new = try NewAPI.validated(
            teamID: body.teamId, name: body.name, slug: body.slug, version: body.version, description: body.description, basePath: body.basePath,
            visibility: body.visibility, allowedTeamIDs: body.allowedTeamIds ?? [], targets: body.targets, upstreamProtocol: body.upstreamProtocol)
        let api = try await services.catalog.create(tenant: try context.requireTenant(), actor: principal, new, clientIP: context.clientIP)
        return try .json(APIModel.APIBody(api), status: .created)
    }

    @Sendable func showAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let api = try await services.catalog.show(
            tenant: try context.requireTenant(), viewer: try context.requirePrincipal(), id: try uuidParameter("api", context, what: "API"))
        return try .json(APIModel.APIBody(api))
    }

    /// Publishes, deprecates, un-deprecates or retires an API.
    @Sendable func transitionAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let id = try uuidParameter("api", context, what: "API")
        let body = try await request.decodeJSON(APIModel.APITransition.self, context: context)
        guard let transition = APILifecycle.Transition(rawValue: body.transition) else {
            throw AppError.validation(["transition": "Choose publish, deprecate, undeprecate or retire."])
        }
        let api = try await services.catalog.transition(tenant: try context.requireTenant(), actor: principal, id: id, transition, clientIP: context.clientIP)
        return try .json(APIModel.APIBody(api))
    }

    /// The OpenAPI 3.1 document for this tenant's API.
    @Sendable func openAPI(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let server = services.publicBase(tenant) + "/api/v1"
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.tenant(serverURL: server, tenantName: tenant.name))))
    }

    /// The caller: user, tenant, team memberships and token scopes.
    @Sendable func me(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .viewOwnProfile)
        return try .json(
            APIModel.MeBody(
                user: .init(principal.user), tenant: .init(try context.requireTenant()),
                teams: principal.teamRoles.map { .init(teamId: $0.key, role: $0.value.rawValue) }.sorted { $0.teamId.uuidString < $1.teamId.uuidString },
                scopes: (principal.scopes ?? Set(TokenScope.allCases)).map(\.rawValue).sorted()))
    }

    /// Users of the tenant (admins and finance), by email.
    @Sendable func listUsers(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .listUsers)
        let page = try Pagination(request)
        let tenant = try context.requireTenant()
        return try .json(
            try await page.load(key: \.email, APIModel.UserBody.init) { cursor, limit in
                try await services.database.withTenant(tenant.id) { try await services.identity.users.list(after: cursor, limit: limit, on: $0) }
            })
    }

    /// Replaces a user's tenant roles (admins).
    @Sendable func setRoles(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .manageUsers)
        let userID = try uuidParameter("user", context, what: "User")
        let body = try await request.decodeJSON(APIModel.SetRoles.self, context: context)
        let roles = body.roles.map(TenantRole.init(rawValue:))
        guard !roles.contains(where: { $0 == nil }) else {
            throw AppError.validation(["roles": "Roles are admin, provider, developer and finance."])
        }
        let user = try await services.identity.setRoles(
            tenant: try context.requireTenant(), actor: principal, userID: userID, roles: Set(roles.compactMap { $0 }), clientIP: context.clientIP)
        return try .json(APIModel.UserBody(user))
    }

    @Sendable func listTeams(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        return try .json(
            try await page.load(key: \.slug, APIModel.TeamBody.init) {
                try await services.teamService.list(tenant: tenant, actor: principal, after: $0, limit: $1)
            })
    }

    /// Creates a team; the caller becomes its owner.
    @Sendable func createTeam(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .createTeam)
        let body = try await request.decodeJSON(APIModel.CreateTeam.self, context: context)
        let team = try await services.teamService.create(
            tenant: try context.requireTenant(), actor: principal, try NewTeam.validated(name: body.name, slug: body.slug), clientIP: context.clientIP)
        return try .json(APIModel.TeamBody(team), status: .created)
    }

    @Sendable func showTeam(_ request: Request, context: AppRequestContext) async throws -> Response {
        let (team, _) = try await services.teamService.show(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), slug: context.parameters.get("team") ?? "")
        return try .json(APIModel.TeamBody(team))
    }

    @Sendable func listMembers(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let (_, members) = try await services.teamService.show(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), slug: context.parameters.get("team") ?? "")
        return try .json(page.page(members, key: TeamPages.memberKey, APIModel.MemberBody.init))
    }

    /// Adds an existing tenant member to the team by email.
    @Sendable func addMember(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await request.decodeJSON(APIModel.AddMember.self, context: context)
        guard let role = TeamRole(rawValue: body.role) else { throw AppError.validation(["role": "Choose owner, admin or member."]) }
        let member = try await services.teamService.setMember(
            tenant: try context.requireTenant(), actor: principal, slug: context.parameters.get("team") ?? "", email: body.email, userID: nil,
            role: role, clientIP: context.clientIP)
        return try .json(APIModel.MemberBody(member), status: .created)
    }

    @Sendable func setMember(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let userID = try uuidParameter("user", context, what: "Member")
        let body = try await request.decodeJSON(APIModel.SetMember.self, context: context)
        guard let role = TeamRole(rawValue: body.role) else { throw AppError.validation(["role": "Choose owner, admin or member."]) }
        let member = try await services.teamService.setMember(
            tenant: try context.requireTenant(), actor: principal, slug: context.parameters.get("team") ?? "", email: nil, userID: userID, role: role,
            clientIP: context.clientIP)
        return try .json(APIModel.MemberBody(member))
    }

    @Sendable func removeMember(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let userID = try uuidParameter("user", context, what: "Member")
        try await services.teamService.removeMember(
            tenant: try context.requireTenant(), actor: principal, slug: context.parameters.get("team") ?? "", userID: userID, clientIP: context.clientIP)
        return Response(status: .noContent)
    }

    @Sendable func listTokens(_ request: Request, context: AppRequestContext) async throws -> Response {
        let page = try Pagination(request)
        let tokens = try await services.tokenService.list(tenant: try context.requireTenant(), actor: try context.requirePrincipal())
        return try .json(page.page(tokens, key: AccountPages.tokenKey, APIModel.TokenBody.init))
    }

    /// Creates a personal access token; the secret is in this response only.
    @Sendable func createToken(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .manageOwnTokens)
        let body = try await request.decodeJSON(APIModel.CreateToken.self, context: context)
        let new = try TokenService.NewToken.validated(name: body.name, scopes: body.scopes, expiresInDays: body.expiresInDays)
        let (token, secret) = try await services.tokenService.create(tenant: try context.requireTenant(), actor: principal, new, clientIP: context.clientIP)
        return try .json(APIModel.CreatedTokenBody(token: .init(token), secret: secret), status: .created)
    }

    @Sendable func revokeToken(_ request: Request, context: AppRequestContext) async throws -> Response {
        let id = try uuidParameter("id", context, what: "Token")
        try await services.tokenService.revoke(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, clientIP: context.clientIP)
        return Response(status: .noContent)
    }

    @Sendable func listInvitations(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .inviteUsers)
        let page = try Pagination(request)
        let open = try await services.database.withTenant(try context.requireTenant().id) { try await services.identity.invitations.listOpen(on: $0) }
        return try .json(page.page(open, key: AdminPages.invitationKey, APIModel.InvitationBody.init))
    }

    /// Invites a person by email; returns the one-time acceptance link.
    @Sendable func createInvitation(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .inviteUsers)
        let body = try await request.decodeJSON(APIModel.CreateInvitation.self, context: context)
        let roles = (body.roles ?? ["developer"]).map(TenantRole.init(rawValue:))
        guard !roles.contains(where: { $0 == nil }) else { throw AppError.validation(["roles": "Roles are admin, provider, developer and finance."]) }
        var teamRole: TeamRole?
        if let text = body.teamRole {
            guard let role = TeamRole(rawValue: text) else { throw AppError.validation(["team_role": "Choose owner, admin or member."]) }
            teamRole = role
        }
        let (invitation, token) = try await services.identity.invite(
            tenant: try context.requireTenant(), actor: principal, email: body.email, roles: Set(roles.compactMap { $0 }), teamID: body.teamId,
            teamRole: teamRole, clientIP: context.clientIP)
        let link = services.publicBase(try context.requireTenant()) + "/invitations/" + token
        return try .json(APIModel.CreatedInvitationBody(invitation: .init(invitation), acceptUrl: link), status: .created)
    }

    /// The audit log, newest first (admins).
    @Sendable func listAuditEvents(_ request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        try Policy.authorize(principal, .viewAuditLog)
        let page = try Pagination(request)
        var before: UUID?
        if let cursor = page.cursor {
            guard let id = UUID(uuidString: cursor) else { throw AppError.badRequest("cursor is not valid.", fields: ["cursor": "invalid"]) }
            before = id
        }
        let tenant = try context.requireTenant()
        return try .json(
            try await page.load(key: { $0.id.uuidString.lowercased() }, APIModel.AuditEventBody.init) { _, limit in
                try await services.database.withTenant(tenant.id) { try await services.identity.audit.list(before: before, limit: limit, on: $0) }
            })
    }

    private func uuidParameter(_ name: String, _ context: AppRequestContext, what: String) throws -> UUID {
        guard let id = context.parameters.get(name).flatMap(UUID.init(uuidString:)) else { throw AppError.notFound(what) }
        return id
    }
}
