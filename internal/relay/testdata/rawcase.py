#!/usr/bin/env python3
"""Raw SOCKS5 cases for the relay tests (an independent client).

usage: rawcase.py HOST PORT CASE [DST DPORT]
Prints the reply code (decimal) of the server, "close" when it closed
without one, or "method:N" when the method selection was not no-auth.
CASE: connect | bind | cmd9 | atyp5 | ver4 | authonly | hold-mptcp | udp
| udp-echo: UDP ASSOCIATE, one datagram to DST:DPORT (IPv4, IPv6 or a
name) through the relay; prints "SRC PAYLOAD" of the answer, as the relay
wrapped it, or "reply:N" when the association was refused.
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
    if case == "udp-echo":
        udp_echo(s, host, dst, dport)
        return
    cmd = {"connect": 1, "bind": 2, "udp": 3, "cmd9": 9, "atyp5": 1}[case]
    if case == "atyp5":
        req = bytes([5, cmd, 0, 5]) + socket.inet_aton(dst) + struct.pack(">H", dport)
    else:
        req = bytes([5, cmd, 0, 1]) + socket.inet_aton(dst) + struct.pack(">H", dport)
    s.sendall(req)
    r = recv_exact(s, 2)
    print("close" if r is None else r[1])


def sockaddr(b):
    """Parses ATYP ADDR PORT at the start of b; returns (host, port, rest)."""
    if b[0] == 1:
        return socket.inet_ntop(socket.AF_INET, b[1:5]), struct.unpack(">H", b[5:7])[0], b[7:]
    if b[0] == 4:
        return socket.inet_ntop(socket.AF_INET6, b[1:17]), struct.unpack(">H", b[17:19])[0], b[19:]
    if b[0] == 3:
        n = b[1]
        return b[2:2 + n].decode(), struct.unpack(">H", b[2 + n:4 + n])[0], b[4 + n:]
    raise ValueError("atyp %d" % b[0])


def encode(host, port):
    for fam, atyp in ((socket.AF_INET, 1), (socket.AF_INET6, 4)):
        try:
            return bytes([atyp]) + socket.inet_pton(fam, host) + struct.pack(">H", port)
        except OSError:
            pass
    return bytes([3, len(host)]) + host.encode() + struct.pack(">H", port)


def udp_echo(s, host, dst, dport):
    s.sendall(bytes([5, 3, 0]) + encode("0.0.0.0", 0))
    head = recv_exact(s, 4)
    if head is None:
        print("close")
        return
    if head[3] == 3:
        n = recv_exact(s, 1)
        rest = n + recv_exact(s, n[0] + 2)
    else:
        rest = recv_exact(s, {1: 6, 4: 18}[head[3]])
    if head[1] != 0:
        print("reply:%d" % head[1])
        return
    bhost, bport, _ = sockaddr(head[3:] + rest)
    if bhost in ("0.0.0.0", "::"):
        bhost = host
    fam = socket.AF_INET6 if ":" in bhost else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(5)
    for _ in range(3):  # UDP may lose a datagram on a loaded machine
        u.sendto(bytes([0, 0, 0]) + encode(dst, dport) + b"ping-from-python", (bhost, bport))
        try:
            b, _ = u.recvfrom(4096)
        except socket.timeout:
            continue
        if b[:3] != bytes([0, 0, 0]):
            print("bad header %s" % b[:3].hex())
            return
        shost, sport, payload = sockaddr(b[3:])
        print("%s %s" % (("[%s]:%d" if ":" in shost else "%s:%d") % (shost, sport), payload.decode()))
        return
    print("timeout")


if __name__ == "__main__":
    main()
