import Billing
import Foundation
import NIOHTTP1

/// Records each call's outcome once: the loop's metrics, the quota unit reserved for it, and the
/// usage event the meter makes durable. Whatever the protocol carried the call (an HTTP/1.1
/// exchange, a WebSocket tunnel at its close), it ends here.
struct CallMeter {
    let shared: GatewayContext
    let loop: LoopState

    /// A response the gateway made itself; metered to its tenant when one is known.
    func recordLocal(_ response: LocalResponse, method: HTTPMethod, started: UInt64) {
        let elapsed = DispatchTime.now().uptimeNanoseconds &- started
        if let reason = response.rejection { loop.metrics.rejected(reason.rawValue) }
        guard let tenant = response.tenant else { return }
        loop.metrics.request(api: response.route?.slug ?? "-", status: response.status.code, nanoseconds: elapsed)
        shared.usage.record(
            UsageEvent(
                id: loop.newID(), tenantID: tenant.id, apiID: response.route?.apiID, appID: response.app?.id, subscriptionID: response.grant?.subscriptionID,
                planID: response.grant?.planID, method: method.rawValue, status: Int(response.status.code), latencyMicroseconds: Int64(elapsed / 1000),
                bytesIn: 0, bytesOut: Int64(response.body.utf8.count), rejection: response.rejection, forwarded: false))
    }

    /// An admitted call ended with `status`: its quota unit is settled (billable or given back).
    /// `cacheHit`: the gateway answered from its response cache; the plan says whether that bills.
    func recordCall(
        _ plan: ForwardPlan, method: HTTPMethod, started: UInt64, status: UInt, forwarded: Bool, bytesIn: Int64, bytesOut: Int64,
        rejection: UsageEvent.Rejection?, cacheHit: Bool = false
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
    }
}
