#!/usr/bin/env python3
"""How fast the harness emulates the board: emulated ms per wall ms over 10 s.

    python3 locker-agent/firmware/harness/speed.py [--realtime]   (after `make`)
"""
import os, socket, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
build = os.path.join(here, "..", "build")
tmp = tempfile.mkdtemp()
ctl = os.path.join(tmp, "lb.ctl")
p = subprocess.Popen(
    [os.path.join(build, "lockboard-harness"), "--elf", os.path.join(build, "lockboard.elf"),
     "--link", os.path.join(tmp, "lb"), "--control", ctl] + sys.argv[1:],
    stdout=subprocess.PIPE, text=True)
# the control socket exists once the harness prints it
for line in p.stdout:
    if line.startswith("LOCKBOARD_CONTROL="):
        break


def emulated_ms():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(ctl)
        s.sendall(b"status\n")
        return int(s.makefile().readline().split("ms=")[1])


a, t = emulated_ms(), time.monotonic()
time.sleep(10)  # a measurement window, not a wait for an event
b, u = emulated_ms(), time.monotonic()
print(f"emulated {b - a} ms in {1000 * (u - t):.0f} ms wall: {(b - a) / (1000 * (u - t)):.2f}x real time")
p.terminate()
p.wait()
