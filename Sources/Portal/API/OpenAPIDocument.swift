import Billing
import Foundation
import Gateway

/// The OpenAPI 3.1 documents served at `/t/{slug}/api/v1/openapi.json` and `/api/v1/openapi.json`.
///
/// Built from Swift values so that shared pieces (problem responses, pagination, schemas) are
/// written once. `make test` runs schemathesis against the live server with these documents, so
/// they must stay true to the handlers in TenantAPI and PlatformAPI.
enum OpenAPIDocument {
    static func tenant(serverURL: String, tenantName: String) -> String {
        let document: [String: Any] = [
            "openapi": "3.1.0",
            "info": [
                "title": "Tollgate tenant API — \(tenantName)",
                "version": "1.0.0",
                "description": "Automation API of one Tollgate marketplace. Authenticate with a personal access token: `Authorization: Bearer tgp_...`.",
            ],
            "servers": [["url": serverURL]],
            "security": [["bearerAuth": []]],
            "paths": tenantPaths,
            "components": components(extraSchemas: tenantSchemas),
        ]
        return serialize(document)
    }

    static func platform(serverURL: String) -> String {
        let document: [String: Any] = [
            "openapi": "3.1.0",
            "info": [
                "title": "Tollgate platform API", "version": "1.0.0",
                "description": "Installation-level endpoints. Authenticate with a platform token: `Authorization: Bearer tgx_...`.",
            ],
            "servers": [["url": serverURL]],
            "security": [["bearerAuth": []]],
            "paths": [
                "/tenants": [
                    "get": operation(
                        "listTenants", "List tenants", tag: "Tenants", parameters: pageParameters,
                        ok: ("200", ref("TenantPage")), errors: ["400", "401"]),
                    "post": operation(
                        "createTenant", "Create a tenant", tag: "Tenants", body: ref("CreateTenant"), ok: ("201", ref("Tenant")),
                        errors: ["400", "401", "409", "415", "422"]),
                ],
                "/tenants/{slug}": [
                    "get": operation(
                        "getTenant", "A tenant", tag: "Tenants", parameters: [tenantSlugParameter], ok: ("200", ref("Tenant")), errors: ["401", "404"]),
                    "patch": operation(
                        "updateTenant", "Change a tenant's name, sign-up policy or custom host (null removes it); slug and currency stay",
                        tag: "Tenants", parameters: [tenantSlugParameter], body: ref("UpdateTenant"), ok: ("200", ref("Tenant")),
                        errors: ["400", "401", "404", "409", "415", "422"]),
                ],
                "/tenants/{slug}/admin-invitations": [
                    "post": operation(
                        "inviteTenantAdmin", "Invite a tenant's first administrator (refused once it has one); the link is shown once",
                        tag: "Tenants", parameters: [tenantSlugParameter], body: ref("InviteAdmin"), ok: ("201", ref("CreatedInvitation")),
                        errors: ["400", "401", "404", "409", "415", "422"])
                ],
                "/tenants/{slug}/certificate": [
                    "get": operation(
                        "getTenantCertificate", "The TLS certificate served for the tenant's custom host (never its key)", tag: "Tenants",
                        parameters: [tenantSlugParameter], ok: ("200", ref("TenantCertificate")), errors: ["401", "404"]),
                    "put": operation(
                        "storeTenantCertificate",
                        "Store or replace the certificate chain and private key for the tenant's custom host: checked (it parses, the key belongs to it, it is current, it names the host, serverAuth), the key sealed and never shown again; TLS listeners serve it within seconds",
                        tag: "Tenants", parameters: [tenantSlugParameter], body: ref("TenantCertificateUpload"), ok: ("200", ref("TenantCertificate")),
                        errors: ["400", "401", "404", "413", "415", "422"]),
                    "delete": operation(
                        "removeTenantCertificate", "Remove it (the host is then served the installation's certificates)", tag: "Tenants",
                        parameters: [tenantSlugParameter], ok: ("204", nil), errors: ["401", "404"]),
                ],
            ],
            "components": components(extraSchemas: [
                "TenantCertificate": object([
                    "host": ["type": ["string", "null"]], "names": ["type": "array", "items": string], "not_after": dateTime, "updated_at": dateTime,
                    "serves_current_host": ["type": "boolean"],
                ]),
                "TenantCertificateUpload": input(
                    [
                        "certificate_pem": ["type": "string", "maxLength": 65536, "description": "PEM chain, the host's certificate first"],
                        "private_key_pem": ["type": "string", "maxLength": 65536, "description": "PEM private key, unencrypted"],
                    ], required: ["certificate_pem", "private_key_pem"]),
                "Tenant": tenantSchema, "TenantPage": page(of: "Tenant"), "CreateTenant": createTenantSchema,
                "UpdateTenant": [
                    "type": "object", "additionalProperties": false,
                    "properties": [
                        "name": ["type": "string", "minLength": 1, "maxLength": 200],
                        "signup_policy": ["type": "string", "enum": Tenant.SignupPolicy.allCases.map(\.rawValue)],
                        "custom_host": ["type": ["string", "null"], "maxLength": 253],
                    ],
                ],
                "InviteAdmin": input(["email": ["type": "string", "format": "email", "maxLength": 254]], required: ["email"]),
                "Invitation": object(
                    [
                        "id": uuid, "email": string, "roles": ["type": "array", "items": ["type": "string"]], "team_id": uuid, "team_role": string,
                        "expires_at": dateTime,
                    ], optional: ["team_id", "team_role"]),
                "CreatedInvitation": object(["invitation": ref("Invitation"), "accept_url": string]),
            ]),
        ]
        return serialize(document)
    }

    // MARK: Paths

    private static var tenantSlugParameter: [String: Any] {
        pathParameter("slug", ["type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"], "Tenant slug")
    }

