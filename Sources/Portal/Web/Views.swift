import Foundation
import Hummingbird
import Mustache

/// Renders Mustache templates from `templates/` inside the shared layout.
struct Views: Sendable {
    let library: MustacheLibrary

    init(directory: String) async throws {
        library = try await MustacheLibrary(directory: directory)
    }

    /// An HTML response; `values` are the page's own fields, `page` the layout's (title, nav...).
    func render(_ template: String, _ values: [String: Any], page: PageChrome, status: HTTPResponse.Status = .ok) -> Response {
        var context = page.values
        for (key, value) in values { context[key] = value }
        let html = library.render(Self.presentable(context), withTemplate: template) ?? "<!doctype html><title>Error</title><p>Template \(template) is missing.</p>"
        return Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// Template values with "not set" made falsy: swift-mustache renders a section for an empty
    /// string, an empty dictionary and an `Optional.none` stored in `Any`, so those keys are dropped
    /// (a missing key renders as nothing and its `{{^key}}` section shows). Each non-empty list
    /// `xs` also gets `has_xs`, because `{{#xs.0}}` is not supported.
    static func presentable(_ values: [String: Any]) -> [String: Any] {
        var out: [String: Any] = [:]
        for (key, value) in values {
            guard let value = presentableValue(value) else { continue }
            out[key] = value
            if let list = value as? [Any], !list.isEmpty, values["has_" + key] == nil { out["has_" + key] = true }
        }
        return out
    }

    private static func presentableValue(_ value: Any) -> Any? {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return nil }
            return presentableValue(wrapped)
        }
        switch value {
        case let text as String: return text.isEmpty ? nil : text
        case let text as Substring: return text.isEmpty ? nil : String(text)
        case let dictionary as [String: Any]:
            let cleaned = presentable(dictionary)
            return cleaned.isEmpty ? nil : cleaned
        case let list as [[String: Any]]: return list.map(presentable)
        default: return value
        }
    }
}

/// A message for the page after a redirect; `secret` is a value shown once (a new key or secret).
struct Flash: Sendable, Equatable, Codable {
    var notice: String?
    var secretLabel: String?
    var secret: String?

    init(notice: String? = nil, secretLabel: String? = nil, secret: String? = nil) {
        self.notice = notice
        self.secretLabel = secretLabel
        self.secret = secret
    }

    /// Template values for the one-time secret box (`new_secret.label`, `new_secret.value`).
    var secretValues: [String: String]? {
        guard let secret, let secretLabel else { return nil }
        return ["label": secretLabel, "value": secret]
    }
}

/// What the layout needs on every page: title, who is signed in, navigation by role, CSRF token.
struct PageChrome {
    var title: String
    var base: String = ""
    var tenantName: String?
    var userName: String?
    var csrf: String = ""
    var nav: [[String: Any]] = []
    var notice: String?
    var platform = false

    var values: [String: Any] {
        var values: [String: Any] = [
            "title": title, "base": base, "csrf": csrf, "nav": nav, "platform": platform,
            "home": base.isEmpty ? "/" : base + "/",
        ]
        // "Acme · Acme · Tollgate" on a tenant's home page: the tenant name once.
        if let tenantName, tenantName != title { values["tenant_name"] = tenantName }
        if let tenantName { values["brand"] = tenantName }
        if let userName { values["user_name"] = userName }
        if let notice { values["notice"] = notice }
        return values
    }
}

extension Response {
    /// 303 See Other: the browser follows with GET (post/redirect/get).
    static func redirect(to location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }
}

extension AppError {
    /// Field errors as the `errors.<field>` values templates show next to inputs.
    var templateErrors: [String: Any] { ["errors": fieldErrors, "error": detail] }
}

/// Line-based form fields (origins, address ranges, targets, tiers...). Browsers send text areas
/// with CRLF line ends, and in Swift `"\r\n"` is a single `Character` that equals neither `"\n"`
/// nor `"\r"`; so lines are split on Unicode scalars, where CR, LF and CRLF are all line ends.
enum TextLines {
    /// The non-empty lines of `text`, each trimmed of surrounding whitespace.
    static func split(_ text: String) -> [String] {
        var lines: [String] = []
        var current = String.UnicodeScalarView()
        func finish() {
            let line = String(current).trimmingCharacters(in: .whitespaces)
            if !line.isEmpty { lines.append(line) }
            current = String.UnicodeScalarView()
        }
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}": finish()
            default: current.append(scalar)
            }
        }
        finish()
        return lines
    }

    /// Every line of `text`, empty ones included, without their line ends (Markdown needs blank lines).
    static func all(_ text: String) -> [String] {
        var lines: [String] = []
        var current = String.UnicodeScalarView()
        var previousWasCR = false
        for scalar in text.unicodeScalars {
            if scalar == "\n" && previousWasCR { previousWasCR = false; continue }
            previousWasCR = scalar == "\r"
            if scalar == "\n" || scalar == "\r" {
                lines.append(String(current))
                current = String.UnicodeScalarView()
            } else {
                current.append(scalar)
            }
        }
        lines.append(String(current))
        return lines
    }

    /// The items of `text` separated by line ends, commas or whitespace (lists of origins, methods, ranges).
    static func items(_ text: String) -> [String] {
        split(text).flatMap { line in
            line.unicodeScalars.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\t" }).map { String(String.UnicodeScalarView($0)) }
        }
    }
}

/// "1 app", "2 apps".
enum Plural {
    static func count(_ n: Int, _ singular: String, _ plural: String? = nil) -> String {
        "\(n) " + (n == 1 ? singular : (plural ?? singular + "s"))
    }
}
