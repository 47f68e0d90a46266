import Foundation
import Logging
import PostgresNIO

/// SQL for uploaded protobuf descriptor sets, inside a tenant transaction.
struct APIDescriptorSetRepository: Sendable {
    let logger: Logger

    func save(tenantID: UUID, apiID: UUID, _ set: APIDescriptorSet, uploadedBy: UUID, on connection: PostgresConnection) async throws {
        let services = set.schema.services.map(\.name)
        let methodCount = set.schema.methods.count
        try await connection.query(
            """
            INSERT INTO api_descriptor_sets (tenant_id, api_id, content, sha256, services, method_count, uploaded_by)
            VALUES (\(tenantID), \(apiID), \(ByteBuffer(bytes: set.content)), \(set.sha256), \(services), \(methodCount), \(uploadedBy))
            ON CONFLICT (tenant_id, api_id) DO UPDATE SET content = EXCLUDED.content, sha256 = EXCLUDED.sha256, services = EXCLUDED.services,
                method_count = EXCLUDED.method_count, uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()
            """, logger: logger)
    }

    func find(apiID: UUID, on connection: PostgresConnection) async throws -> StoredDescriptorSet? {
        let rows = try await connection.query(
            "SELECT content, sha256, services, method_count, uploaded_at FROM api_descriptor_sets WHERE api_id = \(apiID)", logger: logger)
        for try await (content, sha256, services, count, at) in rows.decode((ByteBuffer, String, [String], Int, Date).self) {
            return StoredDescriptorSet(content: Array(content.readableBytesView), sha256: sha256, services: services, methodCount: count, uploadedAt: at)
        }
        return nil
    }

    func delete(apiID: UUID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("DELETE FROM api_descriptor_sets WHERE api_id = \(apiID) RETURNING api_id", logger: logger)
        for try await _ in rows.decode(UUID.self) { return true }
        return false
    }
}
