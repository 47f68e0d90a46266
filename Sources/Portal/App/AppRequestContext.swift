import Foundation
import Hummingbird
import NIOCore

/// Per-request state shared by the portal's middleware and handlers.
struct AppRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// The peer address (or the first `X-Forwarded-For` hop when TOLLGATE_TRUST_PROXY is set).
    var clientIP: String
    /// Set by `TenantMiddleware` under `/t/{slug}`.
    var tenant: Tenant?
    /// True when the tenant came from the Host header, so its pages live at `/` rather than `/t/{slug}/`.
    var hostMounted = false
    /// The signed-in browser session, if any.
    var session: Session?
    /// The authenticated tenant principal (session or personal access token).
    var principal: Principal?
    /// The signed-in platform administrator, on `/platform` pages.
    var platformAdminID: UUID?
    /// What this browser's CSRF tokens are bound to: the session token, or an anonymous cookie.
    var csrfBinding: String?
    /// A parsed, CSRF-checked urlencoded form body (HTML POST routes).
    var form: FormData = FormData()

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientIP = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    /// The id Hummingbird puts in every log line of this request (empty outside a server).
    var requestID: String { logger[metadataKey: "hb.request.id"]?.description ?? "" }

    /// Path prefix for links inside the current tenant's portal ("" on a tenant host).
    var base: String {
        guard let tenant, !hostMounted else { return "" }
        return "/t/\(tenant.slug)"
    }

    /// The tenant, or 404 (routes under `/t/{slug}` always have one).
    func requireTenant() throws -> Tenant {
        guard let tenant else { throw AppError.notFound("Tenant") }
        return tenant
    }

    func requirePrincipal() throws -> Principal {
        guard let principal else { throw AppError.unauthenticated }
        return principal
    }

    /// 1 MiB is plenty for forms and JSON; OpenAPI uploads (later) get their own limit.
    var maxUploadSize: Int { 1 << 20 }

    var requestDecoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    var responseEncoder: JSONEncoder { APIJSON.encoder }
}

enum APIJSON {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

/// A urlencoded form body as field → value (last value wins; `values` keeps repeats, for checkboxes).
struct FormData: Sendable {
    private(set) var pairs: [(String, String)] = []

    init() {}

    /// File inputs by name with their raw bytes (multipart forms only), e.g. a binary descriptor set.
    private(set) var files: [String: [UInt8]] = [:]

    init(pairs: [(String, String)], files: [String: [UInt8]] = [:]) {
        self.pairs = pairs
        self.files = files
    }

    init(urlencoded body: String) {
        for part in body.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = Self.decode(kv[0])
            let value = kv.count > 1 ? Self.decode(kv[1]) : ""
            pairs.append((key, value))
        }
    }

    subscript(_ name: String) -> String? { pairs.last { $0.0 == name }?.1 }

    func values(_ name: String) -> [String] { pairs.filter { $0.0 == name }.map(\.1) }

    private static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
