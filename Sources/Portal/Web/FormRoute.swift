import Foundation
import Hummingbird

/// A form's address (the `action` of a POST form that has no page of its own) and the page the
/// form lives on. A GET of the address — a reload of a page that was re-rendered there with
/// errors, a bookmark, a link copied from the address bar — answers 303 See Other to that page
/// instead of 404/405: no page address is a dead form URL, and the reload repeats nothing.
enum FormRoute {
    /// `page` with its `:name` parts filled from the request's route parameters, under the
    /// tenant's base (`/t/{slug}`, or nothing on a tenant host and in the platform console).
    static func location(_ page: String, context: AppRequestContext) -> String {
        let parts = page.split(separator: "/", omittingEmptySubsequences: false).map { part -> String in
            guard part.hasPrefix(":") else { return String(part) }
            return ListPageQuery.escape(context.parameters.get(String(part.dropFirst())) ?? "")
        }
        return context.base + parts.joined(separator: "/")
    }
}

extension RouterGroup where Context == AppRequestContext {
    /// Registers a form's POST `handler` at `path` and a GET of `path` that answers 303 See Other
    /// to `page` (a route pattern whose `:name` parts are taken from `path`'s parameters).
    @discardableResult
    func form(
        _ path: String, page: String, use handler: @escaping @Sendable (Request, AppRequestContext) async throws -> Response
    ) -> Self {
        post(RouterPath(path), use: handler)
        get(RouterPath(path)) { _, context in Response.redirect(to: FormRoute.location(page, context: context)) }
        return self
    }
}
