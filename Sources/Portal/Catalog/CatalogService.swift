import Foundation
import Gateway
import Logging
import PostgresNIO

/// Catalog workflows shared by the HTML pages and the JSON API.
struct CatalogService: Sendable {
    let database: Database
    let apis: APIRepository
    let teams: TeamRepository
    let audit: AuditLog
    let documents: APIDocumentRepository
    let descriptorSets: APIDescriptorSetRepository
    let keySeal: BoundKeySeal

    /// The catalog as this principal (or an anonymous visitor) may see it.
    func list(tenant: Tenant, viewer: Principal?, after cursor: String?, limit: Int) async throws -> [APIProduct] {
        try await page(tenant: tenant, viewer: viewer, .after(cursor), limit: limit)
    }

    /// A keyset page (by `slug/version`) of the catalog as this viewer may see it; filtered in
    /// batches so a viewer who can see few APIs still gets full pages.
    func page(tenant: Tenant, viewer: Principal?, _ position: Keyset, limit: Int) async throws -> [APIProduct] {
        if let viewer { try Policy.authorize(viewer, .listTeams) }
        return try await database.withTenant(tenant.id) { connection in
            try await ListPage<APIProduct>.filtered(
                position, limit: limit, key: { $0.slug + "/" + $0.version }, include: { CatalogVisibility.canSee(viewer, $0) }
            ) { try await apis.page($0, limit: $1, on: connection) }
        }
    }

    func show(tenant: Tenant, viewer: Principal?, id: UUID) async throws -> APIProduct {
        let api = try await database.withTenant(tenant.id) { try await apis.find(id: id, on: $0) }
        guard let api, CatalogVisibility.canSee(viewer, api) else { throw AppError.notFound("API") }
        return api
    }

    func create(tenant: Tenant, actor: Principal, _ new: NewAPI, clientIP: String?) async throws -> APIProduct {
        try Policy.authorize(actor, .manageAPIs(team: new.teamID))
        return try await database.withTenant(tenant.id) { connection in
            guard try await teams.find(id: new.teamID, on: connection) != nil else { throw AppError.validation(["team_id": "No such team."]) }
            for team in new.allowedTeamIDs where try await teams.find(id: team, on: connection) == nil {
                throw AppError.validation(["allowed_team_ids": "No team with id \(team)."])
            }
            let api = try await apis.create(tenantID: tenant.id, new, actor: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiCreated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, on: connection)
            return api
        }
    }

