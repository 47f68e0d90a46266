import Foundation
import Logging
import PostgresNIO

/// Invoices with their line items as CSV, one row per line (invoice columns repeated), streamed
/// like `UsageExport`. Money is a decimal string in the major unit next to a currency column.
public struct InvoiceExport: Sendable {
    public static let header = [
        "invoice_number", "status", "period", "issued_at", "team_id", "team", "currency", "invoice_total", "line", "subscription_id", "app", "api",
        "plan", "kind", "description", "quantity", "unit", "unit_price", "amount", "replaces", "void_reason", "voided_at", "replaced_by",
    ]

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Invoices of `tenant` (slug) whose period starts in [from, to); drafts only when asked.
    /// Returns the number of data rows.
    @discardableResult
    public func run(tenant: String, from: Date, to: Date, includeDrafts: Bool = false, write: (String) async throws -> Void) async throws -> Int {
        try await write(CSV.line(Self.header))
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.enterSystemScope(readOnly: true, logger: logger)
            try await InvoiceBook.planForBulkReads(on: connection, logger: logger)
            let rows = try await connection.query(
                """
                SELECT ARRAY[coalesce(i.number, ''), i.status, to_char(i.period, 'YYYY-MM'),
                             coalesce(to_char(i.issued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''), i.team_id::text, i.team_name,
                             i.currency::text, i.total_minor::text, l.position::text, l.subscription_id::text, l.app_name, l.api_name, l.plan_name,
                             l.kind, l.description, l.quantity::text, CASE l.kind WHEN 'fee' THEN 'day' ELSE 'request' END, l.unit_price_micros::text,
                             l.amount_minor::text, coalesce(r.number, ''), coalesce(i.void_reason, ''),
                             coalesce(to_char(i.voided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''),
                             coalesce((SELECT coalesce(x.number, 'draft') FROM invoices x WHERE x.tenant_id = i.tenant_id AND x.replaces_id = i.id
                                       ORDER BY x.created_at DESC LIMIT 1), '')]
                FROM invoices i
                JOIN tenants t ON t.id = i.tenant_id
                JOIN invoice_lines l ON l.tenant_id = i.tenant_id AND l.invoice_id = i.id
                LEFT JOIN invoices r ON r.tenant_id = i.tenant_id AND r.id = i.replaces_id
                WHERE t.slug = \(tenant) AND i.period >= (\(from) AT TIME ZONE 'UTC')::date AND i.period < (\(to) AT TIME ZONE 'UTC')::date AND (i.status <> 'draft' OR \(includeDrafts))
                ORDER BY i.period, i.number NULLS LAST, i.team_name, l.position
                """, logger: logger)
            var buffer = ""
            buffer.reserveCapacity(80 * 1024)
            var count = 0
            for try await var fields in rows.decode([String].self) {
                let currency = fields[6]
                fields[7] = ISO4217.decimal(minor: Int64(fields[7]) ?? 0, currency: currency)
                fields[17] = ISO4217.unitPriceDecimal(micros: Int64(fields[17]) ?? 0, currency: currency)
                fields[18] = ISO4217.decimal(minor: Int64(fields[18]) ?? 0, currency: currency)
                CSV.append(fields, to: &buffer)
                count += 1
                if buffer.utf8.count >= 64 * 1024 {
                    try await write(buffer)
                    buffer.removeAll(keepingCapacity: true)
                }
            }
            if !buffer.isEmpty { try await write(buffer) }
            return count
        }
    }
}
