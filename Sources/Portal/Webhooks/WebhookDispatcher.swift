import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Sends queued webhook deliveries, for every tenant, from the Postgres outbox.
///
/// Deliveries are claimed with `FOR UPDATE SKIP LOCKED` and leased, so several portal processes
/// can run dispatchers side by side and a crash mid-send only delays a delivery. Redirects are not
/// followed and the target's addresses are checked right before each send, because a webhook URL
/// is attacker-chosen (see `WebhookTargetPolicy`).
final class WebhookDispatcher: Service, Sendable {
    let database: Database
    let webhooks: WebhookRepository
    let secret: SecretKey
    let targets: WebhookTargetPolicy
    let retry: WebhookRetryPolicy
    let pollInterval: Duration
    let requestTimeout: TimeAmount
    let batchSize: Int
    let logger: Logger
    private let client: HTTPClient

    init(
        database: Database, secret: SecretKey, targets: WebhookTargetPolicy, retry: WebhookRetryPolicy = WebhookRetryPolicy(),
        pollInterval: Duration = .seconds(1), requestTimeout: TimeAmount = .seconds(10), batchSize: Int = 16, logger: Logger
    ) {
        self.database = database
        self.webhooks = WebhookRepository(logger: logger)
        self.secret = secret
        self.targets = targets
        self.retry = retry
        self.pollInterval = pollInterval
        self.requestTimeout = requestTimeout
        self.batchSize = batchSize
        self.logger = logger
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5), read: requestTimeout))
        configuration.connectionPool.idleTimeout = .seconds(30)
        self.client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration, backgroundActivityLogger: logger)
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    let sent = try await self.deliverDue()
                    if sent == self.batchSize { continue }  // more may be waiting
                } catch {
                    self.logger.warning("webhook dispatch failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                try? await Task.sleep(for: self.pollInterval)
            }
        }
        try? await shutdown()
    }

    func shutdown() async throws {
        try await client.shutdown()
    }

    /// Sends one batch of due deliveries; returns how many were attempted.
    @discardableResult
    func deliverDue() async throws -> Int {
        let claimed = try await database.withSystemScope { connection in
            try await self.webhooks.claimDue(limit: self.batchSize, lease: 120, on: connection)
        }
        await withTaskGroup(of: Void.self) { group in
            for delivery in claimed {
                group.addTask { await self.attempt(delivery) }
            }
        }
        return claimed.count
    }

    private func attempt(_ delivery: ClaimedDelivery) async {
        let started = ContinuousClock.now
        let outcome = await send(delivery)
        let elapsed = ContinuousClock.now - started
        let milliseconds = Int(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
        let next: WebhookDelivery.State
        var retryAfter: Double?
        if let status = outcome.status, (200..<300).contains(status) {
            next = .delivered
        } else if outcome.refused {
            // The address rule will refuse this target on every try: retrying only delays the news.
            next = .failed
        } else {
            switch retry.decide(afterFailedAttempts: delivery.attempts, random: Double.random(in: 0...1)) {
            case .retry(let seconds):
                next = .pending
                retryAfter = seconds
            case .giveUp:
                next = .failed
            }
        }
        do {
            try await database.withSystemScope { connection in
                try await self.webhooks.recordResult(
                    delivery, status: outcome.status, error: outcome.error, durationMilliseconds: milliseconds, next: next, retryAfterSeconds: retryAfter,
                    on: connection)
            }
        } catch {
            // The lease expires and the delivery is tried again: at-least-once, as documented.
            logger.warning("could not record webhook attempt", metadata: ["delivery": "\(delivery.id)", "error": "\(String(reflecting: error))"])
        }
    }

    private func send(_ delivery: ClaimedDelivery) async -> (status: Int?, error: String?, refused: Bool) {
        let target: WebhookTargetPolicy.Target
        do {
            target = try targets.validate(delivery.url)
            let host = target.host
            let addresses = try await NIOThreadPool.singleton.runIfActive { WebhookTargetPolicy.resolve(host) }
            // A name that does not resolve may resolve later (DNS is eventually consistent): retried.
            guard !addresses.isEmpty else { return (nil, "the host name does not resolve", false) }
            try targets.check(addresses: addresses, port: target.port)
        } catch let error as AppError {
            return (nil, "refused: \(error.fieldErrors.values.sorted().joined(separator: " "))", true)
        } catch {
            return (nil, "refused: \(error)", true)
        }
        guard let box = try? AES.GCM.SealedBox(combined: delivery.sealedSecret), let key = try? AES.GCM.open(box, using: secret.key) else {
            return (nil, "the signing secret cannot be unsealed with this server key", false)
        }
        let body = Array(delivery.payload.utf8)
        var request = HTTPClientRequest(url: target.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Tollgate-Webhooks/1")
        request.headers.add(name: "Tollgate-Event", value: delivery.eventType)
        request.headers.add(name: "Tollgate-Event-Id", value: delivery.eventID.uuidString.lowercased())
        request.headers.add(name: "Tollgate-Delivery", value: delivery.id.uuidString.lowercased())
        request.headers.add(
            name: WebhookSignature.headerName,
            value: WebhookSignature.header(secret: String(decoding: key, as: UTF8.self), timestamp: Int(Date().timeIntervalSince1970), body: body))
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await client.execute(request, timeout: requestTimeout, logger: logger)
            // Read (and drop) a bounded amount so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
            let status = Int(response.status.code)
            return (status, (200..<300).contains(status) ? nil : "HTTP \(status)", false)
        } catch {
            return (nil, String(describing: error).prefix(300).description, false)
        }
    }
}
