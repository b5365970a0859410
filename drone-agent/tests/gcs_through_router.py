#!/usr/bin/env python3
"""A ground station (pymavlink) on one of the drone agent's router endpoints.

Usage: gcs_through_router.py CONNECTION --expect px4|ardupilot --check CHECK [--key HEX] [--mode M]

CHECK:
  full       see the vehicle's HEARTBEAT (and the agent's, 1/191), telemetry, read a parameter,
             change the mode to M and see HEARTBEAT show it
  signed     the same, signing with --key and accepting only signed frames from the router
  read_only  the same watching; the mode change is refused: a later, allowed request is answered,
             no COMMAND_ACK for the mode change ever comes, and HEARTBEAT still shows the old mode
  unsigned   only sends (heartbeat, a mode change to M, a request) and prints "SENT n": the caller
             checks the router dropped them
Prints PASS on success; otherwise FAIL and why (exit 1).
"""

import argparse
import os
import sys
import time

os.environ["MAVLINK20"] = "1"  # signing needs MAVLink 2; the router speaks it anyway
from pymavlink import mavutil  # noqa: E402


def fail(step, why):
    print(f"FAIL {step}: {why}", flush=True)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("connection")
    ap.add_argument("--expect", choices=["px4", "ardupilot"], required=True)
    ap.add_argument("--check", choices=["full", "signed", "read_only", "unsigned"], required=True)
    ap.add_argument("--key")
    ap.add_argument("--mode", default="LOITER")
    ap.add_argument("--sysid", type=int, default=255)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout

    m = mavutil.mavlink_connection(args.connection, source_system=args.sysid, source_component=190,
                                   dialect="ardupilotmega")
    # a GCS that speaks first (udpin/tcpin endpoints learn it from this)
    if args.check == "signed":
        m.setup_signing(bytes.fromhex(args.key), sign_outgoing=True)
    m.mav.heartbeat_send(mavutil.mavlink.MAV_TYPE_GCS, mavutil.mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)

    def set_mode(name):
        # pymavlink's own mode tables; not m.set_mode(), which picks the table by the last
        # HEARTBEAT of system 1, and the agent (1/191, MAV_AUTOPILOT_INVALID) beats too
        if args.expect == "px4":
            base, main, sub = mavutil.px4_map[name]
            params = (base, main, sub)
        else:
            number = {v: k for k, v in mavutil.mode_mapping_acm.items()}[name]
            params = (mavutil.mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED, number, 0)
        m.mav.command_long_send(1, 1, mavutil.mavlink.MAV_CMD_DO_SET_MODE, 0, *params, 0, 0, 0, 0)

    def wait(step, types, pred=lambda msg: True, limit=15.0):
        end = min(deadline, time.monotonic() + limit)
        while time.monotonic() < end:
            msg = m.recv_match(type=types, blocking=True, timeout=0.5)
            if msg is not None and pred(msg):
                return msg
            # keep our heartbeat going: the router learns us, the autopilot sees a GCS
            m.mav.heartbeat_send(mavutil.mavlink.MAV_TYPE_GCS, mavutil.mavlink.MAV_AUTOPILOT_INVALID, 0, 0, 0)
        fail(step, f"no {types} within {limit} s")

    if args.check == "unsigned":
        # ArduCopter's LOITER (5); PX4 reads param2 as its main mode (5: not one the sim flies in)
        m.mav.command_long_send(1, 1, mavutil.mavlink.MAV_CMD_DO_SET_MODE, 0, 1, 5, 0, 0, 0, 0, 0)
        m.mav.command_long_send(1, 1, mavutil.mavlink.MAV_CMD_REQUEST_MESSAGE, 0,
                                mavutil.mavlink.MAVLINK_MSG_ID_HOME_POSITION, 0, 0, 0, 0, 0, 0)
        print("SENT 3", flush=True)  # heartbeat, mode change, request
        return

    hb = wait("heartbeat", "HEARTBEAT", lambda h: (h.get_srcSystem(), h.get_srcComponent()) == (1, 1))
    want = mavutil.mavlink.MAV_AUTOPILOT_PX4 if args.expect == "px4" else mavutil.mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA
    if hb.autopilot != want:
        fail("heartbeat", f"autopilot {hb.autopilot}, expected {want}")
    m.target_system, m.target_component = 1, 1
    before = mavutil.mode_string_v10(hb)
    if args.check == "signed" and not hb.get_signed():
        fail("signing", "the router's frames to a signed endpoint are not signed")
    wait("agent heartbeat", "HEARTBEAT", lambda h: (h.get_srcSystem(), h.get_srcComponent()) == (1, 191))
    wait("telemetry", ["GLOBAL_POSITION_INT", "ATTITUDE"])
    name = "SYSID_THISMAV" if args.expect == "ardupilot" else "MAV_SYS_ID"
    m.mav.param_request_read_send(1, 1, name.encode(), -1)
    p = wait("parameter", "PARAM_VALUE", lambda v: v.param_id == name)
    if p.param_value != 1.0:
        fail("parameter", f"{name} = {p.param_value}")
    print(f"ok watching: mode {before}, {name} = {p.param_value}", flush=True)

    if args.check == "read_only":
        set_mode(args.mode)
        m.mav.command_long_send(1, 1, mavutil.mavlink.MAV_CMD_REQUEST_MESSAGE, 0,
                                mavutil.mavlink.MAVLINK_MSG_ID_HOME_POSITION, 0, 0, 0, 0, 0, 0)
        # the request went after the mode change on the same path: once it is answered, the mode
        # change would have been too
        acks = []
        wait("allowed request", "COMMAND_ACK",
             lambda a: acks.append(a.command) or a.command == mavutil.mavlink.MAV_CMD_REQUEST_MESSAGE)
        if mavutil.mavlink.MAV_CMD_DO_SET_MODE in acks:
            fail("read_only", "the refused mode change was acknowledged")
        after = mavutil.mode_string_v10(wait("heartbeat", "HEARTBEAT",
                                             lambda h: (h.get_srcSystem(), h.get_srcComponent()) == (1, 1)))
        if after == args.mode:
            fail("read_only", f"mode changed to {after}")
        print(f"PASS read_only: mode still {after}", flush=True)
        return

    set_mode(args.mode)
    wait("mode " + args.mode, "HEARTBEAT",
         lambda h: (h.get_srcSystem(), h.get_srcComponent()) == (1, 1) and mavutil.mode_string_v10(h) == args.mode)
    print(f"PASS {args.check}: mode {before} -> {args.mode}", flush=True)


if __name__ == "__main__":
    main()
