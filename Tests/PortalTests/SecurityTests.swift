import Foundation
import Testing

@testable import Portal

@Suite struct SecurityTests {
    @Test func argon2idProductionParametersInPHCFormat() throws {
        // act
        let hash = try PasswordHasher().hashNow("correct horse battery")
        // assert
        #expect(hash.hasPrefix("$argon2id$v=19$m=19456,t=2,p=1$"))
        #expect(PasswordHasher().verifyNow("correct horse battery", against: hash))
        #expect(!PasswordHasher().verifyNow("correct horse batterY", against: hash))
    }

    @Test func saltMakesEveryHashDifferent() throws {
        let hasher = Fixtures.hasher
        #expect(try hasher.hashNow("same password") != hasher.hashNow("same password"))
    }

    @Test func verifyRejectsGarbageAndOtherAlgorithms() {
        #expect(!PasswordHasher().verifyNow("x", against: ""))
        #expect(!PasswordHasher().verifyNow("x", against: "$2b$12$abcdefghijklmnopqrstuv"))
        #expect(!PasswordHasher().verifyNow("x", against: "$argon2id$v=19$m=19456,t=2,p=1$garbage"))
    }

    @Test func decoyIsAValidHash() {
        #expect(PasswordHasher.decoy.hasPrefix("$argon2id$"))
    }

    @Test func secretTokensAreLongRandomAndPrefixed() {
        let a = SecretToken.generate(prefix: "tgp_")
        let b = SecretToken.generate(prefix: "tgp_")
        #expect(a.value != b.value)
        #expect(a.value.hasPrefix("tgp_"))
        #expect(Base64URL.decode(String(a.value.dropFirst(4)))?.count == 32)
        #expect(a.sha256.count == 32)
    }

    @Test func constantTimeEquality() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(constantTimeEquals([UInt8](), [UInt8]()))
    }

    @Test func csrfTokenIsBoundToItsBinding() {
        let csrf = CSRFProtection(secret: SecretKey(bytes: Array(repeating: 1, count: 32)))
        let token = csrf.token(binding: "session-a")
        #expect(csrf.isValid(token, binding: "session-a"))
        #expect(!csrf.isValid(token, binding: "session-b"))
        #expect(!csrf.isValid(nil, binding: "session-a"))
        #expect(!csrf.isValid(token, binding: nil))
        #expect(!csrf.isValid("not base64 !!", binding: "session-a"))
        let otherKey = CSRFProtection(secret: SecretKey(bytes: Array(repeating: 2, count: 32)))
        #expect(!otherKey.isValid(token, binding: "session-a"))
    }

    @Test func sealedKeysOpenOnlyForTheirOwnerPurposeAndServerKey() throws {
        let secret = SecretKey(bytes: Array(repeating: 3, count: 32))
        let owner = UUID()
        let apiKeys = BoundKeySeal(secret: secret, purpose: .upstreamClientKey)
        let sealed = try apiKeys.seal("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", owner: owner)
        #expect(!sealed.isEmpty && !String(decoding: sealed, as: UTF8.self).contains("PRIVATE KEY"))
        #expect(apiKeys.open(sealed, owner: owner).map { String(decoding: $0, as: UTF8.self) }?.hasPrefix("-----BEGIN PRIVATE KEY-----") == true)
        #expect(apiKeys.open(sealed, owner: UUID()) == nil)
        #expect(BoundKeySeal(secret: secret, purpose: .hostCertificateKey).open(sealed, owner: owner) == nil)
        #expect(BoundKeySeal(secret: SecretKey(bytes: Array(repeating: 4, count: 32)), purpose: .upstreamClientKey).open(sealed, owner: owner) == nil)
        #expect(apiKeys.open(Array(sealed.dropLast()), owner: owner) == nil)
    }

    @Test func secretKeyIsGeneratedOnceAndReused() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SecretKey.load(environmentValue: nil, dataDirectory: directory)
        let second = try SecretKey.load(environmentValue: nil, dataDirectory: directory)
        #expect(first.mac("x") == second.mac("x"))
        let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/secret.key")
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let fromEnvironment = try SecretKey.load(environmentValue: "configured", dataDirectory: directory)
        #expect(fromEnvironment.mac("x") != first.mac("x"))
    }
}
