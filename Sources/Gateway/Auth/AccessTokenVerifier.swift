import Crypto
import Foundation

/// A verified access token: what the gateway needs from its claims.
public final class VerifiedToken: Sendable, Equatable {
    public let clientID: String
    public let scopes: Set<String>
    public let jti: String
    public let audience: String
    /// Seconds since 1970.
    public let expiresAt: Double

    public init(clientID: String, scopes: Set<String>, jti: String, audience: String, expiresAt: Double) {
        self.clientID = clientID
        self.scopes = scopes
        self.jti = jti
        self.audience = audience
        self.expiresAt = expiresAt
    }

    public static func == (lhs: VerifiedToken, rhs: VerifiedToken) -> Bool {
        lhs.clientID == rhs.clientID && lhs.scopes == rhs.scopes && lhs.jti == rhs.jti && lhs.audience == rhs.audience && lhs.expiresAt == rhs.expiresAt
    }
}

/// Local verification of the portal's RFC 9068 access tokens: ES256 only (any other `alg` is
/// refused, so no algorithm confusion), signature by `kid` against the tenant's published keys,
/// `exp`/`nbf` with a small leeway, `iss` of this tenant, `aud` = the tenant's gateway audience.
/// Revocation is checked by the caller against the snapshot on every request (also for cached tokens).
public enum AccessTokenVerifier {
    public static let leewaySeconds: Double = 30

    public enum Failure: Error, Equatable, Sendable {
        case malformed, unsupportedAlgorithm, unknownKey, badSignature, expired, notYetValid, wrongIssuer, wrongAudience

        public var description: String {
            switch self {
            case .malformed: "The access token is malformed."
            case .unsupportedAlgorithm: "Only ES256 access tokens are accepted."
            case .unknownKey: "The token was signed with an unknown key."
            case .badSignature: "The token signature is invalid."
            case .expired: "The access token has expired."
            case .notYetValid: "The access token is not valid yet."
            case .wrongIssuer: "The token was issued by another authorization server."
            case .wrongAudience: "The token is not meant for this gateway."
            }
        }
    }

    public static func verify(_ token: Substring, tenant: TenantConfig, now: Double) -> Result<VerifiedToken, Failure> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = base64URL(parts[0]), let payloadBytes = base64URL(parts[1]), let signatureBytes = base64URL(parts[2]),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any],
            let claims = try? JSONSerialization.jsonObject(with: Data(payloadBytes)) as? [String: Any]
        else { return .failure(.malformed) }
        guard header["alg"] as? String == "ES256" else { return .failure(.unsupportedAlgorithm) }
        guard let kid = header["kid"] as? String, let key = tenant.signingKeys[kid] else { return .failure(.unknownKey) }
        guard signatureBytes.count == 64, let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signatureBytes) else {
            return .failure(.badSignature)
        }
        let signed = token[token.startIndex..<parts[2].startIndex].dropLast()
        guard key.isValidSignature(signature, for: Data(signed.utf8)) else { return .failure(.badSignature) }
        guard let exp = number(claims["exp"]) else { return .failure(.malformed) }
        guard exp + leewaySeconds > now else { return .failure(.expired) }
        if let nbf = number(claims["nbf"]), nbf - leewaySeconds > now { return .failure(.notYetValid) }
        guard let issuer = claims["iss"] as? String, issuer == tenant.issuer else { return .failure(.wrongIssuer) }
        let audiences = (claims["aud"] as? String).map { [$0] } ?? (claims["aud"] as? [String]) ?? []
        guard audiences.contains(tenant.audience) else { return .failure(.wrongAudience) }
        guard let clientID = claims["client_id"] as? String, let jti = claims["jti"] as? String else { return .failure(.malformed) }
        let scopes = Set(((claims["scope"] as? String) ?? "").split(separator: " ").map(String.init))
        return .success(VerifiedToken(clientID: clientID, scopes: scopes, jti: jti, audience: tenant.audience, expiresAt: exp))
    }

    private static func number(_ value: Any?) -> Double? {
        (value as? NSNumber)?.doubleValue
    }

    static func base64URL(_ text: Substring) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }
}

/// Verified tokens by their exact text, for one event loop (no locking). Verification costs far
/// more than a request should (GUIDE §3), so each token is verified once per loop and reused until
/// it expires. Bounded: when full, expired entries go first, then everything.
public final class TokenCache {
    /// A token's text as a dictionary key that hashes only its last 64 bytes (inside the
    /// signature, which differs from token to token) and compares bytes: `Substring`'s own
    /// hashing ran Unicode normalization checks over all ~600 bytes per request.
    struct Key: Hashable {
        let text: Substring

        func hash(into hasher: inout Hasher) {
            let bytes = text.utf8
            hasher.combine(bytes.count)
            let tail = bytes.suffix(64)
            if tail.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
                for byte in tail { hasher.combine(byte) }
            }
        }

        static func == (lhs: Key, rhs: Key) -> Bool {
            let left = lhs.text.utf8, right = rhs.text.utf8
            guard left.count == right.count else { return false }
            guard !left.isEmpty else { return true }
            let equal = left.withContiguousStorageIfAvailable { l in
                right.withContiguousStorageIfAvailable { r in memcmp(l.baseAddress!, r.baseAddress!, l.count) == 0 }
            }
            return (equal ?? nil) ?? left.elementsEqual(right)
        }
    }

    private var entries: [Key: VerifiedToken] = [:]
    private let capacity: Int

    public init(capacity: Int = 10_000) { self.capacity = capacity }

    public func lookup(_ token: Substring, now: Double) -> VerifiedToken? {
        guard let hit = entries[Key(text: token)] else { return nil }
        guard hit.expiresAt + AccessTokenVerifier.leewaySeconds > now else {
            entries[Key(text: token)] = nil
            return nil
        }
        return hit
    }

    public func store(_ token: Substring, _ verified: VerifiedToken, now: Double) {
        if entries.count >= capacity {
            entries = entries.filter { $0.value.expiresAt > now }
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        }
        // A fresh Substring so the cache does not keep the request's header buffer alive.
        entries[Key(text: Substring(String(token)))] = verified
    }

    public var count: Int { entries.count }
}
