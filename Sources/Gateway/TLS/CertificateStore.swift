import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import ServiceLifecycle
import SwiftASN1
import X509

/// The server certificates of a TLS listener, read from a directory and chosen per connection by
/// the name the client asks for (SNI).
///
/// The directory holds pairs `NAME.pem` (the certificate chain, leaf first) and `NAME.key` (its
/// private key, PEM). Which host names a pair serves comes from its certificate's DNS names
/// (`*.example.com` serves one label below example.com), not from the file name; `default.pem`
/// answers clients that send no name or one nothing matches (without it, the first pair by name).
/// `reloadIfChanged` re-reads the directory when a file changed: new and renewed certificates take
/// effect for the next handshake, without a restart and without touching open connections.
public final class CertificateStore: Sendable {
    /// One certificate chain with its key and the names it serves.
    public struct Entry: Sendable {
        public let file: String
        public let names: [String]
        public let notAfter: Date
        /// The leaf is a certificate authority's (basic constraints CA): not served.
        public let isAuthority: Bool
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
    }

    /// Names → entries, built once per load. Pure lookup.
    struct Table: Sendable {
        let entries: [Entry]
        let exact: [String: Int]
        let wildcard: [String: Int]
        let fallback: Int

        init(entries: [Entry]) {
            self.entries = entries
            var exact: [String: Int] = [:]
            var wildcard: [String: Int] = [:]
            for (index, entry) in entries.enumerated() {
                for name in entry.names {
                    if name.hasPrefix("*.") {
                        let parent = String(name.dropFirst(2))
                        if wildcard[parent] == nil { wildcard[parent] = index }
                    } else {
                        exact[name] = exact[name] ?? index
                    }
                }
            }
            self.exact = exact
            self.wildcard = wildcard
            fallback = entries.firstIndex { $0.file == "default" } ?? 0
        }

        /// The entry for a requested server name: exact, then a wildcard one label up, then the default.
        func select(_ serverName: String?) -> Entry {
            guard let name = serverName.map(Self.canonical), !name.isEmpty else { return entries[fallback] }
            if let index = exact[name] { return entries[index] }
            if let dot = name.firstIndex(of: "."), let index = wildcard[String(name[name.index(after: dot)...])] { return entries[index] }
            return entries[fallback]
        }

        static func canonical(_ name: String) -> String {
            var name = name.lowercased()
            if name.hasSuffix(".") { name.removeLast() }
            return name
        }
    }

    public enum LoadError: Error, CustomStringConvertible {
        case empty(String)
        public var description: String {
            switch self {
            case .empty(let directory): "no certificate and key pair (NAME.pem + NAME.key) could be read in \(directory)"
            }
        }
    }

    public let directory: String
    /// The directory's pairs, the certificates managed in the database (tenants' custom hosts,
    /// see `ManagedCertificateLoader`), and the table made from both.
    private struct State {
        var files: [Entry]
        var managed: [Entry]
        var fingerprint: String
        var table: Table

        init(files: [Entry], managed: [Entry], fingerprint: String) {
            self.files = files
            self.managed = managed
            self.fingerprint = fingerprint
            // a managed certificate serves exactly its tenant's host: it comes first for that name,
            // and the directory's `default` stays the fallback
            table = Table(entries: managed + files)
        }
    }
    private let state: NIOLockedValueBox<State>
    private let logger: Logger

    /// Reads the directory; throws when it holds no usable pair.
    public init(directory: String, logger: Logger) throws {
        self.directory = directory
        self.logger = logger
        let (entries, problems) = Self.read(directory)
        for problem in problems { logger.error("TLS certificate not loaded", metadata: ["problem": "\(problem)"]) }
        guard !entries.isEmpty else { throw LoadError.empty(directory) }
        state = NIOLockedValueBox(State(files: entries, managed: [], fingerprint: Self.fingerprint(directory)))
    }

    /// The certificates loaded now.
    public var entries: [Entry] { state.withLockedValue { $0.table.entries } }

    /// Replaces the certificates managed in the database; the next handshake uses them.
    public func setManaged(_ managed: [Entry]) {
        state.withLockedValue { $0 = State(files: $0.files, managed: managed, fingerprint: $0.fingerprint) }
    }

    func select(_ serverName: String?) -> Entry { state.withLockedValue { $0.table }.select(serverName) }

    /// Re-reads the directory if a file in it changed; keeps the old set when the new one has no
    /// usable pair (a half-copied renewal must not take the listener down). True when it reloaded.
    @discardableResult
    public func reloadIfChanged() -> Bool {
        let fingerprint = Self.fingerprint(directory)
        guard fingerprint != state.withLockedValue({ $0.fingerprint }) else { return false }
        let (entries, problems) = Self.read(directory)
        for problem in problems { logger.error("TLS certificate not loaded", metadata: ["problem": "\(problem)"]) }
        guard !entries.isEmpty else {
            logger.error("TLS certificates unchanged: the directory holds no usable pair now", metadata: ["directory": "\(directory)"])
            return false
        }
        state.withLockedValue { $0 = State(files: entries, managed: $0.managed, fingerprint: fingerprint) }
        logger.info("TLS certificates reloaded", metadata: ["pairs": "\(entries.count)", "names": "\(entries.flatMap(\.names).joined(separator: ","))"])
        return true
    }

