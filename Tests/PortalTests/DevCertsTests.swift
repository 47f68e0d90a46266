import Foundation
import Gateway
import Logging
import Testing

@testable import Portal

/// `tollgate dev-certs`: the development CA and server certificate `make run` serves TLS with.
@Suite struct DevCertsTests {
    static func directory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("devcerts-\(UUID().uuidString)").path
    }

    static func mode(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    @Test func createsOnceReissuesForNewNamesAndLeavesForeignCertificatesAlone() throws {
        // setup
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let certificates = DevelopmentCertificates(directory: directory, baseDomain: "localhost", extraNames: ["demo.localhost"])
        // act: the first run creates the CA and the certificate, a second keeps them
        let first = try certificates.ensure()
        let caPEM = try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8)
        let second = try certificates.ensure()
        // assert
        #expect(first.contains("created a development CA") && first.contains("issued"))
        #expect(second.contains("is current") && !second.contains("created"))
        #expect(Self.mode(directory + "/ca.key") == 0o600 && Self.mode(directory + "/default.key") == 0o600)
        let store = try CertificateStore(directory: directory, logger: Logger(label: "test"))
        #expect(store.entries.map(\.file) == ["default"])  // ca.pem has no key beside it: not served
        #expect(Set(store.entries[0].names) == ["localhost", "*.localhost", "demo.localhost"])
        // a new name issues the certificate again from the same CA
        let more = try DevelopmentCertificates(directory: directory, baseDomain: "localhost", extraNames: ["demo.localhost", "acme.localhost"]).ensure()
        #expect(more.contains("new names"))
        #expect(try String(contentsOfFile: directory + "/ca.pem", encoding: .utf8) == caPEM)
        // an operator's own certificate is never overwritten
        let other = try DevelopmentCA.create(commonName: "someone's CA").issue(dnsNames: ["api.example.com"])
        try other.certificatePEM.write(toFile: directory + "/default.pem", atomically: true, encoding: .utf8)
        try other.privateKeyPEM.write(toFile: directory + "/default.key", atomically: true, encoding: .utf8)
        let kept = try certificates.ensure()
        #expect(kept.contains("left as it is"))
        #expect(try String(contentsOfFile: directory + "/default.pem", encoding: .utf8) == other.certificatePEM)
    }
}
