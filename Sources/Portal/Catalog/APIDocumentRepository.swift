import Foundation
import Gateway
import Logging
import PostgresNIO

/// A stored OpenAPI document with its summary.
struct StoredAPIDocument: Sendable, Equatable {
    var format: APIDocument.Format
    var content: String
    var title: String
    var version: String
    var openAPIVersion: String
    var uploadedAt: Date
}

/// SQL for uploaded OpenAPI documents, inside a tenant transaction.
struct APIDocumentRepository: Sendable {
    let logger: Logger

    func save(tenantID: UUID, apiID: UUID, _ document: APIDocument, uploadedBy: UUID, on connection: PostgresConnection) async throws {
        try await connection.query(
            """
            INSERT INTO api_documents (tenant_id, api_id, format, content, title, document_version, openapi_version, uploaded_by, document_json)
            VALUES (\(tenantID), \(apiID), \(document.format.rawValue), \(document.content), \(document.title), \(document.version),
                    \(document.openAPIVersion), \(uploadedBy), \(document.root.jsonValue.text)::jsonb)
            ON CONFLICT (tenant_id, api_id) DO UPDATE SET format = EXCLUDED.format, content = EXCLUDED.content, title = EXCLUDED.title,
                document_version = EXCLUDED.document_version, openapi_version = EXCLUDED.openapi_version, uploaded_by = EXCLUDED.uploaded_by,
                uploaded_at = now(), document_json = EXCLUDED.document_json
            """, logger: logger)
    }

    func find(apiID: UUID, on connection: PostgresConnection) async throws -> StoredAPIDocument? {
        let rows = try await connection.query(
            "SELECT format, content, title, document_version, openapi_version, uploaded_at FROM api_documents WHERE api_id = \(apiID)", logger: logger)
        for try await (format, content, title, version, openapi, at) in rows.decode((String, String, String, String, String, Date).self) {
            return StoredAPIDocument(
                format: APIDocument.Format(rawValue: format) ?? .json, content: content, title: title, version: version, openAPIVersion: openapi,
                uploadedAt: at)
        }
        return nil
    }

    /// Stores the document's JSON form, which gateways compile request validation from (documents
    /// uploaded before migration 0030 get it when a validation policy is first saved).
    func setJSON(apiID: UUID, _ json: JSONValue, on connection: PostgresConnection) async throws {
        try await connection.query(
            "UPDATE api_documents SET document_json = \(json.text)::jsonb WHERE api_id = \(apiID) AND document_json IS DISTINCT FROM \(json.text)::jsonb",
            logger: logger)
    }

    func delete(apiID: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("DELETE FROM api_documents WHERE api_id = \(apiID) RETURNING api_id", logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }
}
