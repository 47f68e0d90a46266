import ArgumentParser
import Foundation
import Gateway

/// `tollgate dev-certs`: a local development CA and a server certificate for this machine's
/// names, for the TLS listeners (`make run` calls it). Generated in Swift; nothing to install.
struct DevCertsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-certs",
        abstract: "Create a local development CA and a certificate for 127.0.0.1, ::1, localhost and *.localhost under the TLS directory.",
        discussion: """
            Writes ca.pem (trust it with curl --cacert), ca.key, default.pem and default.key to TOLLGATE_TLS_DIR (default <data dir>/tls), \
            keys with mode 0600. Keeps an existing CA; issues the server certificate again when it is missing, expires within 30 days \
            or lacks a name. Not for production: use certificates from your CA there.
            """)

    @Option(help: "More DNS names for the server certificate (repeatable), e.g. a tenant's custom host.") var name: [String] = []

    func run() throws {
        let config = try AppConfig.fromEnvironment()
        let report = try DevelopmentCertificates(directory: config.certificateDirectory, baseDomain: config.baseDomain, extraNames: name).ensure()
        print(report)
    }
}

/// The files behind `dev-certs`, and the decision whether to (re)issue them.
struct DevelopmentCertificates {
    let directory: String
    let baseDomain: String
    let extraNames: [String]

    var dnsNames: [String] {
        var names = ["localhost", "*.localhost"]
        if baseDomain != "localhost" { names += [baseDomain, "*." + baseDomain] }
        for extra in extraNames where !names.contains(extra.lowercased()) { names.append(extra.lowercased()) }
        return names
    }

    static let addresses = ["127.0.0.1", "::1"]

    func ensure(now: Date = Date()) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let caPath = directory + "/ca.pem", caKeyPath = directory + "/ca.key"
        var lines: [String] = []
        let ca: DevelopmentCA
        if let certificate = try? String(contentsOfFile: caPath, encoding: .utf8), let key = try? String(contentsOfFile: caKeyPath, encoding: .utf8) {
            ca = try DevelopmentCA(certificatePEM: certificate, privateKeyPEM: key)
        } else {
            ca = try DevelopmentCA.create(now: now)
            try Self.write(ca.privateKeyPEM, to: caKeyPath, secret: true)
            try Self.write(ca.certificatePEM, to: caPath, secret: false)
            lines.append("created a development CA: \(caPath)")
        }
        let serverPath = directory + "/default.pem", serverKeyPath = directory + "/default.key"
        if let existing = try? String(contentsOfFile: serverPath, encoding: .utf8), !ca.issued(existing) {
            // an operator's own certificate in the TLS directory is never replaced
            lines.append("\(serverPath) is not from the development CA; left as it is")
        } else if let reason = try reissueReason(serverPath, now: now) {
            let issued = try ca.issue(dnsNames: dnsNames, ipAddresses: Self.addresses, days: 365, now: now)
            try Self.write(issued.privateKeyPEM, to: serverKeyPath, secret: true)
            try Self.write(issued.certificatePEM, to: serverPath, secret: false)
            lines.append("issued \(serverPath) (\(reason)) for \((dnsNames + Self.addresses).joined(separator: ", "))")
        } else {
            lines.append("\(serverPath) is current")
        }
        lines.append("trust it with: curl --cacert \(caPath) …")
        return lines.joined(separator: "\n")
    }

    /// Why the server certificate must be issued again, or nil when it is fine.
    func reissueReason(_ path: String, now: Date) throws -> String? {
        guard FileManager.default.fileExists(atPath: path), FileManager.default.fileExists(atPath: directory + "/default.key") else { return "none yet" }
        let entry = try CertificateStore.entry(name: "default", chainPath: path, keyPath: directory + "/default.key")
        if entry.notAfter < now.addingTimeInterval(30 * 86_400) { return "expires soon" }
        if !Set(dnsNames).isSubset(of: Set(entry.names)) { return "new names" }
        return nil
    }

    /// Written whole under a temporary name, then renamed: a listener reloading meanwhile never
    /// reads half a file. Keys are readable by the owner only.
    static func write(_ text: String, to path: String, secret: Bool) throws {
        let temporary = path + ".tmp-\(UUID().uuidString.prefix(8))"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: secret ? 0o600 : 0o644]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }
}
