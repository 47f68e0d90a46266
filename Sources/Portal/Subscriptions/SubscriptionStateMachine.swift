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

/// The explicit state machine every subscription change goes through.
///
/// Pure: `apply` returns the next state or a reason the event is refused; the service stores the
/// transition with who, when and why.
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

        var name: String {
            switch self {
            case .request: "request"
            case .approve: "approve"
            case .reject: "reject"
            case .suspend: "suspend"
            case .resume: "resume"
            case .cancel: "cancel"
            case .changePlan: "change_plan"
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

    /// The next state; `current` is nil for a subscription that does not exist yet.
    static func apply(_ event: Event, to current: SubscriptionState?, by actor: SubscriptionActor) throws(Refusal) -> SubscriptionState {
        switch event {
        case .request(let automatic):
            guard current == nil else { throw .notAllowed(state: current, event: event.name) }
            guard actor == .developer || actor == .system else { throw .wrongActor(event: event.name, actor: actor) }
            return automatic ? .active : .pending
        case .approve:
            guard current == .pending else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            return .active
        case .reject(let reason):
            guard current == .pending else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw .reasonRequired(event: event.name) }
            return .rejected
        case .suspend(let reason):
            guard current == .active else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            guard !reason.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw .reasonRequired(event: event.name) }
            return .suspended
        case .resume:
            guard current == .suspended else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .developer else { throw .wrongActor(event: event.name, actor: actor) }
            return .active
        case .cancel:
            guard let current, current.isOpen else { throw .notAllowed(state: current, event: event.name) }
            guard actor != .provider else { throw .wrongActor(event: event.name, actor: actor) }
            return .cancelled
        case .changePlan(let automatic):
            guard current == .active else { throw .notAllowed(state: current, event: event.name) }
            // A developer moving to a manual-approval plan waits for the provider; the old plan keeps
            // serving until then, so the subscription itself stays active here.
            _ = automatic
            return .active
        }
    }
}

import Foundation
