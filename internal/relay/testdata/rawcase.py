#!/usr/bin/env python3
"""Raw SOCKS5 cases for the relay tests (an independent client).

usage: rawcase.py HOST PORT CASE [DST DPORT]
Prints the reply code (decimal) of the server, "close" when it closed
without one, or "method:N" when the method selection was not no-auth.
CASE: connect | bind | cmd9 | atyp5 | ver4 | authonly | hold-mptcp | udp
"""
import socket
import struct
import sys
import time

IPPROTO_MPTCP = 262


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return b


def main():
    host, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dst = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
    dport = int(sys.argv[5]) if len(sys.argv) > 5 else 80
    proto = IPPROTO_MPTCP if case == "hold-mptcp" else 0
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.settimeout(15)
    s.connect((host, port))
    if case == "ver4":
        s.sendall(bytes([4, 1]) + struct.pack(">H", dport) + socket.inet_aton(dst) + b"\0")
        r = s.recv(8)
        print("close" if not r else "v4reply:%d" % r[1] if len(r) > 1 else "short")
        return
    if case == "authonly":
        s.sendall(bytes([5, 1, 2]))
        r = recv_exact(s, 2)
        print("close" if r is None else "method:%d" % r[1])
        return
    s.sendall(bytes([5, 1, 0]))
    r = recv_exact(s, 2)
    if r is None:
        print("close")
        return
    if r[1] != 0:
        print("method:%d" % r[1])
        return
    if case == "hold-mptcp":
        time.sleep(30)
        return
    cmd = {"connect": 1, "bind": 2, "udp": 3, "cmd9": 9, "atyp5": 1}[case]
    if case == "atyp5":
        req = bytes([5, cmd, 0, 5]) + socket.inet_aton(dst) + struct.pack(">H", dport)
    else:
        req = bytes([5, cmd, 0, 1]) + socket.inet_aton(dst) + struct.pack(">H", dport)
    s.sendall(req)
    r = recv_exact(s, 2)
    print("close" if r is None else r[1])


if __name__ == "__main__":
    main()
