import Billing
import Foundation
import NIOHTTP1

/// Records each call's outcome once: the loop's metrics, the quota unit reserved for it, the
/// usage event the meter makes durable and — when a sink wants it — the access-log record.
/// Whatever the protocol carried the call (an HTTP/1.1 exchange, an HTTP/2 stream, a gRPC call,
/// a WebSocket tunnel at its close), it ends here.
struct CallMeter {
    let shared: GatewayContext
    let loop: LoopState

    /// Who called and how, for the access log: passed along as the caller holds it, read only
    /// when a sink wants a record.
    struct Caller {
        var requestID: String
        var clientIP: String
        /// The request target as the client sent it (the query is cut before logging).
        var target: String
        var protocolName: AccessLogRecord.CallProtocol
    }

    /// Whether a call of `route` is logged: the installation logs every call, an API with an
    /// `http_log` policy its own. Two nil checks when nothing is logged.
    @inline(__always)
    func logs(_ route: Route?) -> Bool { shared.accessLog != nil || route?.httpLog != nil }

    /// A response the gateway made itself; metered to its tenant when one is known.
    func recordLocal(_ response: LocalResponse, method: HTTPMethod, started: UInt64, caller: @autoclosure () -> Caller) {
        let elapsed = DispatchTime.now().uptimeNanoseconds &- started
        if let reason = response.rejection { loop.metrics.rejected(reason.rawValue) }
        guard let tenant = response.tenant else { return }
        loop.metrics.request(api: response.route?.slug ?? "-", status: response.status.code, nanoseconds: elapsed)
        let bytesOut = Int64(response.body.utf8.count)
        shared.usage.record(
            UsageEvent(
                id: loop.newID(), tenantID: tenant.id, apiID: response.route?.apiID, appID: response.app?.id, subscriptionID: response.grant?.subscriptionID,
                planID: response.grant?.planID, method: method.rawValue, status: Int(response.status.code), latencyMicroseconds: Int64(elapsed / 1000),
                bytesIn: 0, bytesOut: bytesOut, rejection: response.rejection, forwarded: false))
        if logs(response.route) {
            let caller = caller()
            write(
                AccessLogRecord(
                    requestID: caller.requestID, clientIP: caller.clientIP, epochMilliseconds: Self.epochMilliseconds(), protocolName: caller.protocolName,
                    method: method.rawValue, route: AccessLogRecord.route(ofTarget: caller.target), status: Int(response.status.code),
                    latencyMicroseconds: Int64(elapsed / 1000), bytesIn: 0, bytesOut: bytesOut, tenantID: tenant.id, tenant: tenant.slug,
                    apiID: response.route?.apiID, appID: response.app?.id, clientID: response.app?.clientID, planID: response.grant?.planID,
                    rejection: response.rejection?.rawValue, cache: response.route?.responseCache != nil ? "none" : nil),
                route: response.route)
        }
    }

    /// An admitted call ended with `status`: its quota unit is settled (billable or given back).
    /// `cacheHit`: the gateway answered from its response cache; the plan says whether that bills.
    /// `upstreamMicroseconds` and `cacheStatus` are read only when the call is logged.
    func recordCall(
        _ plan: ForwardPlan, method: HTTPMethod, started: UInt64, status: UInt, forwarded: Bool, bytesIn: Int64, bytesOut: Int64,
        rejection: UsageEvent.Rejection?, cacheHit: Bool = false, caller: @autoclosure () -> Caller, upstreamMicroseconds: Int64? = nil,
        cacheStatus: @autoclosure () -> String? = nil
    ) {
        let elapsed = DispatchTime.now().uptimeNanoseconds &- started
        let cache: UsageEvent.CacheUse? = cacheHit ? (plan.grant.cacheHitsBillable ? .hit : .unbilledHit) : nil
        let billable = UsageEvent.isBillable(forwarded: forwarded, status: Int(status), cache: cache)
        if plan.quotaReserved { shared.quotas.settle(subscription: plan.grant.subscriptionID, billable: billable) }
        loop.metrics.request(api: plan.route.slug, status: status, nanoseconds: elapsed)
        if let rejection { loop.metrics.rejected(rejection.rawValue) }
        var event = UsageEvent(
            id: loop.newID(), tenantID: plan.tenant.id, apiID: plan.route.apiID, appID: plan.app.id, subscriptionID: plan.grant.subscriptionID,
            planID: plan.grant.planID, method: method.rawValue, status: Int(status), latencyMicroseconds: Int64(elapsed / 1000), bytesIn: bytesIn,
            bytesOut: bytesOut, rejection: rejection, forwarded: forwarded)
        event.cache = cache
        shared.usage.record(event)
        if logs(plan.route) {
            let caller = caller()
            write(
                AccessLogRecord(
                    requestID: caller.requestID, clientIP: caller.clientIP, epochMilliseconds: Self.epochMilliseconds(), protocolName: caller.protocolName,
                    method: method.rawValue, route: AccessLogRecord.route(ofTarget: caller.target), status: Int(status),
                    latencyMicroseconds: Int64(elapsed / 1000), upstreamLatencyMicroseconds: upstreamMicroseconds, bytesIn: bytesIn, bytesOut: bytesOut,
                    tenantID: plan.tenant.id, tenant: plan.tenant.slug, apiID: plan.route.apiID, appID: plan.app.id, clientID: plan.app.clientID,
                    planID: plan.grant.planID, rejection: rejection?.rawValue, cache: plan.route.responseCache != nil ? cacheStatus() ?? "none" : nil),
                route: plan.route)
        }
    }

    /// Encodes the record once and hands the line to every sink that wants it (each only queues).
    private func write(_ record: AccessLogRecord, route: Route?) {
        let line = record.jsonLine
        shared.accessLog?.record(line)
        route?.httpLog?.append(line)
    }

    private static func epochMilliseconds() -> Int64 {
        let seconds = Date().timeIntervalSince1970
        return seconds.isFinite ? Int64(seconds * 1000) : 0
    }
}
