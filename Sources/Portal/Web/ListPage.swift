import Foundation
import Hummingbird

/// Where a keyset page starts: from the start of the list, after a sort key (the next page) or
/// before one (the previous page).
enum Keyset: Sendable, Equatable {
    case after(String?)
    case before(String)
}

/// A page of a list as a browser asks for it: `?after=<cursor>` or `?before=<cursor>` and an
/// optional `?limit=` (1 to 100, default 50). A cursor is the base64url of the list's sort key
/// (never a bare internal id); one that does not decode is a 400 page, not a 500.
struct PageRequest: Sendable, Equatable {
    static let defaultSize = 50
    static let maximumSize = 100

    let position: Keyset
    let size: Int

    init(position: Keyset = .after(nil), size: Int = PageRequest.defaultSize) {
        self.position = position
        self.size = size
    }

    init(_ request: Request) throws {
        try self.init(query: request.uri.queryParameters.map { (String($0.key), String($0.value)) })
    }

    init(query: [(String, String)]) throws {
        let values = Dictionary(query, uniquingKeysWith: { first, _ in first })
        var size = Self.defaultSize
        if let text = values["limit"], !text.isEmpty {
            guard let value = Int(text), (1...Self.maximumSize).contains(value) else {
                throw AppError.badRequest("limit must be a whole number from 1 to \(Self.maximumSize).", fields: ["limit": "1 to \(Self.maximumSize)"])
            }
            size = value
        }
        let after = values["after"].flatMap { $0.isEmpty ? nil : $0 }
        let before = values["before"].flatMap { $0.isEmpty ? nil : $0 }
        switch (after, before) {
        case (nil, nil): self.init(position: .after(nil), size: size)
        case (let after?, nil): self.init(position: .after(try Self.decode(after)), size: size)
        case (nil, let before?): self.init(position: .before(try Self.decode(before)), size: size)
        case (_?, _?): throw AppError.badRequest("Use either after or before, not both; follow the page links.", fields: ["cursor": "invalid"])
        }
    }

    static func encode(_ key: String) -> String { Base64URL.encode(Array(key.utf8)) }

    static func decode(_ cursor: String) throws -> String {
        guard cursor.count <= 2048, let bytes = Base64URL.decode(cursor), let key = String(bytes: bytes, encoding: .utf8),
            !key.contains("\u{0}")
        else { throw invalidCursor }
        return key
    }

    static let invalidCursor = AppError(
        status: .badRequest, title: "This page link is not valid",
        detail: "The page address carries a cursor this list did not make. Start again from the list's first page.",
        fieldErrors: ["cursor": "invalid"])
}

/// One page of a list and whether there are pages before and after it.
struct ListPage<Item> {
    var items: [Item]
    /// Cursor (encoded) of the page after this one, when there is one.
    var next: String?
    /// Cursor (encoded) of the page before this one, when there is one.
    var previous: String?
    /// False when this is not the list's first page (a "first page" link makes sense).
    var isFirst: Bool

    /// Fetches one page with one row more than a page, so that "next" shows only when there is
    /// more. `fetch(.after(k), n)` answers up to `n` items after `k` in list order;
    /// `fetch(.before(k), n)` up to `n` items before `k`, nearest first (reverse list order).
    static func load(
        _ request: PageRequest, key: (Item) -> String, fetch: (Keyset, Int) async throws -> [Item]
    ) async throws -> ListPage<Item> {
        assemble(request, rows: try await fetch(request.position, request.size + 1), key: key)
    }

    /// A page of a list already in memory, in the order of `key` (which must be unique per item).
    static func slice(_ all: [Item], _ request: PageRequest, key: (Item) -> String) -> ListPage<Item> {
        let sorted = all.map { (key($0), $0) }.sorted { $0.0 < $1.0 }
        let limit = request.size + 1
        let rows: [Item] =
            switch request.position {
            case .after(let cursor): sorted.lazy.filter { cursor == nil || $0.0 > cursor! }.prefix(limit).map(\.1)
            case .before(let cursor): sorted.reversed().lazy.filter { $0.0 < cursor }.prefix(limit).map(\.1)
            }
        return assemble(request, rows: rows, key: key)
    }

