import Foundation
import NIOHTTP1

/// Where a translated answer puts the upstream's trailer metadata (the trailers, or the one block
/// of a trailers-only answer). grpc-gateway's rule, carried over to server streams and HTTP/2. Pure.
///
/// A client that accepts trailers (`TE: trailers`, on HTTP/1.1 or HTTP/2) gets each entry as a
/// `Grpc-Trailer-{key}` field of the answer's trailer section: the last chunk of a chunked HTTP/1.1
/// answer (a unary answer that has trailer fields to send is chunked for them), a trailing HEADERS
/// frame on HTTP/2. The `Trailer` header names them when they are known as the head is written —
/// a unary answer and a problem are written after the call ended; a server stream's head goes out
/// with its first message, before its trailers exist, so its trailer section comes unannounced
/// (RFC 9110 §6.6.2 makes the announcement a "should"; the section is valid without it).
///
/// Any other client (no `TE: trailers`, or HTTP/1.0, which has no chunked framing) gets them as
/// `Grpc-Metadata-{key}` headers while the head is still to be written, as before this rule: a
/// unary client keeps seeing them. A stream whose head is out has no place for them then.
enum TranscodedTrailers {
    /// Whether the request said it accepts a trailer section.
    static func accepted(by head: HTTPRequestHead) -> Bool {
        guard head.version.major == 2 || (head.version.major == 1 && head.version.minor >= 1) else { return false }
        for value in head.headers["te"] {
            for member in value.split(separator: ",") {
                // a member is a coding with optional parameters (`deflate;q=0.5`); `trailers` has none
                let coding = member.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
                if coding.trimmingCharacters(in: .whitespaces).lowercased() == "trailers" { return true }
            }
        }
        return false
    }

    /// The `Trailer` header's value: each field name once, in order of first appearance; nil for none.
    static func announcement(_ fields: [(String, String)]) -> String? {
        var names: [String] = []
        for (name, _) in fields where !names.contains(where: { $0.lowercased() == name.lowercased() }) { names.append(name) }
        return names.isEmpty ? nil : names.joined(separator: ", ")
    }

    /// The end of a chunked HTTP/1.1 body: the last chunk, then the trailer section and its blank
    /// line. The fields come from `TranscodedMetadata.response`, so names are metadata keys behind
    /// the prefix and values carry no CR, LF or other control character.
    static func lastChunk(_ fields: [(String, String)]) -> String {
        var out = "0\r\n"
        for (name, value) in fields { out += name + ": " + value + "\r\n" }
        return out + "\r\n"
    }

    /// The trailer fields a route's response transformations leave: their `remove` operations drop
    /// the trailer fields they name, so a provider who keeps a piece of metadata from clients keeps
    /// it from the trailer section too. Rename, set and add act on the head only (a value set there
    /// would otherwise be sent twice).
    static func removing(_ fields: [(String, String)], by transform: ResponseTransform?) -> [(String, String)] {
        guard let transform else { return fields }
        let removed = transform.steps.flatMap(\.remove)
        guard !removed.isEmpty else { return fields }
        return fields.filter { field in !removed.contains { FieldOperations.sameHeader($0, field.0) } }
    }
}
