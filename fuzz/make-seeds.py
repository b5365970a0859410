#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the repository's fixtures and examples (run once; the seeds are
committed). `python3 fuzz/make-seeds.py [path/to/shared/fixtures/mavlink]`."""
import glob, json, os, struct, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
seeds = os.path.join(root, "fuzz", "seeds")

def put(target, name, data):
    d = os.path.join(seeds, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

KINDS = ["register", "locker_register", "telemetry", "event", "event_ack", "task", "command", "ack",
         "video_frame", "error", "locker_request", "locker_response", "qr_validate", "qr_validation",
         "presence"]

fixtures = sorted(glob.glob(os.path.join(root, "protocol", "tests", "fixtures", "*.json")))
for p in fixtures:
    name = os.path.basename(p)
    raw = open(p, "rb").read()
    put("ws_envelope", name, raw)
    try:
        v = json.loads(raw)
    except ValueError:
        continue
    if isinstance(v, dict) and v.get("type") in KINDS:
        put("ws_message", name, bytes([KINDS.index(v["type"])]) + json.dumps(v.get("payload")).encode())
    if name.startswith("locker_cells_open_request"):
        put("locker_http_body", name, b"\x01" + raw)
        put("locker_http_body", "close-" + name, b"\x02" + raw)
# locker frames the suite adds (not in the seed)
u = "7d2c7e4e-2a8c-4b53-9d7e-1f9b2c3d4e5f"
ours = {
    "locker_register": {"locker_id": u, "protocol_version": 1, "cells": 16},
    "qr_validate": {"request_id": u, "locker_id": u, "qr_data": "SKYPOST-ORDER-1"},
    "qr_validation": {"request_id": u, "valid": True, "cell_uuid": u, "order_id": u},
    "locker_request": {"request_id": u, "op": "cells_open", "body": {"cell_uuid": u, "delivery_id": u}},
    "event_ack": {"event_id": u},
    "event": {"event_type": "parcel_loaded", "event_id": u, "seq": 3, "cell_id": 4, "cell_uuid": u},
}
for k, p in ours.items():
    put("ws_envelope", f"ours-{k}.json", json.dumps({"type": k, "payload": p}))
    put("ws_message", f"ours-{k}", bytes([KINDS.index(k)]) + json.dumps(p).encode())
put("locker_http_body", "sync", b"\x00" + json.dumps({"cells": [{"cell_uuid": u, "cell_id": 1, "size": "small"}]}).encode())
put("locker_http_body", "qr", b"\x03" + json.dumps({"qr_data": "SKYPOST-ORDER-1"}).encode())

for i, line in enumerate(["READY skypost-lockboard 1.2", "OK OPEN_3", "OK CLOSE_12", "ERR CLOSE_1 JAMMED bolt stuck",
                          "ERR - BAD_COMMAND", "STATUS 1:LC,2:UO,3:LC,4:UC", "DOOR 2 OPEN", "DOOR 2 CLOSED",
                          "OPEN_4", "CLOSE_255", "STATUS"]):
    put("lockboard_line", f"line{i}", line + "\r\n")

for i, line in enumerate(["status", "cells", "events", "open 3", "open 3 force", "close 12", "service 4",
                          "service 5 empty", "test board", "test camera"]):
    put("technician_line", f"req{i}", line)

for t, path in [("config_locker", "locker-agent/locker-agent.example.toml"),
                ("config_drone", "drone-agent/drone-agent.example.toml"),
                ("config_relay", "relay/relay.example.toml")]:
    put(t, "example.toml", open(os.path.join(root, path), "rb").read())

ev = {"event_type": "door_opened", "event_id": u, "seq": 7, "cell_id": 4, "timestamp": "2026-12-02T01:00:00Z"}
put("outbox_load", "event-and-counter", json.dumps(ev).encode() + b"\x0012")
put("outbox_load", "event-no-counter", json.dumps(ev))

cells = {"version": 1, "cells": [
    {"cell_uuid": u, "number": 4, "size": "medium", "contents": {"kind": "parcel", "delivery_id": u, "loaded_at": "2026-12-02T01:00:00Z"},
     "session": {"purpose": "pickup", "code": "SKYPOST-ORDER-1", "started_at": "2026-12-02T01:00:00Z", "opened_at": "2026-12-02T01:00:01Z", "door_seen_open": True}},
    {"cell_uuid": "00000000-0000-0000-0000-000000000001", "number": 1, "contents": {"kind": "empty"}, "out_of_service": "bolt jammed"}],
    "used_codes": ["SKYPOST-ORDER-0"]}
put("locker_cells_file", "cells.json", json.dumps(cells, indent=2))

# MAVLink: frames from the sim's and the real autopilots' logs (tlog: 8-byte time, then a frame)
READ = [0, 1, 24, 33, 36, 40, 42, 46, 47, 51, 77, 147, 242, 245, 253]
def frames(data):
    i = 0
    while i < len(data):
        if data[i] == 0xFD and i + 10 <= len(data):
            n = data[i + 1]; flags = data[i + 2]
            sysid, compid = data[i + 5], data[i + 6]
            msgid = data[i + 7] | data[i + 8] << 8 | data[i + 9] << 16
            payload = data[i + 10:i + 10 + n]
            yield sysid, compid, msgid, payload
            i += 12 + n + (13 if flags & 1 else 0)
        elif data[i] == 0xFE and i + 6 <= len(data):
            n = data[i + 1]
            yield data[i + 3], data[i + 4], data[i + 5], data[i + 6:i + 6 + n]
            i += 8 + n
        else:
            i += 1
mav = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "fixtures", "mavlink")
for p in sorted(glob.glob(os.path.join(mav, "*.tlog"))):
    out = bytearray()
    chunks = []
    for sysid, compid, msgid, payload in frames(open(p, "rb").read()):
        if msgid in READ:
            idx = READ.index(msgid)
        elif 60 <= msgid < 256:
            idx = msgid
        else:
            continue
        out += bytes([0 if sysid == 1 else sysid, 0 if compid == 1 else compid, idx, len(payload)]) + payload
        if len(out) > 2000:
            chunks.append(bytes(out))
            out = bytearray()
    if out:
        chunks.append(bytes(out))
    # a few spread over the log (start, middle, end): the order matters, the volume does not
    step = max(1, len(chunks) // 5)
    for k, c in enumerate(chunks[::step][:6]):
        put("mavlink_snapshot", f"{os.path.basename(p)}-{k}", c)
print("seeds in", seeds)
