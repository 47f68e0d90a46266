import ArgumentParser
import Billing
import Foundation
import Gateway
import Hummingbird
import Logging
import Metrics
import PostgresNIO
import Prometheus
import ServiceLifecycle

@main
struct Tollgate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "Multi-tenant developer portal, API marketplace and API gateway.",
        discussion: "Configuration comes from environment variables; see README.md (Configuration).",
        subcommands: [
            Serve.self, PortalOnly.self, GatewayOnly.self, Migrate.self, SeedDemo.self, TenantCommand.self, UserCommand.self,
            TokenCommand.self, PlatformAdminCommand.self, KeysCommand.self, DemoUpstream.self, ExportCommand.self, BillingCommand.self, BenchMeteringCommand.self,
            DevCertsCommand.self,
        ])
}

/// Process-wide metrics: one Prometheus registry behind swift-metrics, exported on both listeners.
enum MetricsSetup {
    static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run portal and gateway in one process (two listeners, one database pool).",
        discussion: "Applies pending migrations first. Stops gracefully on SIGTERM or SIGINT.")

    func run() async throws {
        try await Launcher.run(portal: true, gateway: true)
    }
}

struct PortalOnly: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "portal", abstract: "Run only the portal (web pages, JSON API).")
    func run() async throws { try await Launcher.run(portal: true, gateway: false) }
}

struct GatewayOnly: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway", abstract: "Run only the gateway data plane (several may share one database).")
    func run() async throws { try await Launcher.run(portal: false, gateway: true) }
}

