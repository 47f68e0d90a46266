import Foundation
import Logging
import PostgresNIO

/// Usage by UTC day × subscription as CSV, streamed: rows go to `write` as Postgres sends them, in
/// chunks, so memory stays constant however long the period.
public struct UsageExport: Sendable {
    public static let header = [
        "date", "tenant", "team_id", "team", "app_id", "app", "api_id", "api", "api_version", "plan_id", "plan", "subscription_id", "calls",
        "billable_calls", "rejected_calls", "server_errors", "bytes_in", "bytes_out",
    ]

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Writes the CSV for `tenant` (slug) over [from, to); returns the number of data rows.
    @discardableResult
    public func run(tenant: String, from: Date, to: Date, filter: UsageFilter = UsageFilter(), write: (String) async throws -> Void) async throws -> Int {
        try await write(CSV.line(Self.header))
        // one row per key: what the meters appended since their last fold is folded first
        try await UsageStore(logger: logger).fold(client: client)
        return try await client.withTransaction(logger: logger) { connection in
            try await connection.enterSystemScope(readOnly: true, logger: logger)
            var buffer = ByteBuffer()
            buffer.reserveCapacity(80 * 1024)
            var count = 0
            try await Self.forEachRow(
                tenant: tenant, from: from, to: to, filter: filter, on: connection, logger: logger,
                { day, names, row in
                    buffer.writeString(day)
                    buffer.writeString(",")
                    buffer.writeString(names.csv)
                    var counts = row.csvCounts
                    buffer.writeBuffer(&counts)
                    count += 1
                    return buffer.readableBytes >= 64 * 1024 ? .pause : .next
                },
                pause: {
                    try await write(String(buffer: buffer))
                    buffer.clear()
                })
            if buffer.readableBytes > 0 { try await write(String(buffer: buffer)) }
            return count
        }
    }

    /// The first `limit` rows (fields in `header` order) on a connection the caller scoped: what the
    /// finance pages and the JSON API show.
    public static func rows(tenant: String, from: Date, to: Date, filter: UsageFilter, limit: Int, on connection: PostgresConnection, logger: Logger)
        async throws -> [[String]]
    {
        var result: [[String]] = []
        guard limit > 0 else { return result }
        try await forEachRow(tenant: tenant, from: from, to: to, filter: filter, on: connection, logger: logger) { day, names, row in
            result.append([day, tenant] + names.fields + row.counts)
            return result.count < limit ? .next : .stop
        }
        return result
    }

    /// Streams the (folded) daily rollups of [from, to) in export order (day, subscription, plan) — the
    /// order of their primary key, so Postgres reads the index and sorts nothing — and names each
    /// row from the tenant's catalog, read once. Joining in Postgres cost ~12 s for 1,000,000 rows
    /// on the bench machine (hash joins, per-row formatting, an on-disk sort); this costs a
    /// dictionary lookup per row (docs/BENCHMARKS.md). `body` sees each row synchronously (an
    /// async call per row was measurable) and says whether to go on, stop, or first run `pause`
    /// (where the export writes out what it gathered).
    static func forEachRow(
        tenant: String, from: Date, to: Date, filter: UsageFilter, on connection: PostgresConnection, logger: Logger,
        isolation: isolated (any Actor)? = #isolation, _ body: (String, UsageNames.Resolved, DailyUsage) -> RowVerdict,
        pause: () async throws -> Void = {}
    ) async throws {
        var names = try await UsageNames.load(tenant: tenant, on: connection, logger: logger)
        try await connection.query("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)", logger: logger)
        let rows = try await connection.query(
            """
            SELECT (day - DATE '1970-01-01')::int, subscription_id, plan_id, coalesce(api_id, '00000000-0000-0000-0000-000000000000'),
                   ',' || calls || ',' || billable || ',' || rejected || ',' || errors || ',' || bytes_in || ',' || bytes_out || E'\\r\\n'
            FROM usage_daily
            WHERE tenant_id = (SELECT id FROM tenants WHERE slug = \(tenant)) AND day >= (\(from) AT TIME ZONE 'UTC')::date AND day < (\(to) AT TIME ZONE 'UTC')::date
            ORDER BY day, subscription_id, plan_id
            """, logger: logger)
        var dayNumber: Int32 = .min
        var dayText = ""
        // Cells are read straight from their binary form: PostgresNIO's generic tuple decoding
        // spent ~40 % of the export's CPU instantiating type metadata for every row.
        for try await row in rows {
            var cells = row.makeIterator()
            guard let day = BinaryCell.int32(cells.next()), let subscription = BinaryCell.uuid(cells.next()), let plan = BinaryCell.uuid(cells.next()),
                let api = BinaryCell.uuid(cells.next())
            else { throw PostgresDecodingError.Code.failure }
            // the numbers come formatted: ",calls,billable,rejected,errors,bytes in,bytes out\r\n"
            guard let counts = cells.next()?.bytes else { throw PostgresDecodingError.Code.failure }
            let resolved = names.resolve(subscription: subscription, plan: plan, api: api)
            guard filter.admits(resolved) else { continue }
            if day != dayNumber {
                dayNumber = day
                dayText = UsageNames.isoDate(daysSinceEpoch: day)
            }
            switch body(dayText, resolved, DailyUsage(csvCounts: counts)) {
            case .next: continue
            case .pause: try await pause()
            case .stop: return
            }
        }
    }
}

