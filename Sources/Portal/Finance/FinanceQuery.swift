import Billing
import Foundation
import Hummingbird

/// Query parameters of the finance and analytics pages and JSON routes, parsed once with one set
/// of error messages (400 on anything malformed).
struct FinanceQuery: Sendable, Equatable {
    var values: [String: String]

    init(_ request: Request) {
        var values: [String: String] = [:]
        for (key, value) in request.uri.queryParameters { values[String(key)] = String(value) }
        self.values = values
    }

    init(values: [String: String]) { self.values = values }

    private func text(_ name: String) -> String? { values[name].flatMap { $0.isEmpty ? nil : $0 } }

    func uuid(_ name: String) throws -> UUID? {
        guard let text = text(name) else { return nil }
        guard let id = UUID(uuidString: text) else { throw AppError.badRequest("\(name) must be a UUID.", fields: [name: "Not a UUID."]) }
        return id
    }

    /// `YYYY-MM`, defaulting to the current month.
    func period(now: Date = Date()) throws -> String {
        guard let text = text("period") else { return String(DisplayDate.day(now).prefix(7)) }
        guard Rating.month(text) != nil else { throw AppError.badRequest("period must be a month like 2026-11.", fields: ["period": "Use YYYY-MM."]) }
        return text
    }

    func status() throws -> InvoiceSummary.Status? {
        guard let text = text("status") else { return nil }
        guard let status = InvoiceSummary.Status(rawValue: text) else {
            throw AppError.badRequest("status is draft, issued or void.", fields: ["status": "draft, issued or void"])
        }
        return status
    }

    /// [from, to) as days (`YYYY-MM-DD`, UTC); defaults to the current month; at most 400 days.
    func days(now: Date = Date()) throws -> (from: Date, to: Date) {
        let month = Rating.month(String(DisplayDate.day(now).prefix(7)))!
        let from = try text("from").map { try day($0, "from") } ?? month.start
        let to = try text("to").map { try day($0, "to") } ?? month.end
        guard from < to, to.timeIntervalSince(from) <= 400 * 86_400 else {
            throw AppError.badRequest("from must be before to, at most 400 days apart.", fields: ["to": "after from, within 400 days"])
        }
        return (from, to)
    }

    private func day(_ text: String, _ name: String) throws -> Date {
        guard let date = DisplayDate.parseDay(text) else { throw AppError.badRequest("\(name) must be a day like 2026-11-01.", fields: [name: "Use YYYY-MM-DD."]) }
        return date
    }

    /// An analytics window: `range` 24h (default), 7d, 30d, or `custom` with from/to days.
    func window(now: Date = Date()) throws -> (range: String, from: Date, to: Date) {
        let range = text("range") ?? (text("from") != nil ? "custom" : "24h")
        if range == "custom" {
            let days = try days(now: now)
            return (range, days.from, days.to)
        }
        guard let window = UsageScope.last(range, now: now) else {
            throw AppError.badRequest("range is 24h, 7d, 30d or custom.", fields: ["range": "24h, 7d, 30d or custom"])
        }
        return (range, window.from, window.to)
    }

    func usageFilter() throws -> UsageFilter {
        UsageFilter(teamID: try uuid("team_id"), appID: try uuid("app_id"), apiID: try uuid("api_id"), planID: try uuid("plan_id"))
    }
}
