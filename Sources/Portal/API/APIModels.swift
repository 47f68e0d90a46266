import Foundation
import Gateway
import Hummingbird

/// JSON shapes of the `/api/v1` resources (snake_case on the wire; see the OpenAPI document).
enum APIModel {
    struct UserBody: Codable, Sendable {
        let id: UUID
        let email: String
        let displayName: String
        let roles: [String]
        let createdAt: Date
        init(_ user: User) {
            id = user.id
            email = user.email
            displayName = user.displayName
            roles = user.roles.map(\.rawValue).sorted()
            createdAt = user.createdAt
        }
    }

    struct MeBody: Codable, Sendable {
        let user: UserBody
        let tenant: TenantBody
        let teams: [MembershipBody]
        let scopes: [String]
    }

    struct MembershipBody: Codable, Sendable {
        let teamId: UUID
        let role: String
    }

    struct TenantBody: Codable, Sendable {
        let id: UUID
        let slug: String
        let name: String
        let currency: String
        let signupPolicy: String
        let customHost: String?
        let createdAt: Date
        init(_ tenant: Tenant) {
            id = tenant.id
            slug = tenant.slug
            name = tenant.name
            currency = tenant.currency
            signupPolicy = tenant.signupPolicy.rawValue
            customHost = tenant.customHost
            createdAt = tenant.createdAt
        }
    }

    struct TeamBody: Codable, Sendable {
        let id: UUID
        let slug: String
        let name: String
        let memberCount: Int
        let createdAt: Date
        init(_ team: Team) {
            id = team.id
            slug = team.slug
            name = team.name
            memberCount = team.memberCount
            createdAt = team.createdAt
        }
    }

    struct MemberBody: Codable, Sendable {
        let userId: UUID
        let email: String
        let displayName: String
        let role: String
        let joinedAt: Date
        init(_ member: TeamMember) {
            userId = member.userID
            email = member.email
            displayName = member.displayName
            role = member.role.rawValue
            joinedAt = member.joinedAt
        }
    }

    struct TokenBody: Codable, Sendable {
        let id: UUID
        let name: String
        let prefix: String
        let scopes: [String]
        let createdAt: Date
        let expiresAt: Date?
        let lastUsedAt: Date?
        let revokedAt: Date?
        let active: Bool
        init(_ token: PersonalAccessToken) {
            id = token.id
            name = token.name
            prefix = token.prefix
            scopes = token.scopes.map(\.rawValue).sorted()
            createdAt = token.createdAt
            expiresAt = token.expiresAt
            lastUsedAt = token.lastUsedAt
            revokedAt = token.revokedAt
            active = token.isActive
        }
    }

    struct CreatedTokenBody: Codable, Sendable {
        let token: TokenBody
        /// The secret, returned only in this response.
        let secret: String
    }

    struct InvitationBody: Codable, Sendable {
        let id: UUID
        let email: String
        let roles: [String]
        let teamId: UUID?
        let teamRole: String?
        let expiresAt: Date
        init(_ invitation: Invitation) {
            id = invitation.id
            email = invitation.email
            roles = invitation.roles.map(\.rawValue).sorted()
            teamId = invitation.teamID
            teamRole = invitation.teamRole?.rawValue
            expiresAt = invitation.expiresAt
        }
    }

    struct CreatedInvitationBody: Codable, Sendable {
        let invitation: InvitationBody
        /// One-time link to pass to the invitee.
        let acceptUrl: String
    }

    struct AuditEventBody: Codable, Sendable {
        let id: UUID
        let at: Date
        let actor: String
        let action: String
        let target: String?
        let clientIp: String?
        let details: [String: String]
        init(_ event: AuditEvent) {
            id = event.id
            at = event.at
            actor = event.actor
            action = event.action
            target = event.target
            clientIp = event.clientIP
            details = (try? JSONDecoder().decode([String: String].self, from: Data(event.details.utf8))) ?? [:]
        }
    }

