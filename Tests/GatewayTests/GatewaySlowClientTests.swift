import Foundation
import Gateway
import NIOCore
import NIOPosix
import Testing

/// Slow-drip clients (slowloris): bytes that keep arriving restart the idle clock, so heads and
/// bodies have deadlines of their own, counted from their first byte.
@Suite struct GatewaySlowClientTests {
    /// Sends `text` one byte every `interval` until the server closes (or the text runs out);
    /// returns how many bytes went out.
    @discardableResult
    static func dribble(_ channel: any Channel, _ text: String, every interval: Duration) async -> Int {
        var sent = 0
        for byte in text.utf8 {
            guard channel.isActive else { return sent }
            try? await channel.writeAndFlush(ByteBuffer(bytes: [byte]))
            sent += 1
            try? await Task.sleep(for: interval)
        }
        return sent
    }

    @Test func aHeadSentOneByteAtATimeEndsAtTheHeadDeadline() async throws {
        try await GatewayHarness.run(
            snapshot: nil,
            configure: {
                $0.idleTimeout = .seconds(5)
                $0.requestHeadTimeout = .milliseconds(600)
            }
        ) { gateway in
            let (channel, received) = try await GatewayListenerTests.connect(port: gateway.port)
            // ~140 bytes at 50 ms each take 7 s; every byte is well inside the idle timeout
            let head = "GET /healthz HTTP/1.1\r\nHost: slow.example\r\nX-Pad: " + String(repeating: "a", count: 100) + "\r\n\r\n"
            let sent = await Self.dribble(channel, head, every: .milliseconds(50))
            let text = try await received.get()
            #expect(text.hasPrefix("HTTP/1.1 408"))
            #expect(text.contains("request head was not completed"))
            #expect(sent < head.utf8.count)
        }
    }

    @Test func aStalledBodyEndsAtTheBodyDeadline() async throws {
        try await GatewayHarness.run(
            snapshot: nil,
            configure: {
                $0.idleTimeout = .seconds(5)
                $0.requestBodyTimeout = .milliseconds(600)
            }
        ) { gateway in
            let (channel, received) = try await GatewayListenerTests.connect(port: gateway.port)
            try await channel.writeAndFlush(ByteBuffer(string: "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 140\r\n\r\n"))
            // 140 bytes at 50 ms would take 7 s: the connection must end at the body deadline instead
            let sent = await Self.dribble(channel, String(repeating: "b", count: 140), every: .milliseconds(50))
            _ = try await received.get()
            #expect(sent < 140)
        }
    }

    @Test func aPromptClientIsNotCutShort() async throws {
        try await GatewayHarness.run(snapshot: nil, configure: { $0.requestHeadTimeout = .milliseconds(600) }) { gateway in
            let text = try await GatewayListenerTests.exchange(port: gateway.port, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(text.hasPrefix("HTTP/1.1 200"))
        }
    }
}

@Suite struct KeyRefreshRequestTests {
    @Test func anUnknownKeyAsksForOneReloadASecond() {
        let store = SnapshotStore()
        #expect(!store.takeKeyRefreshRequest())
        store.requestKeyRefresh(now: 5_000_000_000)
        store.requestKeyRefresh(now: 5_200_000_000)
        #expect(store.takeKeyRefreshRequest())
        #expect(!store.takeKeyRefreshRequest())
        store.requestKeyRefresh(now: 5_500_000_000)
        #expect(!store.takeKeyRefreshRequest())
        store.requestKeyRefresh(now: 6_100_000_000)
        #expect(store.takeKeyRefreshRequest())
    }
}