/// Composes the long-running services into one ServiceGroup.
enum Launcher {
    static func run(portal: Bool, gateway: Bool) async throws {
        let runtime = try Runtime.load()
        let registry = MetricsSetup.bootstrap()
        let client = try runtime.makeClient()
        let database = Database(client: client, logger: runtime.logger)
        let readiness = Readiness()
        let config = runtime.config
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: client)]

        let portalServices = try await runtime.portalServices(database: database, readiness: readiness)
        services.append(.init(service: ReadinessMonitor(readiness: readiness, check: portalServices.checkReadiness)))
        // one certificate set for both TLS listeners
        let certificates = try (config.gatewayTLSAddress != nil || config.portalTLSAddress != nil)
            ? CertificateStore(directory: config.certificateDirectory, logger: runtime.logger) : nil
        if let certificates {
            // tenants' custom-host certificates stored by the operator, next to the directory's
            let hostKeys = BoundKeySeal(secret: try SecretKey.load(environmentValue: config.secretKeyValue, dataDirectory: config.dataDirectory), purpose: .hostCertificateKey)
            services.append(
                .init(
                    service: ManagedCertificateLoader(
                        client: client, store: certificates, openKey: { sealed, tenant in hostKeys.open(sealed, owner: tenant) }, logger: runtime.logger)))
        }
        if portal {
            let migrator = try runtime.migrator()
            let app = buildApplication(
                services: portalServices, metrics: registry, host: config.portalHost, port: config.portalPort, logger: runtime.logger,
                beforeServerStarts: {
                    try await migrator.migrate(client)
                    await runtime.checkRowLevelSecurityApplies(database)
                })
            services.append(.init(service: app))
            if let address = config.portalTLSAddress, let certificates {
                let secure = try buildTLSApplication(
                    services: portalServices, metrics: registry, host: address.host, port: address.port, logger: runtime.logger,
                    tls: certificates.serverConfiguration())
                services.append(.init(service: secure))
                services.append(.init(service: CertificateReloader(certificates: certificates)))
            }
            services.append(
                .init(
                    service: WebhookDispatcher(
                        database: database, secret: portalServices.secret, targets: config.webhookTargets, logger: runtime.logger)))
            services.append(.init(service: DraftInvoiceRefresher(database: database, interval: config.draftRefreshInterval, logger: runtime.logger)))
        }
        if gateway {
            let store = SnapshotStore()
            let quotas = QuotaTracker()
            var meterConfiguration = UsageMeter.Configuration(
                gateway: ProcessInfo.processInfo.hostName + ":\(config.gatewayPort)", spoolDirectory: config.dataDirectory + "/usage-spool")
            meterConfiguration.spoolCapBytes = config.meterSpoolCapBytes
            let meter = UsageMeter(configuration: meterConfiguration, database: try DatabaseURL(config.databaseURL).connectionConfiguration(), logger: runtime.logger)
            services.append(.init(service: meter))
            // before the gateway in the list: the group stops services in reverse, so the sinks
            // write and send the last records after the gateway drained
            let accessLogs = AccessLogs(configuration: config.accessLog, logger: runtime.logger)
            services.append(.init(service: accessLogs))
            let seal = BoundKeySeal(secret: try SecretKey.load(environmentValue: config.secretKeyValue, dataDirectory: config.dataDirectory), purpose: .upstreamClientKey)
            services.append(.init(service: SnapshotReloader(
                client: client, store: store, baseDomain: config.baseDomain, publicURL: config.publicURL, logger: runtime.logger,
                responseCache: ResponseCacheStore(maxBytes: config.gatewayCacheMaxBytes),
                clientKeyOpener: { sealed, apiID in seal.open(sealed, owner: apiID) }, accessLogs: accessLogs)))
            services.append(.init(service: QuotaSyncService(tracker: quotas, client: client, logger: runtime.logger)))
            // the plans' minute, hour and day windows lease across gateways like the monthly quota
            var windowTrackers: [PlanWindow.Span: QuotaTracker] = [:]
            for span in PlanWindow.Span.allCases {
                let tracker = QuotaTracker(holder: "\(ProcessInfo.processInfo.hostName) pid \(ProcessInfo.processInfo.processIdentifier) \(span.name)")
                windowTrackers[span] = tracker
                services.append(.init(service: QuotaSyncService(tracker: tracker, client: client, logger: runtime.logger)))
            }
            var gatewayConfiguration = GatewayServer.Configuration(host: config.gatewayHost, port: config.gatewayPort)
            gatewayConfiguration.eventLoopThreads = config.gatewayThreads
            gatewayConfiguration.drainTimeout = config.drainTimeout
            gatewayConfiguration.upstreamIdleTimeout = config.upstreamIdleTimeout
            gatewayConfiguration.proxyProtocol = config.gatewayProxyProtocol
            gatewayConfiguration.http2 = config.gatewayHTTP2
            gatewayConfiguration.webSocketOverHTTP2 = config.gatewayWebSocketOverHTTP2
            gatewayConfiguration.requestBodyTimeout = config.requestBodyTimeout
            gatewayConfiguration.webSocketIdleTimeout = config.webSocketIdleTimeout
            gatewayConfiguration.webSocketMaxDuration = config.webSocketMaxDuration
            if let address = config.gatewayTLSAddress, let certificates {
                var listener = GatewayServer.Configuration.TLSListener(host: address.host, port: address.port, certificates: certificates)
                listener.strictTransportSecurity = config.strictTransportSecurity
                gatewayConfiguration.tls = listener
            }
            services.append(
                .init(
                    service: GatewayServer(
                        configuration: gatewayConfiguration, store: store, rateLimiter: RateLimiter(windowTrackers: windowTrackers), quotas: quotas,
                        usage: meter, logger: runtime.logger, metricsText: { registry.emitToString() }, accessLogs: accessLogs)))
        }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: runtime.logger))
        try await group.run()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations from TOLLGATE_MIGRATIONS_DIR (default ./migrations).",
        discussion: "Each file runs in one transaction and is recorded with its checksum; re-running is a no-op.")

    func run() async throws {
        let runtime = try Runtime.load()
        let migrator = try runtime.migrator()
        let applied = try await runtime.withDatabase { try await migrator.migrate($0.client) }
        print(applied.isEmpty ? "Database is up to date." : "Applied: " + applied.joined(separator: ", "))
    }
}

