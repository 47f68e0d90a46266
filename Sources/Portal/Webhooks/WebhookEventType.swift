import Foundation

/// The events a webhook endpoint can subscribe to. The raw value is the `type` in the payload and
/// the `Tollgate-Event` header.
enum WebhookEventType: String, Sendable, CaseIterable, Codable {
    case subscriptionRequested = "subscription.requested"
    case subscriptionApproved = "subscription.approved"
    case subscriptionRejected = "subscription.rejected"
    case subscriptionSuspended = "subscription.suspended"
    case subscriptionResumed = "subscription.resumed"
    case subscriptionCancelled = "subscription.cancelled"
    case subscriptionPlanChanged = "subscription.plan_changed"
    case subscriptionPlanChangeRequested = "subscription.plan_change_requested"
    case subscriptionPlanChangeRejected = "subscription.plan_change_rejected"
    case subscriptionPlanChangeWithdrawn = "subscription.plan_change_withdrawn"
    case appCredentialsRotated = "app.credentials_rotated"

    /// The event a subscription transition announces, by the state machine's event name.
    static func forSubscriptionEvent(_ name: String) -> WebhookEventType? {
        switch name {
        case "request": .subscriptionRequested
        case "approve": .subscriptionApproved
        case "reject": .subscriptionRejected
        case "suspend": .subscriptionSuspended
        case "resume": .subscriptionResumed
        case "cancel": .subscriptionCancelled
        case "change_plan", "approve_plan_change": .subscriptionPlanChanged
        case "request_plan_change": .subscriptionPlanChangeRequested
        case "reject_plan_change": .subscriptionPlanChangeRejected
        case "withdraw_plan_change": .subscriptionPlanChangeWithdrawn
        default: nil
        }
    }

    /// Parses a list of names; unknown names are reported, not ignored.
    static func parseList(_ names: [String]) throws -> [WebhookEventType] {
        var result: [WebhookEventType] = []
        for name in names.map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
            guard let type = WebhookEventType(rawValue: name) else {
                throw AppError.validation(["events": "Unknown event '\(name.prefix(60))'. Known: \(allCases.map(\.rawValue).joined(separator: ", "))."])
            }
            if !result.contains(type) { result.append(type) }
        }
        return result
    }
}
