import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate authority for local development and tests: a P-256 key and a self-signed CA
/// certificate, issuing server certificates for the names and addresses given. Made in Swift
/// (swift-certificates), so neither `make run` nor the tests shell out to openssl.
public struct DevelopmentCA: Sendable {
    /// PEM of the CA certificate: what a client trusts (`curl --cacert`, an API's CA bundle).
    public let certificatePEM: String
    /// PEM (PKCS#8) of the CA's private key.
    public let privateKeyPEM: String
    private let key: P256.Signing.PrivateKey
    private let certificate: Certificate

    /// A new CA valid for `years` from now.
    public static func create(commonName: String = "Tollgate development CA", years: Int = 10, now: Date = Date()) throws -> DevelopmentCA {
        let key = P256.Signing.PrivateKey()
        let signer = Certificate.PrivateKey(key)
        let name = try DistinguishedName {
            OrganizationName("Tollgate")
            CommonName(commonName)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: signer.publicKey)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: signer.publicKey, notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(years) * 365 * 86_400), issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: signer)
        return try DevelopmentCA(key: key, certificate: certificate)
    }

    /// The CA stored earlier (its two PEM texts).
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        try self.init(key: P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM), certificate: Certificate(pemEncoded: certificatePEM))
    }

    private init(key: P256.Signing.PrivateKey, certificate: Certificate) throws {
        self.key = key
        self.certificate = certificate
        self.certificatePEM = try certificate.serializeAsPEM().pemString
        self.privateKeyPEM = key.pemRepresentation
    }

    /// A server certificate (and its new key) for DNS names (`*.localhost` allowed) and IP
    /// addresses, valid for `days`.
    /// A leaf certificate for a server (or, with `client`, for a client presenting it in mutual TLS).
    public func issue(
        dnsNames: [String], ipAddresses: [String] = [], days: Int = 825, now: Date = Date(), client: Bool = false
    ) throws -> (certificatePEM: String, privateKeyPEM: String) {
        let leafKey = P256.Signing.PrivateKey()
        let subjectKey = Certificate.PrivateKey(leafKey)
        var names: [GeneralName] = dnsNames.map { .dnsName($0) }
        for address in ipAddresses {
            guard let bytes = Self.addressBytes(address) else { throw InvalidAddress(text: address) }
            names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
        }
        let subject = try DistinguishedName {
            OrganizationName("Tollgate")
            CommonName(dnsNames.first ?? ipAddresses.first ?? "localhost")
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([client ? .clientAuth : .serverAuth])
            SubjectAlternativeNames(names)
            SubjectKeyIdentifier(hash: subjectKey.publicKey)
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: subjectKey.publicKey, notValidBefore: now.addingTimeInterval(-300),
            notValidAfter: now.addingTimeInterval(Double(days) * 86_400), issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: Certificate.PrivateKey(key))
        return (try leaf.serializeAsPEM().pemString, leafKey.pemRepresentation)
    }

    /// Whether a certificate (PEM) names this CA as its issuer.
    public func issued(_ certificatePEM: String) -> Bool {
        guard let end = certificatePEM.range(of: "-----END CERTIFICATE-----"),
            let leaf = try? Certificate(pemEncoded: String(certificatePEM[..<end.upperBound]))
        else { return false }
        return leaf.issuer == certificate.subject
    }

    public struct InvalidAddress: Error, CustomStringConvertible {
        public let text: String
        public var description: String { "not an IP address: \(text)" }
    }

    /// Network-order bytes of an IPv4 or IPv6 literal.
    static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
