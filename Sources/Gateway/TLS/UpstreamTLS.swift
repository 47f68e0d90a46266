import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import X509

/// How the gateway speaks TLS to an API's `https://` targets: TLS 1.2 or newer, the peer's
/// certificate verified against the system trust store (Debian's `ca-certificates`) or, when the
/// provider gave one, the API's own CA bundle instead; the host name checked and sent as SNI.
///
/// A context is expensive to make (it reads the trust store) and safe to share between event
/// loops, so there is one per distinct trust configuration in the process, made when a snapshot
/// first needs it — never per call.
public enum UpstreamTLS {
    public enum Failure: Error, CustomStringConvertible {
        case invalidBundle(String)
        /// The handshake succeeded but the upstream did not choose `h2` by ALPN (the API says h2).
        case noHTTP2(negotiated: String?)
        public var description: String {
            switch self {
            case .invalidBundle(let reason): "the API's CA bundle is not usable: \(reason)"
            case .noHTTP2(let negotiated):
                "its TLS did not negotiate HTTP/2 (ALPN h2; it chose \(negotiated.map { "'\($0)'" } ?? "no protocol")) — set the API's upstream protocol to http1 or enable h2 upstream"
            }
        }
    }

    /// An API's client TLS context with its identity: a digest of everything that decides what a
    /// connection made with it proves and trusts — the CA bundle (or the system trust store), the
    /// ALPN offer and the client certificate and key. Connections are pooled under their target's
    /// key *and* this identity (`UpstreamTargetConfig.key`), so a call never rides a connection
    /// that another API's settings opened: one that presented a client certificate the caller's
    /// API does not hold, or whose server was verified against another CA bundle.
    public struct Context: Sendable {
        public let ssl: NIOSSLContext
        /// 32 hex digits (128 bits of SHA-256); made from secrets too, so never logged or exported.
        public let identity: String
    }

    private static let contexts = NIOLockedValueBox<[String: Context]>([:])

    /// The certificate chain and private key an API's targets are shown for mutual TLS.
    public struct ClientIdentity: Sendable {
        public let certificatePEM: String
        public let privateKeyPEM: [UInt8]

        public init(certificatePEM: String, privateKeyPEM: [UInt8]) {
            self.certificatePEM = certificatePEM
            self.privateKeyPEM = privateKeyPEM
        }
    }

    /// The identity of a trust configuration (see `Context.identity`); equal settings, equal identity.
    static func identity(caBundlePEM: String?, http2: Bool, client: ClientIdentity?) -> String {
        var hash = SHA256()
        // each part length-prefixed, so no two different settings concatenate to the same bytes
        func part(_ bytes: [UInt8]) {
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { hash.update(bufferPointer: $0) }
            hash.update(data: bytes)
        }
        part(caBundlePEM.map { Array("bundle:\($0)".utf8) } ?? Array("system".utf8))
        part(http2 ? [1] : [0])
        part(client.map { Array($0.certificatePEM.utf8) } ?? [])
        part(client?.privateKeyPEM ?? [])
        return hash.finalize().prefix(16).map { String(format: "%02x", $0) }.joined()
    }

