import Crypto
import Foundation

/// A 256-bit random secret (session ids, API tokens, invitation links). Only its SHA-256 is stored;
/// the value is shown once.
struct SecretToken: Sendable {
    let value: String

    static func generate(prefix: String) -> SecretToken {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: .min ... .max, using: &generator) }
        return SecretToken(value: prefix + Base64URL.encode(bytes))
    }

    var sha256: [UInt8] { Self.sha256(value) }

    static func sha256(_ text: String) -> [UInt8] { Array(SHA256.hash(data: Data(text.utf8))) }

    /// The first characters of a token, stored in clear so a user can tell tokens apart.
    var displayPrefix: String { String(value.prefix(12)) }
}

enum Base64URL {
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ text: String) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }
}

/// Compares two byte strings in time that depends only on their lengths, not on where they differ.
func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}
