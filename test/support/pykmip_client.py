"""Drive a KMIP server with PyKMIP's ProxyKmipClient, for Hyperseal's integration tests.

Run with Debian's /usr/bin/python3 (python3-pykmip 0.10). Usage:

    pykmip_client.py --host H --port P --cert C --key K --ca CA [--timeout S]
                     [--empty-credential] -- SCENARIO [ARG...]

Prints exactly one JSON object on stdout and exits 0 whenever it got that far, even
if KMIP operations failed: failures are data the tests assert on. A step is reported
as {"result": ...} or {"error": {"type", "status", "reason", "message"}}, with PyKMIP
enums turned into their names (e.g. "ITEM_NOT_FOUND").

Scenarios:
    lifecycle [NAME]        create, get, get_attributes, activate, get_attributes,
                            locate, revoke, destroy, get (expected to fail)
    get|destroy|activate|get_attributes UID
                            one operation (ownership tests run these as a second identity)
    discover                Discover Versions
    query                   Query operations and object types
    create_many N           create N AES-256 keys
"""

import argparse
import enum
import hashlib
import json
import os
import secrets
import sys

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient


def plain(value):
    """Turn PyKMIP values (enums, primitives, attribute structs) into JSON values."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    # The Name attribute is a struct with no single .value.
    if hasattr(value, "name_value") and hasattr(value, "name_type"):
        return {"value": plain(value.name_value), "type": plain(value.name_type)}
    if hasattr(value, "major") and hasattr(value, "minor"):
        return "{0}.{1}".format(plain(value.major), plain(value.minor))
    if hasattr(value, "value"):
        return plain(value.value)
    return str(value)


def describe_error(exc):
    """Error shape shared by every step; status/reason are null for non-KMIP errors."""
    message = getattr(exc, "message", None)
    return {
        "type": type(exc).__name__,
        "status": plain(getattr(exc, "status", None)),
        "reason": plain(getattr(exc, "reason", None)),
        "message": message if isinstance(message, str) else str(exc),
    }


def step(fn):
    try:
        return {"result": fn()}
    except Exception as exc:  # every failure is reported, not raised
        return {"error": describe_error(exc)}


class ProxyResultFailure(Exception):
    """A failed result from the low-level KMIPProxy, shaped like KmipOperationFailure."""

    def __init__(self, result):
        self.status = result.result_status.value
        self.reason = result.result_reason.value if result.result_reason else None
        self.message = result.result_message.value if result.result_message else ""
        super().__init__("{0}: {1} - {2}".format(plain(self.status), plain(self.reason), self.message))


def checked(result):
    """KMIPProxy returns result objects instead of raising; make failures raise."""
    if result.result_status.value != enums.ResultStatus.SUCCESS:
        raise ProxyResultFailure(result)
    return result


def create_aes256(client, name=None):
    return client.create(enums.CryptographicAlgorithm.AES, 256, name=name)


def get_key(client, uid):
    # Only a length and a digest leave this process: tests compare keys, never print them.
    obj = client.get(uid)
    material = bytes(obj.value)
    return {
        "object_type": plain(getattr(obj, "object_type", None)),
        "algorithm": plain(getattr(obj, "cryptographic_algorithm", None)),
        "length_bits": plain(getattr(obj, "cryptographic_length", None)),
        "key_length": len(material),
        "key_sha256": hashlib.sha256(material).hexdigest(),
    }


def get_attributes(client, uid):
    # A dict keyed by attribute name is easiest to assert on; names that occur more
    # than once (e.g. several Name attributes) become lists.
    returned_uid, attributes = client.get_attributes(uid)
    out = {}
    for attribute in attributes:
        name = attribute.attribute_name.value
        value = plain(attribute.attribute_value)
        if name in out:
            previous = out[name]
            out[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            out[name] = value
    return {"uid": plain(returned_uid), "attributes": out}


def locate_by_name(client, name):
    attribute = client.attribute_factory.create_attribute(enums.AttributeType.NAME, name)
    return [plain(uid) for uid in client.locate(attributes=[attribute])]


def scenario_lifecycle(client, args):
    name = args[0] if args else "hyperseal-lifecycle-" + secrets.token_hex(4)
    steps = {}
    steps["create"] = step(lambda: create_aes256(client, name))
    uid = steps["create"].get("result")
    if uid is None:
        return {"name": name, "uid": None, "steps": steps}
    steps["get"] = step(lambda: get_key(client, uid))
    steps["get_attributes"] = step(lambda: get_attributes(client, uid))
    # Operations that return nothing report {"result": null} on success.
    steps["activate"] = step(lambda: client.activate(uid))
    steps["get_attributes_after_activate"] = step(lambda: get_attributes(client, uid))
    steps["locate"] = step(lambda: locate_by_name(client, name))
    steps["revoke"] = step(lambda: client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid))
    steps["destroy"] = step(lambda: client.destroy(uid))
    steps["get_after_destroy"] = step(lambda: get_key(client, uid))
    return {"name": name, "uid": uid, "steps": steps}


def single(operation):
    def run(client, args):
        if len(args) != 1:
            raise SystemExit("scenario needs exactly one UID argument")
        uid = args[0]
        return dict({"uid": uid}, **step(lambda: operation(client, uid)))

    return run


def scenario_discover(client, _args):
    return step(lambda: {"versions": plain(checked(client.proxy.discover_versions()).protocol_versions)})


def scenario_query(client, _args):
    # ProxyKmipClient 0.10 has no query(); its underlying KMIPProxy does.
    def run():
        result = checked(
            client.proxy.query(
                query_functions=[
                    enums.QueryFunction.QUERY_OPERATIONS,
                    enums.QueryFunction.QUERY_OBJECTS,
                    enums.QueryFunction.QUERY_SERVER_INFORMATION,
                ]
            )
        )
        return {
            "via": "KMIPProxy.query",
            "operations": plain(result.operations),
            "object_types": plain(result.object_types),
            "vendor_identification": plain(result.vendor_identification),
            "server_information": plain(result.server_information),
        }

    return step(run)


def scenario_create_many(client, args):
    count = int(args[0]) if args else 1
    uids = []
    for _ in range(count):
        outcome = step(lambda: create_aes256(client))
        if "error" in outcome:
            return {"uids": uids, "error": outcome["error"]}
        uids.append(outcome["result"])
    return {"uids": uids}


SCENARIOS = {
    "lifecycle": scenario_lifecycle,
    "get": single(get_key),
    "destroy": single(lambda client, uid: client.destroy(uid)),
    "activate": single(lambda client, uid: client.activate(uid)),
    "get_attributes": single(get_attributes),
    "discover": scenario_discover,
    "query": scenario_query,
    "create_many": scenario_create_many,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--timeout", type=int, default=15, help="socket timeout, seconds")
    parser.add_argument(
        "--empty-credential",
        action="store_true",
        help="send an empty Username/Password credential, as PyKMIP does when its config file has empty ones",
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("args", nargs="*")
    opts = parser.parse_args()

    client = ProxyKmipClient(
        hostname=opts.host,
        port=opts.port,
        cert=opts.cert,
        key=opts.key,
        ca=opts.ca,
        # KMIPProxy does getattr(ssl, ssl_version); its default PROTOCOL_SSLv23 would
        # also work, but pinning TLS 1.2 matches the KMIP TLS1.2 auth suite we test.
        ssl_version="PROTOCOL_TLSv1_2",
        # An empty config file, so ~/.pykmip/pykmip.conf or /etc/pykmip/pykmip.conf on
        # the host cannot inject settings (e.g. a username/password credential).
        config="client",
        config_file=os.devnull,
        kmip_version=enums.KMIPVersion.KMIP_1_1,
    )
    # KMIPProxy reads its socket timeout at open(); ProxyKmipClient does not expose it.
    client.proxy.timeout = opts.timeout
    if opts.empty_credential:
        # Empty strings passed to the constructor are falsy and get replaced by None (no
        # credential at all); only a config file or these attributes yield empty ones.
        client.proxy.username = ""
        client.proxy.password = ""

    output = {"scenario": opts.scenario, "args": opts.args}
    try:
        client.open()
    except Exception as exc:
        output["error"] = describe_error(exc)
    else:
        try:
            cipher = client.proxy.socket.cipher()
            output["tls"] = {"version": client.proxy.socket.version(), "cipher": cipher[0] if cipher else None}
            output.update(SCENARIOS[opts.scenario](client, opts.args))
        except Exception as exc:  # a bug or a dropped connection: still report as JSON
            output["error"] = describe_error(exc)
        finally:
            client.close()

    json.dump(output, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