struct SeedDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seed-demo",
        abstract: "Create the demo marketplace (tenant 'demo', one user per role). Safe to re-run.",
        discussion: "Generated passwords are written once to <data dir>/demo-credentials.txt (mode 0600) and printed.")

    @Flag(help: "Print the demo app's credentials and base URLs as JSON (for scripts).") var json = false

    func run() async throws {
        let runtime = try Runtime.load()
        let migrator = try runtime.migrator()
        let report = try await runtime.withDatabase { database in
            try await migrator.migrate(database.client)
            let secret = try SecretKey.load(environmentValue: runtime.config.secretKeyValue, dataDirectory: runtime.config.dataDirectory)
            return try await DemoSeed(database: database, dataDirectory: runtime.config.dataDirectory, secret: secret).run()
        }
        guard json else { return print(report.text) }
        let config = runtime.config
        let output: [String: String] = [
            "tenant": DemoSeed.tenantSlug, "client_id": report.credentials["demo-app.client_id"] ?? "",
            "client_secret": report.credentials["demo-app.client_secret"] ?? "", "api_key": report.credentials["demo-app.api_key"] ?? "",
            "gateway_base_url": "\(config.gatewayPublicURL)/t/\(DemoSeed.tenantSlug)",
            "portal_base_url": "\(config.publicURL)/t/\(DemoSeed.tenantSlug)",
        ]
        let data = try JSONSerialization.data(withJSONObject: output, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant", abstract: "Manage tenants (marketplaces).", subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant.")
        @Option(help: "URL slug: the portal lives at /t/<slug>/") var slug: String
        @Option(help: "Display name.") var name: String
        @Option(help: "ISO 4217 currency for prices and invoices.") var currency: String = "USD"
        @Option(name: .customLong("signup-policy"), help: "open or invite_only.") var signupPolicy: String = "open"
        @Option(name: .customLong("custom-host"), help: "Optional host name that serves this tenant's portal.") var customHost: String?

        func run() async throws {
            let runtime = try Runtime.load()
            let new = try CLIError.wrap {
                try NewTenant.validated(
                    slug: slug, name: name, currency: currency, signupPolicy: signupPolicy, customHost: customHost,
                    baseDomain: runtime.config.baseDomain)
            }
            let tenant = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db in
                    let tenant = try await db.withPlatform { try await TenantRepository(logger: runtime.logger).create(new, on: $0) }
                    let keys = SigningKeyStore(
                        secret: try SecretKey.load(environmentValue: runtime.config.secretKeyValue, dataDirectory: runtime.config.dataDirectory),
                        logger: runtime.logger)
                    try await db.withTenant(tenant.id) { try await keys.ensureKey(tenantID: tenant.id, on: $0) }
                    return tenant
                }
            }
            print("Created tenant \(tenant.slug) (\(tenant.id)). Portal: \(runtime.config.publicURL.tenantBase(slug: tenant.slug, customHost: tenant.customHost))/")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        func run() async throws {
            let runtime = try Runtime.load()
            let tenants = try await runtime.withDatabase { db in
                try await db.withPlatform { try await TenantRepository(logger: runtime.logger).list(after: nil, limit: 10_000, on: $0) }
            }
            for tenant in tenants { print("\(tenant.slug)\t\(tenant.name)\t\(tenant.currency)\t\(tenant.signupPolicy.rawValue)") }
        }
    }
}

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "user", abstract: "Manage tenant users.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a user in a tenant.", discussion: "Without --password-stdin a password is generated and printed once.")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Email address (unique within the tenant).") var email: String
        @Option(help: "Display name.") var name: String
        @Option(name: .customLong("role"), help: "admin, provider, developer or finance; repeat for several.") var roles: [String] = ["developer"]
        @Flag(name: .customLong("password-stdin"), help: "Read the password from standard input.") var passwordFromStdin = false

        func run() async throws {
            let runtime = try Runtime.load()
            let parsedRoles = roles.map(TenantRole.init(rawValue:))
            guard !parsedRoles.contains(where: { $0 == nil }) else {
                throw ValidationError("roles are admin, provider, developer and finance")
            }
            let password = passwordFromStdin ? (readLine(strippingNewline: true) ?? "") : DemoSeed.generatePassword()
            let account = try CLIError.wrap { try NewAccount.validated(email: email, displayName: name, password: password) }
            let slug = tenant
            let user = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db -> User in
                    guard let tenant = try await db.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                        throw AppError.notFound("Tenant \(slug)")
                    }
                    let identity = IdentityService(
                        database: db, sessions: SessionStore(idleTimeout: .seconds(60), absoluteTimeout: .seconds(60), logger: runtime.logger))
                    return try await identity.createUser(tenant: tenant, account: account, roles: Set(parsedRoles.compactMap { $0 }), actor: "cli")
                }
            }
            print("Created \(user.email) with roles \(user.roles.map(\.rawValue).sorted().joined(separator: ", ")).")
            if !passwordFromStdin { print("Password (shown once): \(password)") }
        }
    }
}

