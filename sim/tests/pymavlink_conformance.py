#!/usr/bin/env python3
"""Flies `sim vehicle` the way a ground station built on pymavlink would, and checks what it sees.

pymavlink is a MAVLink implementation nobody on this project wrote: if the sim only worked with our
own `hal` (same author, same misunderstandings), this script would catch it. It uses pymavlink's
own mode tables (mode_mapping / px4_map) and helpers, its own frame parser, and the message
flows a GCS uses:

  detect the autopilot from HEARTBEAT -> request telemetry -> wait for a GPS fix and home ->
  upload, read back and clear a mission -> mode change -> arm (retrying while the autopilot refuses) -> take off -> go to a point ->
  RTL -> landed and disarmed at home

Usage: pymavlink_conformance.py CONNECTION --expect px4|ardupilot [--timeout S]
Exit status 0 on success; otherwise the last line says which step failed and why.
"""

import argparse
import math
import sys
import time

from pymavlink import mavutil


def fail(step, why):
    print(f"FAIL {step}: {why}", flush=True)
    sys.exit(1)


def distance_m(lat1, lon1, lat2, lon2):
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.atan2(math.sqrt(a), math.sqrt(1 - a))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("connection")
    ap.add_argument("--expect", choices=["px4", "ardupilot"], required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout

    def left():
        rest = deadline - time.monotonic()
        if rest <= 0:
            fail("overall", f"not done within {args.timeout} s")
        return rest

    # a GCS's ids (255/190), as QGroundControl and MAVProxy use
    m = mavutil.mavlink_connection(args.connection, source_system=255, source_component=190,
                                   dialect="ardupilotmega")

    def wait(step, msg_type, pred=lambda msg: True, limit=30.0):
        """Receive until a message of msg_type satisfies pred."""
        end = time.monotonic() + min(limit, left())
        while time.monotonic() < end:
            msg = m.recv_match(type=msg_type, blocking=True, timeout=0.5)
            if msg is not None and pred(msg):
                return msg
        fail(step, f"no {msg_type} matching within {limit} s")

    def command(step, cmd, params, accept=(mavutil.mavlink.MAV_RESULT_ACCEPTED,), retry_for=0.0):
        """COMMAND_LONG and its COMMAND_ACK; retry (new attempt) while refused up to retry_for s."""
        end = time.monotonic() + retry_for
        while True:
            m.mav.command_long_send(m.target_system, m.target_component, cmd, 0, *params)
            ack = wait(step, "COMMAND_ACK", lambda a: a.command == cmd, limit=5.0)
            if ack.result in accept:
                return ack
            if time.monotonic() > end:
                fail(step, f"COMMAND_ACK result {ack.result}")
            time.sleep(0.2)

    # 1. detect
    hb = m.wait_heartbeat(timeout=min(10.0, left()))
    if hb is None:
        fail("heartbeat", "no HEARTBEAT")
    want = mavutil.mavlink.MAV_AUTOPILOT_PX4 if args.expect == "px4" else mavutil.mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA
    if hb.autopilot != want:
        fail("heartbeat", f"autopilot {hb.autopilot}, expected {want}")
    if hb.type != mavutil.mavlink.MAV_TYPE_QUADROTOR:
        fail("heartbeat", f"type {hb.type}, expected a quadrotor")
    src = (hb.get_srcSystem(), hb.get_srcComponent())
    if src != (1, 1):
        fail("heartbeat", f"system/component {src}, expected (1, 1)")
    m.target_system, m.target_component = src
    print(f"ok heartbeat: autopilot {hb.autopilot}, mode {m.flightmode}", flush=True)

    # 2. telemetry at GCS rates (both ways a GCS asks)
    m.mav.request_data_stream_send(m.target_system, m.target_component,
                                   mavutil.mavlink.MAV_DATA_STREAM_ALL, 4, 1)
    command("message interval", mavutil.mavlink.MAV_CMD_SET_MESSAGE_INTERVAL,
            [mavutil.mavlink.MAVLINK_MSG_ID_GLOBAL_POSITION_INT, 100000, 0, 0, 0, 0, 0])

    # 3. GPS fix and home
    gps = wait("gps fix", "GPS_RAW_INT", lambda g: g.fix_type >= 3, limit=30.0)
    command("request home", mavutil.mavlink.MAV_CMD_REQUEST_MESSAGE,
            [mavutil.mavlink.MAVLINK_MSG_ID_HOME_POSITION, 0, 0, 0, 0, 0, 0], retry_for=10.0)
    home = wait("home", "HOME_POSITION")
    home_lat, home_lon, home_alt = home.latitude * 1e-7, home.longitude * 1e-7, home.altitude * 1e-3
    print(f"ok gps: fix {gps.fix_type}, {gps.satellites_visible} satellites; home {home_lat:.7f},{home_lon:.7f}", flush=True)

    # 4. mission protocol as a GCS uploads and reads back a plan (ArduPilot: item 0 is home)
    plan = [(home_lat, home_lon, home_alt)] if args.expect == "ardupilot" else []
    plan += [(home_lat + 0.001, home_lon, 20.0), (home_lat + 0.001, home_lon + 0.001, 25.0)]
    m.mav.mission_count_send(m.target_system, m.target_component, len(plan))
    sent = 0
    while True:
        req = wait("mission upload", ["MISSION_REQUEST_INT", "MISSION_REQUEST", "MISSION_ACK"], limit=5.0)
        if req.get_type() == "MISSION_ACK":
            if req.type != mavutil.mavlink.MAV_MISSION_ACCEPTED or sent != len(plan):
                fail("mission upload", f"MISSION_ACK {req.type} after {sent} of {len(plan)} items")
            break
        lat_i, lon_i, z = plan[req.seq]
        frame = mavutil.mavlink.MAV_FRAME_GLOBAL if (args.expect == "ardupilot" and req.seq == 0) \
            else mavutil.mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT
        m.mav.mission_item_int_send(m.target_system, m.target_component, req.seq, frame,
                                    mavutil.mavlink.MAV_CMD_NAV_WAYPOINT, 0, 1, 0, 0, 0, 0,
                                    int(lat_i * 1e7), int(lon_i * 1e7), z)
        sent = max(sent, req.seq + 1)
    m.mav.mission_request_list_send(m.target_system, m.target_component)
    count = wait("mission download", "MISSION_COUNT", limit=5.0).count
    if count != len(plan):
        fail("mission download", f"{count} items, uploaded {len(plan)}")
    for seq in range(count):
        m.mav.mission_request_int_send(m.target_system, m.target_component, seq)
        item = wait("mission download", "MISSION_ITEM_INT", lambda i: i.seq == seq, limit=5.0)
        if (item.x, item.y) != (int(plan[seq][0] * 1e7), int(plan[seq][1] * 1e7)):
            fail("mission download", f"item {seq} came back as {item.x},{item.y}")
    m.mav.mission_ack_send(m.target_system, m.target_component, mavutil.mavlink.MAV_MISSION_ACCEPTED)
    m.mav.mission_clear_all_send(m.target_system, m.target_component)
    ack = wait("mission clear", "MISSION_ACK", limit=5.0)
    if ack.type != mavutil.mavlink.MAV_MISSION_ACCEPTED:
        fail("mission clear", f"MISSION_ACK {ack.type}")
    print(f"ok mission: {len(plan)} items uploaded, read back, cleared", flush=True)

    # 5. mode change (pymavlink's own mode tables) and arm
    guided = "GUIDED" if args.expect == "ardupilot" else "LOITER"
    m.set_mode(guided)
    wait("mode " + guided, "HEARTBEAT", lambda h: mavutil.mode_string_v10(h) == guided, limit=5.0)
    command("arm", mavutil.mavlink.MAV_CMD_COMPONENT_ARM_DISARM, [1, 0, 0, 0, 0, 0, 0], retry_for=30.0)
    wait("armed", "HEARTBEAT", lambda h: h.base_mode & mavutil.mavlink.MAV_MODE_FLAG_SAFETY_ARMED, limit=5.0)
    print(f"ok armed in {guided}", flush=True)

    # 6. take off to 10 m (PX4 wants AMSL, ArduPilot above home)
    alt = 10.0
    takeoff_alt = alt if args.expect == "ardupilot" else home_alt + alt
    nan = float("nan")
    command("takeoff", mavutil.mavlink.MAV_CMD_NAV_TAKEOFF, [0, 0, 0, nan, nan, nan, takeoff_alt])
    wait("climb", "GLOBAL_POSITION_INT", lambda p: p.relative_alt >= (alt - 0.5) * 1000, limit=40.0)
    print("ok take-off to 10 m", flush=True)

    # 7. go to a point 200 m east, 15 m up
    lat = home_lat
    lon = home_lon + math.degrees(200.0 / (6371008.8 * math.cos(math.radians(home_lat))))
    if args.expect == "ardupilot":
        mask = 0b0000111111111000  # position only
        m.mav.set_position_target_global_int_send(
            0, m.target_system, m.target_component,
            mavutil.mavlink.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT, mask,
            int(lat * 1e7), int(lon * 1e7), 15.0, 0, 0, 0, 0, 0, 0, 0, 0)
    else:
        m.mav.command_int_send(m.target_system, m.target_component, mavutil.mavlink.MAV_FRAME_GLOBAL,
                               mavutil.mavlink.MAV_CMD_DO_REPOSITION, 0, 0, -1, 1, 0, nan,
                               int(lat * 1e7), int(lon * 1e7), home_alt + 15.0)
        ack = wait("reposition ack", "COMMAND_ACK", lambda a: a.command == mavutil.mavlink.MAV_CMD_DO_REPOSITION)
        if ack.result != mavutil.mavlink.MAV_RESULT_ACCEPTED:
            fail("reposition", f"COMMAND_ACK result {ack.result}")
    wait("arrive", "GLOBAL_POSITION_INT",
         lambda p: distance_m(p.lat * 1e-7, p.lon * 1e-7, lat, lon) < 2.0 and abs(p.relative_alt / 1000 - 15) < 1,
         limit=60.0)
    print("ok arrived 200 m east", flush=True)

    # 8. RTL: home, land, disarm by itself
    m.set_mode("RTL")
    wait("mode RTL", "HEARTBEAT", lambda h: mavutil.mode_string_v10(h) == "RTL", limit=5.0)
    wait("disarm after RTL", "HEARTBEAT",
         lambda h: not h.base_mode & mavutil.mavlink.MAV_MODE_FLAG_SAFETY_ARMED, limit=90.0)
    pos = wait("position at home", "GLOBAL_POSITION_INT")
    d = distance_m(pos.lat * 1e-7, pos.lon * 1e-7, home_lat, home_lon)
    if d > 2.0 or pos.relative_alt > 500:
        fail("landed at home", f"{d:.1f} m from home at {pos.relative_alt / 1000:.1f} m")
    landed = wait("landed state", "EXTENDED_SYS_STATE")
    if landed.landed_state != mavutil.mavlink.MAV_LANDED_STATE_ON_GROUND:
        fail("landed state", f"{landed.landed_state}")
    print(f"PASS {args.expect}: landed {d:.2f} m from home, disarmed", flush=True)


if __name__ == "__main__":
    main()
