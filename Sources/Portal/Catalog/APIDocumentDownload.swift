import Foundation
import Hummingbird

/// The raw-document response shared by the JSON API and the portal's download link.
enum APIDocumentDownload {
    static let acceptedUploadTypes = [
        "application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/vnd.oai.openapi",
    ]

    static func response(api: APIProduct, document: StoredAPIDocument) -> Response {
        let type = document.format == .json ? "application/json" : "application/yaml"
        let filename = "\(api.slug)-\(api.version).openapi.\(document.format.rawValue)"
        return Response(
            status: .ok,
            headers: [.contentType: "\(type); charset=utf-8", .contentDisposition: "attachment; filename=\"\(filename)\"", .cacheControl: "no-cache"],
            body: .init(byteBuffer: ByteBuffer(string: document.content)))
    }
}
