import Foundation
import Gateway
import Hummingbird

/// The API catalog: browsing for everyone, creation and lifecycle for provider teams.
struct CatalogPages: Sendable {
    let services: PortalServices

    /// Browsing works signed out (public APIs only).
    func addPublicRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/catalog", use: list)
        group.get("/catalog/apis/:api", use: show)
        group.get("/catalog/apis/:api/reference", use: reference)
        group.get("/catalog/apis/:api/openapi", use: download)
    }

    func addProviderRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/catalog/new", use: newForm)
        group.form("/catalog/apis", page: "/catalog/new", use: create)
        group.form("/catalog/apis/:api/transitions", page: "/catalog/apis/:api", use: transition)
        group.form("/catalog/apis/:api/settings", page: "/catalog/apis/:api", use: updateSettings)
        group.form("/catalog/apis/:api/policy", page: "/catalog/apis/:api", use: updatePolicy)
        group.form("/catalog/apis/:api/client-certificate", page: "/catalog/apis/:api", use: setClientCertificate)
        group.form("/catalog/apis/:api/client-certificate/remove", page: "/catalog/apis/:api", use: removeClientCertificate)
        group.form("/catalog/apis/:api/policies", page: "/catalog/apis/:api", use: editPolicies)
        group.form("/catalog/apis/:api/cache/purge", page: "/catalog/apis/:api", use: purgeCache)
        group.form("/catalog/apis/:api/descriptor-set", page: "/catalog/apis/:api", use: uploadDescriptorSet)
        group.form("/catalog/apis/:api/descriptor-set/remove", page: "/catalog/apis/:api", use: removeDescriptorSet)
        // GET of this address is the public download of the document
        group.post("/catalog/apis/:api/openapi", use: upload)
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let pageRequest = try PageRequest(request)
        let page = try await ListPage<APIProduct>.load(pageRequest, key: { $0.slug + "/" + $0.version }) {
            try await services.catalog.page(tenant: tenant, viewer: context.principal, $0, limit: $1)
        }
        let values: [String: Any] = [
            "pager": page.pager(path: context.base + "/catalog", size: pageRequest.size),
            "apis": page.items.map { api -> [String: Any] in
                [
                    "id": api.id.uuidString, "name": api.name, "version": api.version, "base_path": api.basePath, "state": api.state.rawValue,
                    "summary": Markdown.summary(api.description, limit: 200), "deprecated": api.state == .deprecated,
                    "not_listed": !api.state.acceptsNewSubscriptions,
                ]
            },
            "can_create": !providerTeams(context).isEmpty,
        ]
        return services.views.render("catalog", values, page: services.chrome("API catalog", context: context))
    }

    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await detailPage(context, notice: try await services.flashes.take(for: context)?.notice)
    }

    @Sendable func newForm(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await formPage(context, values: ["version": "v1", "weight": "1"])
    }

    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let form = context.form
        do {
            let urls = form.values("target_url").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let weights = form.values("target_weight")
            let targets = urls.enumerated().map { index, url in
                UpstreamTarget(url: url, weight: index < weights.count ? Int(weights[index]) ?? 0 : 1)
            }
            let new = try NewAPI.validated(
                teamID: form["team_id"].flatMap(UUID.init(uuidString:)), name: form["name"], slug: form["slug"], version: form["version"],
                description: form["description"], basePath: form["base_path"], visibility: form["visibility"],
                allowedTeamIDs: form.values("allowed_team_ids").compactMap(UUID.init(uuidString:)), targets: targets)
            let api = try await services.catalog.create(tenant: tenant, actor: principal, new, clientIP: context.clientIP)
            return .redirect(to: context.base + "/catalog/apis/" + api.id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .conflict {
            var values: [String: Any] = ["errors": error.fieldErrors, "error": error.detail]
            for key in ["name", "slug", "version", "description", "base_path"] { values[key] = form[key] ?? "" }
            values["target_url"] = form.values("target_url").first ?? ""
            values["weight"] = form.values("target_weight").first ?? "1"
            return try await formPage(context, values: values, status: error.status)
        }
    }

    @Sendable func transition(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        guard let transition = APILifecycle.Transition(rawValue: context.form["transition"] ?? "") else {
            throw AppError.badRequest("Unknown lifecycle step.")
        }
        do {
            _ = try await services.catalog.transition(tenant: tenant, actor: principal, id: id, transition, clientIP: context.clientIP)
        } catch let error as AppError where error.status == .conflict {
            return try await detailPage(context, error: error.detail, status: .conflict)
        }
        return .redirect(to: context.base + "/catalog/apis/" + id.uuidString)
    }

    /// Catalog settings: name, description, visibility, allowed teams, upstream targets (`URL weight` per line).
    @Sendable func updateSettings(_ request: Request, context: AppRequestContext) async throws -> Response {
        let form = context.form
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        do {
            let targets = try Self.parseTargets(form["targets"] ?? "")
            let visibility = APIProduct.Visibility(rawValue: form["visibility"] ?? "")
            _ = try await services.catalog.update(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id,
                APIChanges(
                    name: form["name"], description: form["description"], visibility: visibility,
                    allowedTeamIDs: form.values("allowed_team_ids").compactMap(UUID.init(uuidString:)), targets: targets,
                    upstreamCABundle: form["upstream_ca_pem"], upstreamProtocol: form["upstream_protocol"]),
                clientIP: context.clientIP)
            return try await saved("Settings saved.", id: id, context)
        } catch let error as AppError where error.status == .unprocessableContent {
            var typed: [String: Any] = [
                "description": form["description"] ?? "", "targets_text": form["targets"] ?? "", "upstream_ca_pem": form["upstream_ca_pem"] ?? "",
            ]
            typed["restricted"] = form["visibility"] == "restricted"
            // the submitted protocol when it is one; a tampered value shows the stored one (marked)
            if let chosen = form["upstream_protocol"].flatMap(UpstreamProtocol.init(rawValue:)) { typed["upstream_h2"] = chosen == .h2 }
            return try await detailPage(
                context, error: "The settings were not saved: correct the fields marked below.", typedSettings: typed, typedName: form["name"],
                settingsErrors: error.fieldErrors, status: error.status)
        }
    }

    /// Upstream mutual TLS: the certificate and key shown to the API's TLS targets. The key is
    /// never put back into a page, not even when the form comes back with a mistake marked.
    @Sendable func setClientCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        let form = context.form
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        do {
            _ = try await services.catalog.setClientCertificate(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, certificatePEM: form["client_certificate_pem"] ?? "",
                privateKeyPEM: form["client_private_key_pem"] ?? "", clientIP: context.clientIP)
            return try await saved("Client certificate saved: the gateway shows it to this API's TLS targets.", id: id, context)
        } catch let error as AppError where error.status == .unprocessableContent {
            return try await detailPage(
                context, error: "The client certificate was not saved: correct the fields marked below.",
                // the certificate text comes back to be corrected, unless a key was pasted into it
                typedSettings: ["client_certificate_pem": (form["client_certificate_pem"] ?? "").flatMapKeyless],
                settingsErrors: error.fieldErrors, status: error.status)
        }
    }

    @Sendable func removeClientCertificate(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        _ = try await services.catalog.removeClientCertificate(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, clientIP: context.clientIP)
        return try await saved("Client certificate removed.", id: id, context)
    }

    /// Gateway policy: CORS, IP ranges, methods, body limit, sunset date.
    @Sendable func updatePolicy(_ request: Request, context: AppRequestContext) async throws -> Response {
        let form = context.form
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        func lines(_ name: String) -> [String] { TextLines.items(form[name] ?? "") }
        do {
            var errors: [String: String] = [:]
            let origins = lines("cors_origins")
            var cors: CORSPolicy?
            if !origins.isEmpty {
                let maxAge = form["cors_max_age"].flatMap { $0.isEmpty ? nil : $0 }
                if let maxAge, Int(maxAge) == nil { errors["cors.max_age_seconds"] = "Give a number of seconds." }
                var policy = CORSPolicy(allowedOrigins: origins, allowCredentials: form["cors_credentials"] == "on", maxAgeSeconds: maxAge.flatMap { Int($0) } ?? 600)
                if !lines("cors_methods").isEmpty { policy.allowedMethods = lines("cors_methods") }
                if !lines("cors_headers").isEmpty { policy.allowedHeaders = lines("cors_headers") }
                policy.exposedHeaders = lines("cors_exposed")
                cors = policy
            }
            let sizeText = (form["max_request_bytes"] ?? "").trimmingCharacters(in: .whitespaces)
            if !sizeText.isEmpty && Int(sizeText) == nil { errors["max_request_bytes"] = "Give a number of bytes." }
            let sunsetText = (form["sunset_at"] ?? "").trimmingCharacters(in: .whitespaces)
            let sunset = sunsetText.isEmpty ? nil : DisplayDate.parseDay(sunsetText)
            if !sunsetText.isEmpty && sunset == nil { errors["sunset_at"] = "Use a date such as 2027-06-30." }
            let policy = APIGatewayPolicy(
                cors: cors, ipAllow: lines("ip_allow"), ipDeny: lines("ip_deny"), methods: form.values("methods"), maxRequestBytes: Int(sizeText),
                sunsetAt: sunset)
            // every problem at once: the form's own checks and the policy's
            do { _ = try policy.validated() } catch let invalid as AppError { errors.merge(invalid.fieldErrors) { mine, _ in mine } }
            guard errors.isEmpty else { throw AppError.validation(errors) }
            _ = try await services.catalog.setPolicy(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, policy, clientIP: context.clientIP)
            return try await saved("Gateway policy saved.", id: id, context)
        } catch let error as AppError where error.status == .unprocessableContent {
            // the page keeps what was typed and puts each message next to its field
            var typed: [String: Any] = [:]
            for key in ["cors_origins", "cors_methods", "cors_headers", "cors_exposed", "cors_max_age", "ip_allow", "ip_deny", "max_request_bytes", "sunset_at"] {
                typed[key] = form[key] ?? ""
            }
            typed["cors_credentials"] = form["cors_credentials"] == "on"
            let ticked = Set(form.values("methods"))
            typed["methods"] = APIGatewayPolicy.knownMethods.map { ["name": $0, "on": ticked.contains($0)] as [String: Any] }
            return try await detailPage(
                context, error: "The gateway policy was not saved: correct the fields marked below.", typedSettings: typed,
                policyErrors: Self.policyFieldErrors(error), status: error.status)
        }
    }

    /// The policy chain's forms: `op` add, save, remove, up or down, on the added policy at `index`.
    /// The change is applied to the stored list and the whole list saved, like `PUT /apis/{id}/policies`.
    @Sendable func editPolicies(_ request: Request, context: AppRequestContext) async throws -> Response {
        let form = context.form
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        let (_, current) = try await services.catalog.policies(tenant: tenant, actor: principal, id: id)
        let op = form["op"] ?? ""
        let index = form["index"].flatMap { Int($0) } ?? -1
        let edit: APIPolicyEdit
        switch op {
        case "add", "save":
            guard let kind = APIPolicyKind(rawValue: form["kind"] ?? "") else { throw AppError.badRequest("Unknown policy kind.") }
            switch Self.policy(kind, from: form) {
            case .success(let policy): edit = op == "add" ? .add(policy) : .replace(index, policy)
            case .failure(let errors):
                var typed: [String: Any] = ["errors": errors.fields]
                for field in Self.formFields(kind) { typed[field] = form[field] ?? "" }
                // credentials typed into a collector URL are refused and not shown again
                if kind == .httpLog, (form["url"] ?? "").contains("@") { typed["url"] = "" }
                typed.merge(Self.kindFlags(kind)) { $1 }
                return try await detailPage(
                    context, error: "The policy was not saved: correct the fields marked below.",
                    typedPolicy: (op == "add" ? nil : index, typed), status: .unprocessableContent)
            }
        case "remove": edit = .remove(index)
        case "up": edit = .moveUp(index)
        case "down": edit = .moveDown(index)
        default: throw AppError.badRequest("Unknown change to the policy chain.")
        }
        guard let next = edit.applied(to: current) else {
            var message = "The policy list changed meanwhile; nothing was saved. Check it and try again."
            if op == "add" && current.count >= APIPolicyChain.maximumPolicies {
                message = "An API takes at most \(APIPolicyChain.maximumPolicies) added policies; remove one first."
            } else if case .add(let policy) = edit, let duplicate = APIPolicy.duplicateProblem(policy.kind, in: current) {
                message = duplicate + " Nothing was saved."
            }
            return try await detailPage(context, error: message, status: .conflict)
        }
        do {
            _ = try await services.catalog.setPolicies(tenant: tenant, actor: principal, id: id, next, clientIP: context.clientIP)
        } catch let refused as AppError where refused.status == .unprocessableContent && (op == "add" || op == "save") && form["kind"] == APIPolicyKind.requestValidation.rawValue {
            // checked against the API (its document, gRPC): the form comes back marked
            var typed: [String: Any] = ["errors": ["validate": refused.fieldErrors.values.first ?? refused.detail]]
            for field in Self.formFields(.requestValidation) { typed[field] = form[field] ?? "" }
            typed["refuse_unknown_query"] = form["refuse_unknown_query"] == "on"
            typed.merge(Self.validationChoices(form["validate"])) { $1 }
            typed.merge(Self.kindFlags(.requestValidation)) { $1 }
            return try await detailPage(
                context, error: "The policy was not saved: correct the fields marked below.", typedPolicy: (op == "add" ? nil : index, typed),
                status: .unprocessableContent)
        } catch let refused as AppError where refused.status == .unprocessableContent {
            // refused for the API as a whole (a WebSocket limit on a gRPC API): said on the page
            return try await detailPage(context, error: refused.detail, status: .unprocessableContent)
        }
        return try await saved("Policies saved.", id: id, context)
    }

    /// The API page's "Purge the cache" button (post/redirect/get).
    @Sendable func purgeCache(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        _ = try await services.catalog.purgeCache(tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, clientIP: context.clientIP)
        return try await saved("Cache purge sent to every gateway.", id: id, context)
    }

    static let clientLimitFields = ["requests", "per_seconds", "burst", "key_header", "max_clients"]
    static let cacheFields = ["ttl_seconds", "vary", "shared", "max_body_bytes"]
    static let httpLogFields = ["url", "batch_size", "flush_seconds"]
    static let validationFields = ["validate", "refuse_unknown_query"]
    static let webSocketFields = ["idle_seconds", "max_seconds"]

    static func formFields(_ kind: APIPolicyKind) -> [String] {
        switch kind {
        case .clientRateLimit: clientLimitFields
        case .requestTransform: TransformForm.requestFields
        case .responseTransform: TransformForm.responseFields
        case .responseCache: cacheFields
        case .httpLog: httpLogFields
        case .requestValidation: validationFields
        case .webSocket: webSocketFields
        }
    }

    /// The HTTP log sink form's values (nil: a new one's defaults).
    static func httpLogValues(_ config: HTTPLogConfig?) -> [String: Any] {
        [
            "url": config?.url ?? "", "batch_size": String(config?.batchSize ?? HTTPLogConfig.defaultBatchSize),
            "flush_seconds": String(config?.flushSeconds ?? HTTPLogConfig.defaultFlushSeconds), "errors": [String: String](),
        ]
    }

    /// The WebSocket limits form's values (nil: a new one's: the installation's default idle
    /// timeout, no maximum of its own).
    static func webSocketValues(_ config: WebSocketConfig?) -> [String: Any] {
        ["idle_seconds": String(config?.idleSeconds ?? 300), "max_seconds": config?.maxSeconds.map(String.init) ?? "", "errors": [String: String]()]
    }

    /// The request validation form's values (nil: a new one's defaults).
    static func validationValues(_ config: RequestValidationConfig?) -> [String: Any] {
        var values: [String: Any] = ["refuse_unknown_query": config?.refuseUnknownQuery ?? false, "errors": [String: String]()]
        values.merge(validationChoices(config?.scope.rawValue)) { $1 }
        return values
    }

    /// The scope select's options, the given one selected (unknown: both).
    static func validationChoices(_ selected: String?) -> [String: Any] {
        let chosen = RequestValidationConfig.Scope(rawValue: selected ?? "") ?? .both
        let labels: [RequestValidationConfig.Scope: String] = [
            .both: "Parameters and JSON body", .parameters: "Parameters only (path, query, headers)", .body: "JSON body only",
        ]
        return [
            "scopes": [RequestValidationConfig.Scope.both, .parameters, .body].map { ["value": $0.rawValue, "label": labels[$0]!, "selected": $0 == chosen] }
        ]
    }

    /// The response cache form's values (nil: a new one's defaults).
    static func cacheValues(_ config: ResponseCacheConfig?) -> [String: Any] {
        [
            "ttl_seconds": config.map { String($0.ttlSeconds) } ?? "60", "vary": config?.vary.joined(separator: " ") ?? "",
            "shared": config?.shared ?? false, "max_body_bytes": String(config?.maxBodyBytes ?? ResponseCacheConfig.defaultMaxBodyBytes),
            "errors": [String: String](),
        ]
    }

    /// Which of `policy_fields`' sections a form shows (every flag set, so an outer context's
    /// value never leaks into a section).
    static func kindFlags(_ kind: APIPolicyKind) -> [String: Any] {
        [
            "is_client_rate_limit": kind == .clientRateLimit, "is_transform": kind == .requestTransform || kind == .responseTransform,
            "is_response_cache": kind == .responseCache, "is_http_log": kind == .httpLog, "is_request_validation": kind == .requestValidation,
            "is_websocket": kind == .webSocket, "is_request_transform": kind == .requestTransform, "kind": kind.rawValue,
        ]
    }

    /// A policy from its form's fields, or the problems keyed by form field: empty fields are left
    /// out (defaults), numbers are read strictly, and the kind's own parser checks the rest, as for JSON.
    static func policy(_ kind: APIPolicyKind, from form: FormData) -> Result<APIPolicy, FormFieldErrors> {
        var config: [String: JSONValue] = [:]
        switch kind {
        case .requestTransform, .responseTransform:
            let side: TransformConfig.Side = kind == .requestTransform ? .request : .response
            return TransformForm.config(side, from: form).map { APIPolicy(config: kind == .requestTransform ? .requestTransform($0) : .responseTransform($0)) }
        case .responseCache:
            for field in ["ttl_seconds", "max_body_bytes"] {
                let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
                if !text.isEmpty { config[field] = Int64(text).map(JSONValue.integer) ?? .string(text) }
            }
            // a checkbox: present means shared
            config["shared"] = .bool(form["shared"] == "on")
            let vary = TextLines.split((form["vary"] ?? "").replacingOccurrences(of: ",", with: "\n").replacingOccurrences(of: " ", with: "\n"))
            config["vary"] = .array(vary.map(JSONValue.string))
        case .httpLog:
            config["url"] = .string(form["url"] ?? "")
            for field in ["batch_size", "flush_seconds"] {
                let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
                if !text.isEmpty { config[field] = Int64(text).map(JSONValue.integer) ?? .string(text) }
            }
        case .webSocket:
            for field in webSocketFields {
                let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
                // empty: left out (max_seconds: the installation's maximum; idle_seconds: required)
                if !text.isEmpty { config[field] = Int64(text).map(JSONValue.integer) ?? .string(text) }
            }
        case .requestValidation:
            let scope = (form["validate"] ?? "").trimmingCharacters(in: .whitespaces)
            if !scope.isEmpty { config["validate"] = .string(scope) }
            // a checkbox: present means refused
            config["refuse_unknown_query"] = .bool(form["refuse_unknown_query"] == "on")
        case .clientRateLimit:
            for field in clientLimitFields {
                let text = (form[field] ?? "").trimmingCharacters(in: .whitespaces)
                guard !text.isEmpty else { continue }
                if field == "key_header" {
                    config[field] = .string(text)
                } else {
                    // not a whole number: kept as text, which the parser refuses with the range
                    config[field] = Int64(text).map(JSONValue.integer) ?? .string(text)
                }
            }
        }
        return APIPolicy.make(kind: kind, config: config).mapError { problems in
            var errors: [String: String] = [:]
            for problem in problems.list where errors[problem.field] == nil { errors[problem.field] = problem.message }
            return FormFieldErrors(fields: errors)
        }
    }

    /// Reference docs rendered from the uploaded OpenAPI document.
    @Sendable func reference(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let tenant = try context.requireTenant()
        let (api, stored) = try await services.catalog.document(tenant: tenant, viewer: context.principal, id: id)
        let descriptor = api.isGRPC ? try await services.catalog.descriptorSet(tenant: tenant, viewer: context.principal, id: id).1 : nil
        let document = stored.flatMap { try? APIDocument.parse(Array($0.content.utf8)) }
        let schema = descriptor?.schema
        guard document != nil || schema != nil else {
            throw AppError.notFound(api.isGRPC ? "A reference (the API has no descriptor set yet)" : "A reference (the API has no OpenAPI document yet)")
        }
        var values = document.map { APIReference.values($0.root) } ?? ["title": api.name]
        values["api"] = ["id": api.id.uuidString, "name": api.name, "version": api.version]
        if let stored, document != nil {
            values["has_document"] = true
            values["uploaded"] = DisplayDate.format(stored.uploadedAt)
        }
        if let descriptor, let schema {
            let gateway = "http://\(services.config.gatewayHost):\(services.config.gatewayPort)/t/\(tenant.slug)"
            values["translated"] = TranslatedOperation.list(schema, basePath: api.basePath).map { operation -> [String: Any] in
                [
                    "grpc_path": operation.grpcPath, "kind": operation.kind, "input": operation.inputType, "output": operation.outputType,
                    "routes": operation.routes.map { ["method": $0.method, "path": $0.path, "gateway": gateway] },
                    "unrouted": operation.unrouted.map { ["declared": $0.declared, "reason": $0.reason] },
                ]
            }
            values["translated_uploaded"] = DisplayDate.format(descriptor.uploadedAt)
            values["translated_sha256"] = String(descriptor.sha256.prefix(12))
        }
        return services.views.render("api_reference", values, page: services.chrome("\(api.name) reference", context: context))
    }

    @Sendable func download(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let (api, stored) = try await services.catalog.document(tenant: try context.requireTenant(), viewer: context.principal, id: id)
        guard let stored else { throw AppError.notFound("OpenAPI document") }
        return APIDocumentDownload.response(api: api, document: stored)
    }

    /// Upload from the file input (`document`) or the paste box (`document_text`).
    @Sendable func upload(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let file = context.form["document"] ?? ""
        let text = file.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? (context.form["document_text"] ?? "") : file
        do {
            let stored = try await services.catalog.uploadDocument(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, bytes: Array(text.utf8), clientIP: context.clientIP)
            return try await saved("OpenAPI document '\(stored.title)' \(stored.version) saved.", id: id, context)
        } catch let error as AppError where error.status == .unprocessableContent {
            return try await detailPage(context, error: "The document was not saved. " + error.detail, status: error.status)
        }
    }

    /// Upload of a descriptor set from the file input (`descriptor_set`, binary).
    @Sendable func uploadDescriptorSet(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        guard let bytes = context.form.files["descriptor_set"], !bytes.isEmpty else {
            return try await detailPage(
                context, error: "The descriptor set was not saved.", descriptorError: "Choose the descriptor set file to upload.", status: .unprocessableContent)
        }
        do {
            let (_, stored) = try await services.catalog.uploadDescriptorSet(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, bytes: bytes, clientIP: context.clientIP)
            return try await saved(
                "Descriptor set saved: \(stored.services.joined(separator: ", ")), \(stored.methodCount) methods.", id: id, context)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .contentTooLarge {
            return try await detailPage(
                context, error: "The descriptor set was not saved.", descriptorError: error.fieldErrors["descriptor_set"] ?? error.detail, status: error.status)
        }
    }

    @Sendable func removeDescriptorSet(_ request: Request, context: AppRequestContext) async throws -> Response {
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        try await services.catalog.deleteDescriptorSet(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: id, clientIP: context.clientIP)
        return try await saved("Descriptor set removed: HTTP/JSON calls to this API are no longer translated.", id: id, context)
    }

    /// post/redirect/get after a successful save: the notice waits in the session for the page.
    private func saved(_ notice: String, id: UUID, _ context: AppRequestContext) async throws -> Response {
        try await services.flashes.put(Flash(notice: notice), for: context)
        return .redirect(to: context.base + "/catalog/apis/" + id.uuidString + "#saved")
    }

    /// The policy's field names as the form's inputs are named (the JSON API names them `cors.allowed_origins`...).
    static func policyFieldErrors(_ error: AppError) -> [String: String] {
        let names = [
            "cors.allowed_origins": "cors_origins", "cors.allow_credentials": "cors_origins", "cors.allowed_methods": "cors_methods",
            "cors.allowed_headers": "cors_headers", "cors.exposed_headers": "cors_exposed", "cors.max_age_seconds": "cors_max_age",
        ]
        var errors: [String: String] = [:]
        for (field, message) in error.fieldErrors { errors[names[field] ?? field] = message }
        if errors.isEmpty { errors["form"] = error.detail }
        return errors
    }

    /// `URL weight` per line (weight optional, default 1).
    static func parseTargets(_ text: String) throws -> [UpstreamTarget] {
        try TextLines.split(text).enumerated().compactMap { index, line -> UpstreamTarget? in
            let parts = line.split(whereSeparator: \.isWhitespace)
            guard let url = parts.first else { return nil }
            guard parts.count <= 2, let weight = parts.count == 2 ? Int(parts[1]) : 1 else {
                throw AppError.validation([
                    "targets": "Target \(index + 1) (\(String(line.prefix(80)))) is not a URL and an optional weight: write one target per line, a URL and an optional weight (1 to 100)."
                ])
            }
            return UpstreamTarget(url: String(url), weight: weight)
        }
    }

    private func detailPage(
        _ context: AppRequestContext, notice: String? = nil, error: String? = nil, typedSettings: [String: Any] = [:], typedName: String? = nil,
        settingsErrors: [String: String] = [:], policyErrors: [String: String] = [:], typedPolicy: (index: Int?, values: [String: Any])? = nil,
        descriptorError: String? = nil, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        guard let id = context.parameters.get("api").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("API") }
        let api = try await services.catalog.show(tenant: tenant, viewer: context.principal, id: id)
        let canManage = context.principal.map { Policy.allows($0, .manageAPIs(team: api.teamID)) } ?? false
        let plans = try await services.planService.list(tenant: tenant, viewer: context.principal, apiID: api.id)
        let versions = try await services.catalog.list(tenant: tenant, viewer: context.principal, after: nil, limit: 500)
            .filter { $0.slug == api.slug && $0.id != api.id }
        let descriptor = api.isGRPC ? try await descriptorSummary(api, tenant: tenant, viewer: context.principal) : nil
        var values: [String: Any] = [
            "api": [
                "id": api.id.uuidString, "name": api.name, "slug": api.slug, "version": api.version, "state": api.state.rawValue,
                "base_path": api.basePath, "description_html": Markdown.html(api.description), "visibility": api.visibility.rawValue,
                "deprecated": api.state == .deprecated, "retired": api.state == .retired,
            ],
            "gateway_url": "http://\(services.config.gatewayHost):\(services.config.gatewayPort)/t/\(tenant.slug)\(api.basePath)",
            // a gRPC API is called over HTTP/2 at the base path followed by the method's path
            "grpc": api.isGRPC,
            "versions": versions.map { ["id": $0.id.uuidString, "version": $0.version, "state": $0.state.rawValue] },
            "has_versions": !versions.isEmpty,
            "plans": plans.map { plan -> [String: Any] in
                let terms = plan.terms
                return [
                    "id": plan.id.uuidString, "name": terms.name, "version": plan.version, "hidden": terms.visibility == .hidden,
                    "overage": terms.tiers.allSatisfy { $0.unitPriceMicros == 0 } ? ""
                        : terms.tiers.map { tier in
                            Money.formatUnitPrice(micros: tier.unitPriceMicros, currency: tenant.currency) + " " + tenant.currency + "/request"
                                + (tier.upTo.map { " up to \($0)" } ?? "")
                        }.joined(separator: ", "),
                    "rate": "\(terms.ratePerSecond)/s (burst \(terms.burst))" + (terms.windowsSummary.isEmpty ? "" : ", " + terms.windowsSummary),
                    "quota": terms.monthlyQuota.map { "\($0) requests/month" } ?? "unlimited",
                    "fee": Money.format(minor: terms.monthlyFeeMinor, currency: tenant.currency) + "/month",
                    "included": terms.includedRequests > 0 ? "\(terms.includedRequests) requests included" : "", "approval": terms.approval == .manual ? "needs approval" : "instant",
                    "cache_hits_free": !terms.billsCacheHits,
                ]
            },
            "can_manage": canManage,
            "targets": canManage ? api.targets.map { ["url": $0.url, "weight": $0.weight] } : [],
            "document": try await documentSummary(api, tenant: tenant, viewer: context.principal),
            "descriptor_set": descriptor as Any,
            "descriptor_error": descriptorError as Any,
            "settings": canManage ? try await settingsValues(api, tenant: tenant, principal: context.principal) : [:],
            "transitions": canManage ? APILifecycle.allowed(from: api.state).map { ["name": $0.rawValue, "label": $0.rawValue.capitalized] } : [],
        ]
        if canManage, var settings = values["settings"] as? [String: Any] {
            for (key, value) in typedSettings { settings[key] = value }
            if let typedName { settings["name"] = typedName }
            values["settings"] = settings
        }
        if canManage, let principal = context.principal {
            values["chain"] = try await chainValues(api, tenant: tenant, principal: principal, typed: typedPolicy)
        }
        values["settings_errors"] = settingsErrors
        values["policy_errors"] = policyErrors
        if let error { values["error"] = error }
        return services.views.render("api", values, page: services.chrome(api.name, context: context, notice: notice), status: status)
    }

    /// The policy chain section: every step by phase, a form per added policy and one to add.
    /// On an error page the form that was sent shows what was typed, with its fields marked.
    private func chainValues(_ api: APIProduct, tenant: Tenant, principal: Principal, typed: (index: Int?, values: [String: Any])?) async throws
        -> [String: Any]
    {
        let (_, policies) = try await services.catalog.policies(tenant: tenant, actor: principal, id: api.id)
        let entries = APIPolicyChain.entries(builtIn: api.policy, policies: policies)
        func fields(_ config: ClientRateLimitConfig?) -> [String: Any] {
            [
                "requests": config.map { String($0.requests) } ?? "", "per_seconds": config.map { String($0.perSeconds) } ?? "",
                "burst": config.map { String($0.burst) } ?? "", "key_header": config?.keyHeader ?? "",
                "max_clients": config.map { String($0.maxClients) } ?? "", "errors": [String: String](),
            ]
        }
        let phases = APIPolicyPhase.allCases.compactMap { phase -> [String: Any]? in
            let steps = entries.filter { $0.phase == phase }
            guard !steps.isEmpty else { return nil }
            return [
                "title": phase.title, "name": phase.rawValue,
                "steps": steps.map { step -> [String: Any] in
                    var row: [String: Any] = ["title": step.title, "summary": step.summary, "built_in": step.builtIn, "off": !step.enabled]
                    if let index = step.index, policies.indices.contains(index) {
                        var form: [String: Any]
                        switch policies[index].config {
                        case .clientRateLimit(let config): form = fields(config)
                        case .requestTransform(let config): form = TransformForm.values(config, side: .request)
                        case .responseTransform(let config): form = TransformForm.values(config, side: .response)
                        case .responseCache(let config): form = Self.cacheValues(config)
                        case .httpLog(let config): form = Self.httpLogValues(config)
                        case .requestValidation(let config): form = Self.validationValues(config)
                        case .webSocket(let config): form = Self.webSocketValues(config)
                        }
                        form.merge(Self.kindFlags(policies[index].kind)) { $1 }
                        if let typed, typed.index == index { form = typed.values }
                        form["index"] = index
                        form["prefix"] = "p\(index)"
                        form["kind"] = policies[index].kind.rawValue
                        // moves stay within the phase (see APIPolicyEdit.neighbour)
                        form["first"] = APIPolicyEdit.neighbour(of: index, in: policies, step: -1) == nil
                        form["last"] = APIPolicyEdit.neighbour(of: index, in: policies, step: 1) == nil
                        form["open"] = typed?.index == index
                        row["added"] = form
                    }
                    return row
                },
            ]
        }
        var add = fields(nil)
        add["per_seconds"] = "60"
        var addRequest = TransformForm.values(nil, side: .request)
        var addResponse = TransformForm.values(nil, side: .response)
        var addCache = Self.cacheValues(nil)
        var addHTTPLog = Self.httpLogValues(nil)
        var addValidation = Self.validationValues(nil)
        var addWebSocket = Self.webSocketValues(nil)
        // the form that was sent comes back with what was typed, open, its fields marked
        if let typed, typed.index == nil {
            switch typed.values["kind"] as? String {
            case APIPolicyKind.requestTransform.rawValue?: addRequest = typed.values
            case APIPolicyKind.responseTransform.rawValue?: addResponse = typed.values
            case APIPolicyKind.responseCache.rawValue?: addCache = typed.values
            case APIPolicyKind.httpLog.rawValue?: addHTTPLog = typed.values
            case APIPolicyKind.requestValidation.rawValue?: addValidation = typed.values
            case APIPolicyKind.webSocket.rawValue?: addWebSocket = typed.values
            default: add = typed.values
            }
        }
        add.merge(Self.kindFlags(.clientRateLimit)) { $1 }
        addRequest.merge(Self.kindFlags(.requestTransform)) { $1 }
        addResponse.merge(Self.kindFlags(.responseTransform)) { $1 }
        addCache.merge(Self.kindFlags(.responseCache)) { $1 }
        addCache["prefix"] = "newcache"
        addHTTPLog.merge(Self.kindFlags(.httpLog)) { $1 }
        addHTTPLog["prefix"] = "newlog"
        addHTTPLog["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.httpLog.rawValue } ?? false
        addValidation.merge(Self.kindFlags(.requestValidation)) { $1 }
        addValidation["prefix"] = "newvalidation"
        addValidation["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.requestValidation.rawValue } ?? false
        addWebSocket.merge(Self.kindFlags(.webSocket)) { $1 }
        addWebSocket["prefix"] = "newws"
        addWebSocket["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.webSocket.rawValue } ?? false
        addCache["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.responseCache.rawValue } ?? false
        add["prefix"] = "new"
        addRequest["prefix"] = "newreq"
        addResponse["prefix"] = "newres"
        add["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.clientRateLimit.rawValue } ?? false
        addRequest["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.requestTransform.rawValue } ?? false
        addResponse["open"] = typed.map { $0.index == nil && ($0.values["kind"] as? String) == APIPolicyKind.responseTransform.rawValue } ?? false
        return [
            "phases": phases, "add": add, "add_request_transform": addRequest, "add_response_transform": addResponse,
            "add_response_cache": addCache, "has_cache": policies.contains { $0.kind == .responseCache },
            "add_http_log": addHTTPLog, "has_http_log": policies.contains { $0.kind == .httpLog },
            "add_request_validation": addValidation, "has_validation": policies.contains { $0.kind == .requestValidation },
            "add_websocket": addWebSocket, "has_websocket": policies.contains { $0.kind == .webSocket },
            "full": policies.count >= APIPolicyChain.maximumPolicies, "max": APIPolicyChain.maximumPolicies,
        ]
    }

    private func descriptorSummary(_ api: APIProduct, tenant: Tenant, viewer: Principal?) async throws -> [String: Any]? {
        guard let stored = try await services.catalog.descriptorSet(tenant: tenant, viewer: viewer, id: api.id).1 else { return nil }
        return [
            "services": stored.services.joined(separator: ", "), "method_count": stored.methodCount, "method_count_methods": stored.methodCount == 1 ? "1 method" : "\(stored.methodCount) methods", "method_count_text": stored.methodCount == 1 ? "1 translated operation" : "\(stored.methodCount) translated operations", "sha256_short": String(stored.sha256.prefix(12)),
            "uploaded": DisplayDate.format(stored.uploadedAt),
        ]
    }

    private func documentSummary(_ api: APIProduct, tenant: Tenant, viewer: Principal?) async throws -> [String: Any]? {
        guard let stored = try await services.catalog.document(tenant: tenant, viewer: viewer, id: api.id).1 else { return nil }
        return ["title": stored.title, "version": stored.version, "format": stored.format.rawValue.uppercased(), "uploaded": DisplayDate.format(stored.uploadedAt)]
    }

    /// Current values for the settings and policy forms.
    private func settingsValues(_ api: APIProduct, tenant: Tenant, principal: Principal?) async throws -> [String: Any] {
        var teams = BoundedChoices<Team>([])
        if let principal {
            teams = BoundedChoices(try await services.teamService.list(tenant: tenant, actor: principal, after: nil, limit: BoundedChoices<Team>.bound + 1))
        }
        let policy = api.policy
        let clientCertificate = api.upstreamClientCertificatePEM.flatMap { UpstreamTLS.summary(clientCertificatePEM: $0) }
        return [
            "name": api.name, "description": api.description, "restricted": api.visibility == .restricted, "teams_note": teams.note("teams"),
            // allowed teams beyond the listed ones stay allowed when the form is saved
            "kept_teams": api.allowedTeamIDs.filter { id in !teams.items.contains { $0.id == id } }.map { ["id": $0.uuidString] },
            "teams": teams.items.map { ["id": $0.id.uuidString, "name": $0.name, "allowed": api.allowedTeamIDs.contains($0.id)] as [String: Any] },
            "targets_text": api.targets.map { "\($0.url) \($0.weight)" }.joined(separator: "\n"),
            "upstream_ca_pem": api.upstreamCABundle ?? "",
            "upstream_h2": api.upstreamProtocol == .h2,
            // what is saved, not what was typed (an error page shows the typed text in the field)
            "has_ca_bundle": api.upstreamCABundle != nil,
            "has_client_certificate": clientCertificate != nil,
            "client_certificate_subject": clientCertificate?.subject ?? "",
            "client_certificate_not_after": clientCertificate.map { $0.notAfter.formatted(.iso8601.year().month().day()) } ?? "",
            "client_certificate_pem": "",
            "cors_origins": policy.cors?.allowedOrigins.joined(separator: "\n") ?? "",
            "cors_methods": policy.cors?.allowedMethods.joined(separator: " ") ?? "",
            "cors_headers": policy.cors?.allowedHeaders.joined(separator: " ") ?? "",
            "cors_exposed": policy.cors?.exposedHeaders.joined(separator: " ") ?? "",
            "cors_credentials": policy.cors?.allowCredentials ?? false, "cors_max_age": policy.cors.map { String($0.maxAgeSeconds) } ?? "",
            "ip_allow": policy.ipAllow.joined(separator: "\n"), "ip_deny": policy.ipDeny.joined(separator: "\n"),
            "methods": APIGatewayPolicy.knownMethods.map { ["name": $0, "on": policy.methods.contains($0)] as [String: Any] },
            "max_request_bytes": policy.maxRequestBytes.map(String.init) ?? "",
            "sunset_at": policy.sunsetAt.map { DisplayDate.day($0) } ?? "",
        ]
    }

    private func formPage(_ context: AppRequestContext, values: [String: Any], status: HTTPResponse.Status = .ok) async throws -> Response {
        let mine = Set(providerTeams(context))
        guard !mine.isEmpty else { throw AppError.forbidden }
        let teams = BoundedChoices(
            try await services.teamService.list(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(), after: nil, limit: BoundedChoices<Team>.bound + 1))
        var values = values
        values["teams"] = teams.items.filter { mine.contains($0.id) }.map { ["id": $0.id.uuidString, "name": $0.name] }
        values["consumer_teams"] = teams.items.map { ["id": $0.id.uuidString, "name": $0.name] }
        values["teams_note"] = teams.note("teams")
        return services.views.render("api_new", values, page: services.chrome("New API", context: context), status: status)
    }

    /// Teams the signed-in user may publish APIs for.
    private func providerTeams(_ context: AppRequestContext) -> [UUID] {
        guard let principal = context.principal else { return [] }
        return principal.teamRoles.keys.filter { Policy.allows(principal, .manageAPIs(team: $0)) }.sorted { $0.uuidString < $1.uuidString }
    }
}

extension String {
    /// The text, or "" when it holds a private key (never put back into a page).
    fileprivate var flatMapKeyless: String { UpstreamClientCertificate.holdsPrivateKey(self) ? "" : self }
}
