import Foundation
import Gateway
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Logging
import Prometheus

/// Builds the portal's router: the seam tests use (`app.test(.router)`) and `serve` runs.
func buildRouter(services: PortalServices, metrics: PrometheusCollectorRegistry) -> Router<AppRequestContext> {
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: LogRequestsMiddleware(.info))
    router.add(middleware: MetricsMiddleware())
    router.add(middleware: SecurityHeadersMiddleware(strictTransportSecurity: services.config.strictTransportSecurity))
    router.add(middleware: ErrorMiddleware(views: services.views))

    HealthRoutes(readiness: services.readiness, check: services.checkReadiness, metrics: metrics).addRoutes(to: router)
    PlatformPages(services: services).addRoutes(to: router)
    PlatformAPI(services: services).addRoutes(to: router)

    let tenant = router.group("/t/:tenant").add(middleware: TenantMiddleware(database: services.database, tenants: services.tenants))
    TenantAPI(services: services).addRoutes(to: tenant.group("/api/v1"))
    OAuthRoutes(services: services, secret: services.secret).addRoutes(tenant: tenant, root: router)

    let web = tenant.group().add(middleware: BrowserSessionMiddleware(realm: .tenant, services: services))
    AuthPages(services: services).addRoutes(to: web)
    let catalogPages = CatalogPages(services: services)
    catalogPages.addPublicRoutes(to: web)
    let signedIn = web.group().add(middleware: RequireSignIn())
    catalogPages.addProviderRoutes(to: signedIn)
    AccountPages(services: services).addRoutes(to: signedIn)
    TeamPages(services: services).addRoutes(to: signedIn)
    AdminPages(services: services).addRoutes(to: signedIn)
    AppPages(services: services).addRoutes(to: signedIn)
    PlanPages(services: services).addRoutes(to: signedIn)
    SubscriptionPages(services: services).addRoutes(to: signedIn)
    WebhookPages(services: services).addRoutes(to: signedIn)
    FinancePages(services: services).addRoutes(to: signedIn)
    return router
}

/// The portal application: router behind the tenant-host rewriter, on `PORTAL_ADDRESS`.
func buildApplication(
    services: PortalServices, metrics: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger,
    beforeServerStarts: @escaping @Sendable () async throws -> Void = {},
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    portalApplication(
        services: services, metrics: metrics, host: host, port: port, logger: logger, server: portalHTTP1(services), overTLS: false,
        beforeServerStarts: beforeServerStarts, onServerRunning: onServerRunning)
}

/// The same portal on `PORTAL_TLS_ADDRESS`, speaking TLS with `tls` (the certificate store's).
func buildTLSApplication(
    services: PortalServices, metrics: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger, tls: TLSConfiguration,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    portalApplication(
        services: services, metrics: metrics, host: host, port: port, logger: logger,
        server: try HTTPServerBuilder.tls(portalHTTP1(services), tlsConfiguration: tls), overTLS: true, onServerRunning: onServerRunning)
}

private func portalHTTP1(_ services: PortalServices) -> HTTPServerBuilder {
    .http1(
        configuration: .init(
            additionalChannelHandlers: [
                RequestDeadlineHandler(headTimeout: services.config.requestHeadTimeout, bodyTimeout: services.config.requestBodyTimeout)
            ], idleTimeout: .seconds(120)))
}

private func portalApplication(
    services: PortalServices, metrics: PrometheusCollectorRegistry, host: String, port: Int, logger: Logger, server: HTTPServerBuilder,
    overTLS: Bool, beforeServerStarts: @escaping @Sendable () async throws -> Void = {},
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let responder = ConnectionSecurityResponder(
        inner: TenantHostResponder(
            inner: buildRouter(services: services, metrics: metrics).buildResponder(), baseDomain: services.config.baseDomain,
            database: services.database, tenants: services.tenants),
        overTLS: overTLS)
    var app = Application(
        responder: responder, server: server,
        configuration: .init(address: .hostname(host, port: port), serverName: "tollgate-portal"),
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
        logger: logger)
    app.beforeServerStarts(perform: beforeServerStarts)
    return app
}

/// Tells the portal whether the request came over its own TLS listener: sets the internal
/// `X-Tollgate-Connection-TLS` header on that listener and removes it on the plaintext one, so a
/// client can never claim it. Cookies get `Secure`, responses `Strict-Transport-Security` from it.
struct ConnectionSecurityResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == AppRequestContext {
    let inner: Inner
    let overTLS: Bool

    func respond(to request: Request, context: AppRequestContext) async throws -> Response {
        guard overTLS || request.headers[.tollgateConnectionTLS] != nil else { return try await inner.respond(to: request, context: context) }
        var head = request.head
        head.headerFields[.tollgateConnectionTLS] = overTLS ? "1" : nil
        return try await inner.respond(to: Request(head: head, body: request.body), context: context)
    }
}

/// Adds `X-Request-Id` (the id in every log line of the request) to responses.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.xRequestID] = context.requestID
        return response
    }
}

/// `/healthz`, `/readyz` and `/metrics` on the portal listener.
struct HealthRoutes: Sendable {
    let readiness: Readiness
    let check: @Sendable () async -> Readiness.Report
    let metrics: PrometheusCollectorRegistry

    func addRoutes(to router: Router<AppRequestContext>) {
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}")))
        }
        router.get("/readyz") { _, _ in
            let report = await check()
            readiness.update(report)
            return Response(
                status: report.isReady ? .ok : .serviceUnavailable, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: readiness.json)))
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.emitToString())))
        }
    }
}
