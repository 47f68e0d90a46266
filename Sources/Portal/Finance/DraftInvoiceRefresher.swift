import Billing
import Foundation
import Logging
import ServiceLifecycle

/// Keeps draft invoices following usage: every `interval` it recomputes, for every tenant, the
/// drafts of the running month and of the previous one (late usage, until finance closes it).
/// Issued invoices are never touched. Runs with the portal.
struct DraftInvoiceRefresher: Service {
    let database: Database
    let interval: Duration
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await refreshAll()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One pass; a failing tenant is logged and the others still run.
    func refreshAll(now: Date = Date()) async {
        let current = String(DisplayDate.day(now).prefix(7))
        let previous = String(DisplayDate.day(Rating.month(current)!.start.addingTimeInterval(-86_400)).prefix(7))
        let tenants: [Tenant]
        do {
            tenants = try await database.withPlatform { try await TenantRepository(logger: logger).list(after: nil, limit: 10_000, on: $0) }
        } catch {
            logger.warning("draft refresh cannot list tenants", metadata: ["error": "\(String(reflecting: error))"])
            return
        }
        for tenant in tenants {
            for period in [previous, current] {
                do {
                    try await database.withTenant(tenant.id) { try await InvoiceBook(logger: logger).refreshDrafts(tenant: tenant.id, period: period, on: $0) }
                } catch {
                    logger.warning("draft refresh failed", metadata: ["tenant": "\(tenant.slug)", "period": "\(period)", "error": "\(String(reflecting: error))"])
                }
            }
        }
    }
}
