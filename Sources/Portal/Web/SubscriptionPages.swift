import Foundation
import Hummingbird

/// Subscriptions: developers subscribe apps and cancel; providers work their approval queue.
struct SubscriptionPages: Sendable {
    let services: PortalServices

    func addRoutes(to group: RouterGroup<AppRequestContext>) {
        group.get("/subscriptions", use: list)
        group.get("/subscriptions/:subscription", use: show)
        group.form("/subscriptions/:subscription/actions", page: "/subscriptions/:subscription", use: act)
        group.form("/apps/:app/subscriptions", page: "/apps/:app", use: subscribe)
    }

    /// Every subscription the user is party to, pending ones first (the provider's queue).
    @Sendable func list(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        let pageRequest = try PageRequest(request)
        let page = try await ListPage<Subscription>.load(pageRequest, key: \.id.uuidString) {
            try await services.subscriptionService.page(tenant: tenant, actor: principal, $0, limit: $1)
        }
        let values: [String: Any] = [
            "subscriptions": page.items.map(Self.row), "pager": page.pager(path: context.base + "/subscriptions", size: pageRequest.size),
        ]
        return services.views.render("subscriptions", values, page: services.chrome("Subscriptions", context: context))
    }



    @Sendable func show(_ request: Request, context: AppRequestContext) async throws -> Response {
        try await detail(context, notice: Self.notice(request.uri.queryParameters["done"].map(String.init)))
    }

    /// Fixed confirmations after an action's redirect, by action name (nothing else is shown).
    static func notice(_ action: String?) -> String? {
        if action == "plan_change_requested" {
            return "Plan change requested: the provider decides; the current plan serves until then."
        }
        return switch action.flatMap(SubscriptionService.Action.init(rawValue:)) {
        case .approve: "Approved."
        case .reject: "Rejected; the developer sees your reason."
        case .suspend: "Suspended; calls are refused until it is resumed."
        case .resume: "Resumed."
        case .cancel: "Cancelled."
        case .changePlan: "Plan changed."
        case .withdrawPlanChange: "The plan change request was withdrawn."
        case nil: nil
        }
    }

    @Sendable func act(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let id = context.parameters.get("subscription").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Subscription") }
        guard let action = SubscriptionService.Action(rawValue: context.form["action"] ?? "") else { throw AppError.badRequest("Unknown action.") }
        let updated: Subscription
        do {
            updated = try await services.subscriptionService.perform(
                tenant: tenant, actor: principal, subscriptionID: id, action: action, reason: context.form["reason"],
                newPlanID: context.form["plan_id"].flatMap(UUID.init(uuidString:)), clientIP: context.clientIP)
        } catch let error as AppError where [.conflict, .unprocessableContent, .forbidden].contains(error.status) {
            return try await detail(context, error: error.fieldErrors.values.first ?? error.detail, status: error.status)
        }
        let done = action == .changePlan && updated.requestedPlan != nil ? "plan_change_requested" : action.rawValue
        return .redirect(to: context.base + "/subscriptions/" + id.uuidString + "?done=" + done)
    }

    @Sendable func subscribe(_ request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let appID = context.parameters.get("app").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("App") }
        guard let planID = context.form["plan_id"].flatMap(UUID.init(uuidString:)) else { throw AppError.badRequest("Choose a plan.") }
        do {
            let subscription = try await services.subscriptionService.request(tenant: tenant, actor: principal, appID: appID, planID: planID, clientIP: context.clientIP)
            return .redirect(to: context.base + "/subscriptions/" + subscription.id.uuidString)
        } catch let error as AppError where error.status == .conflict {
            // A second subscription to the same API: the way forward is the open one's plan change.
            let planAPI = try? await services.planService.show(tenant: tenant, viewer: principal, planID: planID).0.apiID
            var open: Subscription?
            if let planAPI {
                open = try await services.subscriptionService.list(tenant: tenant, actor: principal, appID: appID, apiID: planAPI).first { $0.state.isOpen }
            }
            guard let open else { throw AppError(status: error.status, title: "Subscription not possible", detail: error.detail) }
            return try await detail(
                context, id: open.id, error: "This app already has a subscription to this API (below). Change its plan here instead of subscribing again.", status: .conflict)
        } catch let error as AppError where error.status == .unprocessableContent {
            throw AppError(status: error.status, title: "Subscription not possible", detail: error.fieldErrors.values.first ?? error.detail)
        }
    }

    private func detail(
        _ context: AppRequestContext, id: UUID? = nil, error: String? = nil, notice: String? = nil, status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let tenant = try context.requireTenant()
        let principal = try context.requirePrincipal()
        guard let id = id ?? context.parameters.get("subscription").flatMap(UUID.init(uuidString:)) else { throw AppError.notFound("Subscription") }
        let (subscription, history, allowed) = try await services.subscriptionService.show(tenant: tenant, actor: principal, id: id)
        let plans = try await services.planService.list(tenant: tenant, viewer: principal, apiID: subscription.apiID)
            .filter { $0.id != subscription.planID && $0.id != subscription.requestedPlan?.id && $0.terms.visibility == .public }
        var values: [String: Any] = [
            "subscription": Self.row(subscription),
            "history": history.map { event -> [String: Any] in
                [
                    "at": DisplayDate.format(event.at), "event": event.event.replacingOccurrences(of: "_", with: " "),
                    "change": "\(event.fromState?.rawValue ?? "new") → \(event.toState.rawValue)", "who": event.actor ?? event.actorSide.rawValue,
                    "side": event.actorSide.rawValue, "reason": event.reason ?? "",
                ]
            },
            "actions": allowed.filter { [.resume, .withdrawPlanChange].contains($0) }.map(Self.actionValues),
            "confirm_actions": allowed.filter { $0 == .cancel }.map(Self.actionValues),
            "reason_actions": allowed.filter { [.approve, .reject, .suspend].contains($0) }.map(Self.actionValues),
            "can_change_plan": allowed.contains(.changePlan) && !plans.isEmpty,
            "plans": plans.map { ["id": $0.id.uuidString, "name": $0.terms.name + ($0.terms.approval == .manual ? " (needs approval)" : "")] },
        ]
        if let requested = subscription.requestedPlan {
            values["requested"] = ["plan": "\(requested.name) (v\(requested.version))", "since": DisplayDate.format(requested.at)]
        }
        if let error { values["error"] = error }
        return services.views.render("subscription", values, page: services.chrome("Subscription", context: context, notice: notice), status: status)
    }

    /// A button's name and label; approve's reason is optional, reject's and suspend's required.
    private static func actionValues(_ action: SubscriptionService.Action) -> [String: Any] {
        let label =
            switch action {
            case .withdrawPlanChange: "Withdraw plan change"
            case .changePlan: "Change plan"
            default: action.rawValue.capitalized
            }
        return ["name": action.rawValue, "label": label, "reason_required": action != .approve, "danger": action != .approve]
    }

    static func row(_ s: Subscription) -> [String: Any] {
        [
            "id": s.id.uuidString, "app": s.appName, "api": "\(s.apiName) \(s.apiVersion)", "plan": "\(s.planName) (v\(s.planVersion))",
            "state": s.state.rawValue, "pending": s.state == .pending, "since": DisplayDate.format(s.updatedAt),
            "requested_plan": s.requestedPlan.map { "\($0.name) (v\($0.version))" } ?? "",
        ]
    }
}
