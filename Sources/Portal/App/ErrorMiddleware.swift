import Foundation
import HTTPTypes
import Hummingbird
import Logging
import PostgresNIO

/// Turns every error into a response the client can read: RFC 9457 problem+json for the JSON API
/// (and any client asking for JSON), an HTML page otherwise. Unexpected errors are logged with the
/// request id and shown as a generic 500 without internals.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let views: Views

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let problem = Self.problem(for: error, context: context)
            if Self.wantsJSON(request) {
                return Self.problemResponse(problem, instance: request.uri.path)
            }
            var page = PageChrome(title: problem.title)
            page.base = Self.tenantBase(of: request.uri.path)
            var response = views.render(
                "error", ["status": problem.status.code, "heading": problem.title, "detail": problem.detail], page: page, status: problem.status)
            for field in problem.headers { response.headers.append(field) }
            return response
        }
    }

    static func problem(for error: any Error, context: Context) -> AppError {
        switch error {
        case let error as AppError:
            return error
        case let error as HTTPError:
            switch error.status {
            case .notFound:
                return AppError(status: .notFound, title: "Not found", detail: "There is nothing at this address.")
            case .methodNotAllowed:
                return AppError(status: .methodNotAllowed, title: "Method not allowed", detail: "This address does not accept that method.")
            case .contentTooLarge:
                return AppError(status: .contentTooLarge, title: "Request too large", detail: "The request body is larger than allowed.")
            default:
                return AppError(status: error.status, title: error.status.reasonPhrase, detail: error.body ?? error.status.reasonPhrase)
            }
        case let error as any HTTPResponseError where error.status == .contentTooLarge:
            // Every size limit (form, JSON, upload bodies: NIOTooManyBytesError from collectBody) is a 413.
            return AppError(status: .contentTooLarge, title: "Request too large", detail: "The request body is larger than this address accepts.")
        case let error as any HTTPResponseError where (400..<500).contains(error.status.code):
            return AppError(status: error.status, title: error.status.reasonPhrase, detail: error.status.reasonPhrase)
        case let error as DecodingError:
            return .badRequest("The request body is not valid: \(APIDecoding.describe(error))")
        case let error where error.postgresCode.map({ $0.raw.hasPrefix("22") }) == true:
            // data exceptions (e.g. a NUL byte in text) are bad input, not server faults
            return .badRequest("A value in the request cannot be stored (invalid characters or out of range).")
        case let error where error.postgresCode.map({ $0.raw.hasPrefix("23") }) == true:
            return .conflict("The change conflicts with existing data.")
        default:
            context.logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))"])
            return AppError(status: .internalServerError, title: "Internal error", detail: "Something went wrong on our side. The request id is \(context.requestID).")
        }
    }

    static func wantsJSON(_ request: Request) -> Bool {
        let path = request.uri.path
        if path.contains("/api/") || path.contains("/oauth2/") || path.hasPrefix("/.well-known") { return true }
        let accept = request.headers[.accept] ?? ""
        return accept.contains("application/json") && !accept.contains("text/html")
    }

    static func tenantBase(of path: String) -> String {
        let parts = path.split(separator: "/", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "t", Slug.isValid(String(parts[1])) else { return "" }
        return "/t/\(parts[1])"
    }

    static func problemResponse(_ problem: AppError, instance: String) -> Response {
        var body: [String: Any] = [
            "type": "about:blank", "title": problem.title, "status": Int(problem.status.code), "detail": problem.detail,
            "instance": instance,
        ]
        if !problem.fieldErrors.isEmpty { body["errors"] = problem.fieldErrors }
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        var headers: HTTPFields = [.contentType: "application/problem+json", .cacheControl: "no-store"]
        for field in problem.headers { headers.append(field) }
        if problem.status == .unauthorized, headers[.wwwAuthenticate] == nil {
            headers[.wwwAuthenticate] = "Bearer realm=\"tollgate\""
        }
        return Response(status: problem.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

enum APIDecoding {
    /// The member as the client spelled it: request bodies are decoded with
    /// `convertFromSnakeCase`, so a coding path names `upstreamCaPem` for `upstream_ca_pem`.
    static func snakeCase(_ key: String) -> String {
        var out = ""
        for character in key {
            if character.isASCII && character.isUppercase {
                out.append("_")
                out.append(contentsOf: character.lowercased())
            } else {
                out.append(character)
            }
        }
        return out
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map(String.init) ?? snakeCase($0.stringValue) }
            return keys.isEmpty ? "body" : keys.joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context)
            return "missing field \(parent == "body" ? key.stringValue : parent + "." + key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "wrong type at \(path(context))"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "invalid value at \(path(context))"
        @unknown default:
            return "invalid"
        }
    }
}

/// Security headers on every response (HTML pages most of all).
struct SecurityHeadersMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    /// `Strict-Transport-Security` for responses on the portal's TLS listener; nil: none.
    var strictTransportSecurity: String? = nil

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        if let strictTransportSecurity, request.headers[.tollgateConnectionTLS] == "1" {
            response.headers[.strictTransportSecurity] = strictTransportSecurity
        }
        response.headers[.contentSecurityPolicy] =
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        response.headers[.xFrameOptions] = "DENY"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[.referrerPolicy] = "same-origin"
        return response
    }
}

extension HTTPField.Name {
    static let xFrameOptions = Self("X-Frame-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
    static let xRequestID = Self("X-Request-Id")!
    static let xForwardedFor = Self("X-Forwarded-For")!
    static let xForwardedProto = Self("X-Forwarded-Proto")!
    static let strictTransportSecurity = Self("Strict-Transport-Security")!
    /// Internal: the request came over the portal's own TLS listener (see `ConnectionSecurityResponder`).
    static let tollgateConnectionTLS = Self("X-Tollgate-Connection-TLS")!
}
