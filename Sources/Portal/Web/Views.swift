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
        let html = library.render(context, withTemplate: template) ?? "<!doctype html><title>Error</title><p>Template \(template) is missing.</p>"
        return Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: html)))
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
        if let tenantName { values["tenant_name"] = tenantName }
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
