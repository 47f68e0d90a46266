import Foundation
import NIOConcurrencyHelpers

/// Whether this process can serve: the database answered and its schema is current.
///
/// Written by a background checker, read synchronously on event loops by the gateway's `/readyz`
/// (and by the portal's), so it is a small locked value rather than an actor.
public final class Readiness: Sendable {
    public struct Report: Sendable, Equatable {
        public var databaseReachable: Bool
        public var migrationsCurrent: Bool
        public var detail: String
        public var isReady: Bool { databaseReachable && migrationsCurrent }

        public init(databaseReachable: Bool, migrationsCurrent: Bool, detail: String) {
            self.databaseReachable = databaseReachable
            self.migrationsCurrent = migrationsCurrent
            self.detail = detail
        }

        public static let unknown = Report(databaseReachable: false, migrationsCurrent: false, detail: "not checked yet")
    }

    private let state = NIOLockedValueBox(Report.unknown)

    public init() {}

    public var report: Report { state.withLockedValue { $0 } }

    public func update(_ report: Report) { state.withLockedValue { $0 = report } }

    /// JSON body for `/readyz`.
    public var json: String {
        let report = self.report
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: " ")
        }
        return
            "{\"status\":\"\(report.isReady ? "ready" : "not_ready")\",\"database\":\(report.databaseReachable),\"migrations\":\(report.migrationsCurrent),\"detail\":\"\(escape(report.detail))\"}"
    }
}