struct PlatformAdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "platform-admin", abstract: "Manage installation operators.", subcommands: [Create.self, Token.self])

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a platform API token for an admin; prints it once.")
        @Option(help: "Email of the platform admin.") var email: String
        @Option(help: "A name to recognise the token by.") var name: String = "cli"

        func run() async throws {
            let runtime = try Runtime.load()
            let (address, label) = (email, name)
            let secret = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db in
                    try await db.withPlatform { connection in
                        let admins = PlatformAdminRepository(logger: runtime.logger)
                        guard let admin = try await admins.find(email: address, on: connection) else { throw AppError.notFound("Platform admin \(address)") }
                        return try await admins.createToken(adminID: admin.id, name: label, on: connection)
                    }
                }
            }
            print(secret)
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a platform admin; prints a generated password once.")
        @Option(help: "Email address.") var email: String

        func run() async throws {
            let runtime = try Runtime.load()
            guard Email.isValid(Email.normalize(email)) else { throw ValidationError("not a valid email address") }
            let password = DemoSeed.generatePassword()
            let hash = try await PasswordHasher().hash(password)
            let address = email
            _ = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db in
                    try await db.withPlatform { try await PlatformAdminRepository(logger: runtime.logger).create(email: address, passwordHash: hash, on: $0) }
                }
            }
            print("Created platform admin \(Email.normalize(email)). Password (shown once): \(password)")
        }
    }
}

/// Turns our typed errors into readable CLI messages (exit code 1) instead of stack dumps.
struct CLIError: Error, CustomStringConvertible {
    let description: String

