import Billing
import Foundation
import Logging
import NIOSSL
import PostgresNIO
import ServiceLifecycle
import SwiftASN1
import X509

/// The checks a certificate for a tenant's custom host passes before it is stored, and again
/// when a listener loads it. Pure.
public enum HostCertificateCheck {
    /// The form field (and JSON member) a problem belongs to.
    public enum Field: String, Sendable, Equatable {
        case certificate
        case privateKey = "private_key"
    }

    public struct Problem: Error, Sendable, Equatable {
        public let field: Field
        public let message: String
    }

    /// Each PEM field at most this long (a chain of a few certificates is under 8 KiB).
    public static let maximumPEMBytes = 64 * 1024

    /// The pair as a listener serves it: for `host` only, whatever else the certificate names, so
    /// one tenant's certificate never answers for another's host or the installation's names.
    public static func check(chainPEM: String, keyPEM: String, host: String, now: Date = Date()) -> Result<CertificateStore.Entry, Problem> {
        func problem(_ field: Field, _ message: String) -> Result<CertificateStore.Entry, Problem> { .failure(Problem(field: field, message: message)) }
        let host = CertificateStore.Table.canonical(host)
        if chainPEM.utf8.count > maximumPEMBytes { return problem(.certificate, "A certificate chain is at most 64 KiB.") }
        if keyPEM.utf8.count > maximumPEMBytes { return problem(.privateKey, "A private key is at most 64 KiB.") }
        // a key pasted into the certificate field must not be stored (or shown back) as a certificate
        if chainPEM.contains("PRIVATE KEY-----") {
            return problem(.certificate, "This field takes the certificate chain only; put the private key in its own field.")
        }
        guard let end = chainPEM.range(of: "-----END CERTIFICATE-----"),
            let leaf = try? Certificate(pemEncoded: String(chainPEM[..<end.upperBound]).trimmingCharacters(in: .whitespacesAndNewlines)),
            (try? NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8)))?.isEmpty == false
        else { return problem(.certificate, "Paste the certificate chain in PEM, the host's certificate first (-----BEGIN CERTIFICATE-----).") }
        if keyPEM.contains("ENCRYPTED") { return problem(.privateKey, "The private key is encrypted; give it unencrypted in PEM.") }
        guard (try? NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)) != nil else {
            return problem(.privateKey, "Paste the private key in PEM (-----BEGIN PRIVATE KEY-----).")
        }
        guard let parsedKey = try? Certificate.PrivateKey(pemEncoded: keyPEM) else {
            return problem(.privateKey, "The key type is not supported: use an RSA, P-256, P-384 or Ed25519 key.")
        }
        if parsedKey.publicKey != leaf.publicKey { return problem(.privateKey, "This key does not belong to the certificate.") }
        if now < leaf.notValidBefore { return problem(.certificate, "The certificate is not valid yet (from \(leaf.notValidBefore)).") }
        if now >= leaf.notValidAfter { return problem(.certificate, "The certificate expired on \(leaf.notValidAfter).") }
        if case .isCertificateAuthority? = try? leaf.extensions.basicConstraints {
            return problem(.certificate, "This is a certificate authority's certificate; give the host's own certificate first.")
        }
        if let usage = try? leaf.extensions.extendedKeyUsage, !usage.contains(.serverAuth), !usage.contains(.any) {
            return problem(.certificate, "The certificate's extended key usage does not allow TLS servers (serverAuth).")
        }
        var names: [String] = []
        if let alternatives = try? leaf.extensions.subjectAlternativeNames {
            for case .dnsName(let dns) in alternatives { names.append(CertificateStore.Table.canonical(dns)) }
        }
        guard names.contains(where: { covers($0, host) }) else {
            return problem(.certificate, "The certificate does not name \(host) (it names \(names.isEmpty ? "no DNS name" : names.joined(separator: ", "))).")
        }
        guard let entry = try? CertificateStore.entry(name: "host:" + host, chainText: chainPEM, keyText: keyPEM) else {
            return problem(.certificate, "The certificate chain could not be read.")
        }
        return .success(
            CertificateStore.Entry(file: entry.file, names: [host], notAfter: entry.notAfter, isAuthority: false, chain: entry.chain, key: entry.key))
    }

    /// Whether a certificate name serves a host: the same name, or a wildcard one label up.
    static func covers(_ name: String, _ host: String) -> Bool {
        if name == host { return true }
        guard name.hasPrefix("*."), let dot = host.firstIndex(of: ".") else { return false }
        return host[host.index(after: dot)...] == name.dropFirst(2)
    }
}

