import Foundation

/// Where in a call a policy acts. The order of the cases is the order of a call:
/// before the credential check, after it (subscription, plan limits), before the upstream sees the
/// request, on the response, and once the call is over.
public enum APIPolicyPhase: String, Sendable, CaseIterable, Codable {
    case preAuth = "pre_auth"
    case postAuth = "post_auth"
    case preForward = "pre_forward"
    case response
    case afterCall = "after_call"

    /// For people: the phase's heading on the API page.
    public var title: String {
        switch self {
        case .preAuth: "Before authentication"
        case .postAuth: "After authentication"
        case .preForward: "Before forwarding"
        case .response: "On the response"
        case .afterCall: "After the call"
        }
    }
}

/// A policy a provider adds to an API's chain. Each kind acts in one phase, so the phase is the
/// kind's, not a second thing to keep consistent.
public enum APIPolicyKind: String, Sendable, CaseIterable, Codable {
    /// Calls per client (address, or a configured header) before any credential check.
    case clientRateLimit = "client_rate_limit"
    /// Headers, query parameters and path of the request the upstream hears.
    case requestTransform = "request_transform"
    /// Headers of the response the client gets.
    case responseTransform = "response_transform"
    /// GET/HEAD responses kept by the gateway and served again within their lifetime.
    case responseCache = "response_cache"
    /// Access-log records of the API's calls, POSTed in batches to a collector.
    case httpLog = "http_log"
    /// Calls checked against the API's uploaded OpenAPI document before the upstream sees them.
    case requestValidation = "request_validation"
    /// Idle timeout and maximum duration of the API's WebSocket tunnels.
    case webSocket = "websocket"

    public var phase: APIPolicyPhase {
        switch self {
        case .clientRateLimit: .preAuth
        case .requestTransform: .preForward
        case .responseTransform: .response
        case .responseCache: .preForward
        case .httpLog: .afterCall
        case .requestValidation: .preForward
        case .webSocket: .response
        }
    }

    public var title: String {
        switch self {
        case .clientRateLimit: "Rate limit per client"
        case .requestTransform: "Request transformation"
        case .responseTransform: "Response transformation"
        case .responseCache: "Response cache"
        case .httpLog: "HTTP log sink"
        case .requestValidation: "Request validation"
        case .webSocket: "WebSocket limits"
        }
    }
}

/// Every problem found in a policy's configuration or a chain (an `Error`, for `Result`).
public struct PolicyConfigProblems: Error, Sendable, Equatable {
    public var list: [PolicyConfigProblem]

    public init(_ list: [PolicyConfigProblem]) { self.list = list }
}

/// A located problem in a policy's configuration: `pointer` is relative to the policy's config
/// object (`/requests`), so the caller can prefix where the config sits (RFC 6901).
public struct PolicyConfigProblem: Error, Sendable, Equatable {
    public var pointer: String
    public var message: String

    public init(_ pointer: String, _ message: String) {
        self.pointer = pointer
        self.message = message
    }

    /// The field name the pointer ends in (`/requests` → `requests`), for form fields.
    public var field: String { String(pointer.split(separator: "/").last ?? "") }
}