    /// The page from the rows fetched for it (one more than a page, in fetch order).
    private static func assemble(_ request: PageRequest, rows: [Item], key: (Item) -> String) -> ListPage<Item> {
        switch request.position {
        case .after(let cursor):
            let items = Array(rows.prefix(request.size))
            return ListPage(
                items: items, next: rows.count > request.size ? items.last.map { PageRequest.encode(key($0)) } : nil,
                previous: cursor == nil ? nil : items.first.map { PageRequest.encode(key($0)) }, isFirst: cursor == nil)
        case .before:
            let items = Array(rows.prefix(request.size).reversed())
            let hasPrevious = rows.count > request.size
            return ListPage(
                items: items, next: items.last.map { PageRequest.encode(key($0)) },
                previous: hasPrevious ? items.first.map { PageRequest.encode(key($0)) } : nil, isFirst: !hasPrevious)
        }
    }

    /// Fetches in batches until a page of items `include` admits is full (a viewer who may see few
    /// rows of a long list still gets full pages).
    static func filtered(
        _ position: Keyset, limit: Int, key: (Item) -> String, include: (Item) -> Bool, batch: Int = 200,
        fetch: (Keyset, Int) async throws -> [Item]
    ) async throws -> [Item] {
        var found: [Item] = []
        var position = position
        while found.count < limit {
            let rows = try await fetch(position, batch)
            found += rows.filter(include)
            guard rows.count == batch, let last = rows.last else { break }
            switch position {
            case .after: position = .after(key(last))
            case .before: position = .before(key(last))
            }
        }
        return Array(found.prefix(limit))
    }

    func map<T>(_ transform: (Item) throws -> T) rethrows -> ListPage<T> {
        ListPage<T>(items: try items.map(transform), next: next, previous: previous, isFirst: isFirst)
    }

    /// The `pager` template value (`templates/pager.mustache`): links to the first, previous and
    /// next page of `path`, keeping the other query parameters (filters); absent on a single page.
    func pager(path: String, query: [(String, String)] = [], size: Int = PageRequest.defaultSize) -> [String: Any] {
        let kept = query.filter { !["after", "before", "limit"].contains($0.0) } + (size == PageRequest.defaultSize ? [] : [("limit", String(size))])
        func href(_ extra: [(String, String)]) -> String {
            let all = kept + extra
            guard !all.isEmpty else { return path }
            return path + "?" + all.map { ListPageQuery.escape($0.0) + "=" + ListPageQuery.escape($0.1) }.joined(separator: "&")
        }
        var values: [String: Any] = [:]
        if !isFirst { values["first_href"] = href([]) }
        if let previous { values["previous_href"] = href([("before", previous)]) }
        if let next { values["next_href"] = href([("after", next)]) }
        return values
    }
}

/// Query-string helpers for the page links.
enum ListPageQuery {
    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }

    /// The request's query parameters in order.
    static func of(_ request: Request) -> [(String, String)] {
        request.uri.queryParameters.map { (String($0.key), String($0.value)) }
    }
}

/// A bounded fetch for a form's choices (a select of teams or APIs): one more than the bound is
/// asked for, so that a cut list says so instead of silently missing entries.
struct BoundedChoices<Item> {
    static var bound: Int { 500 }

    let items: [Item]
    let truncated: Bool

    init(_ fetched: [Item], bound: Int = Self.bound) {
        items = Array(fetched.prefix(bound))
        truncated = fetched.count > bound
    }

    /// "Only the first 500 teams are listed…" when the list was cut.
    func note(_ noun: String) -> String {
        truncated ? "Only the first \(items.count) \(noun) are listed here; use the JSON API for the others." : ""
    }
}

/// Sort keys for the lists kept in memory: fields joined so that string order is list order.
enum SortKey {
    /// U+0001: below every printable character, so that "ab" sorts before "ab c".
    static let separator = "\u{1}"

    static func join(_ fields: String...) -> String { fields.joined(separator: separator) }

    /// A date as a fixed-width number; `descending` inverts it so that newer sorts first.
    static func date(_ date: Date, descending: Bool = false) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let value = descending ? Int64(9_999_999_999_999) - millis : millis
        let text = String(max(0, value))
        return String(repeating: "0", count: max(0, 13 - text.count)) + text
    }
}

extension BoundedChoices: Sendable where Item: Sendable {}
extension ListPage: Sendable where Item: Sendable {}
