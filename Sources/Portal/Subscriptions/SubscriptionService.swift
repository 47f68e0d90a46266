import Foundation
import Logging
import PostgresNIO

/// Subscription workflows. Every change goes through `SubscriptionStateMachine`, is stored with
/// who, when and why in `subscription_events`, and lands in the audit log.
struct SubscriptionService: Sendable {
    let database: Database
    let subscriptions: SubscriptionRepository
    let apps: AppRepository
    let apis: APIRepository
    let plans: PlanRepository
    let audit: AuditLog
    let outbox: WebhookOutbox

    /// What a caller asks for, by name (`POST /subscriptions/{id}/actions`).
    enum Action: String, Sendable, CaseIterable {
        case approve, reject, suspend, resume, cancel
        case changePlan = "change_plan"
        case withdrawPlanChange = "withdraw_plan_change"
    }

    /// An app subscribes to a plan version of a published API it can see.
    func request(tenant: Tenant, actor: Principal, appID: UUID, planID: UUID, clientIP: String?) async throws -> Subscription {
        try await database.withTenant(tenant.id) { connection in
            guard let app = try await apps.find(id: appID, on: connection), Policy.allows(actor, .viewTeam(app.teamID)) else { throw AppError.notFound("App") }
            try Policy.authorize(actor, .manageApps(team: app.teamID))
            let (api, plan) = try await subscribablePlan(planID, actor: actor, appTeamID: app.teamID, on: connection)
            let state = try transition(.request(automaticApproval: plan.terms.approval == .automatic), from: .new, by: .developer).state
            let id = try await subscriptions.create(tenantID: tenant.id, appID: app.id, apiID: api.id, planID: plan.id, state: state, on: connection)
            try await subscriptions.record(
                tenantID: tenant.id, subscriptionID: id, event: "request", from: nil, to: state, fromPlan: nil, toPlan: plan.id,
                actorUserID: actor.user.id, side: .developer, reason: nil, on: connection)
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .subscriptionChanged, target: "\(app.name) → \(api.slug)/\(api.version)",
                clientIP: clientIP, details: ["event": "request", "state": state.rawValue, "plan": plan.terms.name], on: connection)
            guard let created = try await subscriptions.find(id: id, on: connection) else { throw AppError.notFound("Subscription") }
            try await announce(tenantID: tenant.id, created, event: "request", previous: nil, previousPlan: nil, side: .developer, reason: nil, on: connection)
            if state == .active {
                try await announce(tenantID: tenant.id, created, event: "approve", previous: nil, previousPlan: nil, side: .system, reason: nil, on: connection)
            }
            return created
        }
    }

    /// Applies an action by the side the caller is on for this subscription.
    func perform(
        tenant: Tenant, actor: Principal, subscriptionID: UUID, action: Action, reason: String?, newPlanID: UUID?, clientIP: String?
    ) async throws -> Subscription {
        try await database.withTenant(tenant.id) { connection in
            guard let current = try await subscriptions.findForUpdate(id: subscriptionID, on: connection) else { throw AppError.notFound("Subscription") }
            let side = try await side(of: actor, for: current, on: connection)
            let reason = reason?.trimmingCharacters(in: .whitespacesAndNewlines).nilIfEmpty
            if let reason, reason.count > 1000 || reason.unicodeScalars.contains("\u{0}") {
                throw AppError.validation(["reason": "Keep the reason under 1,000 characters."])
            }
            var changeTo: UUID?
            let event: SubscriptionStateMachine.Event
            switch action {
            case .approve: event = .approve
            case .reject: event = .reject(reason: reason ?? "")
            case .suspend: event = .suspend(reason: reason ?? "")
            case .resume: event = .resume
            case .cancel: event = .cancel
            case .withdrawPlanChange: event = .withdrawPlanChange
            case .changePlan:
                guard let newPlanID else { throw AppError.validation(["plan_id": "Choose the plan to move to."]) }
                let (api, plan) = try await subscribablePlan(newPlanID, actor: actor, appTeamID: current.appTeamID, on: connection, forAPI: current.apiID)
                guard api.id == current.apiID else { throw AppError.validation(["plan_id": "The plan belongs to another API."]) }
                guard plan.id != current.planID else { throw AppError.conflict("The subscription is already on this plan.") }
                guard plan.id != current.requestedPlan?.id else { throw AppError.conflict("A change to this plan already waits for the provider's approval.") }
                event = .changePlan(automaticApproval: plan.terms.approval == .automatic)
                changeTo = plan.id
            }
            let next = try transition(event, from: current.position, by: side)
            let planID: UUID
            let requested: UUID?
            switch next.plan {
            case .unchanged: (planID, requested) = (current.planID, current.requestedPlan?.id)
            case .switchNow: (planID, requested) = (changeTo ?? current.planID, nil)
            case .request: (planID, requested) = (current.planID, changeTo)
            case .applyRequested: (planID, requested) = (current.requestedPlan?.id ?? current.planID, nil)
            case .dropRequest: (planID, requested) = (current.planID, nil)
            }
            try await subscriptions.update(id: current.id, state: next.state, planID: planID, requestedPlanID: requested, on: connection)
            let askedFor = next.plan == .request ? changeTo : (next.plan == .unchanged ? nil : current.requestedPlan?.id)
            try await subscriptions.record(
                tenantID: tenant.id, subscriptionID: current.id, event: next.name, from: current.state, to: next.state, fromPlan: current.planID, toPlan: planID,
                requestedPlan: askedFor, actorUserID: actor.user.id, side: side, reason: reason, on: connection)
            var details = ["event": next.name, "from": current.state.rawValue, "to": next.state.rawValue]
            if let askedFor { details["requested_plan_id"] = askedFor.uuidString }
            try await audit.record(
                tenantID: tenant.id, actorUserID: actor.user.id, actor: actor.user.email, .subscriptionChanged,
                target: "\(current.appName) → \(current.apiName) \(current.apiVersion)", clientIP: clientIP, details: details, on: connection)
            guard let updated = try await subscriptions.find(id: current.id, on: connection) else { throw AppError.notFound("Subscription") }
            try await announce(
                tenantID: tenant.id, updated, event: next.name, previous: current.state, previousPlan: planID == current.planID ? nil : current.planID, side: side,
                reason: reason, requestedPlan: askedFor, on: connection)
            return updated
        }
    }

    /// Queues the webhook for a transition; both the app's and the API's team hear about it.
    private func announce(
        tenantID: UUID, _ subscription: Subscription, event: String, previous: SubscriptionState?, previousPlan: UUID?, side: SubscriptionActor, reason: String?,
        requestedPlan: UUID? = nil, on connection: PostgresConnection
    ) async throws {
        guard let type = WebhookEventType.forSubscriptionEvent(event) else { return }
        let data = SubscriptionWebhookData(
            subscriptionId: subscription.id, state: subscription.state.rawValue, previousState: previous?.rawValue,
            plan: .init(id: subscription.planID, name: subscription.planName, version: subscription.planVersion), previousPlanId: previousPlan,
            app: .init(id: subscription.appID, name: subscription.appName, teamId: subscription.appTeamID),
            api: .init(id: subscription.apiID, name: subscription.apiName, teamId: subscription.apiTeamID, slug: subscription.apiSlug, version: subscription.apiVersion),
            actorSide: side.rawValue, reason: reason, requestedPlanId: requestedPlan)
        try await outbox.enqueue(
            tenantID: tenantID, type, teamIDs: [subscription.appTeamID, subscription.apiTeamID], data: data, on: connection)
    }

    /// Subscriptions of the caller's apps and to the APIs the caller manages (tenant admins: all).
    func list(tenant: Tenant, actor: Principal) async throws -> [Subscription] {
        try Policy.authorize(actor, .listTeams)
        return try await database.withTenant(tenant.id) { connection in
            if actor.has(.admin) { return try await subscriptions.list(appIDs: nil, apiIDs: nil, on: connection) }
            let teams = Array(actor.teamRoles.keys)
            let appIDs = try await apps.list(teamIDs: teams, on: connection).map(\.id)
            let apiIDs = try await apis.list(after: nil, limit: 10_000, on: connection).filter { actor.teamRoles[$0.teamID] != nil }.map(\.id)
            return try await subscriptions.list(appIDs: appIDs, apiIDs: apiIDs, on: connection)
        }
    }

    /// Subscriptions of one app (to one API when `apiID` is given), newest first, for whoever may
    /// see the app (404 otherwise, as for the app itself).
    func list(tenant: Tenant, actor: Principal, appID: UUID, apiID: UUID? = nil) async throws -> [Subscription] {
        try await database.withTenant(tenant.id) { connection in
            guard let app = try await apps.find(id: appID, on: connection), Policy.allows(actor, .viewTeam(app.teamID)) else { throw AppError.notFound("App") }
            return try await subscriptions.list(appID: app.id, apiID: apiID, on: connection)
        }
    }

    /// A keyset page of `list` in the provider queue's order (awaiting the provider first, then
    /// oldest first; the cursor is a subscription id).
    func page(
        tenant: Tenant, actor: Principal, state: SubscriptionState? = nil, awaitingProvider: Bool = false, _ position: Keyset, limit: Int
    ) async throws -> [Subscription] {
        try Policy.authorize(actor, .listTeams)
        return try await database.withTenant(tenant.id) { connection in
            if actor.has(.admin) {
                return try await subscriptions.page(
                    appIDs: nil, apiIDs: nil, state: state, awaitingProvider: awaitingProvider, position, limit: limit, on: connection)
            }
            let teams = Array(actor.teamRoles.keys)
            let appIDs = try await apps.list(teamIDs: teams, on: connection).map(\.id)
            let apiIDs = try await apis.list(after: nil, limit: 10_000, on: connection).filter { actor.teamRoles[$0.teamID] != nil }.map(\.id)
            return try await subscriptions.page(
                appIDs: appIDs, apiIDs: apiIDs, state: state, awaitingProvider: awaitingProvider, position, limit: limit, on: connection)
        }
    }

    /// The subscription, its history, and the actions the actor may take on it now.
    func show(tenant: Tenant, actor: Principal, id: UUID) async throws -> (Subscription, [SubscriptionEvent], allowed: [Action]) {
        try await database.withTenant(tenant.id) { connection in
            guard let subscription = try await subscriptions.find(id: id, on: connection) else { throw AppError.notFound("Subscription") }
            _ = try await side(of: actor, for: subscription, on: connection, requireManage: false)
            let side = try? await side(of: actor, for: subscription, on: connection)
            let allowed = side.map { Self.allowedActions(position: subscription.position, side: $0) } ?? []
            return (subscription, try await subscriptions.history(subscriptionID: id, on: connection), allowed)
        }
    }

    /// Actions the state machine accepts from `side` in `state` (reasons assumed given).
    static func allowedActions(position: SubscriptionPosition, side: SubscriptionActor) -> [Action] {
        Action.allCases.filter { action in
            let event: SubscriptionStateMachine.Event =
                switch action {
                case .approve: .approve
                case .reject: .reject(reason: "given")
                case .suspend: .suspend(reason: "given")
                case .resume: .resume
                case .cancel: .cancel
                case .changePlan: .changePlan(automaticApproval: true)
                case .withdrawPlanChange: .withdrawPlanChange
                }
            return (try? SubscriptionStateMachine.apply(event, to: position, by: side)) != nil
        }
    }

    /// Which side of the subscription the actor is on; 404 for strangers (they learn nothing).
    private func side(
        of actor: Principal, for subscription: Subscription, on connection: PostgresConnection, requireManage: Bool = true
    ) async throws -> SubscriptionActor {
        guard let app = try await apps.find(id: subscription.appID, on: connection), let api = try await apis.find(id: subscription.apiID, on: connection)
        else { throw AppError.notFound("Subscription") }
        let provider = Policy.allows(actor, .manageAPIs(team: api.teamID))
        let developer = requireManage ? Policy.allows(actor, .manageApps(team: app.teamID)) : Policy.allows(actor, .viewTeam(app.teamID))
        if provider && !(developer && actor.teamRoles[app.teamID] != nil) { return .provider }
        if developer { return .developer }
        if actor.teamRoles[api.teamID] != nil || actor.teamRoles[app.teamID] != nil { throw AppError.forbidden }
        throw AppError.notFound("Subscription")
    }

    private func subscribablePlan(
        _ planID: UUID, actor: Principal, appTeamID: UUID, on connection: PostgresConnection, forAPI: UUID? = nil
    ) async throws -> (APIProduct, Plan) {
        guard let plan = try await plans.find(id: planID, on: connection), let api = try await apis.find(id: plan.apiID, on: connection),
            CatalogVisibility.canSee(actor, api)
        else { throw AppError.validation(["plan_id": "No such plan."]) }
        guard CatalogVisibility.isOpen(api, toTeam: appTeamID) else {
            throw AppError.validation(["plan_id": "This API is restricted to other teams; the app's team cannot subscribe to it."])
        }
        let manager = Policy.allows(actor, .manageAPIs(team: api.teamID))
        guard plan.terms.visibility == .public || manager else { throw AppError.validation(["plan_id": "No such plan."]) }
        guard plan.isCurrent else { throw AppError.validation(["plan_id": "This plan version was replaced; choose the current one."]) }
        // Changing plans on a deprecated API is allowed; new subscriptions need a published one.
        guard api.state.acceptsNewSubscriptions || (forAPI == api.id && api.state.servesTraffic) else {
            throw AppError.conflict("This API is \(api.state.rawValue) and does not accept new subscriptions.")
        }
        return (api, plan)
    }

    private func transition(
        _ event: SubscriptionStateMachine.Event, from: SubscriptionPosition, by side: SubscriptionActor
    ) throws -> SubscriptionTransition {
        do {
            return try SubscriptionStateMachine.apply(event, to: from, by: side)
        } catch let refusal as SubscriptionStateMachine.Refusal {
            switch refusal {
            case .reasonRequired: throw AppError.validation(["reason": refusal.description])
            case .wrongActor: throw AppError(status: .forbidden, title: "Forbidden", detail: refusal.description)
            case .notAllowed: throw AppError.conflict(refusal.description)
            }
        }
    }
}
