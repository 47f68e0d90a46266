import Foundation

/// A provider's `websocket` policy: the limits of the API's WebSocket tunnels (HTTP/1.1 upgrades
/// and RFC 8441 streams alike). `idleSeconds` replaces the installation's idle timeout
/// (`TOLLGATE_WEBSOCKET_IDLE_SECONDS`); `maxSeconds`, when given, replaces its maximum duration
/// (`TOLLGATE_WEBSOCKET_MAX_SECONDS`), and when left out the installation's maximum (if any) still
/// holds: an operator's cap is not lifted by leaving a field empty. Read by the portal and the
/// gateway alike (`parse`).
public struct WebSocketConfig: Sendable, Hashable {
    public var idleSeconds: Int
    public var maxSeconds: Int?

    /// The same bounds as the installation-wide settings.
    public static let idleSecondsRange = 1...86_400
    public static let maxSecondsRange = 1...604_800

    public init(idleSeconds: Int, maxSeconds: Int? = nil) {
        self.idleSeconds = idleSeconds
        self.maxSeconds = maxSeconds
    }

    static let fields: Set<String> = ["idle_seconds", "max_seconds"]

    public static func parse(_ object: [String: JSONValue]) -> Result<WebSocketConfig, PolicyConfigProblems> {
        var problems: [PolicyConfigProblem] = []
        for key in object.keys.sorted() where !fields.contains(key) {
            problems.append(PolicyConfigProblem("/" + JSONPointer.escape(key), "Unknown field; use idle_seconds, max_seconds."))
        }
        func integer(_ name: String, _ range: ClosedRange<Int>, required: Bool) -> Int? {
            guard let value = object[name], value != .null else {
                if required { problems.append(PolicyConfigProblem("/" + name, "Required: a whole number from \(range.lowerBound) to \(range.upperBound).")) }
                return nil
            }
            guard case .integer(let whole) = value, let number = Int(exactly: whole), range.contains(number) else {
                problems.append(PolicyConfigProblem("/" + name, "Use a whole number from \(range.lowerBound) to \(range.upperBound)."))
                return nil
            }
            return number
        }
        let idle = integer("idle_seconds", idleSecondsRange, required: true)
        let max = integer("max_seconds", maxSecondsRange, required: false)
        guard problems.isEmpty, let idle else { return .failure(PolicyConfigProblems(problems)) }
        return .success(WebSocketConfig(idleSeconds: idle, maxSeconds: max))
    }

    public var json: JSONValue {
        var object: [String: JSONValue] = ["idle_seconds": .integer(Int64(idleSeconds))]
        if let maxSeconds { object["max_seconds"] = .integer(Int64(maxSeconds)) }
        return .object(object)
    }

    public var summary: String {
        "closed after \(idleSeconds) s without traffic" + (maxSeconds.map { ", or \($0) s after opening" } ?? ", or at the installation's maximum duration")
    }

    /// This API's tunnel limits: the policy's values over the installation's `defaults`.
    public func limits(over defaults: TunnelLimits) -> TunnelLimits {
        TunnelLimits(idle: UInt64(idleSeconds) * 1_000_000_000, maxDuration: maxSeconds.map { UInt64($0) * 1_000_000_000 } ?? defaults.maxDuration)
    }
}
