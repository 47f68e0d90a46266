import CArgon2
import Foundation
import NIOPosix

/// Argon2id password hashing through libargon2, stored as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
///
/// Hashing costs ~19 MiB and tens of milliseconds by design, so it runs on NIO's blocking thread
/// pool rather than on a Swift-concurrency or event-loop thread.
struct PasswordHasher: Sendable {
    var memoryKiB: UInt32 = 19 * 1024
    var iterations: UInt32 = 2
    var parallelism: UInt32 = 1
    static let saltLength = 16
    static let hashLength = 32

    enum HashError: Error { case argon2(Int32) }

    /// Minimum length, following NIST SP 800-63B; long passphrases are welcome.
    static let minimumLength = 10
    static let maximumLength = 1024

    static func validate(_ password: String) -> String? {
        if password.count < minimumLength { return "Use at least \(minimumLength) characters." }
        if password.utf8.count > maximumLength { return "Use at most \(maximumLength) bytes." }
        return nil
    }

    func hash(_ password: String) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { try hashNow(password) }
    }

    func verify(_ password: String, against encoded: String) async -> Bool {
        (try? await NIOThreadPool.singleton.runIfActive { verifyNow(password, against: encoded) }) ?? false
    }

    func hashNow(_ password: String) throws -> String {
        var salt = [UInt8](repeating: 0, count: Self.saltLength)
        var generator = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: .min ... .max, using: &generator) }
        let length = argon2_encodedlen(iterations, memoryKiB, parallelism, UInt32(Self.saltLength), UInt32(Self.hashLength), Argon2_id)
        var encoded = [CChar](repeating: 0, count: length)
        let password = Array(password.utf8)
        let status = argon2id_hash_encoded(
            iterations, memoryKiB, parallelism, password, password.count, salt, salt.count, Self.hashLength,
            &encoded, encoded.count)
        guard status == ARGON2_OK.rawValue else { throw HashError.argon2(status) }
        return String(decoding: encoded.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func verifyNow(_ password: String, against encoded: String) -> Bool {
        guard encoded.hasPrefix("$argon2id$") else { return false }
        let password = Array(password.utf8)
        return encoded.withCString { argon2id_verify($0, password, password.count) } == ARGON2_OK.rawValue
    }

    /// A valid hash of a random password, verified against when an account does not exist so that
    /// a failed login takes the same time whether or not the email is known.
    static let decoy: String = (try? PasswordHasher().hashNow(SecretToken.generate(prefix: "").value)) ?? ""
}
