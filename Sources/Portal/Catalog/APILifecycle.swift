/// The lifecycle of a published API version: draft → published → deprecated → retired.
///
/// Only published APIs are listed in the catalog and accept new subscriptions; deprecated ones keep
/// serving existing subscriptions (the gateway adds `Deprecation`/`Sunset`); retired ones are
/// refused at the gateway. Pure value logic: the services persist the result.
enum APIState: String, Sendable, Codable, CaseIterable {
    case draft, published, deprecated, retired

    /// Listed in the catalog and open to new subscriptions.
    var acceptsNewSubscriptions: Bool { self == .published }
    /// Routed by the gateway for existing subscriptions.
    var servesTraffic: Bool { self == .published || self == .deprecated }
}

enum APILifecycle {
    enum Transition: String, Sendable, CaseIterable {
        case publish, deprecate, retire
        /// Back to published after a deprecation that was announced by mistake.
        case undeprecate
    }

    struct IllegalTransition: Error, Equatable, CustomStringConvertible {
        let from: APIState
        let transition: Transition
        var description: String {
            "An API that is \(from.rawValue) cannot be \(transition.pastTense). "
                + "Allowed now: \(APILifecycle.allowed(from: from).map(\.rawValue).joined(separator: ", ").ifEmpty("nothing — retired is final"))."
        }
    }

    static func apply(_ transition: Transition, to state: APIState) throws(IllegalTransition) -> APIState {
        switch (state, transition) {
        case (.draft, .publish): return .published
        case (.published, .deprecate): return .deprecated
        case (.deprecated, .undeprecate): return .published
        case (.published, .retire), (.deprecated, .retire), (.draft, .retire): return .retired
        default: throw IllegalTransition(from: state, transition: transition)
        }
    }

    static func allowed(from state: APIState) -> [Transition] {
        Transition.allCases.filter { (try? apply($0, to: state)) != nil }
    }
}

extension APILifecycle.Transition {
    var pastTense: String {
        switch self {
        case .publish: "published"
        case .deprecate: "deprecated"
        case .retire: "retired"
        case .undeprecate: "un-deprecated"
        }
    }
}

extension String {
    func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}
