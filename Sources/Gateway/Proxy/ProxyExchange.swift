import Billing
import NIOCore
import NIOHTTP1

/// The request being proxied.
final class ProxyExchange {
    let plan: ForwardPlan
    let head: HTTPRequestHead
    let requestID: String
    let started: UInt64
    let keepAlive: Bool
    let bodyLimit: Int
    var target: UpstreamTargetConfig
    /// The protocol a WebSocket handshake asks to switch to (`websocket`); nil for plain requests.
    var upgrade: String?
    /// When the upstream switched protocols and the exchange became a byte tunnel (uptime
    /// nanoseconds; 0: not a tunnel), and when a byte last crossed it either way.
    var tunnelOpenedAt: UInt64 = 0
    var tunnelActivity: UInt64 = 0
    var isTunnel: Bool { tunnelOpenedAt != 0 }
    var upstream: UpstreamConnection?
    /// Body bytes read before the upstream connection was ready.
    var pending: [ByteBuffer] = []
    var pendingBytes = 0
    var requestEnded = false
    /// The final response head was written to the client.
    var responseStarted = false
    /// A response head still arriving.
    var responseInbound: ByteBuffer?
    var responseBody = BodyFramer(.none)
    /// An HTTP/1.0 client gets a chunked response's payload only, ended by closing.
    var dechunk = false
    var closeClient = false
    var upstreamKeepAlive = true
    var status: UInt = 0
    var bytesIn: Int64 = 0
    var bytesOut: Int64 = 0
    var retried = false
    /// Identifies the exchange to the loop's response deadlines; 0 until its deadline is armed.
    var serial: UInt64 = 0
    /// Whether reading from the client (or the upstream) was paused for back-pressure.
    var pausedClient = false
    var pausedUpstream = false

    init(plan: ForwardPlan, head: HTTPRequestHead, requestID: String, started: UInt64, target: UpstreamTargetConfig, bodyLimit: Int) {
        self.plan = plan
        self.head = head
        self.requestID = requestID
        self.started = started
        self.keepAlive = head.isKeepAlive
        self.target = target
        self.bodyLimit = bodyLimit
    }
}

/// A local answer waiting for the end of the request body.
struct PendingAnswer {
    var response: LocalResponse
    var head: HTTPRequestHead
    var started: UInt64
    var requestID: String
    /// Counted and metered already (a forwarded call that failed before its response).
    var metered = false
}
