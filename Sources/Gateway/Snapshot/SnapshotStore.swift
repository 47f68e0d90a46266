import Atomics
import Foundation
import NIOConcurrencyHelpers

/// The current snapshot, shared by every event loop. Readers check an atomic version number per
/// request and take the lock only when it changed, so the hot path never contends on a lock.
public final class SnapshotStore: Sendable {
    private let versionCounter = ManagedAtomic<Int>(0)
    private let current = NIOLockedValueBox(GatewaySnapshot.empty)
    private let status = NIOLockedValueBox(Status())

    /// How fresh the snapshot is, for `/readyz` and metrics.
    public struct Status: Sendable, Equatable {
        public var loaded = false
        public var databaseReachable = false
        public var lastError: String?
        public var lastSuccess: Date?
    }

    public init() {}

    public var version: Int { versionCounter.load(ordering: .acquiring) }

    /// Set when a request met a token signed by a key the snapshot does not hold (uptime
    /// nanoseconds of the request; 0: none): the reloader loads at once, at most once a second.
    private let keyRefreshRequestedAt = ManagedAtomic<UInt64>(0)
    private let lastKeyRefreshAt = ManagedAtomic<UInt64>(0)

    /// Asks for a reload because a token named an unknown `kid`; cheap and rate-limited, callable
    /// from the event loops.
    public func requestKeyRefresh(now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        guard now &- lastKeyRefreshAt.load(ordering: .relaxed) >= 1_000_000_000 else { return }
        lastKeyRefreshAt.store(now, ordering: .relaxed)
        keyRefreshRequestedAt.store(now, ordering: .releasing)
    }

    /// Until when a request that met an unknown key may wait for the refresh it triggered (or the
    /// one under way): three seconds after the last refresh was asked for — a full reload of a big
    /// installation takes over a second.
    public func keyRefreshWindowEnd() -> UInt64 { lastKeyRefreshAt.load(ordering: .relaxed) &+ 3_000_000_000 }

    /// Whether a key refresh was asked for since the last call (the reloader polls this).
    public func takeKeyRefreshRequest() -> Bool {
        keyRefreshRequestedAt.exchange(0, ordering: .acquiringAndReleasing) != 0
    }

    public var snapshot: GatewaySnapshot { current.withLockedValue { $0 } }

    public var currentStatus: Status { status.withLockedValue { $0 } }

    /// Installs a freshly loaded snapshot. Its version is raised above the current one if need
    /// be: an in-place update (a revocation) may have taken the number the load was given, and
    /// event loops only pick up a snapshot whose version differs from the one they hold.
    public func install(_ snapshot: GatewaySnapshot) { install { _ in snapshot } }

    /// Installs what `make` builds from the current snapshot, under the lock (a full load merged
    /// with the parts reloaded while it ran); versioned and marked fresh like `install(_:)`.
    public func install(_ make: (_ current: GatewaySnapshot) -> GatewaySnapshot) {
        let version = current.withLockedValue { installed -> Int in
            var next = make(installed)
            next.version = max(next.version, installed.version + 1)
            installed = next
            return next.version
        }
        versionCounter.store(version, ordering: .releasing)
        status.withLockedValue {
            $0.loaded = true
            $0.databaseReachable = true
            $0.lastError = nil
            $0.lastSuccess = Date()
        }
    }

    /// Applies a change to the current snapshot in place of a full reload (revocations).
    public func update(_ change: (inout GatewaySnapshot) -> Void) {
        let version = current.withLockedValue { snapshot -> Int in
            change(&snapshot)
            snapshot.version += 1
            return snapshot.version
        }
        versionCounter.store(version, ordering: .releasing)
    }

    public func markUnreachable(_ error: String) {
        status.withLockedValue {
            $0.databaseReachable = false
            $0.lastError = error
        }
    }

    /// `/readyz` of the gateway: 503 until the first snapshot; afterwards ready, with the
    /// database state as a detail (the gateway keeps serving from its last snapshot).
    public func readinessJSON() -> (ready: Bool, body: String) {
        let status = currentStatus
        let snapshot = self.snapshot
        let age = status.lastSuccess.map { Int(Date().timeIntervalSince($0)) } ?? -1
        let error = (status.lastError ?? "").replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: " ")
        let body =
            "{\"status\":\"\(status.loaded ? "ready" : "not_ready")\",\"snapshot_version\":\(snapshot.version),\"snapshot_age_seconds\":\(age),"
            + "\"database\":\(status.databaseReachable),\"tenants\":\(snapshot.tenantsBySlug.count)"
            + (error.isEmpty ? "" : ",\"detail\":\"\(error.prefix(300))\"") + "}"
        return (status.loaded, body)
    }
}