    private static var tenantPaths: [String: Any] {
        let teamParameter = pathParameter("team", ["type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"], "Team slug")
        let userParameter = pathParameter("user", ["type": "string", "format": "uuid"], "User id")
        let apiParameter = pathParameter("api", ["type": "string", "format": "uuid"], "API id")
        let subscriptionParameter = pathParameter("subscription", ["type": "string", "format": "uuid"], "Subscription id")
        let webhookParameter = pathParameter("webhook", ["type": "string", "format": "uuid"], "Webhook endpoint id")
        let deliveryParameter = pathParameter("delivery", ["type": "string", "format": "uuid"], "Delivery id")
        let appParameter = pathParameter("app", ["type": "string", "format": "uuid"], "App id")
        let planParameter = pathParameter("plan", ["type": "string", "format": "uuid"], "Plan version id")
        return [
            "/me": ["get": operation("getMe", "The caller", tag: "Identity", ok: ("200", ref("Me")), errors: ["401"])],
            "/users": [
                "get": operation(
                    "listUsers", "List users (admin, finance)", tag: "Users", parameters: pageParameters, ok: ("200", ref("UserPage")),
                    errors: ["400", "401", "403"])
            ],
            "/users/{user}/roles": [
                "put": operation(
                    "setUserRoles", "Replace a user's tenant roles (admin)", tag: "Users", parameters: [userParameter], body: ref("SetRoles"),
                    ok: ("200", ref("User")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/teams": [
                "get": operation(
                    "listTeams", "List teams", tag: "Teams", parameters: pageParameters, ok: ("200", ref("TeamPage")), errors: ["400", "401", "403"]),
                "post": operation(
                    "createTeam", "Create a team (caller becomes owner)", tag: "Teams", body: ref("CreateTeam"), ok: ("201", ref("Team")),
                    errors: ["400", "401", "403", "409", "415", "422"]),
            ],
            "/teams/{team}": [
                "get": operation(
                    "getTeam", "A team", tag: "Teams", parameters: [teamParameter], ok: ("200", ref("Team")), errors: ["401", "403", "404"])
            ],
            "/teams/{team}/members": [
                "get": operation(
                    "listTeamMembers", "Members of a team, by email", tag: "Teams", parameters: [teamParameter] + pageParameters, ok: ("200", ref("MemberPage")),
                    errors: ["400", "401", "403", "404"]),
                "post": operation(
                    "addTeamMember", "Add a tenant member to a team", tag: "Teams", parameters: [teamParameter], body: ref("AddMember"),
                    ok: ("201", ref("Member")), errors: ["400", "401", "403", "404", "409", "415", "422"]),
            ],
            "/teams/{team}/members/{user}": [
                "put": operation(
                    "setTeamMember", "Change a member's team role", tag: "Teams", parameters: [teamParameter, userParameter], body: ref("SetMember"),
                    ok: ("200", ref("Member")), errors: ["400", "401", "403", "404", "409", "415", "422"]),
                "delete": operation(
                    "removeTeamMember", "Remove a member from a team", tag: "Teams", parameters: [teamParameter, userParameter], ok: ("204", nil),
                    errors: ["401", "403", "404", "409"]),
            ],
            "/tokens": [
                "get": operation(
                    "listTokens", "Your personal access tokens, newest first", tag: "Tokens", parameters: pageParameters, ok: ("200", ref("TokenPage")),
                    errors: ["400", "401", "403"]),
                "post": operation(
                    "createToken", "Create a personal access token (secret shown once)", tag: "Tokens", body: ref("CreateToken"),
                    ok: ("201", ref("CreatedToken")), errors: ["400", "401", "403", "415", "422"]),
            ],
            "/tokens/{id}": [
                "delete": operation(
                    "revokeToken", "Revoke one of your tokens", tag: "Tokens",
                    parameters: [pathParameter("id", ["type": "string", "format": "uuid"], "Token id")], ok: ("204", nil),
                    errors: ["401", "403", "404"])
            ],
            "/invitations": [
                "get": operation(
                    "listInvitations", "Open invitations (admin), by email", tag: "Users", parameters: pageParameters, ok: ("200", ref("InvitationPage")),
                    errors: ["400", "401", "403"]),
                "post": operation(
                    "createInvitation", "Invite a person (admin); returns a one-time link", tag: "Users", body: ref("CreateInvitation"),
                    ok: ("201", ref("CreatedInvitation")), errors: ["400", "401", "403", "409", "415", "422"]),
            ],
            "/apis": [
                "get": operation(
                    "listAPIs", "Catalog entries visible to the caller", tag: "Catalog", parameters: pageParameters, ok: ("200", ref("APIPage")),
                    errors: ["400", "401", "403"]),
                "post": operation(
                    "createAPI", "Create a draft API version (provider team admins)", tag: "Catalog", body: ref("CreateAPI"), ok: ("201", ref("API")),
                    errors: ["400", "401", "403", "409", "415", "422"]),
            ],
            "/apis/{api}": [
                "get": operation(
                    "getAPI", "One API version", tag: "Catalog", parameters: [apiParameter], ok: ("200", ref("API")), errors: ["401", "403", "404"]),
                "patch": operation(
                    "updateAPI", "Change name, description, visibility, allowed teams, upstream targets, their CA bundle or upstream protocol (absent fields stay)", tag: "Catalog",
                    parameters: [apiParameter], body: ref("UpdateAPI"), ok: ("200", ref("API")), errors: ["400", "401", "403", "404", "415", "422"]),
            ],
            "/apis/{api}/openapi": [
                "get": documentDownload(apiParameter),
                "put": documentUpload(apiParameter),
                "delete": operation(
                    "deleteAPIDocument", "Remove the API version's OpenAPI document", tag: "Catalog", parameters: [apiParameter], ok: ("204", nil),
                    errors: ["401", "403", "404"]),
            ],
            "/apis/{api}/descriptor-set": [
                "get": operation(
                    "getDescriptorSet", "The gRPC API version's protobuf descriptor set: its services and the operations HTTP/JSON clients can call",
                    tag: "Catalog", parameters: [apiParameter], ok: ("200", ref("DescriptorSet")), errors: ["401", "403", "404"]),
                "put": descriptorSetUpload(apiParameter),
                "delete": operation(
                    "deleteDescriptorSet", "Remove the descriptor set: HTTP/1.1 calls to the gRPC API are answered 505 again", tag: "Catalog",
                    parameters: [apiParameter], ok: ("204", nil), errors: ["401", "403", "404"]),
            ],
            "/apis/{api}/upstream-client-certificate": [
                "put": operation(
                    "setUpstreamClientCertificate",
                    "Set the client certificate and key the gateway shows the API's https:// and grpcs:// targets (upstream mutual TLS); the key is stored sealed and never returned",
                    tag: "Catalog", parameters: [apiParameter], body: ref("ClientCertificate"), ok: ("200", ref("API")),
                    errors: ["400", "401", "403", "404", "415", "422"]),
                "delete": operation(
                    "removeUpstreamClientCertificate", "Remove the upstream client certificate and its key", tag: "Catalog", parameters: [apiParameter],
                    ok: ("200", ref("API")), errors: ["401", "403", "404"]),
            ],
            "/apis/{api}/gateway-policy": [
                "get": operation(
                    "getGatewayPolicy", "The API's gateway policy (provider team)", tag: "Catalog", parameters: [apiParameter],
                    ok: ("200", ref("GatewayPolicy")), errors: ["401", "403", "404"]),
                "put": operation(
                    "setGatewayPolicy", "Replace CORS, IP allow/deny ranges, accepted methods, body limit and sunset date", tag: "Catalog",
                    parameters: [apiParameter], body: ref("GatewayPolicy"), ok: ("200", ref("GatewayPolicy")),
                    errors: ["400", "401", "403", "404", "415", "422"]),
            ],
            "/apis/{api}/policies": [
                "get": operation(
                    "getPolicies", "The API's policy chain (provider team): the added policies, and every step in call order with the built-in ones",
                    tag: "Catalog", parameters: [apiParameter], ok: ("200", ref("PolicyChain")), errors: ["401", "403", "404"]),
                "put": operation(
                    "setPolicies",
                    "Replace the API's added policies as a whole (validated together, atomic, audited; 422 names each problem by JSON pointer in `errors`)",
                    tag: "Catalog", parameters: [apiParameter], body: ref("PolicyList"), ok: ("200", ref("PolicyChain")),
                    errors: ["400", "401", "403", "404", "413", "415", "422"]),
            ],
            "/apis/{api}/cache": [
                "delete": operation(
                    "purgeCache",
                    "Drop the API's kept responses on every gateway (provider team, audited); 202: the gateways act on a notification within moments",
                    tag: "Catalog", parameters: [apiParameter], ok: ("202", nil), errors: ["401", "403", "404"])
            ],
            "/apis/{api}/transitions": [
                "post": operation(
                    "transitionAPI", "Move an API through draft → published → deprecated → retired", tag: "Catalog", parameters: [apiParameter],
                    body: ref("APITransition"), ok: ("200", ref("API")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/apis/{api}/plans": [
                "get": operation(
                    "listPlans", "Current plans of an API, by name", tag: "Plans", parameters: [apiParameter] + pageParameters, ok: ("200", ref("PlanPage")),
                    errors: ["400", "401", "403", "404"]),
                "post": operation(
                    "createPlan", "Add a plan to an API (provider team admins)", tag: "Plans", parameters: [apiParameter], body: ref("PlanTerms"),
                    ok: ("201", ref("Plan")), errors: ["400", "401", "403", "404", "409", "415", "422"]),
            ],
            "/plans/{plan}": [
                "get": operation("getPlan", "One plan version", tag: "Plans", parameters: [planParameter], ok: ("200", ref("Plan")), errors: ["401", "403", "404"])
            ],
            "/plans/{plan}/versions": [
                "post": operation(
                    "revisePlan", "New terms as a new plan version; the old version keeps its subscribers", tag: "Plans",
                    parameters: [planParameter], body: ref("PlanTerms"), ok: ("201", ref("Plan")),
                    errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/apps": [
                "get": operation(
                    "listApps", "Apps of your teams, by name", tag: "Apps", parameters: pageParameters, ok: ("200", ref("AppPage")), errors: ["400", "401", "403"]),
                "post": operation(
                    "createApp", "Register an app (team admins); returns its first client secret once", tag: "Apps", body: ref("CreateApp"),
                    ok: ("201", ref("CreatedApp")), errors: ["400", "401", "403", "409", "415", "422"]),
            ],
            "/apps/{app}": [
                "get": operation("getApp", "An app and its credentials", tag: "Apps", parameters: [appParameter], ok: ("200", ref("AppDetail")), errors: ["401", "403", "404"])
            ],
            "/apps/{app}/client-secrets": [
                "post": operation(
                    "addClientSecret", "Add a client secret for rotation (at most two active)", tag: "Apps", parameters: [appParameter],
                    body: ref("CreateCredential"), ok: ("201", ref("CreatedCredential")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/apps/{app}/api-keys": [
                "post": operation(
                    "addAPIKey", "Create an API key (shown once)", tag: "Apps", parameters: [appParameter], body: ref("CreateCredential"),
                    ok: ("201", ref("CreatedCredential")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/apps/{app}/credentials/{credential}": [
                "delete": operation(
                    "revokeCredential", "Revoke a client secret or API key", tag: "Apps",
                    parameters: [appParameter, pathParameter("credential", ["type": "string", "format": "uuid"], "Credential id")], ok: ("204", nil),
                    errors: ["401", "403", "404"])
            ],
            "/apps/{app}/subscriptions": [
                "post": operation(
                    "subscribe", "Subscribe an app to a plan (active at once, or pending approval)", tag: "Subscriptions", parameters: [appParameter],
                    body: ref("CreateSubscription"), ok: ("201", ref("Subscription")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/subscriptions": [
                "get": operation(
                    "listSubscriptions", "Subscriptions of your apps and to the APIs you manage; those awaiting the provider first, then oldest first",
                    tag: "Subscriptions",
                    parameters: pageParameters + [
                        ["name": "state", "in": "query", "required": false, "schema": ["type": "string", "enum": SubscriptionState.allCases.map(\.rawValue)]],
                        [
                            "name": "awaiting", "in": "query", "required": false, "schema": ["type": "string", "enum": ["provider"]],
                            "description": "provider: the approval queue (new requests and plan changes waiting for approval)",
                        ],
                    ],
                    ok: ("200", ref("SubscriptionPage")), errors: ["400", "401", "403"])
            ],
            "/subscriptions/{subscription}": [
                "get": operation(
                    "getSubscription", "A subscription and its history", tag: "Subscriptions", parameters: [subscriptionParameter],
                    ok: ("200", ref("SubscriptionDetail")), errors: ["401", "403", "404"])
            ],
            "/subscriptions/{subscription}/actions": [
                "post": operation(
                    "actOnSubscription",
                    "approve, reject, suspend, resume, cancel, change_plan or withdraw_plan_change (a change to a plan that needs approval waits for the provider)", tag: "Subscriptions", parameters: [subscriptionParameter],
                    body: ref("SubscriptionAction"), ok: ("200", ref("Subscription")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/webhooks": [
                "get": operation(
                    "listWebhooks", "Webhook endpoints you manage (tenant admins: all)", tag: "Webhooks", parameters: pageParameters,
                    ok: ("200", ref("WebhookEndpointPage")), errors: ["400", "401", "403"]),
                "post": operation(
                    "createWebhook", "Register an endpoint for the tenant (admins, no team_id) or a team; the signing secret is shown once",
                    tag: "Webhooks", body: ref("CreateWebhook"), ok: ("201", ref("CreatedWebhook")), errors: ["400", "401", "403", "415", "422"]),
            ],
            "/webhooks/{webhook}": [
                "get": operation(
                    "getWebhook", "A webhook endpoint", tag: "Webhooks", parameters: [webhookParameter], ok: ("200", ref("WebhookEndpoint")),
                    errors: ["401", "403", "404"]),
                "delete": operation(
                    "deleteWebhook", "Remove an endpoint and its delivery log", tag: "Webhooks", parameters: [webhookParameter], ok: ("204", nil),
                    errors: ["401", "403", "404"]),
            ],
            "/webhooks/{webhook}/deliveries": [
                "get": operation(
                    "listWebhookDeliveries", "Delivery log, newest first", tag: "Webhooks", parameters: [webhookParameter] + pageParameters,
                    ok: ("200", ref("WebhookDeliveryPage")), errors: ["400", "401", "403", "404"])
            ],
            "/webhooks/{webhook}/deliveries/{delivery}": [
                "get": operation(
                    "getWebhookDelivery", "A delivery and every attempt", tag: "Webhooks", parameters: [webhookParameter, deliveryParameter],
                    ok: ("200", ref("WebhookDeliveryDetail")), errors: ["401", "403", "404"])
            ],
            "/webhooks/{webhook}/deliveries/{delivery}/redeliver": [
                "post": operation(
                    "redeliverWebhook", "Send the delivery's event again (as a new delivery)", tag: "Webhooks",
                    parameters: [webhookParameter, deliveryParameter], ok: ("202", ref("WebhookDelivery")), errors: ["401", "403", "404"])
            ],
            "/invoices": [
                "get": operation(
                    "listInvoices", "Invoices you may see (finance and admins: all; team owners and admins: their teams'), newest period first",
                    tag: "Finance", parameters: [periodQuery(required: false), uuidQuery("team_id", "Only this team"), statusQuery] + pageParameters,
                    ok: ("200", ref("InvoicePage")), errors: ["400", "401", "403"])
            ],
            "/invoices/{invoice}": [
                "get": operation(
                    "getInvoice", "An invoice and its lines", tag: "Finance",
                    parameters: [pathParameter("invoice", ["type": "string", "format": "uuid"], "Invoice id")], ok: ("200", ref("InvoiceDetail")),
                    errors: ["401", "403", "404"])
            ],
            "/invoices/{invoice}/void": [
                "post": operation(
                    "voidInvoice", "Void an issued invoice, with a reason (finance); closing the period issues its replacement; audited", tag: "Finance",
                    parameters: [pathParameter("invoice", ["type": "string", "format": "uuid"], "Invoice id")], body: ref("InvoiceCorrection"),
                    ok: ("200", ref("Invoice")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/invoices/{invoice}/reissue": [
                "post": operation(
                    "reissueInvoice", "Void an issued invoice and issue its replacement from current data (finance); answers the replacement; audited",
                    tag: "Finance", parameters: [pathParameter("invoice", ["type": "string", "format": "uuid"], "Invoice id")],
                    body: ref("InvoiceCorrection"), ok: ("200", ref("Invoice")), errors: ["400", "401", "403", "404", "409", "415", "422"])
            ],
            "/billing/refresh": [
                "post": operation(
                    "refreshDrafts", "Recompute a period's draft invoices now (finance); audited", tag: "Finance", body: ref("BillingPeriod"),
                    ok: ("200", ref("DraftRefresh")), errors: ["400", "401", "403", "415", "422"])
            ],
            "/billing/close": [
                "post": operation(
                    "closePeriod", "Issue a period's drafts, numbered, with the replacements of void invoices (finance); safe to repeat; audited",
                    tag: "Finance", body: ref("BillingPeriod"), ok: ("200", ref("PeriodClose")), errors: ["400", "401", "403", "415", "422"])
            ],
            "/usage": [
                "get": operation(
                    "listUsage", "Usage by UTC day × subscription (finance, admins), in pages; the CSV export has all rows at once", tag: "Finance",
                    parameters: dayQueries + ["team_id", "app_id", "api_id", "plan_id"].map { uuidQuery($0, "Only this \($0.dropLast(3))") } + pageParameters,
                    ok: ("200", ref("UsageRowPage")), errors: ["400", "401", "403"])
            ],
            "/analytics": [
                "get": operation(
                    "getAnalytics", "Calls, errors, latency percentiles, status classes, rejections and top apps for the tenant (finance, admins), an API (its team) or an app (its team)",
                    tag: "Analytics",
                    parameters: [
                        [
                            "name": "range", "in": "query", "required": false, "schema": ["type": "string", "enum": ["24h", "7d", "30d", "custom"]],
                            "description": "custom: from/to days",
                        ],
                    ] + dayQueries + [uuidQuery("api_id", "One API"), uuidQuery("app_id", "One app")],
                    ok: ("200", ref("Analytics")), errors: ["400", "401", "403", "404"])
            ],
            "/reconciliation": [
                "get": operation(
                    "getReconciliation", "Per subscription: calls answered by the gateways, events stored, rollups and invoiced units (finance, admins)",
                    tag: "Finance", parameters: [periodQuery(required: false)], ok: ("200", ref("Reconciliation")), errors: ["400", "401", "403"])
            ],
            "/audit-events": [
                "get": operation(
                    "listAuditEvents", "Audit log, newest first (admin)", tag: "Audit", parameters: pageParameters, ok: ("200", ref("AuditEventPage")),
                    errors: ["400", "401", "403"])
            ],
        ]
    }

    // MARK: Schemas

    private static var dateTime: [String: Any] { ["type": "string", "format": "date-time"] }
    private static var uuid: [String: Any] { ["type": "string", "format": "uuid"] }
    private static var string: [String: Any] { ["type": "string"] }
    private static var tenantRole: [String: Any] { ["type": "string", "enum": TenantRole.allCases.map(\.rawValue)] }
    private static var teamRole: [String: Any] { ["type": "string", "enum": TeamRole.allCases.map(\.rawValue)] }
    private static var scope: [String: Any] { ["type": "string", "enum": TokenScope.allCases.map(\.rawValue)] }

    private static var tenantSchemas: [String: Any] {
        [
            "User": object(
                ["id": uuid, "email": string, "display_name": string, "roles": ["type": "array", "items": tenantRole], "created_at": dateTime]),
            "UserPage": page(of: "User"),
            "Me": object([
                "user": ref("User"), "tenant": ref("Tenant"),
                "teams": ["type": "array", "items": object(["team_id": uuid, "role": teamRole])],
                "scopes": ["type": "array", "items": scope],
            ]),
            "Tenant": tenantSchema,
            "Team": object(["id": uuid, "slug": string, "name": string, "member_count": ["type": "integer", "minimum": 0], "created_at": dateTime]),
            "TeamPage": page(of: "Team"),
            "Member": object(["user_id": uuid, "email": string, "display_name": string, "role": teamRole, "joined_at": dateTime]),
            "MemberPage": page(of: "Member"),
            "Token": object(
                [
                    "id": uuid, "name": string, "prefix": string, "scopes": ["type": "array", "items": scope], "created_at": dateTime,
                    "expires_at": dateTime, "last_used_at": dateTime, "revoked_at": dateTime, "active": ["type": "boolean"],
                ], optional: ["expires_at", "last_used_at", "revoked_at"]),
            "TokenPage": page(of: "Token"),
            "CreatedToken": object(["token": ref("Token"), "secret": ["type": "string", "description": "Shown only in this response."]]),
            "Invitation": object(
                [
                    "id": uuid, "email": string, "roles": ["type": "array", "items": tenantRole], "team_id": uuid, "team_role": teamRole,
                    "expires_at": dateTime,
                ], optional: ["team_id", "team_role"]),
            "InvitationPage": page(of: "Invitation"),
            "CreatedInvitation": object(["invitation": ref("Invitation"), "accept_url": string]),
            "AuditEvent": object(
                [
                    "id": uuid, "at": dateTime, "actor": string, "action": string, "target": string, "client_ip": string,
                    "details": ["type": "object", "additionalProperties": string],
                ], optional: ["target", "client_ip"]),
            "AuditEventPage": page(of: "AuditEvent"),
            "Target": object([
                "url": [
                    "type": "string", "format": "uri",
                    "description": "http:// or https://; grpc:// or grpcs:// for a gRPC service reached over HTTP/2 (an API's targets are all gRPC or none)",
                ], "weight": ["type": "integer", "minimum": 1, "maximum": 100],
            ]),
            "API": object([
                "id": uuid, "team_id": uuid, "slug": string, "version": string, "name": string, "description": string, "base_path": string,
                "state": ["type": "string", "enum": APIState.allCases.map(\.rawValue)],
                "visibility": ["type": "string", "enum": APIProduct.Visibility.allCases.map(\.rawValue)],
                "allowed_team_ids": ["type": "array", "items": uuid], "targets": ["type": "array", "items": ref("Target")], "created_at": dateTime,
                "upstream_ca_pem": [
                    "type": "string", "description": "PEM certificates the gateway verifies the https:// targets against; absent: the system trust store",
                ],
                "upstream_client_certificate": object(["subject": string, "not_after": dateTime]),
                "upstream_protocol": ["type": "string", "enum": UpstreamProtocol.allCases.map(\.rawValue)],
            ], optional: ["upstream_ca_pem", "upstream_client_certificate"]),
            "ClientCertificate": input(
                [
                    "certificate_pem": [
                        "type": "string", "maxLength": UpstreamClientCertificate.maximumCharacters,
                        "description": "The client certificate (PEM), followed by its intermediates",
                    ],
                    "private_key_pem": [
                        "type": "string", "maxLength": UpstreamClientCertificate.maximumCharacters,
                        "description": "Its private key (PEM: PKCS#8, RSA or EC, unencrypted)",
                    ],
                ], required: ["certificate_pem", "private_key_pem"]),
            "APIPage": page(of: "API"),
            "APIDocument": object([
                "format": ["type": "string", "enum": ["json", "yaml"]], "title": string, "version": string, "openapi_version": string,
                "uploaded_at": dateTime,
            ]),
            "DescriptorSet": object([
                "sha256": string, "size_bytes": ["type": "integer", "minimum": 1], "services": ["type": "array", "items": string],
                "operations": [
                    "type": "array",
                    "items": object([
                        "grpc_path": string,
                        "kind": ["type": "string", "enum": ["unary", "server streaming", "client streaming", "bidirectional streaming"]],
                        "input_type": string, "output_type": string,
                        "translated": ["type": "boolean", "description": "Whether HTTP/JSON clients can call it (every kind: client and bidirectional streams as newline-delimited JSON)"],
                        "routes": [
                            "type": "array",
                            "description": "POST {base path}/{package.Service}/{Method}, then the method's google.api.http routes the gateway serves (a client or bidirectional stream's only when its path template has no variables and its body is \"*\")",
                            "items": object(["method": string, "path": string]),
                        ],
                        "not_routed": [
                            "type": "array", "description": "The method's google.api.http bindings the gateway does not serve, each with the reason",
                            "items": object(["method": string, "path": string, "reason": string]),
                        ],
                    ]),
                ],
                "uploaded_at": dateTime,
            ]),
            "UpdateAPI": input(
                [
                    "name": ["type": "string", "minLength": 1, "maxLength": 200], "description": ["type": "string", "maxLength": 20000],
                    "visibility": ["type": "string", "enum": APIProduct.Visibility.allCases.map(\.rawValue)],
                    "allowed_team_ids": ["type": "array", "items": uuid],
                    "targets": ["type": "array", "minItems": 1, "maxItems": NewAPI.maximumTargets, "items": ref("Target")],
                    "upstream_ca_pem": [
                        "type": "string", "maxLength": UpstreamCABundle.maximumCharacters,
                        "description": "PEM certificates (-----BEGIN CERTIFICATE-----) to verify https:// targets against instead of the system trust store; an empty string removes them",
                    ],
                    "upstream_protocol": [
                        "type": ["string", "null"], "enum": UpstreamProtocol.allCases.map(\.rawValue) + [NSNull()] as [Any],
                        "description": "How http:// and https:// targets are called: http1 (HTTP/1.1) or h2 (HTTP/2: h2c prior knowledge for http://, ALPN h2 for https://, a 502 when the upstream's TLS does not choose h2). Refused for gRPC targets, which are HTTP/2 anyway. Omit it to keep the stored protocol; null sets the default, http1 (JSON merge patch); an empty or unknown value is refused (422), not ignored",
                    ],
                ], required: []),
            "CORSPolicy": input(
                [
                    "allowed_origins": ["type": "array", "items": string, "minItems": 1, "maxItems": 50, "description": "Origins such as https://app.example.com, or *"],
                    "allowed_methods": ["type": "array", "items": string], "allowed_headers": ["type": "array", "items": string],
                    "exposed_headers": ["type": "array", "items": string], "allow_credentials": ["type": "boolean"],
                    "max_age_seconds": ["type": "integer", "minimum": 0, "maximum": 86400],
                ], required: ["allowed_origins"]),
            "GatewayPolicy": input(
                [
                    "cors": ref("CORSPolicy"),
                    "ip_allow": ["type": "array", "items": string, "maxItems": APIGatewayPolicy.maximumRanges, "description": "CIDR ranges; empty: everyone"],
                    "ip_deny": ["type": "array", "items": string, "maxItems": APIGatewayPolicy.maximumRanges, "description": "CIDR ranges; deny wins"],
                    "methods": ["type": "array", "items": ["type": "string", "enum": APIGatewayPolicy.knownMethods], "description": "empty: every method"],
                    "max_request_bytes": ["type": "integer", "minimum": 1, "maximum": 1 << 30], "sunset_at": dateTime,
                ], required: []),
            "ClientRateLimitConfig": [
                "type": "object", "additionalProperties": false, "required": ["requests", "per_seconds"],
                "description": "Calls per client before authentication: a token bucket refilled at requests per per_seconds, holding burst",
                "properties": [
                    "requests": ["type": "integer", "minimum": ClientRateLimitConfig.requestsRange.lowerBound, "maximum": ClientRateLimitConfig.requestsRange.upperBound],
                    "per_seconds": [
                        "type": "integer", "minimum": ClientRateLimitConfig.perSecondsRange.lowerBound, "maximum": ClientRateLimitConfig.perSecondsRange.upperBound,
                    ],
                    "burst": [
                        "type": "integer", "minimum": ClientRateLimitConfig.burstRange.lowerBound, "maximum": ClientRateLimitConfig.burstRange.upperBound,
                        "description": "default: requests",
                    ],
                    "key_header": [
                        "type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9._-]*$",
                        "description": "Key the limit by this header (e.g. X-Real-IP); calls without it are keyed by the client address",
                    ],
                    "max_clients": [
                        "type": "integer", "minimum": ClientRateLimitConfig.maxClientsRange.lowerBound, "maximum": ClientRateLimitConfig.maxClientsRange.upperBound,
                        "description": "Clients remembered per gateway (least recently seen forgotten first); default \(ClientRateLimitConfig.defaultMaxClients)",
                    ],
                ],
            ],
            "TransformFieldOps": [
                "type": "object", "additionalProperties": false,
                "description": "Applied in this order: remove, rename, set (replaces every field of the name), add (another field). Values may use $app_id, $client_id, $team_id, $plan, $request_id, $client_ip; $$ is a literal $",
                "properties": [
                    "remove": ["type": "array", "items": ["type": "string", "maxLength": TransformConfig.maximumNameBytes]],
                    "rename": ["type": "object", "additionalProperties": ["type": "string"], "description": "old name: new name"],
                    "set": ["type": "object", "additionalProperties": ["type": "string", "maxLength": TransformConfig.maximumValueBytes]],
                    "add": ["type": "object", "additionalProperties": ["type": "string", "maxLength": TransformConfig.maximumValueBytes]],
                ],
            ],
            "RequestTransformConfig": [
                "type": "object", "additionalProperties": false,
                "description": "request_transform: headers and query parameters the upstream hears, and a path rewrite. Hop-by-hop headers, Host, Content-Length, Transfer-Encoding, Authorization, X-API-Key, X-Request-Id, Forwarded, X-Forwarded-* and X-Tollgate-* are refused. At most \(TransformConfig.maximumOperations) operations",
                "properties": [
                    "headers": ref("TransformFieldOps"), "query": ref("TransformFieldOps"),
                    "path": [
                        "type": "object", "additionalProperties": false, "required": ["match", "replace"],
                        "description": "match: the path after the base path, {name} capturing a segment (e.g. /users/{id}); replace: the upstream path using the captures (e.g. /v2/people/{id}); other paths pass unchanged",
                        "properties": ["match": ["type": "string", "maxLength": PathRewrite.maximumBytes], "replace": ["type": "string", "maxLength": PathRewrite.maximumBytes]],
                    ],
                ],
            ],
            "ResponseTransformConfig": [
                "type": "object", "additionalProperties": false,
                "description": "response_transform: headers of the response the client gets. Hop-by-hop and framing headers, X-Request-Id, RateLimit*, Retry-After, Deprecation, Sunset, Cache-Status, Strict-Transport-Security, Access-Control-* and X-Tollgate-* are refused",
                "properties": ["headers": ref("TransformFieldOps")],
            ],
            "ResponseCacheConfig": [
                "type": "object", "additionalProperties": false, "required": ["ttl_seconds"],
                "description": "response_cache: GET/HEAD responses kept up to ttl_seconds, never longer than the upstream's Cache-Control (s-maxage, max-age)/Expires allow; no-store, private, no-cache, Set-Cookie, Vary beyond the configured headers and statuses other than 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501 are never kept. One per API",
                "properties": [
                    "ttl_seconds": ["type": "integer", "minimum": ResponseCacheConfig.ttlRange.lowerBound, "maximum": ResponseCacheConfig.ttlRange.upperBound],
                    "vary": [
                        "type": "array", "maxItems": ResponseCacheConfig.maximumVary, "items": ["type": "string", "maxLength": 64],
                        "description": "Request headers whose values key the cache (credentials refused)",
                    ],
                    "shared": ["type": "boolean", "description": "Every app gets the same responses; default false (kept per app)"],
                    "max_body_bytes": [
                        "type": "integer", "minimum": ResponseCacheConfig.maxBodyRange.lowerBound, "maximum": ResponseCacheConfig.maxBodyRange.upperBound,
                        "description": "Larger bodies are not kept; default \(ResponseCacheConfig.defaultMaxBodyBytes)",
                    ],
                ],
            ],
            "HTTPLogConfig": [
                "type": "object", "additionalProperties": false, "required": ["url"],
                "description": "http_log: every call of the API as one access-log record (JSON: request_id, client_ip, time, protocol, method, route without the query string, status, latency_ms, upstream_latency_ms, bytes_in, bytes_out, tenant_id, tenant, api_id, app_id, client_id, plan_id, rejection, cache), POSTed in NDJSON batches (Content-Type application/x-ndjson) to url; retried with exponential backoff and jitter on 5xx, 408, 429 and connection failures, dropped (and counted) after 5 attempts or when the gateway's buffer is full. No header, credential or query string is ever sent, and the policy holds no secret. One per API",
                "properties": [
                    "url": [
                        "type": "string", "format": "uri", "maxLength": HTTPLogConfig.maximumURLBytes,
                        "description": "The collector: http:// or https:// with a host; no credentials, query or fragment",
                    ],
                    "batch_size": [
                        "type": "integer", "minimum": HTTPLogConfig.batchSizeRange.lowerBound, "maximum": HTTPLogConfig.batchSizeRange.upperBound,
                        "description": "Records per POST at most; default \(HTTPLogConfig.defaultBatchSize)",
                    ],
                    "flush_seconds": [
                        "type": "integer", "minimum": HTTPLogConfig.flushSecondsRange.lowerBound, "maximum": HTTPLogConfig.flushSecondsRange.upperBound,
                        "description": "A record waits at most this long for its batch; default \(HTTPLogConfig.defaultFlushSeconds)",
                    ],
                ],
            ],
            "RequestValidationConfig": [
                "type": "object", "additionalProperties": false,
                "description": "request_validation: calls are checked against the API's uploaded OpenAPI document (3.0 or 3.1) before the upstream sees them. A path the document lacks is 404, a method 405 (with Allow), an undeclared content type 415, missing or wrong parameters and a JSON body (application/json, +json) that does not match its schema 400 — problem+json whose errors list the first \(RequestValidator.maximumViolations) violations, each with a pointer into the request (/body/items/0/price, /query/limit, /header/X-Trace, /path/id) and a detail. Refusals are metered as invalid_request, not billable. Saving it compiles the document: 422 when the API has none, is a gRPC API, or its document cannot be compiled. One per API",
                "properties": [
                    "validate": [
                        "type": "string", "enum": RequestValidationConfig.Scope.allCases.map(\.rawValue),
                        "description": "What is checked besides path and method; default both",
                    ],
                    "refuse_unknown_query": ["type": "boolean", "description": "Refuse query parameters the operation does not declare; default false"],
                ],
            ],
            "WebSocketConfig": [
                "type": "object", "additionalProperties": false, "required": ["idle_seconds"],
                "description": "websocket: limits of the API's WebSocket tunnels (HTTP/1.1 Upgrade and RFC 8441 extended CONNECT over HTTP/2), in place of the installation's TOLLGATE_WEBSOCKET_IDLE_SECONDS / TOLLGATE_WEBSOCKET_MAX_SECONDS. A tunnel closed by a limit is metered once, like any tunnel, with its bytes in/out and duration. One per API",
                "properties": [
                    "idle_seconds": [
                        "type": "integer", "minimum": WebSocketConfig.idleSecondsRange.lowerBound, "maximum": WebSocketConfig.idleSecondsRange.upperBound,
                        "description": "A tunnel with no byte either way for this long is closed",
                    ],
                    "max_seconds": [
                        "type": "integer", "minimum": WebSocketConfig.maxSecondsRange.lowerBound, "maximum": WebSocketConfig.maxSecondsRange.upperBound,
                        "description": "A tunnel open this long is closed even while busy; left out: the installation's maximum (if any) holds",
                    ],
                ],
            ],
            "Policy": [
                "type": "object", "additionalProperties": false, "required": ["kind", "config"],
                "properties": [
                    "kind": ["type": "string", "enum": APIPolicyKind.allCases.map(\.rawValue)],
                    "phase": ["type": "string", "enum": APIPolicyPhase.allCases.map(\.rawValue), "description": "The kind's phase; optional on input"],
                    "config": [
                        "description": "The kind's configuration: client_rate_limit ClientRateLimitConfig, request_transform RequestTransformConfig, response_transform ResponseTransformConfig, response_cache ResponseCacheConfig, http_log HTTPLogConfig, request_validation RequestValidationConfig, websocket WebSocketConfig",
                        "oneOf": [
                            ref("ClientRateLimitConfig"), ref("RequestTransformConfig"), ref("ResponseTransformConfig"), ref("ResponseCacheConfig"),
                            ref("HTTPLogConfig"), ref("RequestValidationConfig"), ref("WebSocketConfig"),
                        ],
                    ],
                ],
            ],
            "PolicyList": [
                "type": "object", "additionalProperties": false, "required": ["policies"],
                "properties": ["policies": ["type": "array", "maxItems": APIPolicyChain.maximumPolicies, "items": ref("Policy")]],
            ],
            "PolicyChain": object([
                "policies": ["type": "array", "items": ref("Policy")],
                "chain": [
                    "type": "array",
                    "items": object(
                        [
                            "phase": ["type": "string", "enum": APIPolicyPhase.allCases.map(\.rawValue)], "kind": string, "title": string, "summary": string,
                            "built_in": ["type": "boolean"], "enabled": ["type": "boolean"],
                            "index": ["type": "integer", "description": "Place in policies (added policies only)"],
                            "configured_by": ["type": "string", "description": "Where a built-in step is changed"],
                        ], optional: ["index", "configured_by"]),
                ],
            ]),
            "PlanTerms": input(
                [
                    "name": ["type": "string", "minLength": 1, "maxLength": 100],
                    "rate_per_second": ["type": "integer", "minimum": 1, "maximum": 1_000_000],
                    "burst": ["type": "integer", "minimum": 1, "maximum": 10_000_000],
                    "monthly_quota": ["type": "integer", "minimum": 1, "description": "Requests per calendar month; omit for unlimited."],
                    "per_minute": [
                        "type": "integer", "minimum": 1, "maximum": PlanTerms.maximumRequests,
                        "description": "Requests per UTC minute; omit for none. per_minute ≤ per_hour ≤ per_day ≤ monthly_quota",
                    ],
                    "per_hour": ["type": "integer", "minimum": 1, "maximum": PlanTerms.maximumRequests, "description": "Requests per UTC hour; omit for none"],
                    "per_day": ["type": "integer", "minimum": 1, "maximum": PlanTerms.maximumRequests, "description": "Requests per UTC day; omit for none"],
                    "cache_hits_billable": [
                        "type": "boolean",
                        "description": "Whether calls the gateway answers from an API's response cache are billable (and count against the quota); default true",
                    ],
                    "monthly_fee_minor": ["type": "integer", "minimum": 0, "description": "In minor units of the tenant's currency."],
                    "included_requests": ["type": "integer", "minimum": 0],
                    "tier_mode": ["type": "string", "enum": PlanTerms.TierMode.allCases.map(\.rawValue)],
                    "tiers": [
                        "type": "array", "minItems": 1, "maxItems": PlanTerms.maximumTiers,
                        "items": [
                            "type": "object", "required": ["unit_price_micros"],
                            "properties": [
                                "up_to": ["type": "integer", "minimum": 1, "description": "Inclusive bound; omit on the last tier."],
                                "unit_price_micros": ["type": "integer", "minimum": 0, "description": "Millionths of a minor unit per request."],
                            ],
                        ],
                    ],
                    "approval": ["type": "string", "enum": PlanTerms.Approval.allCases.map(\.rawValue)],
                    "visibility": ["type": "string", "enum": PlanTerms.Visibility.allCases.map(\.rawValue)],
                ],
                required: ["name", "rate_per_second", "burst", "monthly_fee_minor", "included_requests", "tier_mode", "tiers", "approval", "visibility"]),
            "Plan": object(
                [
                    "id": uuid, "api_id": uuid, "family_id": uuid, "version": ["type": "integer", "minimum": 1], "current": ["type": "boolean"],
                    "currency": string, "terms": ref("PlanTerms"), "created_at": dateTime, "superseded_at": dateTime,
                ], optional: ["superseded_at"]),
            "PlanPage": page(of: "Plan"),
            "App": object(
                ["id": uuid, "team_id": uuid, "name": string, "description": string, "callback_url": string, "client_id": string, "created_at": dateTime],
                optional: ["callback_url"]),
            "AppPage": page(of: "App"),
            "Subscription": object([
                "id": uuid, "app_id": uuid, "api_id": uuid, "plan_id": uuid, "state": ["type": "string", "enum": SubscriptionState.allCases.map(\.rawValue)],
                "app_name": string, "api_name": string, "api_version": string, "plan_name": string, "plan_version": ["type": "integer"],
                "created_at": dateTime, "updated_at": dateTime,
                "requested_plan_id": uuid, "requested_plan_name": string, "plan_change_requested_at": dateTime,
            ], optional: ["requested_plan_id", "requested_plan_name", "plan_change_requested_at"]),
            "SubscriptionPage": page(of: "Subscription"),
            "SubscriptionEvent": object(
                [
                    "event": string, "from_state": string, "to_state": string, "from_plan_id": uuid, "to_plan_id": uuid, "requested_plan_id": uuid,
                    "actor_side": ["type": "string", "enum": ["developer", "provider", "system"]], "actor": string, "reason": string, "at": dateTime,
                ], optional: ["from_state", "from_plan_id", "requested_plan_id", "actor", "reason"]),
            "SubscriptionDetail": object(["subscription": ref("Subscription"), "history": ["type": "array", "items": ref("SubscriptionEvent")]]),
            "WebhookEndpoint": object(
                [
                    "id": uuid, "team_id": uuid, "team_name": string, "url": ["type": "string", "format": "uri"], "description": string,
                    "events": ["type": "array", "items": ["type": "string", "enum": WebhookEventType.allCases.map(\.rawValue)]],
                    "secret_prefix": string, "created_at": dateTime,
                ], optional: ["team_id", "team_name"]),
            "Invoice": object(
                [
                    "id": uuid, "number": string, "team_id": uuid, "team_name": string, "period": string,
                    "status": ["type": "string", "enum": ["draft", "issued", "void"]], "currency": string,
                    "total": ["type": "string", "description": "Decimal in the major unit"], "total_minor": ["type": "integer"], "replaces": string,
                    "issued_at": dateTime, "updated_at": dateTime, "void_reason": string, "voided_at": dateTime, "voided_by": string,
                    "replaced_by": ["type": "string", "description": "Number of the invoice replacing this void one (\"draft\" until issued)"],
                ], optional: ["number", "replaces", "issued_at", "void_reason", "voided_at", "voided_by", "replaced_by"]),
            "InvoiceCorrection": input(["reason": ["type": "string", "minLength": 1, "maxLength": 500]], required: ["reason"]),
            "BillingPeriod": input(["period": ["type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"]], required: ["period"]),
            "DraftRefresh": object(["period": string, "drafts": ["type": "integer"]]),
            "PeriodClose": object(["period": string, "issued": ["type": "array", "items": string], "already_issued": ["type": "integer"]]),
            "InvoicePage": page(of: "Invoice"),
            "InvoiceLine": object([
                "position": ["type": "integer"], "subscription_id": uuid, "app": string, "api": string, "plan": string,
                "kind": ["type": "string", "enum": LineItem.Kind.allCases.map(\.rawValue)], "description": string, "quantity": ["type": "integer"],
                "unit": ["type": "string", "enum": ["day", "request"]], "unit_price_micros": ["type": "integer"], "amount": string, "amount_minor": ["type": "integer"],
            ]),
            "InvoiceDetail": object(["invoice": ref("Invoice"), "lines": ["type": "array", "items": ref("InvoiceLine")]]),
            "UsageRow": object(
                Dictionary(uniqueKeysWithValues: ["date", "team_id", "team", "app_id", "app", "api_id", "api", "api_version", "plan_id", "plan", "subscription_id"].map { ($0, string) })
                    .merging(
                        Dictionary(uniqueKeysWithValues: ["calls", "billable_calls", "rejected_calls", "server_errors", "bytes_in", "bytes_out"].map {
                            ($0, ["type": "integer"] as [String: Any])
                        })
                    ) { $1 }),
            "UsageRowPage": page(of: "UsageRow"),
            "Analytics": object(
                [
                    "from": dateTime, "to": dateTime, "bucket_seconds": ["type": "integer"],
                    "series": [
                        "type": "array",
                        "items": object([
                            "start": dateTime, "calls": ["type": "integer"], "billable": ["type": "integer"], "errors": ["type": "integer"],
                            "rejected": ["type": "integer"],
                        ]),
                    ],
                    "calls": ["type": "integer"], "billable": ["type": "integer"], "errors": ["type": "integer"], "error_rate": ["type": "number"],
                    "cache_hits": ["type": "integer", "description": "Calls answered from the gateway's response cache"],
                    "cache_hit_ratio": ["type": "number", "description": "cache_hits over the calls not refused by the gateway (0…1)"],
                    "latency_p50_us": ["type": "integer"], "latency_p95_us": ["type": "integer"], "latency_p99_us": ["type": "integer"],
                    "status_classes": ["type": "object", "additionalProperties": ["type": "integer"]],
                    "rejections": ["type": "object", "additionalProperties": ["type": "integer"]],
                    "top_apps": ["type": "array", "items": object(["app_id": uuid, "name": string, "calls": ["type": "integer"]])],
                ], optional: ["latency_p50_us", "latency_p95_us", "latency_p99_us"]),
            "Reconciliation": object(
                [
                    "period": string, "balanced": ["type": "boolean"], "unreplaced_voids": ["type": "array", "items": string],
                    "rows": [
                        "type": "array",
                        "items": object(
                            [
                                "subscription_id": uuid, "label": string, "answered": ["type": "integer"], "events": ["type": "integer"],
                                "rollup_calls": ["type": "integer"], "rollup_billable": ["type": "integer"], "invoiced": ["type": "integer"],
                                "differences": ["type": "array", "items": string],
                            ], optional: ["subscription_id", "invoiced"]),
                    ],
                ]),
            "WebhookEndpointPage": page(of: "WebhookEndpoint"),
            "CreatedWebhook": object(
                ["endpoint": ref("WebhookEndpoint"), "secret": ["type": "string", "description": "HMAC-SHA256 signing secret; shown only in this response."]]),
            "CreateWebhook": input(
                [
                    "url": ["type": "string", "maxLength": 2000], "team_id": uuid, "description": ["type": "string", "maxLength": 500],
                    "events": [
                        "type": "array", "items": ["type": "string", "enum": WebhookEventType.allCases.map(\.rawValue)],
                        "description": "Empty or absent: every event.",
                    ],
                ], required: ["url"]),
            "WebhookDelivery": object(
                [
                    "id": uuid, "event_id": uuid, "event_type": string, "state": ["type": "string", "enum": ["pending", "delivered", "failed"]],
                    "attempts": ["type": "integer"], "next_attempt_at": dateTime, "last_status": ["type": "integer"], "last_error": string,
                    "delivered_at": dateTime, "created_at": dateTime,
                ], optional: ["next_attempt_at", "last_status", "last_error", "delivered_at"]),
            "WebhookDeliveryPage": page(of: "WebhookDelivery"),
            "WebhookDeliveryDetail": object(
                [
                    "delivery": ref("WebhookDelivery"),
                    "attempts": [
                        "type": "array",
                        "items": object(
                            ["at": dateTime, "status": ["type": "integer"], "error": string, "duration_ms": ["type": "integer"]],
                            optional: ["status", "error"]),
                    ],
                ]),
            "CreateSubscription": input(["plan_id": uuid], required: ["plan_id"]),
            "SubscriptionAction": input(
                [
                    "action": ["type": "string", "enum": SubscriptionService.Action.allCases.map(\.rawValue)],
                    "reason": ["type": "string", "maxLength": 1000], "plan_id": uuid,
                ], required: ["action"]),
            "Credential": object(
                [
                    "id": uuid, "kind": ["type": "string", "enum": ["client_secret", "api_key"]], "name": string, "prefix": string,
                    "created_at": dateTime, "expires_at": dateTime, "revoked_at": dateTime, "active": ["type": "boolean"],
                ], optional: ["expires_at", "revoked_at"]),
            "AppDetail": object(["app": ref("App"), "credentials": ["type": "array", "items": ref("Credential")]]),
            "CreatedApp": object(["app": ref("App"), "credential": ref("Credential"), "secret": ["type": "string", "description": "Shown only in this response."]]),
            "CreatedCredential": object(["credential": ref("Credential"), "secret": ["type": "string", "description": "Shown only in this response."]]),
            "CreateApp": input(
                [
                    "team_id": uuid, "name": ["type": "string", "minLength": 1, "maxLength": 100], "description": ["type": "string", "maxLength": 2000],
                    "callback_url": ["type": "string", "format": "uri"],
                ], required: ["team_id", "name"]),
            "CreateCredential": input(
                ["name": ["type": "string", "maxLength": 100], "expires_in_days": ["type": "integer", "minimum": 1, "maximum": 3650]], required: []),
            "CreateAPI": input(
                [
                    "team_id": uuid, "name": ["type": "string", "minLength": 1, "maxLength": 200],
                    "slug": ["type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"],
                    "version": ["type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$"], "description": ["type": "string", "maxLength": 20000],
                    "base_path": ["type": "string", "pattern": "^(/[a-z0-9._~-]+)+$", "maxLength": 200],
                    "visibility": ["type": "string", "enum": APIProduct.Visibility.allCases.map(\.rawValue)],
                    "allowed_team_ids": ["type": "array", "items": uuid],
                    "targets": ["type": "array", "minItems": 1, "maxItems": NewAPI.maximumTargets, "items": ref("Target")],
                    "upstream_protocol": [
                        "type": "string", "enum": UpstreamProtocol.allCases.map(\.rawValue), "default": "http1",
                        "description": "How http:// and https:// targets are called: http1 (HTTP/1.1) or h2 (HTTP/2: h2c prior knowledge for http://, ALPN h2 for https://, a 502 when the upstream's TLS does not choose h2). Refused for gRPC targets, which are HTTP/2 anyway",
                    ],
                ], required: ["team_id", "name", "version", "base_path", "targets"]),
            "APITransition": input(
                ["transition": ["type": "string", "enum": APILifecycle.Transition.allCases.map(\.rawValue)]], required: ["transition"]),
            "CreateTeam": input(
                ["name": ["type": "string", "minLength": 1, "maxLength": 200], "slug": ["type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"]],
                required: ["name"]),
            "SetRoles": input(["roles": ["type": "array", "items": tenantRole, "uniqueItems": true]], required: ["roles"]),
            "AddMember": input(["email": ["type": "string", "format": "email"], "role": teamRole], required: ["email", "role"]),
            "SetMember": input(["role": teamRole], required: ["role"]),
            "CreateToken": input(
                [
                    "name": ["type": "string", "minLength": 1, "maxLength": 100],
                    "scopes": ["type": "array", "items": scope, "minItems": 1, "uniqueItems": true],
                    "expires_in_days": ["type": "integer", "minimum": 1, "maximum": PersonalAccessTokenRepository.maximumLifetimeDays],
                ], required: ["name", "scopes"]),
            "CreateInvitation": input(
                [
                    "email": ["type": "string", "format": "email"], "roles": ["type": "array", "items": tenantRole, "uniqueItems": true],
                    "team_id": uuid, "team_role": teamRole,
                ], required: ["email"]),
        ]
    }

    private static var tenantSchema: [String: Any] {
        object(
            [
                "id": uuid, "slug": string, "name": string, "currency": ["type": "string", "pattern": "^[A-Z]{3}$"],
                "signup_policy": ["type": "string", "enum": Tenant.SignupPolicy.allCases.map(\.rawValue)], "custom_host": string,
                "created_at": dateTime,
            ], optional: ["custom_host"])
    }

    private static var createTenantSchema: [String: Any] {
        input(
            [
                "slug": ["type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"], "name": ["type": "string", "minLength": 1, "maxLength": 200],
                "currency": ["type": "string", "enum": ISO4217.minorUnits.keys.sorted()],
                "signup_policy": ["type": "string", "enum": Tenant.SignupPolicy.allCases.map(\.rawValue)],
                "custom_host": ["type": "string", "format": "hostname"],
            ], required: ["slug", "name"])
    }

    // MARK: Building blocks

    private static func components(extraSchemas: [String: Any]) -> [String: Any] {
        var schemas = extraSchemas
        schemas["Problem"] = [
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": [
                "type": string, "title": string, "status": ["type": "integer"], "detail": string, "instance": string,
                "errors": ["type": "object", "additionalProperties": string, "description": "Field name → message."],
            ],
        ]
        return [
            "securitySchemes": ["bearerAuth": ["type": "http", "scheme": "bearer"]],
            "schemas": schemas,
        ]
    }

    private static let problemDescriptions: [String: String] = [
        "400": "Malformed request", "401": "Missing or invalid token", "403": "Not allowed", "404": "Not found", "409": "Conflict",
        "413": "Body too large", "415": "Body is not application/json", "422": "Validation failed",
    ]

    private static func operation(
        _ id: String, _ summary: String, tag: String, parameters: [[String: Any]] = [], body: [String: Any]? = nil,
        ok: (String, [String: Any]?), errors: [String]
    ) -> [String: Any] {
        var responses: [String: Any] = [:]
        if let schema = ok.1 {
            responses[ok.0] = ["description": "Success", "content": ["application/json": ["schema": schema]]]
        } else {
            responses[ok.0] = ["description": "Success"]
        }
        for code in errors {
            responses[code] = [
                "description": problemDescriptions[code] ?? "Error",
                "content": ["application/problem+json": ["schema": ref("Problem")]],
            ]
        }
        var op: [String: Any] = ["operationId": id, "summary": summary, "tags": [tag], "responses": responses]
        if !parameters.isEmpty { op["parameters"] = parameters }
        if let body { op["requestBody"] = ["required": true, "content": ["application/json": ["schema": body]]] }
        return op
    }

    /// Raw download: the body is the document as uploaded, JSON or YAML.
    private static func documentDownload(_ apiParameter: [String: Any]) -> [String: Any] {
        var op = operation(
            "getAPIDocument", "The API version's OpenAPI document as uploaded", tag: "Catalog", parameters: [apiParameter], ok: ("200", nil),
            errors: ["401", "403", "404"])
        var responses = op["responses"] as? [String: Any] ?? [:]
        responses["200"] = [
            "description": "The document",
            "content": ["application/json": ["schema": ["type": "object"]], "application/yaml": ["schema": ["type": "string"]]],
        ]
        op["responses"] = responses
        return op
    }

    /// Upload: a raw JSON or YAML body, validated as OpenAPI 3.0/3.1 before it is stored.
    private static func documentUpload(_ apiParameter: [String: Any]) -> [String: Any] {
        var op = operation(
            "putAPIDocument", "Upload (or replace) the API version's OpenAPI document, JSON or YAML, up to 2 MiB", tag: "Catalog",
            parameters: [apiParameter], ok: ("200", ref("APIDocument")), errors: ["400", "401", "403", "404", "413", "415", "422"])
        op["requestBody"] = [
            "required": true,
            "content": ["application/json": ["schema": ["type": "object"]], "application/yaml": ["schema": ["type": "string"]]],
        ]
        return op
    }

    /// Binary upload: the body is a serialized google.protobuf.FileDescriptorSet.
    private static func descriptorSetUpload(_ apiParameter: [String: Any]) -> [String: Any] {
        var op = operation(
            "putDescriptorSet",
            "Upload (or replace) a gRPC API version's protobuf descriptor set (`protoc --include_imports --descriptor_set_out`, or `buf build`), up to 4 MiB; "
                + "422 lists the problems (not a descriptor set, a referenced type missing, no service, a malformed google.api.http option, not a gRPC API)",
            tag: "Catalog", parameters: [apiParameter], ok: ("200", ref("DescriptorSet")), errors: ["400", "401", "403", "404", "413", "415", "422"])
        op["requestBody"] = [
            "required": true,
            "content": ["application/octet-stream": ["schema": ["type": "string", "format": "binary", "maxLength": APIDescriptorSet.maximumBytes]]],
        ]
        return op
    }

    private static var pageParameters: [[String: Any]] {
        [
            ["name": "limit", "in": "query", "required": false, "schema": ["type": "integer", "minimum": 1, "maximum": 100, "default": 50]],
            [
                "name": "cursor", "in": "query", "required": false, "schema": ["type": "string"],
                "description": "next_cursor from the previous page",
            ],
        ]
    }

    private static func uuidQuery(_ name: String, _ description: String) -> [String: Any] {
        ["name": name, "in": "query", "required": false, "schema": ["type": "string", "format": "uuid"], "description": description]
    }

    private static func periodQuery(required: Bool) -> [String: Any] {
        [
            "name": "period", "in": "query", "required": required, "schema": ["type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"],
            "description": "UTC calendar month, YYYY-MM" + (required ? "" : "; default: the current month (invoices: all periods)"),
        ]
    }

    private static var statusQuery: [String: Any] {
        ["name": "status", "in": "query", "required": false, "schema": ["type": "string", "enum": ["draft", "issued", "void"]]]
    }

    /// from (included) and to (excluded) as UTC days; default: the current month.
    private static var dayQueries: [[String: Any]] {
        ["from", "to"].map { ["name": $0, "in": "query", "required": false, "schema": ["type": "string", "format": "date"]] }
    }

    private static func pathParameter(_ name: String, _ schema: [String: Any], _ description: String) -> [String: Any] {
        ["name": name, "in": "path", "required": true, "schema": schema, "description": description]
    }

    private static func ref(_ name: String) -> [String: Any] { ["$ref": "#/components/schemas/\(name)"] }

    private static func object(_ properties: [String: Any], optional: Set<String> = []) -> [String: Any] {
        ["type": "object", "required": properties.keys.filter { !optional.contains($0) }.sorted(), "properties": properties]
    }

    private static func input(_ properties: [String: Any], required: [String]) -> [String: Any] {
        ["type": "object", "required": required, "properties": properties]
    }

    private static func page(of item: String) -> [String: Any] {
        [
            "type": "object", "required": ["items"],
            "properties": ["items": ["type": "array", "items": ref(item)], "next_cursor": ["type": ["string", "null"]]],
        ]
    }

    private static func serialize(_ document: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