    /// Moves an API through its lifecycle; illegal moves are 409 with the allowed ones named.
    func transition(tenant: Tenant, actor: Principal, id: UUID, _ transition: APILifecycle.Transition, clientIP: String?) async throws -> APIProduct {
        try await database.withTenant(tenant.id) { connection in
            guard let api = try await apis.find(id: id, on: connection), CatalogVisibility.canSee(actor, api) else { throw AppError.notFound("API") }
            try Policy.authorize(actor, .manageAPIs(team: api.teamID))
            let next: APIState
            do { next = try APILifecycle.apply(transition, to: api.state) } catch let refusal as APILifecycle.IllegalTransition {
                throw AppError.conflict(refusal.description)
            }
            guard try await apis.updateState(id: id, tenantID: tenant.id, from: api.state, to: next, actor: actor.user.id, on: connection) else {
                throw AppError.conflict("The API changed meanwhile; reload and try again.")
            }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiStateChanged, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["from": api.state.rawValue, "to": next.rawValue], on: connection)
            guard let updated = try await apis.find(id: id, on: connection) else { throw AppError.notFound("API") }
            return updated
        }
    }

    /// Edits name, description, visibility, allowed teams or upstream targets.
    func update(tenant: Tenant, actor: Principal, id: UUID, _ changes: APIChanges, clientIP: String?) async throws -> APIProduct {
        try changes.validate()
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            // the protocol and the targets are checked together, whichever of them changes
            if let problem = UpstreamProtocolChoice.problem(changes.parsedUpstreamProtocol ?? api.upstreamProtocol, targets: changes.targets ?? api.targets) {
                throw AppError.validation([changes.upstreamProtocol != nil ? "upstream_protocol" : "targets": problem.message])
            }
            for team in changes.allowedTeamIDs ?? [] where try await teams.find(id: team, on: connection) == nil {
                throw AppError.validation(["allowed_team_ids": "No team with id \(team)."])
            }
            try await apis.update(id: api.id, tenantID: tenant.id, changes, on: connection)
            var fields: [String] = []
            if changes.name != nil { fields.append("name") }
            if changes.description != nil { fields.append("description") }
            if changes.visibility != nil { fields.append("visibility") }
            if changes.allowedTeamIDs != nil { fields.append("allowed_teams") }
            if changes.targets != nil { fields.append("targets") }
            if changes.upstreamCABundle != nil { fields.append("upstream_ca_pem") }
            if changes.upstreamProtocol != nil { fields.append("upstream_protocol") }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": fields.joined(separator: " ")], on: connection)
            guard let updated = try await apis.find(id: id, on: connection) else { throw AppError.notFound("API") }
            return updated
        }
    }

    /// Sets the certificate and key the gateway shows TLS targets that ask for a client certificate
    /// (upstream mutual TLS); the key is sealed before it is stored and never shown again.
    func setClientCertificate(
        tenant: Tenant, actor: Principal, id: UUID, certificatePEM: String, privateKeyPEM: String, clientIP: String?
    ) async throws -> APIProduct {
        // who may change it is settled before what was sent is judged
        _ = try await database.withTenant(tenant.id) { try await managed(id, actor: actor, on: $0) }
        let pair: (certificate: String, key: String)
        switch UpstreamClientCertificate.validated(certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM) {
        case .success(let valid): pair = valid
        case .failure(let problem): throw AppError.validation([problem.field: problem.message])
        }
        return try await changeClientIdentity(tenant: tenant, actor: actor, id: id, certificate: pair.certificate, key: pair.key, clientIP: clientIP)
    }

    /// Removes the upstream client certificate and its key.
    func removeClientCertificate(tenant: Tenant, actor: Principal, id: UUID, clientIP: String?) async throws -> APIProduct {
        try await changeClientIdentity(tenant: tenant, actor: actor, id: id, certificate: nil, key: nil, clientIP: clientIP)
    }

    private func changeClientIdentity(tenant: Tenant, actor: Principal, id: UUID, certificate: String?, key: String?, clientIP: String?) async throws -> APIProduct {
        try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            let sealed = try key.map { try keySeal.seal($0, owner: api.id) }
            try await apis.setClientIdentity(id: api.id, certificatePEM: certificate, sealedKey: sealed, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": certificate == nil ? "upstream_client_certificate removed" : "upstream_client_certificate"],
                on: connection)
            guard let updated = try await apis.find(id: id, on: connection) else { throw AppError.notFound("API") }
            return updated
        }
    }

    /// Replaces the API's gateway policy (CORS, IP rules, methods, body limit, sunset date).
    func setPolicy(tenant: Tenant, actor: Principal, id: UUID, _ policy: APIGatewayPolicy, clientIP: String?) async throws -> APIProduct {
        let policy = try policy.validated()
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            try await apis.setPolicy(id: api.id, policy, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": "gateway_policy"], on: connection)
            guard let updated = try await apis.find(id: id, on: connection) else { throw AppError.notFound("API") }
            return updated
        }
    }

    /// The API's added policies and its built-in settings (its provider team only).
    func policies(tenant: Tenant, actor: Principal, id: UUID) async throws -> (APIProduct, [APIPolicy]) {
        try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            return (api, try await apis.policies(apiID: api.id, on: connection))
        }
    }

    /// Replaces the API's added policies as a whole, in one transaction, audited; gateways hear of
    /// it through the table's NOTIFY trigger when it commits.
    func setPolicies(tenant: Tenant, actor: Principal, id: UUID, _ policies: [APIPolicy], clientIP: String?) async throws -> (APIProduct, [APIPolicy]) {
        guard policies.count <= APIPolicyChain.maximumPolicies else {
            throw APIPolicyChain.invalid([PolicyConfigProblem("/policies", "An API takes at most \(APIPolicyChain.maximumPolicies) added policies.")])
        }
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            try await apis.lock(id: api.id, on: connection)
            let unfit = APIPolicyChain.grpcProblems(policies, api: api)
            if !unfit.isEmpty { throw APIPolicyChain.invalid(unfit) }
            if policies.contains(where: { $0.kind == .requestValidation }) {
                // the document must compile now; the gateways then read its JSON form
                switch APIPolicyChain.validationProblems(policies, api: api, document: try await documents.find(apiID: api.id, on: connection)) {
                case .success(let json?): try await documents.setJSON(apiID: api.id, json, on: connection)
                case .success(nil): break
                case .failure(let problems): throw APIPolicyChain.invalid(problems.list)
                }
            }
            try await apis.setPolicies(tenantID: tenant.id, apiID: api.id, policies, on: connection)
            try await connection.query("UPDATE apis SET updated_at = now() WHERE id = \(api.id)", logger: apis.logger)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": "policies", "policies": policies.map(\.kind.rawValue).joined(separator: " ")], on: connection)
            return (api, try await apis.policies(apiID: api.id, on: connection))
        }
    }

    /// Asks every gateway to drop the API's kept responses: a `cache_purge` notification on the
    /// gateways' channel, sent when the audited transaction commits.
    func purgeCache(tenant: Tenant, actor: Principal, id: UUID, clientIP: String?) async throws -> APIProduct {
        try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            let payload = "{\"table\":\"cache_purge\",\"tenant_id\":\"\(tenant.id.uuidString.lowercased())\",\"api_id\":\"\(api.id.uuidString.lowercased())\"}"
            try await connection.query("SELECT pg_notify('tollgate_config', \(payload))", logger: apis.logger)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": "cache_purge"], on: connection)
            return api
        }
    }

    /// Stores (or replaces) the API version's OpenAPI document after validating it.
    func uploadDocument(tenant: Tenant, actor: Principal, id: UUID, bytes: [UInt8], clientIP: String?) async throws -> StoredAPIDocument {
        guard bytes.count <= APIDocument.maximumBytes else { throw APIDocument.tooLarge }
        let document: APIDocument
        do { document = try APIDocument.parse(bytes) } catch let invalid as APIDocument.Invalid {
            throw AppError(
                status: .unprocessableContent, title: "Invalid OpenAPI document", detail: invalid.problems.joined(separator: " "),
                fieldErrors: ["document": invalid.problems.joined(separator: "\n")])
        }
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            try await documents.save(tenantID: tenant.id, apiID: api.id, document, uploadedBy: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiDocumentUploaded, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["title": document.title, "version": document.version], on: connection)
            guard let stored = try await documents.find(apiID: api.id, on: connection) else { throw AppError.notFound("Document") }
            return stored
        }
    }

    /// The document of an API the viewer can see (nil when none was uploaded).
    func document(tenant: Tenant, viewer: Principal?, id: UUID) async throws -> (APIProduct, StoredAPIDocument?) {
        try await database.withTenant(tenant.id) { connection in
            guard let api = try await apis.find(id: id, on: connection), CatalogVisibility.canSee(viewer, api) else { throw AppError.notFound("API") }
            return (api, try await documents.find(apiID: api.id, on: connection))
        }
    }

    func deleteDocument(tenant: Tenant, actor: Principal, id: UUID) async throws {
        try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            guard try await documents.delete(apiID: api.id, on: connection) else { throw AppError.notFound("Document") }
        }
    }

    /// Stores (or replaces) a gRPC API version's protobuf descriptor set after compiling it as the
    /// gateway will; gateways hear of it through the table's NOTIFY trigger when it commits.
    func uploadDescriptorSet(tenant: Tenant, actor: Principal, id: UUID, bytes: [UInt8], clientIP: String?) async throws -> (APIProduct, StoredDescriptorSet) {
        guard bytes.count <= APIDescriptorSet.maximumBytes else { throw APIDescriptorSet.tooLarge }
        let set: APIDescriptorSet
        do { set = try APIDescriptorSet.parse(bytes) } catch {
            throw AppError(
                status: .unprocessableContent, title: "Invalid descriptor set", detail: error.problems.joined(separator: " "),
                fieldErrors: ["descriptor_set": error.problems.joined(separator: "\n")])
        }
        return try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            guard api.isGRPC else {
                throw AppError(
                    status: .unprocessableContent, title: "Not a gRPC API",
                    detail: "A descriptor set describes a gRPC API: give this API grpc:// or grpcs:// targets first.",
                    fieldErrors: ["descriptor_set": "This API's targets are not grpc:// or grpcs://."])
            }
            try await descriptorSets.save(tenantID: tenant.id, apiID: api.id, set, uploadedBy: actor.user.id, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiDescriptorSetUploaded, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["sha256": set.sha256, "services": set.schema.services.map(\.name).joined(separator: " ")], on: connection)
            guard let stored = try await descriptorSets.find(apiID: api.id, on: connection) else { throw AppError.notFound("Descriptor set") }
            return (api, stored)
        }
    }

    /// The descriptor set of an API the viewer can see (nil when none was uploaded).
    func descriptorSet(tenant: Tenant, viewer: Principal?, id: UUID) async throws -> (APIProduct, StoredDescriptorSet?) {
        try await database.withTenant(tenant.id) { connection in
            guard let api = try await apis.find(id: id, on: connection), CatalogVisibility.canSee(viewer, api) else { throw AppError.notFound("API") }
            return (api, try await descriptorSets.find(apiID: api.id, on: connection))
        }
    }

    /// Removes the descriptor set: JSON clients get 505 again, as for any gRPC API.
    func deleteDescriptorSet(tenant: Tenant, actor: Principal, id: UUID, clientIP: String?) async throws {
        try await database.withTenant(tenant.id) { connection in
            let api = try await managed(id, actor: actor, on: connection)
            guard try await descriptorSets.delete(apiID: api.id, on: connection) else { throw AppError.notFound("Descriptor set") }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .apiUpdated, target: "\(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["fields": "descriptor_set", "descriptor_set": "removed"], on: connection)
        }
    }

    private func managed(_ id: UUID, actor: Principal, on connection: PostgresConnection) async throws -> APIProduct {
        guard let api = try await apis.find(id: id, on: connection), CatalogVisibility.canSee(actor, api) else { throw AppError.notFound("API") }
        try Policy.authorize(actor, .manageAPIs(team: api.teamID))
        return api
    }
}
