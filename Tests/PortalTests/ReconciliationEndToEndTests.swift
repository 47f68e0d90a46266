import Foundation
import NIOCore
import NIOPosix
import Testing

/// The whole metering path with real processes: a `tollgate gateway` process in front of the
/// demo upstream, calls through it while its Postgres (a private cluster of this test) is stopped
/// and started again, SIGTERM to the gateway, then `tollgate billing reconcile`.
///
/// Needs the built `tollgate` binary (`TOLLGATE_BIN`, set by scripts/test.sh) and runs the
/// cluster through scripts/pg.sh on its own port and data directory, so the shared test cluster
/// is never stopped under the other tests.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["TOLLGATE_BIN"] != nil, "needs TOLLGATE_BIN (make test sets it)"))
struct ReconciliationEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Cluster {
        let dataDir: String
        /// A port free a moment ago, not a fixed one: a fixed port inside the ephemeral range can be
        /// the local port of one of the suite's own client connections when the cluster starts.
        let port: Int

        var environment: [String: String] {
            ProcessInfo.processInfo.environment.merging(["TOLLGATE_DATA_DIR": dataDir, "PGPORT": String(port)]) { $1 }
        }

        @discardableResult
        func pg(_ arguments: String...) throws -> String {
            let result = try ReconciliationEndToEndTests.run(
                ReconciliationEndToEndTests.root.appendingPathComponent("scripts/pg.sh").path, Array(arguments), environment: environment)
            guard result.status == 0 else { throw ScriptFailed(command: "pg.sh " + arguments.joined(separator: " "), status: result.status) }
            return result.output
        }
    }

    struct ScriptFailed: Error {
        let command: String
        let status: Int32
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> (status: Int32, output: String) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("e2e-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let child = try Child(executable, arguments, environment: environment, output: output)
        let status = child.wait()
        return (status, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    /// A child process through posix_spawn and waitpid (Foundation's Process.waitUntilExit was seen
    /// to miss the exit of a short-lived child here and hang).
    final class Child: @unchecked Sendable {
        let pid: pid_t
        private var status: Int32?

        init(_ executable: String, _ arguments: [String], environment: [String: String], output: String = "/dev/null") throws {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
            let argv = ([executable] + arguments).map { strdup($0) } + [nil]
            let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer {
                argv.forEach { free($0) }
                envp.forEach { free($0) }
            }
            var pid: pid_t = 0
            let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
            guard result == 0 else { throw ScriptFailed(command: executable, status: result) }
            self.pid = pid
        }

        /// The exit status once the child has exited (nil while it runs).
        func poll() -> Int32? {
            if let status { return status }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return status
        }

        func wait() -> Int32 {
            while true {
                if let status = poll() { return status }
                usleep(10_000)
            }
        }

        func signal(_ number: Int32) { kill(pid, number) }
    }

    /// A port nothing listens on right now (bound, then released).
    static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = channel.localAddress?.port ?? 0
        try channel.close().wait()
        return port
    }

    static func status(_ port: Int, _ path: String, headers: [(String, String)] = []) async -> Int {
        var text = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        guard let response = try? await RawHTTP.exchange(port: port, text + "\r\n") else { return 0 }
        return Int(response.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    @Test(.timeLimit(.minutes(3)))
    func reconciliationBalancesAfterAnOutageAndAGracefulStop() async throws {
        // setup: a private cluster, the demo marketplace, an upstream and a gateway process
        let binary = try #require(ProcessInfo.processInfo.environment["TOLLGATE_BIN"])
        let dataDir = Self.root.appendingPathComponent(".data/e2e-\(UUID().uuidString.prefix(8).lowercased())").path
        let cluster = Cluster(dataDir: dataDir, port: try Self.freePort())
        defer {
            _ = try? cluster.pg("stop")
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        try cluster.pg("start", "tollgate_e2e")
        let gatewayPort = try Self.freePort(), upstreamPort = try Self.freePort()
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = try cluster.pg("url", "tollgate_e2e").trimmingCharacters(in: .whitespacesAndNewlines)
        environment["TOLLGATE_DATA_DIR"] = dataDir
        environment["GATEWAY_ADDRESS"] = "127.0.0.1:\(gatewayPort)"
        environment["TOLLGATE_MIGRATIONS_DIR"] = Self.root.appendingPathComponent("migrations").path
        environment["TOLLGATE_TEMPLATES_DIR"] = Self.root.appendingPathComponent("templates").path
        environment["LOG_LEVEL"] = "error"
        let seeded = try Self.run(binary, ["seed-demo", "--json"], environment: environment)
        try #require(seeded.status == 0)
        let demo = try #require(try JSONSerialization.jsonObject(with: Data(seeded.output.utf8)) as? [String: String])
        let apiKey = try #require(demo["api_key"])
        try cluster.pg("psql", "-d", "tollgate_e2e", "-qAt", "-c", "UPDATE api_upstream_targets SET url = 'http://127.0.0.1:\(upstreamPort)'")

        let upstream = try Child(binary, ["demo-upstream", "--port", String(upstreamPort)], environment: environment)
        defer {
            upstream.signal(SIGKILL)
            _ = upstream.wait()
        }
        let gateway = try Child(binary, ["gateway"], environment: environment)
        defer {
            if gateway.poll() == nil {
                gateway.signal(SIGKILL)
                _ = gateway.wait()
            }
        }
        try await GatewayIntegrationTests.eventually(seconds: 30) { await Self.status(gatewayPort, "/readyz") == 200 }
        try await GatewayIntegrationTests.eventually(seconds: 10) { await Self.status(upstreamPort, "/") == 200 }

        // act: calls before, during and after a Postgres outage, then SIGTERM
        var answered: [Int: Int] = [:]
        func calls(_ count: Int) async {
            for _ in 0..<count {
                let status = await Self.status(gatewayPort, "/t/demo/echo/v1/hello", headers: [("X-API-Key", apiKey)])
                answered[status, default: 0] += 1
                try? await Task.sleep(for: .milliseconds(220))  // under the Free plan's 5 requests/s
            }
        }
        await calls(20)
        try cluster.pg("stop")
        await calls(20)
        // the outage was real: the meter holds its batches in the spool
        let spool = dataDir + "/usage-spool"
        @Sendable func segments() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).filter { $0.hasSuffix(".wal") } }
        try await GatewayIntegrationTests.eventually(seconds: 5) { !segments().isEmpty }
        try cluster.pg("start")
        await calls(20)
        gateway.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while gateway.poll() == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }

        // assert: a graceful exit, every call answered, and the books balance
        #expect(gateway.poll() == 0)
        #expect(segments().isEmpty)  // replayed and emptied
        #expect(answered[0] == nil)  // no call went unanswered
        #expect((answered[200] ?? 0) >= 50, "\(answered)")  // served, also while Postgres was down
        let period = String(ISO8601DateFormatter().string(from: Date()).prefix(7))
        let reconciled = try Self.run(binary, ["billing", "reconcile", "--tenant", "demo", "--period", period], environment: environment)
        #expect(reconciled.status == 0, "\(reconciled.output)")
        #expect(reconciled.output.hasPrefix("balanced"))
        #expect(reconciled.output.contains("\(answered.values.reduce(0, +)) calls answered"))
    }
}
