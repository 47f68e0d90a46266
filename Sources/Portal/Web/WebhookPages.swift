import Foundation
import Hummingbird

/// Webhook endpoints, their delivery log and the redelivery button.
struct WebhookPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/webhooks", use: list)
        group.post("/webhooks", use: create)
        group.get("/webhooks/:webhook", use: show)
        group.form("/webhooks/:webhook/delete", page: "/webhooks/:webhook", use: delete)
        group.get("/webhooks/:webhook/deliveries/:delivery", use: showDelivery)
        group.form("/webhooks/:webhook/deliveries/:delivery/redeliver", page: "/webhooks/:webhook/deliveries/:delivery", use: redeliver)
    }

    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await listPage(context, page: try PageRequest(request))
    }

    /// Registers an endpoint and shows its signing secret once.
    @Sendable func create(_ request: Request, context: AppRequestContext) async throws -> Response {
        let form = context.form
        let team = form["team_id"].flatMap { $0.isEmpty ? nil : UUID(uuidString: $0) }
        do {
            let (endpoint, secret) = try await services.webhookService.create(
                tenant: try context.requireTenant(), actor: try context.requirePrincipal(),
                .init(teamID: team, url: form["url"] ?? "", description: form["description"] ?? "", events: form.values("events")),
                clientIP: context.clientIP)
            try await services.flashes.put(Flash(notice: "Webhook registered.", secretLabel: "Signing secret", secret: secret), for: context)
            return .redirect(to: context.base + "/webhooks/" + endpoint.id.uuidString)
        } catch let error as AppError where error.status == .unprocessableContent || error.status == .forbidden {
            return try await listPage(
                context, extra: ["errors": error.fieldErrors, "error": error.detail, "url": form["url"] ?? "", "description": form["description"] ?? ""],
                status: error.status)
        }
    }

    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> Response {
        let flash = try await services.flashes.take(for: context)
        return try await detailPage(context, id: try id("webhook", context), page: try PageRequest(request), newSecret: flash?.secret, notice: flash?.notice)
    }

    @Sendable func delete(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await services.webhookService.delete(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), id: try id("webhook", context), clientIP: context.clientIP)
        return .redirect(to: context.base + "/webhooks")
    }

    @Sendable func showDelivery(_ request: Request, context: AppRequestContext) async throws -> Response {
        let endpointID = try id("webhook", context)
        let (delivery, attempts) = try await services.webhookService.delivery(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), endpointID: endpointID, deliveryID: try id("delivery", context))
        let values: [String: Any] = [
            "endpoint_id": endpointID.uuidString, "delivery": Self.row(delivery),
            "attempts": attempts.map {
                [
                    "at": DisplayDate.format($0.at), "status": $0.status.map(String.init) ?? "—", "error": $0.error ?? "",
                    "duration": "\($0.durationMilliseconds) ms",
                ] as [String: Any]
            },
        ]
        return services.views.render("webhook_delivery", values, page: services.chrome("Delivery", context: context))
    }

    @Sendable func redeliver(_ request: Request, context: AppRequestContext) async throws -> Response {
        let endpointID = try id("webhook", context)
        _ = try await services.webhookService.redeliver(
            tenant: try context.requireTenant(), actor: try context.requirePrincipal(), endpointID: endpointID, deliveryID: try id("delivery", context),
            clientIP: context.clientIP)
        try await services.flashes.put(Flash(notice: "Queued for redelivery."), for: context)
        return .redirect(to: context.base + "/webhooks/" + endpointID.uuidString)
    }

    private func id(_ name: String, _ context: AppRequestContext) throws -> UUID {
        guard let id = context.parameters.get(name).flatMap(UUID.init(uuidString:)) else { throw AppError.notFound(name == "webhook" ? "Webhook endpoint" : "Delivery") }
        return id
    }

    static func row(_ d: WebhookDelivery) -> [String: Any] {
        [
            "id": d.id.uuidString, "event": d.eventType, "state": d.state.rawValue, "attempts": d.attempts, "created": DisplayDate.format(d.createdAt),
            "last_status": d.lastStatus.map(String.init) ?? "—", "last_error": d.lastError ?? "",
            "next": d.state == .pending ? DisplayDate.format(d.nextAttemptAt) : "", "failed": d.state == .failed,
        ]
    }

    private func listPage(
        _ context: AppRequestContext, page request: PageRequest = PageRequest(), extra: [String: Any] = [:], status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let endpoints = try await ListPage<WebhookEndpoint>.load(request, key: \.id.uuidString) {
            try await services.webhookService.page(tenant: tenant, actor: principal, $0, limit: $1)
        }
        let teams = BoundedChoices(
            try await ListPage<Team>.filtered(
                .after(nil), limit: BoundedChoices<Team>.bound + 1, key: \.slug, include: { Policy.allows(principal, .manageWebhooks(team: $0.id)) }
            ) { try await services.teamService.page(tenant: tenant, actor: principal, $0, limit: $1) })
        var owners: [[String: Any]] = []
        if Policy.allows(principal, .manageWebhooks(team: nil)) { owners.append(["id": "", "name": "\(tenant.name) (every event)"]) }
        owners += teams.items.map { ["id": $0.id.uuidString, "name": $0.name] }
        var values: [String: Any] = [
            "pager": endpoints.pager(path: context.base + "/webhooks", size: request.size), "owners_note": teams.note("teams"),
            "endpoints": endpoints.items.map {
                [
                    "id": $0.id.uuidString, "url": $0.url, "owner": $0.teamName ?? "Tenant", "description": $0.description,
                    "events": $0.events.isEmpty ? "all events" : $0.events.joined(separator: ", "),
                ] as [String: Any]
            },
            "owners": owners, "can_create": !owners.isEmpty,
            "event_types": WebhookEventType.allCases.map(\.rawValue),
        ]
        for (key, value) in extra { values[key] = value }
        return services.views.render("webhooks", values, page: services.chrome("Webhooks", context: context), status: status)
    }

    private func detailPage(
        _ context: AppRequestContext, id: UUID, page request: PageRequest, newSecret: String? = nil, notice: String? = nil
    ) async throws -> Response {
        let (tenant, principal) = (try context.requireTenant(), try context.requirePrincipal())
        var found: WebhookEndpoint?
        let page = try await ListPage<WebhookDelivery>.load(request, key: \.id.uuidString) { position, limit in
            let (endpoint, deliveries) = try await services.webhookService.deliveries(tenant: tenant, actor: principal, id: id, position, limit: limit)
            found = endpoint
            return deliveries
        }
        guard let endpoint = found else { throw AppError.notFound("Webhook endpoint") }
        let deliveries = page.items
        var values: [String: Any] = [
            "endpoint": [
                "id": endpoint.id.uuidString, "url": endpoint.url, "owner": endpoint.teamName ?? "Tenant", "description": endpoint.description,
                "events": endpoint.events.isEmpty ? "all events" : endpoint.events.joined(separator: ", "), "secret_prefix": endpoint.secretPrefix,
            ],
            "deliveries": deliveries.map(Self.row),
            "pager": page.pager(path: context.base + "/webhooks/" + endpoint.id.uuidString, size: request.size),
        ]
        if let newSecret { values["new_secret"] = newSecret }
        return services.views.render("webhook", values, page: services.chrome("Webhook", context: context, notice: notice))
    }
}
