/// Where an HTTP/1.1 message body ends in a byte stream (RFC 9112 §6–7), for a proxy that forwards
/// the body's bytes as they arrive instead of decoding and re-encoding them. It finds the payload
/// inside the framing (for counting, limits and the rare de-chunking) and the first byte after the
/// message (the next pipelined request, or bytes an upstream must not have sent).
struct BodyFramer: Equatable {
    enum Framing: Equatable {
        /// No body (a request without length, a HEAD answer, 1xx/204/304).
        case none
        case length(Int)
        case chunked
        /// A response that ends when the upstream closes the connection.
        case untilClose
    }

    enum Failure: Error, Equatable {
        case invalidChunkSize
        case invalidChunkFraming
        case chunkExtensionTooLong
        case trailersTooLong
    }

    /// The outcome of consuming some bytes.
    struct Step: Equatable {
        /// Bytes that belonged to this body (framing included); the rest is after the message.
        var consumed: Int
        /// Whether the body ended within them.
        var ended: Bool
        /// Where a chunked body's trailer section (after the last chunk's size line) starts in
        /// these bytes — 0 when it began in earlier ones; nil when none of them belong to it.
        var trailersFrom: Int? = nil
    }

    private enum State: Equatable {
        case remaining(Int)
        case chunkSize(value: Int, digits: Int)
        case chunkExtension(size: Int, length: Int)
        case chunkSizeLF(size: Int)
        case chunkData(remaining: Int)
        case chunkDataCR
        case chunkDataLF
        case trailerLineStart
        case trailerLine
        case trailerLineLF
        case finalLF
        case untilClose
        case done
    }

    static let maxChunkExtensionBytes = 4096
    static let maxTrailerBytes = 16 * 1024

    private var state: State
    private var trailerBytes = 0

    init(_ framing: Framing) {
        switch framing {
        case .none, .length(0): state = .done
        case .length(let count): state = .remaining(count)
        case .chunked: state = .chunkSize(value: 0, digits: 0)
        case .untilClose: state = .untilClose
        }
    }

    var isDone: Bool { state == .done }
    /// A chunked body's trailer section has held a field line so far.
    var hasTrailerFields: Bool { trailerBytes > 0 }
    /// The body runs until the connection closes.
    var endsAtClose: Bool { state == .untilClose }

    /// Whether the framer is inside a chunked body's trailer section.
    private var inTrailers: Bool {
        switch state {
        case .trailerLineStart, .trailerLine, .trailerLineLF, .finalLF: true
        default: false
        }
    }

    /// Consumes the start of `bytes`, reporting each run of payload (ranges into `bytes`).
    mutating func consume(_ bytes: UnsafeRawBufferPointer, payload: (Range<Int>) -> Void) throws(Failure) -> Step {
        var index = 0
        let count = bytes.count
        var trailersFrom: Int? = inTrailers ? 0 : nil
        while index < count {
            switch state {
            case .done:
                return Step(consumed: index, ended: true, trailersFrom: trailersFrom)
            case .untilClose:
                payload(index..<count)
                return Step(consumed: count, ended: false)
            case .remaining(let left):
                let take = min(left, count - index)
                payload(index..<(index + take))
                index += take
                state = take == left ? .done : .remaining(left - take)
            case .chunkData(let left):
                let take = min(left, count - index)
                payload(index..<(index + take))
                index += take
                state = take == left ? .chunkDataCR : .chunkData(remaining: left - take)
            case .chunkSize(let value, let digits):
                let byte = bytes[index]
                if let digit = Self.hexValue(byte) {
                    // 15 hex digits keep the size below Int.max
                    guard digits < 15 else { throw .invalidChunkSize }
                    state = .chunkSize(value: value << 4 | digit, digits: digits + 1)
                } else if digits > 0 && byte == UInt8(ascii: "\r") {
                    state = .chunkSizeLF(size: value)
                } else if digits > 0 && (byte == UInt8(ascii: ";") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")) {
                    // extensions (and whitespace before them) are passed on untouched
                    state = .chunkExtension(size: value, length: 1)
                } else {
                    throw .invalidChunkSize
                }
                index += 1
            case .chunkExtension(let size, let length):
                let byte = bytes[index]
                if byte == UInt8(ascii: "\r") {
                    state = .chunkSizeLF(size: size)
                } else if Self.isControl(byte) {
                    throw .invalidChunkFraming
                } else {
                    guard length < Self.maxChunkExtensionBytes else { throw .chunkExtensionTooLong }
                    state = .chunkExtension(size: size, length: length + 1)
                }
                index += 1
            case .chunkSizeLF(let size):
                guard bytes[index] == UInt8(ascii: "\n") else { throw .invalidChunkFraming }
                state = size == 0 ? .trailerLineStart : .chunkData(remaining: size)
                index += 1
                if size == 0 { trailersFrom = index }
            case .chunkDataCR:
                guard bytes[index] == UInt8(ascii: "\r") else { throw .invalidChunkFraming }
                state = .chunkDataLF
                index += 1
            case .chunkDataLF:
                guard bytes[index] == UInt8(ascii: "\n") else { throw .invalidChunkFraming }
                state = .chunkSize(value: 0, digits: 0)
                index += 1
            case .trailerLineStart:
                state = bytes[index] == UInt8(ascii: "\r") ? .finalLF : .trailerLine
                if state == .trailerLine { try countTrailerByte() }
                index += 1
            case .trailerLine:
                let byte = bytes[index]
                if byte == UInt8(ascii: "\r") {
                    state = .trailerLineLF
                } else if Self.isControl(byte) {
                    throw .invalidChunkFraming
                }
                try countTrailerByte()
                index += 1
            case .trailerLineLF:
                guard bytes[index] == UInt8(ascii: "\n") else { throw .invalidChunkFraming }
                try countTrailerByte()
                state = .trailerLineStart
                index += 1
            case .finalLF:
                guard bytes[index] == UInt8(ascii: "\n") else { throw .invalidChunkFraming }
                state = .done
                index += 1
            }
        }
        return Step(consumed: index, ended: state == .done, trailersFrom: trailersFrom)
    }

    private mutating func countTrailerByte() throws(Failure) {
        trailerBytes += 1
        if trailerBytes > Self.maxTrailerBytes { throw .trailersTooLong }
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Control characters other than horizontal tab (never valid inside framing lines).
    static func isControl(_ byte: UInt8) -> Bool { (byte < 0x20 && byte != 0x09) || byte == 0x7f }
}
