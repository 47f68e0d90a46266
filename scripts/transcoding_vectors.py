"""Test vectors for the JSON <-> protobuf transcoder, made by python protobuf (a stock encoder).

Each case: the message type, a JSON input, the wire bytes python's json_format.Parse +
SerializeToString(deterministic=True) make of it (base64) and python's canonical JSON
(MessageToJson). `exact` marks cases whose bytes our encoder must reproduce byte for byte (no maps,
whose entry order is an implementation choice).
"""
import base64
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

ALL = {
    "fDouble": 1.5, "fFloat": 1.1, "fInt64": "-9223372036854775808", "fUint64": "18446744073709551615",
    "fInt32": -2147483648, "fFixed64": "18446744073709551615", "fFixed32": 4294967295, "fBool": True,
    "fString": "h\u00e9llo \"q\" \\ \n\t\u0001 \U0001F600", "fBytes": "AAEC/w==", "fUint32": 4294967295,
    "fSfixed32": -7, "fSfixed64": "-9000000000", "fSint32": -3, "fSint64": "-9000000000",
}

CASES = [
    ("scalars", "tollgate.test.Everything", ALL, True),
    ("scalars as declared names", "tollgate.test.Everything",
     {"f_int32": 5, "f_int64": "42", "f_string": "x", "json_named": "declared"}, True),
    ("numbers in other spellings", "tollgate.test.Everything",
     {"fInt32": 1e3, "fInt64": 12, "fUint64": "123", "fUint32": "7", "fDouble": "2.5", "fFloat": -0.25}, True),
    ("infinities", "tollgate.test.Everything", {"fDouble": "Infinity", "fFloat": "-Infinity", "doubles": [1, "-Infinity", 0.5]}, True),
    ("enums", "tollgate.test.Everything", {"color": "GREEN", "colors": ["RED", 2, "COLOR_UNSPECIFIED"]}, True),
    ("unknown enum number", "tollgate.test.Everything", {"color": 7}, True),
    ("nested and repeated", "tollgate.test.Everything",
     {"inner": {"id": 1, "label": "one"}, "inners": [{"id": 2}, {}, {"label": "three"}], "names": ["a", "", "c"],
      "packedInts": [1, -1, 0, 300], "packedLongs": ["1", "-2", 3], "unpackedInts": [5, 0, -5]}, True),
    ("maps", "tollgate.test.Everything",
     {"counts": {"a": 1, "b": 0}, "byId": {"-5": {"label": "neg"}, "7": {}}, "flags": {"true": "yes", "false": ""}}, False),
    ("oneof message", "tollgate.test.Everything", {"choiceInner": {}}, True),
    ("oneof default number", "tollgate.test.Everything", {"choiceNumber": 0}, True),
    ("oneof text", "tollgate.test.Everything", {"choiceText": "t"}, True),
    ("optional zero", "tollgate.test.Everything", {"maybe": 0}, True),
    ("json_name", "tollgate.test.Everything", {"customName": "c"}, True),
    ("defaults are left out", "tollgate.test.Everything",
     {"fInt32": 0, "fString": "", "fBool": False, "color": "COLOR_UNSPECIFIED", "names": [], "counts": {}, "fDouble": 0}, True),
    ("nulls unset", "tollgate.test.Everything", {"fInt32": None, "inner": None, "names": None, "at": None}, True),
    ("timestamps and durations", "tollgate.test.Everything", {"at": "1972-01-01T10:00:20.021Z", "took": "-1.5s"}, True),
    ("timestamp with offset", "tollgate.test.Everything", {"at": "2020-02-29T23:59:59.5+01:00", "took": "1.000000001s"}, True),
    ("timestamp bounds", "tollgate.test.Everything", {"at": "0001-01-01T00:00:00Z", "took": "315576000000s"}, True),
    ("timestamp late", "tollgate.test.Everything", {"at": "9999-12-31T23:59:59.999999999Z", "took": "0.000001s"}, True),
    ("timestamp before epoch", "tollgate.test.Everything", {"at": "1969-12-31T23:59:59.100Z", "took": "-0.5s"}, True),
    ("wrappers", "tollgate.test.Everything",
     {"wInt64": "5", "wString": "", "wBool": False, "wDouble": 0, "wBytes": "aGk=", "wUint32": 9}, True),
    ("empty", "tollgate.test.Everything", {"nothing": {}}, True),
    ("struct", "tollgate.test.Everything",
     {"attrs": {"a": [1, "x", None, True, {"b": {}}], "n": 2.5}, "anyValue": None, "list": [1, [2, []], {"k": "v"}],
      "values": ["s", 3, None, False], "settings": {"x": {"y": [1]}, "z": None}}, False),
    ("value string", "tollgate.test.Everything", {"anyValue": "text"}, True),
    ("field mask", "tollgate.test.Everything", {"mask": "fInt32,inner.label,byId"}, True),
    ("recursion", "tollgate.test.Everything", {"child": {"child": {"child": {"fInt32": 3}}, "names": ["deep"]}}, True),
    ("inner", "tollgate.test.Inner", {"id": 42, "label": "forty-two"}, True),
    ("any of a message", "tollgate.test.Everything",
     {"item": {"@type": "type.googleapis.com/tollgate.test.Inner", "id": 5, "label": "five"}}, True),
    ("any of a well-known type", "tollgate.test.Everything",
     {"item": {"@type": "type.googleapis.com/google.protobuf.Timestamp", "value": "2024-01-01T00:00:00.5Z"}}, True),
    ("empty any", "tollgate.test.Everything", {"item": {}}, True),
    ("anys nested and of every form", "tollgate.test.Everything",
     {"items": [{"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": [1, "b"]}},
                {"@type": "type.googleapis.com/tollgate.test.Everything", "fInt32": 3, "color": "RED",
                 "item": {"@type": "type.googleapis.com/google.protobuf.Int64Value", "value": "7"}},
                {"@type": "type.googleapis.com/google.protobuf.Empty"},
                {"@type": "type.googleapis.com/google.protobuf.Any", "value": {"@type": "type.googleapis.com/tollgate.test.Inner", "id": 1}},
                {"@type": "example.com/any/prefix/tollgate.test.Inner"}]}, True),
]


def main(path):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    out = []
    for name, type_name, data, exact in CASES:
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))
        msg = json_format.Parse(json.dumps(data), cls(), descriptor_pool=pool)
        wire = msg.SerializeToString(deterministic=True)
        canonical = json.loads(json_format.MessageToJson(msg, indent=None, descriptor_pool=pool))
        out.append({"name": name, "message": type_name, "json": json.dumps(data), "wire": base64.b64encode(wire).decode(),
                    "canonical": json.dumps(canonical), "exact": exact})
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


main(sys.argv[1])
