import Hummingbird

/// A failure the user can act on. Rendered as RFC 9457 problem+json on the JSON API and as a
/// readable page (or the form again, with messages next to the fields) in HTML.
struct AppError: Error, Sendable {
    var status: HTTPResponse.Status
    var title: String
    var detail: String
    /// Field name → message, for forms and for `errors` in problem+json.
    var fieldErrors: [String: String] = [:]
    var headers: HTTPFields = [:]

    static func notFound(_ what: String) -> AppError {
        AppError(status: .notFound, title: "Not found", detail: "\(what) was not found.")
    }
    static func badRequest(_ detail: String, fields: [String: String] = [:]) -> AppError {
        AppError(status: .badRequest, title: "Invalid request", detail: detail, fieldErrors: fields)
    }
    static func validation(_ fields: [String: String]) -> AppError {
        AppError(status: .unprocessableContent, title: "Validation failed", detail: "Some fields are not valid.", fieldErrors: fields)
    }
    static func conflict(_ detail: String, fields: [String: String] = [:]) -> AppError {
        AppError(status: .conflict, title: "Conflict", detail: detail, fieldErrors: fields)
    }
    static let unauthenticated = AppError(
        status: .unauthorized, title: "Authentication required", detail: "Sign in or send a valid bearer token.")
    static let forbidden = AppError(status: .forbidden, title: "Forbidden", detail: "You are not allowed to do this.")
    static func tooManyRequests(retryAfterSeconds: Int) -> AppError {
        AppError(
            status: .tooManyRequests, title: "Too many attempts",
            detail: "Too many failed attempts. Try again in \(max(1, retryAfterSeconds / 60)) minute(s).",
            headers: [.retryAfter: String(retryAfterSeconds)])
    }
    static let csrf = AppError(
        status: .forbidden, title: "Form expired",
        detail: "This form was not accepted because its security token is missing or stale. Go back, reload the page and try again.")
}