    struct APIBody: Codable, Sendable {
        let id: UUID
        let teamId: UUID
        let slug: String
        let version: String
        let name: String
        let description: String
        let basePath: String
        let state: String
        let visibility: String
        let allowedTeamIds: [UUID]
        let targets: [UpstreamTarget]
        /// PEM certificates the gateway verifies https:// targets against (null: the system trust store).
        let upstreamCaPem: String?
        /// The client certificate shown to TLS targets (mutual TLS); its key is never returned.
        let upstreamClientCertificate: ClientCertificateSummary?
        /// `http1` or `h2` (how http:// and https:// targets are called).
        let upstreamProtocol: String
        let createdAt: Date
        init(_ api: APIProduct) {
            id = api.id
            teamId = api.teamID
            slug = api.slug
            version = api.version
            name = api.name
            description = api.description
            basePath = api.basePath
            state = api.state.rawValue
            visibility = api.visibility.rawValue
            allowedTeamIds = api.allowedTeamIDs
            targets = api.targets
            upstreamCaPem = api.upstreamCABundle
            upstreamClientCertificate = api.upstreamClientCertificatePEM.flatMap(ClientCertificateSummary.init(pem:))
            upstreamProtocol = api.upstreamProtocol.rawValue
            createdAt = api.createdAt
        }
    }

    struct ClientCertificateSummary: Codable, Sendable {
        let subject: String
        let notAfter: Date
        init?(pem: String) {
            guard let summary = UpstreamTLS.summary(clientCertificatePEM: pem) else { return nil }
            subject = summary.subject
            notAfter = summary.notAfter
        }
    }

    /// An upstream client certificate and its private key (PEM), set together.
    /// A tenant's custom-host certificate as the platform API shows it: never the key.
    struct TenantCertificateBody: Codable, Sendable {
        let host: String?
        let names: [String]
        let notAfter: Date
        let updatedAt: Date
        let servesCurrentHost: Bool
        init(_ info: TenantCertificateInfo, tenant: Tenant) {
            host = tenant.customHost
            names = info.names
            notAfter = info.notAfter
            updatedAt = info.updatedAt
            servesCurrentHost = info.servesCurrentHost
        }
    }

    struct ClientCertificateBody: Decodable, Sendable {
        let certificatePem: String
        let privateKeyPem: String
    }

    struct CreateAPI: Decodable, Sendable {
        let teamId: UUID
        let name: String
        let slug: String?
        let version: String
        let description: String?
        let basePath: String
        let visibility: String?
        let allowedTeamIds: [UUID]?
        let targets: [UpstreamTarget]
        let upstreamProtocol: String?
    }

    /// PATCH body: absent fields stay as they are.
    struct UpdateAPI: Decodable, Sendable {
        let name: String?
        let description: String?
        let visibility: String?
        let allowedTeamIds: [UUID]?
        let targets: [UpstreamTarget]?
        /// "" removes the bundle.
        let upstreamCaPem: String?
        /// Absent: the stored protocol stays; `null` puts the default (`http1`) back, as JSON merge
        /// patch reads null and as `custom_host: null` does on a tenant — rather than reading as
        /// absent and answering 200 with nothing changed.
        let upstreamProtocol: String??

        enum CodingKeys: String, CodingKey { case name, description, visibility, allowedTeamIds, targets, upstreamCaPem, upstreamProtocol }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decodeIfPresent(String.self, forKey: .name)
            description = try container.decodeIfPresent(String.self, forKey: .description)
            visibility = try container.decodeIfPresent(String.self, forKey: .visibility)
            allowedTeamIds = try container.decodeIfPresent([UUID].self, forKey: .allowedTeamIds)
            targets = try container.decodeIfPresent([UpstreamTarget].self, forKey: .targets)
            upstreamCaPem = try container.decodeIfPresent(String.self, forKey: .upstreamCaPem)
            upstreamProtocol = try container.decodePatch(String.self, forKey: .upstreamProtocol)
        }

