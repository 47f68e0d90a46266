import Foundation
import Hummingbird
import Gateway
import Logging

/// The portal's collaborators, built once per process and shared by every controller.
struct PortalServices: Sendable {
    let config: AppConfig
    let database: Database
    let views: Views
    let csrf: CSRFProtection
    let secret: SecretKey
    let sessions: SessionStore
    let identity: IdentityService
    let teamService: TeamService
    let tokenService: TokenService
    let catalog: CatalogService
    let planService: PlanService
    let appService: AppService
    let subscriptionService: SubscriptionService
    let webhookService: WebhookService
    let finance: FinanceService
    let tenants: TenantRepository
    let platformAdmins: PlatformAdminRepository
    let tenantAdministration: TenantAdministration
    let tenantCertificates: TenantCertificates
    let readiness: Readiness
    let logger: Logger

    init(config: AppConfig, database: Database, views: Views, secret: SecretKey, readiness: Readiness, hasher: PasswordHasher = PasswordHasher()) {
        let logger = database.logger
        self.config = config
        self.database = database
        self.views = views
        self.csrf = CSRFProtection(secret: secret)
        self.secret = secret
        self.sessions = SessionStore(idleTimeout: config.sessionIdleTimeout, absoluteTimeout: config.sessionAbsoluteTimeout, logger: logger)
        self.identity = IdentityService(database: database, sessions: sessions, hasher: hasher)
        let audit = AuditLog(logger: logger)
        self.teamService = TeamService(database: database, teams: TeamRepository(logger: logger), users: UserRepository(logger: logger), audit: audit)
        self.tokenService = TokenService(database: database, tokens: PersonalAccessTokenRepository(logger: logger), audit: audit)
        self.catalog = CatalogService(database: database, apis: APIRepository(logger: logger), teams: TeamRepository(logger: logger), audit: audit,
            documents: APIDocumentRepository(logger: logger), descriptorSets: APIDescriptorSetRepository(logger: logger), keySeal: BoundKeySeal(secret: secret, purpose: .upstreamClientKey))
        let outbox = WebhookOutbox(logger: logger)
        self.appService = AppService(
            database: database, apps: AppRepository(logger: logger), teams: TeamRepository(logger: logger), audit: audit, outbox: outbox)
        self.subscriptionService = SubscriptionService(
            database: database, subscriptions: SubscriptionRepository(logger: logger), apps: AppRepository(logger: logger),
            apis: APIRepository(logger: logger), plans: PlanRepository(logger: logger), audit: audit, outbox: outbox)
        self.webhookService = WebhookService(
            database: database, webhooks: WebhookRepository(logger: logger), teams: TeamRepository(logger: logger), audit: audit, secret: secret,
            targets: config.webhookTargets)
        self.planService = PlanService(database: database, plans: PlanRepository(logger: logger), apis: APIRepository(logger: logger), audit: audit)
        self.finance = FinanceService(database: database)
        self.tenants = TenantRepository(logger: logger)
        self.platformAdmins = PlatformAdminRepository(logger: logger)
        self.tenantAdministration = TenantAdministration(
            database: database, tenants: tenants, identity: identity, audit: audit, keys: SigningKeyStore(secret: secret, logger: logger))
        self.tenantCertificates = TenantCertificates(database: database, audit: audit, seal: BoundKeySeal(secret: secret, purpose: .hostCertificateKey))
        self.readiness = readiness
        self.logger = logger
    }

    /// Session-style cookie: HttpOnly, SameSite=Lax, Secure when the client reached us over TLS.
    func cookie(name: String, value: String, path: String, request: Request, maxAge: Int? = nil) -> Cookie {
        let secure = request.headers[.tollgateConnectionTLS] == "1" || (config.trustProxy && request.headers[.xForwardedProto] == "https")
        return Cookie(name: name, value: value, maxAge: maxAge, path: path, secure: secure, httpOnly: true, sameSite: .lax)
    }

    func expiredCookie(name: String, path: String, request: Request) -> Cookie {
        cookie(name: name, value: "", path: path, request: request, maxAge: 0)
    }

    /// A tenant's public base: its token issuer and the start of every absolute link, from
    /// configuration (`TOLLGATE_PUBLIC_URL` and the tenant's custom host), never from the request.
    func publicBase(_ tenant: Tenant) -> String {
        config.publicURL.tenantBase(slug: tenant.slug, customHost: tenant.customHost)
    }

    /// Layout values for a tenant page.
    func chrome(_ title: String, context: AppRequestContext, notice: String? = nil) -> PageChrome {
        var page = PageChrome(title: title)
        page.base = context.base
        page.tenantName = context.tenant?.name
        page.userName = context.principal?.user.displayName
        page.csrf = context.csrfBinding.map(csrf.token(binding:)) ?? ""
        page.notice = notice
        page.nav = Navigation.items(for: context.principal, base: context.base)
        return page
    }
}

/// Navigation by role: people see only what they can use.
enum Navigation {
    static func items(for principal: Principal?, base: String) -> [[String: Any]] {
        guard let principal else {
            return [
                ["href": base + "/catalog", "label": "Catalog"], ["href": base + "/login", "label": "Sign in"],
                ["href": base + "/signup", "label": "Sign up"],
            ]
        }
        var items: [[String: Any]] = [
            ["href": base + "/", "label": "Home"], ["href": base + "/catalog", "label": "Catalog"], ["href": base + "/teams", "label": "Teams"],
            ["href": base + "/apps", "label": "Apps"], ["href": base + "/subscriptions", "label": "Subscriptions"],
        ]
        if Policy.allows(principal, .listUsers) { items.append(["href": base + "/admin/users", "label": "Users"]) }
        if principal.has(.admin) || principal.teamRoles.values.contains(where: { $0 >= .admin }) {
            items.append(["href": base + "/webhooks", "label": "Webhooks"])
        }
        if Policy.allows(principal, .viewFinance) {
            items.append(["href": base + "/finance", "label": "Finance"])
        } else if principal.teamRoles.values.contains(where: { $0 >= .admin }) {
            items.append(["href": base + "/invoices", "label": "Invoices"])
        }
        if Policy.allows(principal, .viewUsage(team: nil)) { items.append(["href": base + "/analytics", "label": "Analytics"]) }
        if Policy.allows(principal, .inviteUsers) { items.append(["href": base + "/admin/invitations", "label": "Invitations"]) }
        if Policy.allows(principal, .viewAuditLog) { items.append(["href": base + "/admin/audit", "label": "Audit log"]) }
        items.append(["href": base + "/account", "label": "Account"])
        return items
    }
}
