import ArgumentParser
import Billing
import Foundation
import Logging
import PostgresNIO

/// `tollgate billing …`: the finance jobs (drafts, closing, corrections, reconciliation).
struct BillingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "billing", abstract: "Invoices and reconciliation of a tenant's billing period.",
        subcommands: [Refresh.self, Close.self, Void.self, Reissue.self, Reconcile.self])

    struct PeriodOptions: ParsableArguments {
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Billing period, a UTC calendar month: YYYY-MM.") var period: String

        func validate() throws {
            guard Rating.month(period) != nil else { throw ValidationError("--period must be a month like 2026-11.") }
        }
    }

    struct Refresh: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recompute the period's draft invoices from the usage so far.")
        @OptionGroup var options: PeriodOptions

        func run() async throws {
            let count = try await BillingCommand.withTenant(options.tenant) { book, tenant, connection in
                let count = try await book.refreshDrafts(tenant: tenant, period: options.period, on: connection)
                try await BillingCommand.audit(.invoiceDraftsRefreshed, tenant: tenant, target: options.period, details: ["drafts": String(count)], on: connection)
                return count
            }
            print("\(count) draft invoices for \(options.tenant) \(options.period).")
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Finalize the period: refresh its drafts and issue them, numbered; safe to re-run.",
            discussion: """
                Issued invoices are immutable; correct one with `billing reissue`. Closing the running month is allowed (the \
                demo does it); calls made after closing are not on the issued invoices and `billing reconcile` reports them.
                """)
        @OptionGroup var options: PeriodOptions

        func run() async throws {
            let result = try await BillingCommand.withTenant(options.tenant) { book, tenant, connection in
                let result = try await book.close(tenant: tenant, period: options.period, on: connection)
                try await BillingCommand.audit(
                    .invoicePeriodClosed, tenant: tenant, target: options.period,
                    details: ["issued": result.issued.joined(separator: " "), "already_issued": String(result.alreadyIssued)], on: connection)
                return result
            }
            for number in result.issued { print("issued \(number)") }
            print("\(result.issued.count) invoices issued, \(result.alreadyIssued) already issued for \(options.tenant) \(options.period).")
            if let month = Rating.month(options.period), month.end > Date() {
                print("note: \(options.period) has not ended; calls made from now on in this period are on no invoice.")
            }
        }
    }

    struct Void: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Void an issued invoice (it stays on record, marked void).")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Invoice number, e.g. DEMO-000001.") var invoice: String
        @Option(help: "Why it is voided (kept with the invoice).") var reason: String

        func validate() throws { try BillingCommand.validate(reason: reason) }

        func run() async throws {
            let voided = try await BillingCommand.withTenant(tenant) { book, tenantID, connection in
                let voided = try await book.void(tenant: tenantID, number: invoice, reason: reason, by: BillingCommand.operator, on: connection)
                try await BillingCommand.audit(.invoiceVoided, tenant: tenantID, target: invoice, details: ["reason": voided.voidReason ?? reason], on: connection)
                return voided
            }
            print("voided \(voided.number ?? invoice) (\(voided.teamName), \(voided.period)); `billing close` issues its replacement.")
        }
    }

    struct Reissue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Void an issued invoice and issue its replacement from the current data, in one step.")
        @Option(help: "Tenant slug.") var tenant: String
        @Option(help: "Invoice number, e.g. DEMO-000001.") var invoice: String
        @Option(help: "Why it is corrected (kept with the voided invoice).") var reason: String

        func validate() throws { try BillingCommand.validate(reason: reason) }

        func run() async throws {
            let result = try await BillingCommand.withTenant(tenant) { book, tenantID, connection in
                let result = try await book.reissue(tenant: tenantID, number: invoice, reason: reason, by: BillingCommand.operator, on: connection)
                try await BillingCommand.audit(
                    .invoiceReissued, tenant: tenantID, target: invoice, details: ["reason": result.void.voidReason ?? reason, "replaced_by": result.issued ?? ""],
                    on: connection)
                return result
            }
            print("voided \(invoice); " + (result.issued.map { "issued \($0) in its place." } ?? "nothing left to invoice for that team and period."))
        }
    }

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare, per subscription, calls answered by the gateways, events stored, rollups and invoiced units.",
            discussion: "Exits 0 and prints \"balanced\" when all agree; otherwise lists each difference and exits 1.")
        @OptionGroup var options: PeriodOptions

        func run() async throws {
            let slug = options.tenant
            let report = try await BillingCommand.withTenant(slug) { book, tenant, connection in
                try await Reconciliation(logger: book.logger).run(tenant: tenant, slug: slug, period: options.period, on: connection)
            }
            print(report.text, terminator: "")
            if !report.isBalanced { throw ExitCode(1) }
        }
    }

    /// A void needs a reason, as on the web form.
    static func validate(reason: String) throws {
        let trimmed = reason.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...500).contains(trimmed.count), !TextInput.hasControlCharacters(trimmed) else {
            throw ValidationError("--reason must say why, in 1 to 500 characters; it stays with the void invoice.")
        }
    }

    /// Who runs the CLI, as the audit log and the void invoice record it.
    static var `operator`: String { "cli:" + (ProcessInfo.processInfo.environment["USER"].flatMap { $0.isEmpty ? nil : $0 } ?? "unknown") }

    static func audit(_ kind: AuditLog.Kind, tenant: UUID, target: String, details: [String: String], on connection: PostgresConnection) async throws {
        try await AuditLog(logger: Logger(label: "tollgate.billing")).record(
            tenantID: tenant, actorUserID: nil, actor: Self.operator, kind, target: target, details: details, on: connection)
    }

    /// Runs `body` in one transaction in the tenant's scope.
    static func withTenant<T: Sendable>(_ slug: String, _ body: @escaping @Sendable (InvoiceBook, UUID, PostgresConnection) async throws -> T) async throws -> T {
        let runtime = try Runtime.load()
        return try await runtime.withDatabase { db in
            guard let tenant = try await db.withPlatform({ try await TenantRepository(logger: runtime.logger).find(slug: slug, on: $0) }) else {
                throw CLIError(description: "There is no tenant \(slug).")
            }
            do {
                return try await db.withTenant(tenant.id) { connection in try await body(InvoiceBook(logger: runtime.logger), tenant.id, connection) }
            } catch let error as InvoiceError {
                throw CLIError(description: error.description)
            }
        }
    }
}
