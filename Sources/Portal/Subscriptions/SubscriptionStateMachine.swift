/// States of an app's subscription to a plan.
enum SubscriptionState: String, Sendable, Codable, CaseIterable {
    /// Waiting for a provider's approval (manual plans).
    case pending
    case active
    case suspended
    case rejected
    case cancelled

    /// Counts towards "one active subscription per (app, API)".
    var isOpen: Bool { self == .pending || self == .active || self == .suspended }
    /// Calls are let through by the gateway.
    var allowsTraffic: Bool { self == .active }
}

/// Who asks for a transition; each event says which side may trigger it.
enum SubscriptionActor: String, Sendable, Codable {
    case developer, provider, system
}

/// What a transition does to the subscription's plan.
enum PlanEffect: Sendable, Equatable {
    case unchanged
    /// Move to the new plan now (automatic plans, or a provider's own change).
    case switchNow
    /// Keep serving the current plan; store the new one as a request for the provider.
    case request
    /// The provider approved the stored request: move to the requested plan.
    case applyRequested
    /// The stored request ends without a move (rejected, withdrawn, or overtaken by the transition).
    case dropRequest
}

/// Where a subscription stands: its state and whether a plan change waits for the provider.
struct SubscriptionPosition: Sendable, Equatable {
    var state: SubscriptionState?
    var planChangeRequested = false

    static let new = SubscriptionPosition(state: nil)
    static func of(_ state: SubscriptionState, planChangeRequested: Bool = false) -> SubscriptionPosition {
        SubscriptionPosition(state: state, planChangeRequested: planChangeRequested)
    }
}

/// The result of an accepted event.
struct SubscriptionTransition: Sendable, Equatable {
    var state: SubscriptionState
    var plan: PlanEffect = .unchanged
    /// The name stored in the history and mapped to a webhook event.
    var name: String
}

/// The explicit state machine every subscription change goes through.
///
/// Pure: `apply` returns the transition or a reason the event is refused; the service stores the
/// transition with who, when and why. A plan change to a plan that needs approval is a request
/// beside the state: the subscription keeps its state and its plan until the provider decides, and
/// approve/reject act on that request while one is open.
enum SubscriptionStateMachine {
    enum Event: Sendable, Equatable {
        /// A new subscription; automatic plans start active, manual ones pending.
        case request(automaticApproval: Bool)
        case approve
        case reject(reason: String)
        case suspend(reason: String)
        case resume
        case cancel
        case changePlan(automaticApproval: Bool)
        /// The developer takes back a plan change that waits for approval.
        case withdrawPlanChange

        var name: String {
            switch self {
            case .request: "request"
            case .approve: "approve"
            case .reject: "reject"
            case .suspend: "suspend"
            case .resume: "resume"
            case .cancel: "cancel"
            case .changePlan: "change_plan"
            case .withdrawPlanChange: "withdraw_plan_change"
            }
        }
    }

    enum Refusal: Error, Equatable, CustomStringConvertible {
        case notAllowed(state: SubscriptionState?, event: String)
        case wrongActor(event: String, actor: SubscriptionActor)
        case reasonRequired(event: String)

        var description: String {
            switch self {
            case .notAllowed(let state, let event):
                "A subscription that is \(state?.rawValue ?? "new") cannot \(event.replacingOccurrences(of: "_", with: " "))."
            case .wrongActor(let event, let actor):
                "A \(actor.rawValue) cannot \(event.replacingOccurrences(of: "_", with: " ")) a subscription."
            case .reasonRequired(let event):
                "Give a reason to \(event) the subscription; the developer sees it."
            }
        }
    }

    /// The next state of a subscription in `position` (state nil: it does not exist yet).
    static func apply(_ event: Event, to position: SubscriptionPosition, by actor: SubscriptionActor) throws(Refusal) -> SubscriptionTransition {
        let current = position.state
        let changeOpen = position.planChangeRequested && current == .active
        /// Leaving `active` ends an open plan-change request with it.
        func leaving(to state: SubscriptionState) -> SubscriptionTransition {
            SubscriptionTransition(state: state, plan: changeOpen ? .dropRequest : .unchanged, name: event.name)
        }
        switch event {
        case .request(let automatic):
            guard current == nil else { throw .notAllowed(state: current, event: event.name) }
            guard actor == .developer || actor == .system else { throw .wrongActor(event: event.name, actor: actor) }
            return SubscriptionTransition(state: automatic ? .active : .pending, name: event.name)
        case .approve:
            guard current == .pending || changeOpen else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            if changeOpen { return SubscriptionTransition(state: .active, plan: .applyRequested, name: "approve_plan_change") }
            return SubscriptionTransition(state: .active, name: event.name)
        case .reject(let reason):
            guard current == .pending || changeOpen else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw .reasonRequired(event: event.name) }
            if changeOpen { return SubscriptionTransition(state: .active, plan: .dropRequest, name: "reject_plan_change") }
            return SubscriptionTransition(state: .rejected, name: event.name)
        case .suspend(let reason):
            guard current == .active else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw .reasonRequired(event: event.name) }
            return leaving(to: .suspended)
        case .resume:
            guard current == .suspended else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            return SubscriptionTransition(state: .active, name: event.name)
        case .cancel:
            guard let current, current.isOpen else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .provider else { throw .wrongActor(event: event.name, actor: actor) }
            return leaving(to: .cancelled)
        case .changePlan(let automatic):
            guard current == .active else { throw .notAllowed(state: current, event: event.name) }
            // The provider is the one who approves, so its own change needs nobody's approval.
            if automatic || actor != .developer { return SubscriptionTransition(state: .active, plan: .switchNow, name: event.name) }
            // The current plan keeps serving (and billing) until the provider decides.
            return SubscriptionTransition(state: .active, plan: .request, name: "request_plan_change")
        case .withdrawPlanChange:
            guard changeOpen else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .provider else { throw .wrongActor(event: event.name, actor: actor) }
            return SubscriptionTransition(state: .active, plan: .dropRequest, name: event.name)
        }
    }
}
