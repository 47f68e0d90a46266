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
        /// Picked by `startCluster`.
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

        init(_ executable: String, _ arguments: [String], environment: [String: String], output: String = "/dev/null", errors: String = "/dev/null") throws {
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
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

    /// A `tollgate` process serving on a port the kernel chose when it bound (`127.0.0.1:0`), read
    /// back from the line it logs once listening (`announcement`; `address` names the environment
    /// variable of its address, nil when `arguments` give the port). A port chosen beforehand —
    /// bound, released, then handed to the child — was a race: under the full suite's load
    /// another process, or one of the suite's own client connections as its local port, could take
    /// it first; the child then failed to bind and exited while the test waited 30 s for it (or
    /// found someone else's server there). Fails at once, with the child's log, if it exits first.
    static func spawnListening(
        _ binary: String, _ arguments: [String], environment: [String: String], address: String?, announcement: String, seconds: Int = 30
    ) async throws -> (child: Child, port: Int) {
        var environment = environment
        if let address { environment[address] = "127.0.0.1:0" }
        // the announcement is an info line, in the text format
        environment["LOG_LEVEL"] = "info"
        environment["LOG_FORMAT"] = "text"
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("listening-\(UUID().uuidString.prefix(8)).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try Child(binary, arguments, environment: environment, errors: log)
        let deadline = Date().addingTimeInterval(Double(seconds))
        while Date() < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let port = listeningPort(in: text, announcement: announcement) { return (child, port) }
            if let status = child.poll() { throw ChildExited(arguments: arguments, status: status, log: String(text.suffix(2_000))) }
            try await Task.sleep(for: .milliseconds(50))
        }
        child.signal(SIGKILL)
        _ = child.wait()
        throw ChildExited(arguments: arguments, status: -1, log: "not listening after \(seconds) s")
    }

    /// The port in the first log line with `announcement`: the digits after `127.0.0.1:`.
    static func listeningPort(in log: String, announcement: String) -> Int? {
        guard let line = log.split(separator: "\n").first(where: { $0.contains(announcement) }), let address = line.range(of: "127.0.0.1:") else { return nil }
        return Int(line[address.upperBound...].prefix { $0.isASCII && $0.isNumber }).flatMap { (1...65535).contains($0) ? $0 : nil }
    }

    struct ChildExited: Error, CustomStringConvertible {
        let arguments: [String]
        let status: Int32
        let log: String
        var description: String { "tollgate \(arguments.joined(separator: " ")) did not start listening (status \(status)): \(log)" }
    }

    /// A gateway process (`tollgate gateway`) on a port of its own, ready (`/readyz` 200).
    static func spawnGateway(_ binary: String, environment: [String: String]) async throws -> (child: Child, port: Int) {
        let (child, port) = try await spawnListening(binary, ["gateway"], environment: environment, address: "GATEWAY_ADDRESS", announcement: "gateway listening")
        do {
            try await GatewayIntegrationTests.eventually(seconds: 30) { await status(port, "/readyz") == 200 }
        } catch {
            child.signal(SIGKILL)
            _ = child.wait()
            throw error
        }
        return (child, port)
    }

    /// The demo upstream (`tollgate demo-upstream`, Echo only) on a port of its own.
    static func spawnDemoUpstream(_ binary: String, environment: [String: String]) async throws -> (child: Child, port: Int) {
        try await spawnListening(
            binary, ["demo-upstream", "--port", "0", "--grpc-port", "0"], environment: environment, address: nil, announcement: "Server started and listening on")
    }

    /// A private cluster (`scripts/pg.sh`) in a data directory under .data/ with `database`. Its port
    /// is written into the cluster's configuration when it is made, so it is picked beforehand (a
    /// port free a moment ago — a fixed one inside the ephemeral range can be the local port of one
    /// of the suite's client connections); when something took it in between, the start fails and
    /// a new cluster is made on another port.
    static func startCluster(_ database: String) throws -> Cluster {
        var attempt = 1
        while true {
            let cluster = Cluster(dataDir: root.appendingPathComponent(".data/e2e-\(UUID().uuidString.prefix(8).lowercased())").path, port: try freePort())
            do {
                try cluster.pg("start", database)
                return cluster
            } catch {
                _ = try? cluster.pg("stop")
                try? FileManager.default.removeItem(atPath: cluster.dataDir)
                guard attempt < 3 else { throw error }
                attempt += 1
            }
        }
    }

    /// A port nothing listens on right now (bound, then released): only for a server that cannot
    /// bind port 0 and report it (`startCluster`).
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
        let cluster = try Self.startCluster("tollgate_e2e")
        let dataDir = cluster.dataDir
        defer {
            _ = try? cluster.pg("stop")
            try? FileManager.default.removeItem(atPath: dataDir)
        }
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = try cluster.pg("url", "tollgate_e2e").trimmingCharacters(in: .whitespacesAndNewlines)
        environment["TOLLGATE_DATA_DIR"] = dataDir
        environment["TOLLGATE_MIGRATIONS_DIR"] = Self.root.appendingPathComponent("migrations").path
        environment["TOLLGATE_TEMPLATES_DIR"] = Self.root.appendingPathComponent("templates").path
        environment["LOG_LEVEL"] = "error"
        let seeded = try Self.run(binary, ["seed-demo", "--json"], environment: environment)
        try #require(seeded.status == 0)
        let demo = try #require(try JSONSerialization.jsonObject(with: Data(seeded.output.utf8)) as? [String: String])
        let apiKey = try #require(demo["api_key"])
        let (upstream, upstreamPort) = try await Self.spawnDemoUpstream(binary, environment: environment)
        defer {
            upstream.signal(SIGKILL)
            _ = upstream.wait()
        }
        try cluster.pg("psql", "-d", "tollgate_e2e", "-qAt", "-c", "UPDATE api_upstream_targets SET url = 'http://127.0.0.1:\(upstreamPort)'")
        let (gateway, gatewayPort) = try await Self.spawnGateway(binary, environment: environment)
        defer {
            if gateway.poll() == nil {
                gateway.signal(SIGKILL)
                _ = gateway.wait()
            }
        }
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

/// The port a child process announces once it listens, read from its text log.
@Suite struct ListeningPortTests {
    @Test func thePortComesFromTheAnnouncingLineOnly() {
        let gateway = """
            2026-12-05T12:00:00+0000 info tollgate : [Portal] migrations applied 127.0.0.1:5432
            2026-12-05T12:00:01+0000 info tollgate : address=127.0.0.1:41234 [Gateway] gateway listening
            """
        #expect(ReconciliationEndToEndTests.listeningPort(in: gateway, announcement: "gateway listening") == 41234)
        let upstream = "2026-12-05T12:00:00+0000 info demo-upstream : [HummingbirdCore] Server started and listening on 127.0.0.1:38001\n"
        #expect(ReconciliationEndToEndTests.listeningPort(in: upstream, announcement: "Server started and listening on") == 38001)
        // not yet announced, or no usable port in the line
        #expect(ReconciliationEndToEndTests.listeningPort(in: "2026-12-05T12:00:00+0000 info tollgate : starting", announcement: "gateway listening") == nil)
        #expect(ReconciliationEndToEndTests.listeningPort(in: "address=127.0.0.1:0 gateway listening", announcement: "gateway listening") == nil)
        #expect(ReconciliationEndToEndTests.listeningPort(in: "address=127.0.0.1:99999 gateway listening", announcement: "gateway listening") == nil)
    }
}