        /// The protocol to set, as `APIChanges` takes it (nil: unchanged).
        var upstreamProtocolChange: String? { upstreamProtocol.map { $0 ?? UpstreamProtocol.http1.rawValue } }
    }

    /// An API's gateway policy, read and replaced as a whole.
    struct GatewayPolicyBody: Codable, Sendable {
        let cors: CORSPolicy?
        let ipAllow: [String]?
        let ipDeny: [String]?
        let methods: [String]?
        let maxRequestBytes: Int?
        let sunsetAt: Date?
        init(_ p: APIGatewayPolicy) {
            cors = p.cors
            ipAllow = p.ipAllow
            ipDeny = p.ipDeny
            methods = p.methods
            maxRequestBytes = p.maxRequestBytes
            sunsetAt = p.sunsetAt
        }
        var policy: APIGatewayPolicy {
            APIGatewayPolicy(cors: cors, ipAllow: ipAllow ?? [], ipDeny: ipDeny ?? [], methods: methods ?? [], maxRequestBytes: maxRequestBytes, sunsetAt: sunsetAt)
        }
    }

    /// `GET|PUT /apis/{id}/policies`: the added policies (what `PUT` takes back) and the whole
    /// chain in call order, built-in steps included.
    struct PolicyChainBody: Encodable, Sendable {
        struct PolicyBody: Encodable, Sendable {
            let kind: String
            let phase: String
            let config: JSONValue
        }
        struct StepBody: Encodable, Sendable {
            let phase: String
            let kind: String
            let title: String
            let summary: String
            let builtIn: Bool
            let enabled: Bool
            /// The policy's place in `policies`; absent for built-in steps.
            let index: Int?
            /// Where a built-in step is changed.
            let configuredBy: String?
        }
        let policies: [PolicyBody]
        let chain: [StepBody]

        init(api: APIProduct, policies: [APIPolicy]) {
            self.policies = policies.map { PolicyBody(kind: $0.kind.rawValue, phase: $0.phase.rawValue, config: $0.configJSON) }
            chain = APIPolicyChain.entries(builtIn: api.policy, policies: policies).map {
                StepBody(
                    phase: $0.phase.rawValue, kind: $0.kind, title: $0.title, summary: $0.summary, builtIn: $0.builtIn, enabled: $0.enabled, index: $0.index,
                    configuredBy: $0.builtIn ? ($0.kind == "plan_limits" ? "the subscription's plan" : "PUT /apis/{id}/gateway-policy") : nil)
            }
        }
    }

    /// A stored descriptor set as the JSON API shows it.
    struct DescriptorSetBody: Codable, Sendable {
        static let acceptedUploadTypes = ["application/octet-stream", "application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf"]

        struct Operation: Codable, Sendable {
            let grpcPath: String
            let kind: String
            let inputType: String
            let outputType: String
            let translated: Bool
            let routes: [Route]
            /// google.api.http bindings the gateway does not serve, with the reason.
            let notRouted: [NotRouted]
        }

        struct NotRouted: Codable, Sendable {
            let method: String
            let path: String
            let reason: String
        }

        struct Route: Codable, Sendable {
            let method: String
            let path: String
        }

        let sha256: String
        let sizeBytes: Int
        let services: [String]
        let operations: [Operation]
        let uploadedAt: Date

        init(_ stored: StoredDescriptorSet, basePath: String) {
            sha256 = stored.sha256
            sizeBytes = stored.content.count
            services = stored.services
            operations = (stored.schema.map { TranslatedOperation.list($0, basePath: basePath) } ?? []).map { operation in
                Operation(
                    grpcPath: operation.grpcPath, kind: operation.kind, inputType: operation.inputType, outputType: operation.outputType,
                    translated: operation.translated, routes: operation.routes.map { Route(method: $0.method, path: $0.path) },
                    notRouted: operation.unrouted.map { NotRouted(method: $0.method, path: $0.path, reason: $0.reason) })
            }
            uploadedAt = stored.uploadedAt
        }
    }

    struct DocumentBody: Codable, Sendable {
        let format: String
        let title: String
        let version: String
        let openapiVersion: String
        let uploadedAt: Date
        init(_ d: StoredAPIDocument) {
            format = d.format.rawValue
            title = d.title
            version = d.version
            openapiVersion = d.openAPIVersion
            uploadedAt = d.uploadedAt
        }
    }

    struct PlanBody: Codable, Sendable {
        let id: UUID
        let apiId: UUID
        let familyId: UUID
        let version: Int
        let current: Bool
        let currency: String
        let terms: PlanTerms
        let createdAt: Date
        let supersededAt: Date?
        init(_ plan: Plan, currency: String) {
            id = plan.id
            apiId = plan.apiID
            familyId = plan.familyID
            version = plan.version
            current = plan.isCurrent
            self.currency = currency
            terms = plan.terms
            createdAt = plan.createdAt
            supersededAt = plan.supersededAt
        }
    }

    struct AppBody: Codable, Sendable {
        let id: UUID
        let teamId: UUID
        let name: String
        let description: String
        let callbackUrl: String?
        let clientId: String
        let createdAt: Date
        init(_ app: ConsumerApp) {
            id = app.id
            teamId = app.teamID
            name = app.name
            description = app.description
            callbackUrl = app.callbackURL
            clientId = app.clientID
            createdAt = app.createdAt
        }
    }

    struct CredentialBody: Codable, Sendable {
        let id: UUID
        let kind: String
        let name: String
        let prefix: String
        let createdAt: Date
        let expiresAt: Date?
        let revokedAt: Date?
        let active: Bool
        init(_ credential: AppCredential) {
            id = credential.id
            kind = credential.kind.rawValue
            name = credential.name
            prefix = credential.prefix
            createdAt = credential.createdAt
            expiresAt = credential.expiresAt
            revokedAt = credential.revokedAt
            active = credential.isActive()
        }
    }

    struct AppDetailBody: Codable, Sendable {
        let app: AppBody
        let credentials: [CredentialBody]
    }

    struct CreatedAppBody: Codable, Sendable {
        let app: AppBody
        let credential: CredentialBody
        /// The client secret, returned only in this response.
        let secret: String
    }

    struct CreatedCredentialBody: Codable, Sendable {
        let credential: CredentialBody
        let secret: String
    }

    struct CreateApp: Decodable, Sendable {
        let teamId: UUID
        let name: String
        let description: String?
        let callbackUrl: String?
    }

    struct CreateCredential: Decodable, Sendable {
        let name: String?
        let expiresInDays: Int?
    }

    struct SubscriptionBody: Codable, Sendable {
        let id: UUID
        let appId: UUID
        let apiId: UUID
        let planId: UUID
        let state: String
        let appName: String
        let apiName: String
        let apiVersion: String
        let planName: String
        let planVersion: Int
        let createdAt: Date
        let updatedAt: Date
        /// A plan change waiting for the provider (the subscription stays on `planId` until then).
        let requestedPlanId: UUID?
        let requestedPlanName: String?
        let planChangeRequestedAt: Date?
        init(_ s: Subscription) {
            requestedPlanId = s.requestedPlan?.id
            requestedPlanName = s.requestedPlan?.name
            planChangeRequestedAt = s.requestedPlan?.at
            id = s.id
            appId = s.appID
            apiId = s.apiID
            planId = s.planID
            state = s.state.rawValue
            appName = s.appName
            apiName = s.apiName
            apiVersion = s.apiVersion
            planName = s.planName
            planVersion = s.planVersion
            createdAt = s.createdAt
            updatedAt = s.updatedAt
        }
    }

    struct SubscriptionEventBody: Codable, Sendable {
        let event: String
        let fromState: String?
        let toState: String
        let fromPlanId: UUID?
        let toPlanId: UUID
        let requestedPlanId: UUID?
        let actorSide: String
        let actor: String?
        let reason: String?
        let at: Date
        init(_ e: SubscriptionEvent) {
            event = e.event
            fromState = e.fromState?.rawValue
            toState = e.toState.rawValue
            fromPlanId = e.fromPlanID
            toPlanId = e.toPlanID
            requestedPlanId = e.requestedPlanID
            actorSide = e.actorSide.rawValue
            actor = e.actor
            reason = e.reason
            at = e.at
        }
    }

    struct SubscriptionDetailBody: Codable, Sendable {
        let subscription: SubscriptionBody
        let history: [SubscriptionEventBody]
    }

    struct CreateSubscription: Decodable, Sendable {
        let planId: UUID
    }

    struct SubscriptionAction: Decodable, Sendable {
        let action: String
        let reason: String?
        let planId: UUID?
    }

    struct APITransition: Decodable, Sendable {
        let transition: String
    }

    struct WebhookEndpointBody: Codable, Sendable {
        let id: UUID
        let teamId: UUID?
        let teamName: String?
        let url: String
        let description: String
        /// Empty: every event type.
        let events: [String]
        let secretPrefix: String
        let createdAt: Date
        init(_ e: WebhookEndpoint) {
            id = e.id
            teamId = e.teamID
            teamName = e.teamName
            url = e.url
            description = e.description
            events = e.events
            secretPrefix = e.secretPrefix
            createdAt = e.createdAt
        }
    }

    struct CreatedWebhookBody: Codable, Sendable {
        let endpoint: WebhookEndpointBody
        /// The HMAC signing secret; shown only in this response.
        let secret: String
    }

    struct WebhookDeliveryBody: Codable, Sendable {
        let id: UUID
        let eventId: UUID
        let eventType: String
        let state: String
        let attempts: Int
        let nextAttemptAt: Date?
        let lastStatus: Int?
        let lastError: String?
        let deliveredAt: Date?
        let createdAt: Date
        init(_ d: WebhookDelivery) {
            id = d.id
            eventId = d.eventID
            eventType = d.eventType
            state = d.state.rawValue
            attempts = d.attempts
            nextAttemptAt = d.state == .pending ? d.nextAttemptAt : nil
            lastStatus = d.lastStatus
            lastError = d.lastError
            deliveredAt = d.deliveredAt
            createdAt = d.createdAt
        }
    }

    struct WebhookAttemptBody: Codable, Sendable {
        let at: Date
        let status: Int?
        let error: String?
        let durationMs: Int
        init(_ a: WebhookAttempt) {
            at = a.at
            status = a.status
            error = a.error
            durationMs = a.durationMilliseconds
        }
    }

    struct WebhookDeliveryDetailBody: Codable, Sendable {
        let delivery: WebhookDeliveryBody
        let attempts: [WebhookAttemptBody]
    }

    struct CreateWebhook: Decodable, Sendable {
        let url: String
        let teamId: UUID?
        let description: String?
        let events: [String]?
    }

    struct Page<Item: Codable & Sendable>: Codable, Sendable {
        let items: [Item]
        let nextCursor: String?
    }

    // Request bodies

    struct CreateTeam: Decodable, Sendable {
        let name: String
        let slug: String?
    }

    struct SetRoles: Decodable, Sendable {
        let roles: [String]
    }

    struct SetMember: Decodable, Sendable {
        let role: String
    }

    struct AddMember: Decodable, Sendable {
        let email: String
        let role: String
    }

    struct CreateToken: Decodable, Sendable {
        let name: String
        let scopes: [String]
        let expiresInDays: Int?
    }

    struct CreateInvitation: Decodable, Sendable {
        let email: String
        let roles: [String]?
        let teamId: UUID?
        let teamRole: String?
    }

    /// PATCH body: absent fields stay; `custom_host: null` (or "") removes the custom host.
    struct UpdateTenant: Decodable, Sendable {
        let name: String?
        let signupPolicy: String?
        let customHost: String??

        enum CodingKeys: String, CodingKey { case name, signupPolicy, customHost }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decodeIfPresent(String.self, forKey: .name)
            signupPolicy = try container.decodeIfPresent(String.self, forKey: .signupPolicy)
            customHost = try container.decodePatch(String.self, forKey: .customHost)
        }
    }

    struct InviteAdmin: Decodable, Sendable {
        let email: String
    }

    struct CreateTenant: Decodable, Sendable {
        let slug: String
        let name: String
        let currency: String?
        let signupPolicy: String?
        let customHost: String?
    }
}