/// Serves the certificates operators stored for tenants' custom hosts (table
/// `tenant_certificates`, keys sealed under the server key) on the TLS listeners: it reads the
/// table every `interval`, and when anything changed (a certificate, or a tenant's host) it checks
/// each pair again and hands the good ones to the `CertificateStore`. New and renewed certificates
/// take effect for the next handshake, without a restart and without touching open connections.
public struct ManagedCertificateLoader: Service {
    /// Opens a sealed private key for a tenant (the key lives with the portal's secrets); nil when
    /// it cannot (another server key).
    public typealias KeyOpener = @Sendable (_ sealed: [UInt8], _ tenantID: UUID) -> [UInt8]?

    let client: PostgresClient
    let store: CertificateStore
    let openKey: KeyOpener
    let logger: Logger
    let interval: Duration

    public init(client: PostgresClient, store: CertificateStore, openKey: @escaping KeyOpener, logger: Logger, interval: Duration = .seconds(5)) {
        self.client = client
        self.store = store
        self.openKey = openKey
        self.logger = logger
        self.interval = interval
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            var seen: String?
            while !Task.isCancelled {
                do {
                    seen = try await load(unless: seen)
                } catch {
                    logger.warning("managed TLS certificates not read; serving the last ones", metadata: ["error": "\(String(reflecting: error).prefix(300))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }

    struct Row: Sendable {
        let tenantID: UUID
        let host: String
        let chainPEM: String
        let keySealed: [UInt8]
        let version: String
    }

    /// Reads the table; installs its pairs unless `unless` is the fingerprint of what is served.
    /// Returns the fingerprint now served.
    @discardableResult
    public func load(unless served: String? = nil, now: Date = Date()) async throws -> String {
        let rows = try await client.withTransaction(logger: logger) { connection -> [Row] in
            try await connection.enterSystemScope(readOnly: true, logger: logger)
            var rows: [Row] = []
            for try await (tenant, host, chain, sealed, version) in try await connection.query(
                """
                SELECT c.tenant_id, t.custom_host, c.chain_pem, c.key_sealed, extract(epoch FROM c.updated_at)::text
                FROM tenant_certificates c JOIN tenants t ON t.id = c.tenant_id
                WHERE t.custom_host IS NOT NULL ORDER BY c.tenant_id
                """, logger: logger
            ).decode((UUID, String, String, Data, String).self) {
                rows.append(Row(tenantID: tenant, host: host, chainPEM: chain, keySealed: Array(sealed), version: version))
            }
            return rows
        }
        let fingerprint = rows.map { "\($0.tenantID):\($0.host):\($0.version)" }.joined(separator: "|")
        guard fingerprint != served else { return fingerprint }
        var entries: [CertificateStore.Entry] = []
        for row in rows {
            guard let key = openKey(row.keySealed, row.tenantID) else {
                logger.error("a custom host's certificate key cannot be opened (another server key?); not served", metadata: ["host": "\(row.host)"])
                continue
            }
            switch HostCertificateCheck.check(chainPEM: row.chainPEM, keyPEM: String(decoding: key, as: UTF8.self), host: row.host, now: now) {
            case .success(let entry): entries.append(entry)
            case .failure(let problem):
                logger.error("a custom host's certificate is not served", metadata: ["host": "\(row.host)", "problem": "\(problem.message)"])
            }
        }
        store.setManaged(entries)
        logger.info("custom host certificates loaded", metadata: ["served": "\(entries.count)", "stored": "\(rows.count)"])
        return fingerprint
    }
}
