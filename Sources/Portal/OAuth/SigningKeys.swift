import Crypto
import Foundation
import Logging
import PostgresNIO

/// A tenant's ES256 key as used for signing and publishing.
struct SigningKey: Sendable {
    let kid: String
    let privateKey: P256.Signing.PrivateKey?
    let publicKey: P256.Signing.PublicKey
    let retiredAt: Date?

    /// The JWK (RFC 7517) of the public key.
    var jwk: [String: String] {
        let point = publicKey.x963Representation  // 0x04 || X || Y
        return [
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": Base64URL.encode(point.dropFirst().prefix(32)), "y": Base64URL.encode(point.suffix(32)),
        ]
    }
}

/// Per-tenant signing keys. Private keys are sealed with AES-GCM under the server key; rotation
/// keeps the previous public key published until every token it signed has expired.
struct SigningKeyStore: Sendable {
    let secret: SecretKey
    let logger: Logger

    /// How long a rotated-in key is published before it signs: gateways hear of it by NOTIFY and
    /// reload within ~100 ms, so its first token never meets a gateway that lacks it.
    static let publishLead: Duration = .seconds(2)

    /// The key that signs new tokens now: the newest whose signing period has begun and not ended.
    /// Created on first use only for tenants from before keys came with the tenant.
    func current(tenantID: UUID, on connection: PostgresConnection) async throws -> SigningKey {
        if let key = try await load(connection.query(
            """
            SELECT kid, private_key_sealed, public_key, retired_at FROM signing_keys
            WHERE signs_from <= now() AND (retired_at IS NULL OR retired_at > now()) ORDER BY signs_from DESC LIMIT 1
            """, logger: logger)).first,
            key.privateKey != nil
        {
            return key
        }
        return try await rotate(tenantID: tenantID, tokenLifetime: .seconds(0), lead: .zero, on: connection)
    }

    /// A new signing key, published at once and signing after `lead`; the key it replaces keeps
    /// signing until then and stays published for `tokenLifetime` more.
    @discardableResult
    func rotate(tenantID: UUID, tokenLifetime: Duration, lead: Duration = publishLead, on connection: PostgresConnection) async throws -> SigningKey {
        let seconds = Int(tokenLifetime.components.seconds)
        let leadSeconds = Double(lead.components.seconds) + Double(lead.components.attoseconds) / 1e18
        try await connection.query(
            """
            UPDATE signing_keys SET retired_at = now() + make_interval(secs => \(leadSeconds)),
                published_until = now() + make_interval(secs => \(leadSeconds + Double(seconds)))
            WHERE retired_at IS NULL OR retired_at > now()
            """, logger: logger)
        let key = P256.Signing.PrivateKey()
        let kid = SecretToken.generate(prefix: "").value.prefix(16).description
        let sealed = try AES.GCM.seal(key.rawRepresentation, using: secret.key).combined ?? Data()
        try await connection.query(
            """
            INSERT INTO signing_keys (tenant_id, kid, private_key_sealed, public_key, signs_from)
            VALUES (\(tenantID), \(kid), \(sealed), \(key.publicKey.x963Representation), now() + make_interval(secs => \(leadSeconds)))
            """, logger: logger)
        return SigningKey(kid: kid, privateKey: key, publicKey: key.publicKey, retiredAt: nil)
    }

    /// Gives a new tenant its first key when it is created, so the key reaches every gateway long
    /// before the first token is signed with it (no-op when the tenant has one).
    func ensureKey(tenantID: UUID, on connection: PostgresConnection) async throws {
        let rows = try await connection.query("SELECT count(*)::int FROM signing_keys WHERE retired_at IS NULL", logger: logger)
        for try await count in rows.decode(Int.self) where count > 0 { return }
        try await rotate(tenantID: tenantID, tokenLifetime: .zero, lead: .zero, on: connection)
    }

    /// Keys to publish in the JWKS: the current one and retired ones whose tokens may still be live.
    func published(on connection: PostgresConnection) async throws -> [SigningKey] {
        try await load(
            connection.query(
                """
                SELECT kid, private_key_sealed, public_key, retired_at FROM signing_keys
                WHERE retired_at IS NULL OR published_until > now() ORDER BY created_at DESC
                """, logger: logger))
    }

    private func load(_ rows: PostgresRowSequence) async throws -> [SigningKey] {
        var keys: [SigningKey] = []
        for try await (kid, sealed, publicBytes, retired) in rows.decode((String, Data, Data, Date?).self) {
            guard let publicKey = try? P256.Signing.PublicKey(x963Representation: publicBytes) else { continue }
            var privateKey: P256.Signing.PrivateKey?
            if let box = try? AES.GCM.SealedBox(combined: sealed), let raw = try? AES.GCM.open(box, using: secret.key) {
                privateKey = try? P256.Signing.PrivateKey(rawRepresentation: raw)
            } else {
                // The server key changed: this key can still be published but no longer sign.
                logger.warning("signing key cannot be unsealed with the current server key", metadata: ["kid": "\(kid)"])
            }
            keys.append(SigningKey(kid: kid, privateKey: privateKey, publicKey: publicKey, retiredAt: retired))
        }
        return keys
    }
}