/// `limit` and `cursor` query parameters; cursors are opaque base64url strings.
struct Pagination: Sendable {
    let limit: Int
    let cursor: String?

    init(_ request: Request) throws {
        let query = request.uri.queryParameters
        if let text = query["limit"] {
            guard let value = Int(String(text)), (1...100).contains(value) else {
                throw AppError.badRequest("limit must be an integer from 1 to 100.", fields: ["limit": "1 to 100"])
            }
            limit = value
        } else {
            limit = 50
        }
        if let text = query["cursor"].map(String.init), !text.isEmpty {
            // U+0001 is the field separator of `SortKey` (the cursors of lists kept in memory)
            guard let bytes = Base64URL.decode(text), let decoded = String(bytes: bytes, encoding: .utf8),
                !TextInput.hasControlCharacters(decoded.replacingOccurrences(of: SortKey.separator, with: ""))
            else {
                throw AppError.badRequest("cursor is not valid; use next_cursor from a previous page.", fields: ["cursor": "invalid"])
            }
            cursor = decoded
        } else {
            cursor = nil
        }
    }

    /// The keyset position this request asks for.
    var page: PageRequest { PageRequest(position: .after(cursor), size: limit) }

    /// A page of a list the service answers whole, in `key` order, after the cursor; `next_cursor`
    /// only when more items follow.
    func page<T, Body: Codable & Sendable>(_ all: [T], key: (T) -> String, _ body: (T) -> Body) -> APIModel.Page<Body> {
        let page = ListPage.slice(all, self.page, key: key)
        return APIModel.Page(items: page.items.map(body), nextCursor: page.next)
    }