/// What `UsageExport.forEachRow` does after a row.
enum RowVerdict {
    case next
    case pause
    case stop
}

/// Reads one column of a row in Postgres' binary format (what PostgresNIO receives).
enum BinaryCell {
    static func int32(_ cell: PostgresCell?) -> Int32? {
        guard let bytes = cell?.bytes, bytes.readableBytes == 4 else { return nil }
        return bytes.getInteger(at: bytes.readerIndex, as: Int32.self)
    }

    static func uuid(_ cell: PostgresCell?) -> UUID? {
        guard let bytes = cell?.bytes, bytes.readableBytes == 16 else { return nil }
        return bytes.withUnsafeReadableBytes { UUID(uuid: $0.loadUnaligned(as: uuid_t.self)) }
    }
}

/// One daily rollup's numbers as Postgres formatted them for the CSV: ",calls,billable,rejected,
/// server errors,bytes in,bytes out" and CRLF. Integers need no quoting, and Postgres turns them
/// into text faster than decoding six binary columns per row here.
struct DailyUsage {
    let csvCounts: ByteBuffer

    /// The numbers as separate fields (for the pages' few rows).
    var counts: [String] {
        String(buffer: csvCounts).trimmingCharacters(in: .newlines).split(separator: ",", omittingEmptySubsequences: false).dropFirst().map(String.init)
    }
}

/// The tenant's subscriptions, apps, teams, APIs and plans by id: what turns a rollup's ids into the
/// names of an export row. Bounded by the size of the catalog, not by the usage exported.
struct UsageNames {
    struct Subscription {
        let appID: UUID?
        let appName: String
        let teamID: UUID?
        let teamName: String
        let apiID: UUID
        let planID: UUID
    }

    /// The named fields between the tenant and the counts, as strings and as one CSV fragment.
    struct Resolved {
        let teamID: UUID?
        let appID: UUID?
        let apiID: UUID?
        let planID: UUID?
        /// team_id, team, app_id, app, api_id, api, api_version, plan_id, plan, subscription_id
        let fields: [String]
        /// "tenant," then the fields, each quoted as CSV needs, comma-separated.
        let csv: String
    }

    let tenant: String
    var subscriptions: [UUID: Subscription] = [:]
    var apis: [UUID: (slug: String, version: String)] = [:]
    var plans: [UUID: String] = [:]
    private var cache: [UUID: (plan: UUID, api: UUID, resolved: Resolved)] = [:]

    init(tenant: String) { self.tenant = tenant }