    static func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as AppError { throw CLIError(error) }
    }

    static func wrapAsync<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as AppError { throw CLIError(error) }
    }

    init(description: String) { self.description = description }

    init(_ error: AppError) {
        let fields = error.fieldErrors.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }
        description = ([error.detail] + fields).joined(separator: "\n")
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Manage personal access tokens.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a personal access token for a user; prints the secret (only) once.")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Email of the user the token acts as.") var email: String
        @Option(help: "A name to recognise the token by.") var name: String = "cli"
        @Option(name: .customLong("scope"), help: "read, write or admin; repeat for several.") var scopes: [String] = ["read"]
        @Option(name: .customLong("expires-in-days"), help: "Lifetime in days (default: no expiry).") var expiresInDays: Int?

        func run() async throws {
            let runtime = try Runtime.load()
            let new = try CLIError.wrap { try TokenService.NewToken.validated(name: name, scopes: scopes, expiresInDays: expiresInDays) }
            let (slug, address) = (tenant, email)
            let secret = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db -> String in
                    guard let tenant = try await db.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                        throw AppError.notFound("Tenant \(slug)")
                    }
                    let principal = try await db.withTenant(tenant.id) { connection -> Principal in
                        guard let user = try await UserRepository(logger: runtime.logger).find(email: address, on: connection) else {
                            throw AppError.notFound("User \(address)")
                        }
                        return Principal(user: user, teamRoles: [:], scopes: nil)
                    }
                    let service = TokenService(
                        database: db, tokens: PersonalAccessTokenRepository(logger: runtime.logger), audit: AuditLog(logger: runtime.logger))
                    return try await service.create(tenant: tenant, actor: principal, new, clientIP: "cli").secret
                }
            }
            print(secret)
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage token signing keys.", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start signing a tenant's tokens with a new ES256 key.",
            discussion: "The previous public key stays in the JWKS until tokens it signed have expired (the access token lifetime).")
        @Option(help: "Tenant slug.") var tenant: String

        func run() async throws {
            let runtime = try Runtime.load()
            let slug = tenant
            let secret = try SecretKey.load(environmentValue: runtime.config.secretKeyValue, dataDirectory: runtime.config.dataDirectory)
            let lifetime = runtime.config.accessTokenLifetime
            let kid = try await CLIError.wrapAsync {
                try await runtime.withDatabase { db -> String in
                    guard let tenant = try await db.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                        throw AppError.notFound("Tenant \(slug)")
                    }
                    return try await db.withTenant(tenant.id) { connection in
                        try await SigningKeyStore(secret: secret, logger: runtime.logger).rotate(tenantID: tenant.id, tokenLifetime: lifetime, on: connection).kid
                    }
                }
            }
            print("Tenant \(slug): new key \(kid) is published now and signs new tokens in \(SigningKeyStore.publishLead.components.seconds) s; the previous key stays published until its tokens expire.")
        }
    }
}

struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Finance exports as CSV (RFC 4180, UTF-8) on standard output.", subcommands: [Usage.self, Invoices.self])

    struct Usage: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Usage by UTC day × subscription, with team, app, API and plan names and ids.",
            discussion: "Example: tollgate export usage --tenant demo --from 2026-11-01 --to 2026-12-01 > usage.csv")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "First day (YYYY-MM-DD, UTC), included.") var from: String
        @Option(help: "Last day (YYYY-MM-DD, UTC), excluded.") var to: String

        func run() async throws {
            guard let start = DisplayDate.parseDay(from), let end = DisplayDate.parseDay(to), start < end else {
                throw ValidationError("--from and --to must be days like 2026-11-01, with --from before --to.")
            }
            let runtime = try Runtime.load()
            try await runtime.withDatabase { database in
                let output = FileHandle.standardOutput
                try await UsageExport(client: database.client, logger: database.logger).run(tenant: tenant, from: start, to: end) { chunk in
                    try output.write(contentsOf: Data(chunk.utf8))
                }
            }
        }
    }

    struct Invoices: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invoices with their line items, one row per line; issued and void ones (drafts with --drafts).",
            discussion: "Example: tollgate export invoices --tenant demo --from 2026-11-01 --to 2026-12-01 > invoices.csv")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "First day (YYYY-MM-DD, UTC); invoices whose period starts on or after it.") var from: String
        @Option(help: "Last day (YYYY-MM-DD, UTC), excluded.") var to: String
        @Flag(help: "Include draft invoices.") var drafts = false

        func run() async throws {
            guard let start = DisplayDate.parseDay(from), let end = DisplayDate.parseDay(to), start < end else {
                throw ValidationError("--from and --to must be days like 2026-11-01, with --from before --to.")
            }
            let runtime = try Runtime.load()
            try await runtime.withDatabase { database in
                let output = FileHandle.standardOutput
                try await InvoiceExport(client: database.client, logger: database.logger).run(tenant: tenant, from: start, to: end, includeDrafts: drafts) {
                    try output.write(contentsOf: Data($0.utf8))
                }
            }
        }
    }
}
