/// The protobuf binary wire format: tags, varints, zigzag, fixed-width little-endian values and
/// length-delimited runs. Pure; every read is bounds-checked and throws instead of trapping.
enum ProtoWire {
    /// A field's wire type (the low three bits of its tag).
    enum WireType: UInt8, Sendable {
        case varint = 0
        case fixed64 = 1
        case lengthDelimited = 2
        case startGroup = 3
        case endGroup = 4
        case fixed32 = 5
    }

    /// Malformed wire data.
    struct Malformed: Error, Sendable, Equatable {
        var reason: String
    }

    /// One field as read: its number, wire type and raw value (a varint or fixed value in `scalar`, a
    /// length-delimited payload as a range of the reader's bytes).
    struct RawField {
        var number: Int32
        var wireType: WireType
        var scalar: UInt64
        var payload: Range<Int>
    }

    /// Reads fields one after another from a byte range.
    struct Reader {
        let bytes: [UInt8]
        var index: Int
        let end: Int

        init(bytes: [UInt8], range: Range<Int>? = nil) {
            self.bytes = bytes
            self.index = range?.lowerBound ?? 0
            self.end = range?.upperBound ?? bytes.count
        }

        var isAtEnd: Bool { index >= end }

        mutating func varint() throws(Malformed) -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < end else { throw Malformed(reason: "a varint runs past the end of the message") }
                let byte = bytes[index]
                index += 1
                guard shift < 64 else { throw Malformed(reason: "a varint is longer than ten bytes") }
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
        }

        mutating func fixed(_ width: Int) throws(Malformed) -> UInt64 {
            guard end - index >= width else { throw Malformed(reason: "a fixed-width value runs past the end of the message") }
            var value: UInt64 = 0
            for i in 0..<width { value |= UInt64(bytes[index + i]) << UInt64(8 * i) }
            index += width
            return value
        }

        mutating func field() throws(Malformed) -> RawField {
            let tag = try varint()
            let number = tag >> 3
            guard number >= 1, number <= 536_870_911 else { throw Malformed(reason: "field number \(number) is out of range") }
            guard let type = WireType(rawValue: UInt8(tag & 7)) else { throw Malformed(reason: "wire type \(tag & 7) is invalid") }
            var field = RawField(number: Int32(number), wireType: type, scalar: 0, payload: index..<index)
            switch type {
            case .varint: field.scalar = try varint()
            case .fixed64: field.scalar = try fixed(8)
            case .fixed32: field.scalar = try fixed(4)
            case .lengthDelimited:
                let length = try varint()
                guard length <= UInt64(end - index) else { throw Malformed(reason: "a length-delimited field runs past the end of the message") }
                field.payload = index..<(index + Int(length))
                index += Int(length)
            case .startGroup, .endGroup: throw Malformed(reason: "groups are not supported")
            }
            return field
        }
    }

    /// Appends wire data to a byte buffer.
    struct Writer {
        var bytes: [UInt8] = []

        mutating func varint(_ value: UInt64) {
            var value = value
            while value >= 0x80 {
                bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
                value >>= 7
            }
            bytes.append(UInt8(value))
        }

        mutating func tag(_ number: Int32, _ type: WireType) { varint(UInt64(number) << 3 | UInt64(type.rawValue)) }

        mutating func fixed32(_ value: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(8 * i))) } }

        mutating func fixed64(_ value: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(8 * i))) } }

        mutating func lengthDelimited(_ number: Int32, _ payload: [UInt8]) {
            tag(number, .lengthDelimited)
            varint(UInt64(payload.count))
            bytes.append(contentsOf: payload)
        }
    }

    static func zigzag32(_ value: Int32) -> UInt64 { UInt64(UInt32(bitPattern: (value << 1) ^ (value >> 31))) }
    static func zigzag64(_ value: Int64) -> UInt64 { UInt64(bitPattern: (value << 1) ^ (value >> 63)) }
    static func unzigzag(_ value: UInt64) -> Int64 { Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1) }
}
