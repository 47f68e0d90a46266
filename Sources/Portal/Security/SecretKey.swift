import Crypto
import Foundation

/// The installation's server key: signs CSRF tokens. Taken from `TOLLGATE_SECRET_KEY` or generated
/// once into `<data dir>/secret.key` (mode 0600) so restarts keep sessions' CSRF tokens valid.
struct SecretKey: Sendable {
    let key: SymmetricKey

    init(bytes: [UInt8]) { key = SymmetricKey(data: bytes) }

    static func load(environmentValue: String?, dataDirectory: String) throws -> SecretKey {
        if let value = environmentValue, !value.isEmpty {
            return SecretKey(bytes: Array(SHA256.hash(data: Data(value.utf8))))
        }
        let path = dataDirectory + "/secret.key"
        if let existing = try? String(contentsOfFile: path, encoding: .utf8),
            let bytes = Base64URL.decode(existing.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count == 32 {
            return SecretKey(bytes: bytes)
        }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let token = SecretToken.generate(prefix: "")
        guard FileManager.default.createFile(atPath: path, contents: Data(token.value.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteNoPermission)
        }
        return SecretKey(bytes: Base64URL.decode(token.value) ?? [])
    }

    func mac(_ message: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: key))
    }
}

/// CSRF tokens bound to the browser: HMAC(server key, session token or anonymous cookie). A form
/// is accepted only if its token matches the one derived from the cookie that came with it.
struct CSRFProtection: Sendable {
    let secret: SecretKey

    func token(binding: String) -> String { Base64URL.encode(secret.mac("csrf|" + binding)) }

    func isValid(_ submitted: String?, binding: String?) -> Bool {
        guard let submitted, let binding, let bytes = Base64URL.decode(submitted) else { return false }
        return constantTimeEquals(bytes, secret.mac("csrf|" + binding))
    }
}

/// Private keys at rest that gateways must recover (upstream client keys, custom hosts'
/// certificate keys): AES-GCM under the server key with the purpose and the owner's id as
/// associated data, so a sealed key copied onto another API's or tenant's row — or into the other
/// column — does not open. Gateways open them with the same server key (`TOLLGATE_SECRET_KEY` on
/// every process of an installation).
struct BoundKeySeal: Sendable {
    enum Purpose: String, Sendable {
        /// A client certificate's key for upstream mutual TLS, bound to its API.
        case upstreamClientKey = "upstream-client-key"
        /// A tenant's custom-host certificate key, bound to the tenant.
        case hostCertificateKey = "host-certificate-key"
    }

    let secret: SecretKey
    let purpose: Purpose

    func seal(_ privateKeyPEM: String, owner: UUID) throws -> [UInt8] {
        Array(try AES.GCM.seal(Data(privateKeyPEM.utf8), using: secret.key, authenticating: binding(owner)).combined ?? Data())
    }

    func open(_ sealed: [UInt8], owner: UUID) -> [UInt8]? {
        guard let box = try? AES.GCM.SealedBox(combined: sealed), let plain = try? AES.GCM.open(box, using: secret.key, authenticating: binding(owner))
        else { return nil }
        return Array(plain)
    }

    private func binding(_ owner: UUID) -> Data { Data("\(purpose.rawValue)|\(owner.uuidString.lowercased())".utf8) }
}