    /// The context for a CA bundle (PEM, one or more certificates), or the system trust store when
    /// nil. With `http2`, the context offers ALPN `h2` only (for `grpcs://` targets); with
    /// `client`, it presents that certificate when the upstream asks for one.
    public static func context(caBundlePEM: String?, http2: Bool = false, client: ClientIdentity? = nil) throws -> Context {
        let key = identity(caBundlePEM: caBundlePEM, http2: http2, client: client)
        if let known = contexts.withLockedValue({ $0[key] }) { return known }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if http2 { configuration.applicationProtocols = ["h2"] }
        if let client {
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(client.certificatePEM.utf8)).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: client.privateKeyPEM, format: .pem))
            } catch {
                throw Failure.invalidBundle("its client certificate or key does not parse")
            }
        }
        configuration.certificateVerification = .fullVerification
        if let pem = caBundlePEM {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
            } catch {
                throw Failure.invalidBundle("it holds no PEM certificate that parses")
            }
            guard !certificates.isEmpty else { throw Failure.invalidBundle("it holds no certificate") }
            configuration.trustRoots = .certificates(certificates)
        }
        let context = Context(ssl: try NIOSSLContext(configuration: configuration), identity: key)
        contexts.withLockedValue { known in
            // bounded: trust configurations come from providers; a flood of distinct bundles only
            // costs contexts made again
            if known.count >= 1_000 { known.removeAll() }
            known[key] = context
        }
        return context
    }

    /// Checks a CA bundle as the portal receives it (the gateway would refuse it the same way).
    public static func validate(caBundlePEM: String) -> String? {
        do {
            _ = try context(caBundlePEM: caBundlePEM)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Checks a client certificate chain and its key as the portal receives them: both parse, the
    /// leaf certificate is current and the key is the one it certifies. Nil when usable; else why not.
    public static func validate(clientCertificatePEM: String, privateKeyPEM: String, now: Date = Date()) -> String? {
        let leaf: Certificate
        do {
            leaf = try Certificate(pemEncoded: clientCertificatePEM)
        } catch {
            return "The client certificate is not a PEM certificate (-----BEGIN CERTIFICATE----- …)."
        }
        let key: Certificate.PrivateKey
        do {
            key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
        } catch {
            return "The private key is not a PEM private key (PKCS#8, RSA or EC, unencrypted)."
        }
        guard key.publicKey == leaf.publicKey else { return "The private key does not belong to the (first) client certificate." }
        // a certificate limited to other uses (serverAuth only, say) is refused by the upstream's
        // handshake: say so now rather than as 502s later
        if let usages = try? leaf.extensions.extendedKeyUsage, !usages.contains(.clientAuth), !usages.contains(.any) {
            return "The client certificate is not for client authentication: its extended key usage lacks clientAuth."
        }
        guard leaf.notValidAfter > now else { return "The client certificate expired on \(leaf.notValidAfter.formatted(.iso8601))." }
        guard leaf.notValidBefore <= now else { return "The client certificate is not valid before \(leaf.notValidBefore.formatted(.iso8601))." }
        do {
            _ = try context(caBundlePEM: nil, client: ClientIdentity(certificatePEM: clientCertificatePEM, privateKeyPEM: Array(privateKeyPEM.utf8)))
        } catch {
            return "The client certificate cannot be used: \(error)."
        }
        return nil
    }

    /// The subject and expiry of a stored client certificate, for the API page.
    public static func summary(clientCertificatePEM: String) -> (subject: String, notAfter: Date)? {
        guard let leaf = try? Certificate(pemEncoded: clientCertificatePEM) else { return nil }
        return ("\(leaf.subject)", leaf.notValidAfter)
    }

    /// The server name sent as SNI and checked against the certificate: a DNS name, never an IP
    /// literal (those are checked against the certificate's IP addresses instead).
    static func serverName(_ host: String) -> String? {
        if IPv4Address(host) != nil || host.contains(":") { return nil }
        return host
    }

    /// Words for a failed handshake, for the 502's problem detail (nothing secret in them).
    static func describe(_ error: any Error) -> String {
        if let ssl = error as? NIOSSLError, case .handshakeFailed(let inner) = ssl {
            let text = "\(inner)".lowercased()
            if text.contains("certificate_verify_failed") || text.contains("certificate verify failed") {
                return "The upstream's TLS certificate could not be verified (untrusted issuer, expired, or not for this host)."
            }
            if text.contains("no_application_protocol") || text.contains("no application protocol") {
                return "The upstream's TLS refused HTTP/2 (no ALPN h2): set the API's upstream protocol to http1 or enable h2 upstream."
            }
            if text.contains("wrong_version_number") || text.contains("wrong version number") {
                return "The upstream did not answer TLS (is the target http:// rather than https://?)."
            }
            return "The TLS handshake with the upstream failed."
        }
        switch error {
        case let failure as Failure:
            return "The upstream cannot be reached over TLS: \(failure)."
        case is HandshakeIncomplete:
            return "The upstream closed the connection during the TLS handshake."
        case is NIOSSLExtraError:
            return "The upstream's TLS certificate is not valid for the target's host name."
        case let error as NIOSSLError:
            return "The TLS handshake with the upstream failed (\(error))."
        default:
            return "The TLS handshake with the upstream failed."
        }
    }

    static func isTLSFailure(_ error: any Error) -> Bool {
        error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError || error is HandshakeIncomplete || error is Failure
    }

    /// The connection closed before the handshake finished.
    struct HandshakeIncomplete: Error {}
}

/// IPv4 literal check without Foundation's resolver.
private struct IPv4Address {
    init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && $0.allSatisfy(\.isASCII) && UInt8($0) != nil }) else { return nil }
    }
}

/// Completes `promise` when the channel's TLS handshake is done, or fails it with the handshake's
/// error, then steps out of the pipeline. The pool hands out a TLS connection only once it is
/// ready, so a failed handshake is a connect failure (502, counted by the circuit breaker), not a
/// reset in the middle of an exchange. Confined to its event loop (every path that finishes it runs
/// there), hence `@unchecked Sendable`.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let promise: EventLoopPromise<Void>
    private var done = false
    /// The protocol the handshake agreed by ALPN (`h2`, `http/1.1`), nil when none was.
    private(set) var negotiatedProtocol: String?

    init(eventLoop: any EventLoop) { promise = eventLoop.makePromise() }

    /// Completes the promise once; later outcomes are ignored.
    func finish(_ result: Result<Void, any Error>) {
        guard !done else { return }
        done = true
        promise.completeWith(result)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            negotiatedProtocol = negotiated
            finish(.success(()))
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(UpstreamTLS.HandshakeIncomplete()))
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(UpstreamTLS.HandshakeIncomplete()))
    }
}