    /// A page of a list kept by SQL: `fetch(cursor, n)` answers up to `n` items after the cursor
    /// and is asked for one more than the page (as `ListPage.load`), so `next_cursor` is set only
    /// when more items follow — a list of exactly one page has none.
    func load<T, Body: Codable & Sendable>(
        key: (T) -> String, _ body: (T) -> Body, fetch: (String?, Int) async throws -> [T]
    ) async throws -> APIModel.Page<Body> {
        let page = try await ListPage<T>.load(self.page, key: key) { position, limit in
            guard case .after(let cursor) = position else { return [] }  // the API pages forward only
            return try await fetch(cursor, limit)
        }
        return APIModel.Page(items: page.items.map(body), nextCursor: page.next)
    }
}

extension KeyedDecodingContainer {
    /// A PATCH member that may be absent (`.none`: leave it), `null` (`.some(nil)`: clear it) or a value.
    func decodePatch<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T?? {
        contains(key) ? .some(try decodeIfPresent(type, forKey: key)) : .none
    }
}

extension Request {
    /// Decodes a JSON body with the API's conventions; malformed bodies are 400 problem+json.
    func decodeJSON<T: Decodable>(_ type: T.Type, context: AppRequestContext) async throws -> T {
        let contentType = headers[.contentType] ?? ""
        guard contentType.hasPrefix("application/json") else {
            throw AppError(status: .unsupportedMediaType, title: "Unsupported media type", detail: "Send the body as application/json.")
        }
        var request = self
        let body = try await request.collectBody(upTo: context.maxUploadSize)
        do {
            return try context.requestDecoder.decode(T.self, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            throw AppError.badRequest("The request body is not valid: \(APIDecoding.describe(error)).")
        }
    }
}

extension Response {
    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try APIJSON.encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