    /// A server context: TLS 1.2 and 1.3 only, ALPN `applicationProtocols` in order of preference,
    /// the certificate chosen per handshake from the current set.
    public func serverContext(applicationProtocols: [String] = ["http/1.1"]) throws -> NIOSSLContext {
        try NIOSSLContext(configuration: serverConfiguration(applicationProtocols: applicationProtocols))
    }

    /// The configuration behind `serverContext`, for servers that make their own context (the
    /// portal's, which speaks HTTP/1.1 only).
    public func serverConfiguration(applicationProtocols: [String] = ["http/1.1"]) -> TLSConfiguration {
        let initial = select(nil)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: initial.chain.map { .certificate($0) }, privateKey: .privateKey(initial.key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        configuration.sslContextCallback = { [self] values, promise in
            let entry = select(values.serverHostname)
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = entry.chain.map { .certificate($0) }
            override.privateKey = .privateKey(entry.key)
            promise.succeed(override)
        }
        return configuration
    }

    // MARK: Reading

    static func read(_ directory: String) -> (entries: [Entry], problems: [String]) {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return ([], ["cannot read \(directory)"]) }
        var entries: [Entry] = []
        var problems: [String] = []
        for file in files.sorted() where file.hasSuffix(".pem") && !file.hasPrefix(".") {
            let name = String(file.dropLast(4))
            let keyPath = "\(directory)/\(name).key"
            guard FileManager.default.fileExists(atPath: keyPath) else { continue }  // a CA certificate or a chain without a key
            do {
                let pair = try entry(name: name, chainPath: "\(directory)/\(file)", keyPath: keyPath)
                // a CA's own pair (the development CA beside its certificates) is never a server identity
                guard !pair.isAuthority else { continue }
                entries.append(pair)
            } catch {
                problems.append("\(file): \(error)")
            }
        }
        return (entries, problems)
    }

    struct PairError: Error, CustomStringConvertible {
        let description: String
    }

    /// One pair read and checked (the key belongs to the certificate); its names and expiry.
    public static func entry(name: String, chainPath: String, keyPath: String) throws -> Entry {
        try entry(name: name, chainText: try String(contentsOfFile: chainPath, encoding: .utf8), keyText: try String(contentsOfFile: keyPath, encoding: .utf8))
    }

    /// One pair from PEM text, checked as `entry(name:chainPath:keyPath:)` checks files.
    public static func entry(name: String, chainText: String, keyText: String) throws -> Entry {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(chainText.utf8))
        guard !chain.isEmpty else { throw PairError(description: "no certificate in the file") }
        let key = try NIOSSLPrivateKey(bytes: Array(keyText.utf8), format: .pem)
        // the names and expiry from the leaf (the first certificate of the chain)
        guard let end = chainText.range(of: "-----END CERTIFICATE-----") else { throw PairError(description: "no certificate in the file") }
        let leaf = try Certificate(pemEncoded: String(chainText[..<end.upperBound]).trimmingCharacters(in: .whitespacesAndNewlines))
        // a renewal that replaced one file of the pair but not the other must not be served
        if let parsed = try? Certificate.PrivateKey(pemEncoded: keyText), parsed.publicKey != leaf.publicKey {
            throw PairError(description: "the key does not belong to the certificate")
        }
        var names: [String] = []
        if let alternatives = try leaf.extensions.subjectAlternativeNames {
            for case .dnsName(let dns) in alternatives { names.append(Table.canonical(dns)) }
        }
        var authority = false
        if case .isCertificateAuthority = try leaf.extensions.basicConstraints { authority = true }
        return Entry(file: name, names: names, notAfter: leaf.notValidAfter, isAuthority: authority, chain: chain, key: key)
    }

    /// Names, sizes and modification times of the directory's files: changes when any pair does.
    static func fingerprint(_ directory: String) -> String {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        return files.map { file -> String in
            let attributes = try? FileManager.default.attributesOfItem(atPath: "\(directory)/\(file)")
            let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(file):\(size):\(modified)"
        }.joined(separator: "|")
    }
}

/// Checks a certificate directory every `interval` and reloads it when it changed (for listeners
/// that do not run their own check, such as the portal's).
public struct CertificateReloader: Service {
    let certificates: CertificateStore
    let interval: Duration

    public init(certificates: CertificateStore, interval: Duration = .seconds(10)) {
        self.certificates = certificates
        self.interval = interval
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                certificates.reloadIfChanged()
            }
        }
    }
}