    static func load(tenant: String, on connection: PostgresConnection, logger: Logger) async throws -> UsageNames {
        var names = UsageNames(tenant: tenant)
        for try await (id, appID, appName, teamID, teamName, apiID, planID) in try await connection.query(
            """
            SELECT s.id, a.id, coalesce(a.name, ''), tm.id, coalesce(tm.name, ''), s.api_id, s.plan_id
            FROM subscriptions s
            LEFT JOIN apps a ON a.tenant_id = s.tenant_id AND a.id = s.app_id
            LEFT JOIN teams tm ON tm.tenant_id = a.tenant_id AND tm.id = a.team_id
            WHERE s.tenant_id = (SELECT id FROM tenants WHERE slug = \(tenant))
            """, logger: logger
        ).decode((UUID, UUID?, String, UUID?, String, UUID, UUID).self) {
            names.subscriptions[id] = Subscription(appID: appID, appName: appName, teamID: teamID, teamName: teamName, apiID: apiID, planID: planID)
        }
        for try await (id, slug, version) in try await connection.query(
            "SELECT id, slug, version FROM apis WHERE tenant_id = (SELECT id FROM tenants WHERE slug = \(tenant))", logger: logger
        ).decode((UUID, String, String).self) {
            names.apis[id] = (slug, version)
        }
        for try await (id, name) in try await connection.query(
            "SELECT id, name FROM plans WHERE tenant_id = (SELECT id FROM tenants WHERE slug = \(tenant))", logger: logger
        ).decode((UUID, String).self) {
            names.plans[id] = name
        }
        return names
    }

    /// As the rollup names them: the subscription's app and team, its API (or the call's, for calls
    /// without a subscription) and the plan version the calls were made under (or the
    /// subscription's). Unknown ids resolve to empty fields.
    mutating func resolve(subscription: UUID, plan: UUID, api: UUID) -> Resolved {
        // Keyed by subscription alone (hashing 16 bytes, not 48): a subscription's rows nearly
        // always carry the same plan and API, and a different pair just replaces the entry.
        if let known = cache[subscription], known.plan == plan, known.api == api { return known.resolved }
        let owner = subscriptions[subscription]
        let apiID = owner?.apiID ?? (api == UsageStore.none ? nil : api)
        let planID = plan != UsageStore.none ? plan : owner?.planID
        let apiNames = apiID.flatMap { apis[$0] }
        let planName = planID.flatMap { plans[$0] }
        func text(_ id: UUID?) -> String { id.map { $0.uuidString.lowercased() } ?? "" }
        let fields = [
            text(owner?.teamID), owner?.teamName ?? "", text(owner?.appID), owner?.appName ?? "", apiNames == nil ? "" : text(apiID),
            apiNames?.slug ?? "", apiNames?.version ?? "", planName == nil ? "" : text(planID), planName ?? "",
            subscription == UsageStore.none ? "" : text(subscription),
        ]
        let resolved = Resolved(
            teamID: owner?.teamID, appID: owner?.appID, apiID: apiNames == nil ? nil : apiID, planID: planName == nil ? nil : planID, fields: fields,
            csv: ([tenant] + fields).map(CSV.field).joined(separator: ","))
        cache[subscription] = (plan, api, resolved)
        return resolved
    }

    /// `YYYY-MM-DD` of a day counted from 1970-01-01 (proleptic Gregorian, UTC).
    static func isoDate(daysSinceEpoch: Int32) -> String {
        let (year, month, day) = UTCMonth.civil(daysSinceEpoch: Int(daysSinceEpoch))
        func padded(_ n: Int, _ width: Int) -> String {
            let digits = String(n)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(padded(year, 4))-\(padded(month, 2))-\(padded(day, 2))"
    }
}

/// Optional narrowing of usage rows (finance filters).
public struct UsageFilter: Sendable, Equatable {
    func admits(_ row: UsageNames.Resolved) -> Bool {
        (teamID == nil || teamID == row.teamID) && (appID == nil || appID == row.appID) && (apiID == nil || apiID == row.apiID)
            && (planID == nil || planID == row.planID)
    }

    public var teamID: UUID?
    public var appID: UUID?
    public var apiID: UUID?
    public var planID: UUID?

    public init(teamID: UUID? = nil, appID: UUID? = nil, apiID: UUID? = nil, planID: UUID? = nil) {
        self.teamID = teamID
        self.appID = appID
        self.apiID = apiID
        self.planID = planID
    }
}
